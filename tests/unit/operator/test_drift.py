"""DriftMonitor analysis: pooling, verdicts, the consecutive/cooldown rule, status, and calibration by simulation.

The simulations are seeded; each states its false-alarm budget or detection delay next to the assertion.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from mlsteward_runtime.contracts import DriftWindow, FeatureType, FeatureWindow, Profile
from mlsteward_runtime.stats.profile import build_profile
from scipy import stats as sps

from mlsteward_operator.driftmonitor import analysis as dra
from mlsteward_operator.driftmonitor import decide as dr
from mlsteward_operator.retraining import decide as retraining
from mlsteward_operator.api.common import ObjectMeta
from mlsteward_operator.api.driftmonitor import (
    MAX_HISTORY,
    Action,
    DriftMonitor,
    DriftMonitorSpec,
    DriftMonitorStatus,
    HistoryEntry,
    LastAction,
)

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
INTERVAL = dt.timedelta(minutes=5)
NUMERIC = ("x1", "x2", "x3")
COLORS = ("red", "green", "blue")
COLOR_P = (0.5, 0.3, 0.2)


@pytest.fixture(scope="module")
def reference() -> Profile:
    rng = np.random.default_rng(1)
    n = 20_000
    cols: dict[str, list[Any]] = {name: rng.normal(0.0, 1.0, n).tolist() for name in NUMERIC}
    cols["color"] = rng.choice(COLORS, size=n, p=COLOR_P).tolist()
    return build_profile(cols, types={"color": FeatureType.categorical}, seed=0)


def monitor(name: str = "iris-drift", status: DriftMonitorStatus | None = None, **spec: Any) -> DriftMonitor:
    return DriftMonitor(
        metadata=ObjectMeta(name=name, namespace="ml", uid="uid-1", generation=4),
        spec=DriftMonitorSpec(deployment="iris", **spec),
        status=status or DriftMonitorStatus(),
    )


def window(
    rng: np.random.Generator, n: int, *, replica: str = "p-0", seen: int | None = None, shift: float = 0.0,
    colors: Sequence[float] = COLOR_P, version: str = "iris-v1",
) -> DriftWindow:
    feats = {name: FeatureWindow(type=FeatureType.number,
                                 values=(rng.normal(shift if name == "x1" else 0.0, 1.0, n)).tolist())
             for name in NUMERIC}
    feats["color"] = FeatureWindow(type=FeatureType.categorical, values=rng.choice(COLORS, size=n, p=colors).tolist())
    return DriftWindow(name="iris", version=version, replica=replica, seen=seen if seen is not None else n,
                       features=feats)


def replicas(rng: np.random.Generator, n: int, count: int = 3, **kw: Any) -> list[DriftWindow]:
    return [window(rng, n, replica=f"p-{i}", seen=n * (i + 1), **kw) for i in range(count)]


def step(dm: DriftMonitor, reference: Profile, windows: Sequence[DriftWindow], now: dt.datetime
         ) -> tuple[DriftMonitor, dra.DriftVerdict, dr.DriftDecision]:
    """One check as the controller will run it: analyse, decide, write the status."""
    verdict = dra.analyse(dm, reference, windows, now)
    decision = dr.decide(dm, verdict, now)
    status = dr.compute_status(dm, verdict, decision, now)
    return dm.model_copy(update={"status": status}), verdict, decision


def simulate(dm: DriftMonitor, reference: Profile, checks: int, make, seed: int):
    rng = np.random.default_rng(seed)
    verdicts, decisions = [], []
    for i in range(checks):
        dm, v, d = step(dm, reference, make(rng, i), T0 + i * INTERVAL)
        verdicts.append(v)
        decisions.append(d)
    return dm, verdicts, decisions


def three_sigma(p: float, n: int) -> float:
    return 3 * (p * (1 - p) / n) ** 0.5


# ---- analyse -------------------------------------------------------------------------------------------------


def test_report_fields_match_scipy(reference: Profile) -> None:
    rng = np.random.default_rng(7)
    w = window(rng, 800, shift=0.5)
    dm = monitor(features=["x1", "color"])
    v = dra.analyse(dm, reference, [w], T0.replace(microsecond=250_000))
    assert v.reason == "DriftDetected" and v.window_size == 800 and v.replicas == ("p-0",)
    r = v.report
    assert r is not None and r.time == T0 and r.window_size == 800 and r.version == "iris-v1" and r.drifted
    x1, color = r.features
    assert (x1.name, x1.method, color.name, color.method) == ("x1", "ks", "color", "chi-square")

    ks = sps.ks_2samp(reference.features["x1"].sample, w.features["x1"].values)
    assert x1.statistic == pytest.approx(ks.statistic, rel=1e-12)
    # Holm over two tested features: the adjusted p-value of the smaller one is twice the raw one.
    assert x1.p_value == pytest.approx(min(1.0, 2 * ks.pvalue), rel=1e-9)
    assert x1.drifted and 0.18 < x1.effect_size < 0.35

    ref_counts = reference.features["color"].categories
    cur = [sum(1 for c in w.features["color"].values if c == k) for k in sorted(ref_counts)]
    chi = sps.chi2_contingency(np.array([[ref_counts[k] for k in sorted(ref_counts)], cur]))
    assert color.statistic == pytest.approx(chi.statistic, rel=1e-9)
    assert color.p_value == pytest.approx(min(1.0, chi.pvalue * (1 if chi.pvalue > ks.pvalue else 2)), rel=1e-9)
    assert not color.drifted and v.feature_reasons["color"] in ("effect below threshold",
                                                              "not significant after holm correction")
    assert v.drifted_features == ("x1",)
    assert "x1 (ks" in v.message and "1 of 2 features drifted over 800 rows" in v.message


def test_features_default_to_the_whole_reference(reference: Profile) -> None:
    v = dra.analyse(monitor(), reference, [window(np.random.default_rng(0), 400)], T0)
    assert [f.name for f in v.report.features] == list(reference.features)
    assert v.reason == "NoDrift" and not v.drifted and v.message == "no drift in 4 features over 400 rows"


def test_thresholds_map_onto_the_runtime_rule() -> None:
    dm = monitor(thresholds={"pValue": 0.05, "psi": 0.3, "wasserstein": 0.2, "jensenShannon": 0.15, "ks": 0.5},
                 window={"minSamples": 300, "maxSamples": 900})
    t = dra.thresholds_of(dm)
    assert (t.alpha, t.correction, t.min_samples, t.psi, t.wasserstein, t.jensen_shannon) == (
        0.05, "holm", 300, 0.3, 0.2, 0.15)


def test_too_few_samples_gives_no_verdict_and_says_why(reference: Profile) -> None:
    rng = np.random.default_rng(3)
    dm = monitor(window={"minSamples": 200, "maxSamples": 5000})
    v = dra.analyse(dm, reference, [window(rng, 60, replica="a"), window(rng, 70, replica="b")], T0)
    assert v.report is None and v.reason == "InsufficientSamples" and v.window_size == 130
    assert "130 pooled rows from 2 replica(s), fewer than window.minSamples 200" in v.message
    d = dr.decide(dm, v, T0)
    assert not d.act and d.reason == "InsufficientSamples" and d.streak == 0
    s = dr.compute_status(dm, v, d, T0)
    ready = s.condition("Ready")
    assert ready.status == "False" and ready.reason == "InsufficientSamples" and "130 pooled rows" in ready.message
    assert s.last_report is None and s.history == [] and s.drift_detected is None and s.observed_generation == 4


def test_no_windows_and_unknown_features(reference: Profile) -> None:
    v = dra.analyse(monitor(), reference, [], T0)
    assert v.report is None and v.reason == "NoWindows"
    dm = monitor(features=["x1", "petal"])
    v = dra.analyse(dm, reference, [window(np.random.default_rng(0), 300)], T0)
    assert v.reason == "UnknownFeatures" and "petal" in v.message
    s = dr.compute_status(dm, v, dr.decide(dm, v, T0), T0)
    assert (s.condition("Degraded").status, s.condition("Degraded").reason) == ("True", "UnknownFeatures")


def test_a_feature_no_replica_reports_has_too_few_samples(reference: Profile) -> None:
    w = window(np.random.default_rng(0), 400)
    del w.features["x3"]
    v = dra.analyse(monitor(), reference, [w], T0)
    x3 = next(f for f in v.report.features if f.name == "x3")
    assert not x3.drifted and x3.p_value is None and v.feature_reasons["x3"].startswith("insufficient samples")


def test_windows_of_other_versions_are_left_out(reference: Profile) -> None:
    rng = np.random.default_rng(5)
    old = window(rng, 2000, replica="old", shift=2.0, version="iris-v0")
    new = window(rng, 500, replica="new", version="iris-v1")
    v = dra.analyse(monitor(), reference, [old, new], T0, version="iris-v1")
    assert v.replicas == ("new",) and v.window_size == 500 and not v.drifted and v.report.version == "iris-v1"


def test_pooling_weighs_replicas_by_rows_seen(reference: Profile) -> None:
    # A busy replica saw 9x the traffic of an idle one but keeps an equally full reservoir. Pooled fairly, the mix
    # is 90/10, like the reference; pooled naively (every kept row alike) it would be 50/50 and cry drift.
    rng = np.random.default_rng(11)
    busy = window(rng, 2000, replica="busy", seen=18_000, shift=0.0)
    idle = window(rng, 2000, replica="idle", seen=2_000, shift=1.5)
    ref_rng = np.random.default_rng(12)
    n = 20_000
    mix = np.concatenate([ref_rng.normal(0, 1, int(n * 0.9)), ref_rng.normal(1.5, 1, int(n * 0.1))])
    cols: dict[str, list[Any]] = {"x1": mix.tolist()}
    cols.update({k: ref_rng.normal(0, 1, n).tolist() for k in ("x2", "x3")})
    cols["color"] = ref_rng.choice(COLORS, size=n, p=COLOR_P).tolist()
    ref = build_profile(cols, types={"color": FeatureType.categorical}, seed=0)
    dm = monitor(window={"minSamples": 200, "maxSamples": 5000})
    v = dra.analyse(dm, ref, [busy, idle], T0)
    assert v.window_size == 2000 * 20_000 // 18_000  # the busy replica's reservoir bounds the pool (2222 rows)
    assert not v.drifted, v.message
    naive = busy.model_copy(update={"seen": 2000})
    v_naive = dra.analyse(dm, ref, [naive, idle], T0)
    assert v_naive.drifted and v_naive.drifted_features == ("x1",)


def test_pooling_is_deterministic_for_the_same_check(reference: Profile) -> None:
    ws = replicas(np.random.default_rng(2), 3000, count=3)
    dm = monitor(window={"minSamples": 100, "maxSamples": 1000})
    a = dra.analyse(dm, reference, ws, T0)
    b = dra.analyse(dm, reference, ws, T0)
    assert a == b and a.window_size == 1000


def test_large_window_with_a_negligible_shift_is_not_drift(reference: Profile) -> None:
    # 40k pooled rows: KS rejects a shift of 0.04 standard deviations, but the effect is far below every threshold.
    rng = np.random.default_rng(4)
    ws = replicas(rng, 20_000, count=3, shift=0.04)
    dm = monitor(window={"minSamples": 200, "maxSamples": 60_000})
    v = dra.analyse(dm, reference, ws, T0)
    x1 = v.report.features[0]
    assert v.window_size == 40_000 and x1.p_value < 0.01 and not x1.drifted
    assert v.feature_reasons["x1"] == "effect below threshold" and not v.drifted


def test_ks_threshold_is_an_extra_effect_size(reference: Profile) -> None:
    rng = np.random.default_rng(9)
    ws = [window(rng, 3000, shift=0.12)]
    strict = monitor(thresholds={"psi": 5.0, "wasserstein": 5.0, "ks": 5.0})
    loose = monitor(thresholds={"psi": 5.0, "wasserstein": 5.0, "ks": 0.03})
    assert not dra.analyse(strict, reference, ws, T0).drifted
    v = dra.analyse(loose, reference, ws, T0)
    assert v.drifted_features == ("x1",) and v.feature_reasons["x1"] == "drift"


# ---- decide --------------------------------------------------------------------------------------------------


def entries(flags: Sequence[bool], start: dt.datetime = T0) -> list[HistoryEntry]:
    return [HistoryEntry(time=start + i * INTERVAL, window_size=500, drifted_features=int(f), drifted=f)
            for i, f in enumerate(flags)]


def test_consecutive_breaches_are_counted_from_history(reference: Profile) -> None:
    rng = np.random.default_rng(8)
    shifted = [window(rng, 1000, shift=0.6)]
    now = T0 + 10 * INTERVAL
    dm = monitor(consecutive=3, status=DriftMonitorStatus(history=entries([True, False, True]),
                                                         consecutive_breaches=1))
    v = dra.analyse(dm, reference, shifted, now)
    d = dr.decide(dm, v, now)
    assert (d.act, d.reason, d.streak, d.since_action) == (False, "BreachPending", 2, 2)
    assert "2 of 3 windows in breach (x1)" in d.message
    dm = monitor(consecutive=3, actions=["Alert"], status=DriftMonitorStatus(
        history=entries([False, True, True]), consecutive_breaches=2))
    d = dr.decide(dm, v, now)
    assert (d.act, d.reason, d.actions, d.streak) == (True, "DriftConfirmed", (Action.alert,), 3)
    assert d.breach_started == T0 + INTERVAL and d.trigger == "driftmonitor/iris-drift@2026-03-01T12:05:00Z"
    assert d.job_name is None
    assert d.evidence["features"]["x1"]["drifted"] and d.evidence["thresholds"]["psi"] == 0.2
    assert d.evidence["streak"] == 3 and d.evidence["windowSize"] == 1000


def test_a_clean_window_breaks_the_streak(reference: Profile) -> None:
    now = T0 + 10 * INTERVAL
    dm = monitor(consecutive=2, status=DriftMonitorStatus(history=entries([True, True]), consecutive_breaches=2))
    v = dra.analyse(dm, reference, [window(np.random.default_rng(0), 1000)], now)
    d = dr.decide(dm, v, now)
    assert (d.act, d.reason, d.streak) == (False, "NoDrift", 0)


def test_no_verdict_neither_extends_nor_breaks_a_streak(reference: Profile) -> None:
    now = T0 + 10 * INTERVAL
    dm = monitor(consecutive=3, status=DriftMonitorStatus(history=entries([True, True]), consecutive_breaches=2))
    v = dra.analyse(dm, reference, [window(np.random.default_rng(0), 50)], now)
    d = dr.decide(dm, v, now)
    s = dr.compute_status(dm, v, d, now)
    assert d.streak == 2 and s.consecutive_breaches == 2 and len(s.history) == 2


def test_streak_longer_than_the_history_carries_on(reference: Profile) -> None:
    now = T0 + (MAX_HISTORY + 5) * INTERVAL
    dm = monitor(consecutive=60, status=DriftMonitorStatus(
        history=entries([True] * MAX_HISTORY, start=T0 + 5 * INTERVAL), consecutive_breaches=59))
    v = dra.analyse(dm, reference, [window(np.random.default_rng(1), 1000, shift=0.6)], now)
    d = dr.decide(dm, v, now)
    assert d.streak == 60 and d.act and d.since_action == 60


def test_retrain_job_name_is_deterministic_and_valid() -> None:
    t = dt.datetime(2026, 3, 1, 12, 5, 0, 900_000, tzinfo=dt.UTC)
    assert retraining.retrain_job_name("iris-drift", t) == "iris-drift-retrain-20260301120500"
    assert retraining.retrain_job_name("iris-drift", t) == retraining.retrain_job_name("iris-drift", t.replace(microsecond=0))
    other = retraining.retrain_job_name("iris-drift", t + INTERVAL)
    assert other != retraining.retrain_job_name("iris-drift", t)
    long = retraining.retrain_job_name("a" * 60 + ".watch", t)
    assert len(long) <= 63 and long == retraining.retrain_job_name("a" * 60 + ".watch", t)
    assert long != retraining.retrain_job_name("a" * 60 + ".other", t)
    assert all(c.isalnum() or c == "-" for c in long) and long[0].isalnum() and long[-1].isalnum()


def test_retrain_decision_names_the_breach_not_the_check(reference: Profile) -> None:
    retrain = {"template": {"template": {"spec": {"containers": [{"name": "t", "image": "mlsteward"}]}}}}
    history = entries([False, True, True])
    rng = np.random.default_rng(6)
    names = set()
    for k in range(2):  # two operators (or one restarted) deciding on the same breach at different checks
        now = T0 + (3 + k) * INTERVAL
        hist = history + entries([True] * k, start=T0 + 3 * INTERVAL)
        dm = monitor(consecutive=2, actions=["Retrain"], retrain=retrain,
                     status=DriftMonitorStatus(history=hist, consecutive_breaches=2 + k))
        d = dr.decide(dm, dra.analyse(dm, reference, [window(rng, 1000, shift=0.6)], now), now)
        assert d.act and d.actions == (Action.retrain,)
        names.add(d.job_name)
    assert names == {"iris-drift-retrain-20260301120500"}


# ---- status --------------------------------------------------------------------------------------------------


def test_status_fields_and_conditions(reference: Profile) -> None:
    dm = monitor(consecutive=2, actions=["Alert"])
    rng = np.random.default_rng(13)
    dm, v0, d0 = step(dm, reference, [window(rng, 600)], T0)
    s = dm.status
    assert s.last_report == v0.report and s.drift_detected is False and s.consecutive_breaches == 0
    assert [(h.time, h.window_size, h.drifted) for h in s.history] == [(T0, 600, False)]
    c = {x.type: x for x in s.conditions}
    assert [x.type for x in s.conditions] == ["Ready", "Progressing", "Degraded"]
    assert (c["Ready"].status, c["Ready"].reason, c["Ready"].observed_generation) == ("True", "Checked", 4)
    assert (c["Progressing"].status, c["Progressing"].reason) == ("False", "Watching")
    assert (c["Degraded"].status, c["Degraded"].reason) == ("False", "NoConfirmedDrift")

    t1, t2 = T0 + INTERVAL, T0 + 2 * INTERVAL
    dm, _, d1 = step(dm, reference, [window(rng, 600, shift=0.7)], t1)
    c = {x.type: x for x in dm.status.conditions}
    assert d1.reason == "BreachPending" and (c["Progressing"].status, c["Progressing"].reason) == (
        "True", "BreachPending")
    assert dm.status.drift_detected is True and dm.status.last_action is None
    dm, _, d2 = step(dm, reference, [window(rng, 600, shift=0.7)], t2)
    s = dm.status
    c = {x.type: x for x in s.conditions}
    assert d2.act and s.last_action == LastAction(type=Action.alert, time=t2, message=d2.message, job=None)
    assert (c["Progressing"].reason, c["Degraded"].status, c["Degraded"].reason) == (
        "ActionTriggered", "True", "DriftConfirmed")
    assert c["Ready"].last_transition_time == T0  # Ready never flipped
    assert s.consecutive_breaches == 2 and [h.drifted for h in s.history] == [False, True, True]


def test_history_is_bounded(reference: Profile) -> None:
    old = entries([False] * MAX_HISTORY)
    now = T0 + (MAX_HISTORY + 1) * INTERVAL
    dm = monitor(status=DriftMonitorStatus(history=old))
    v = dra.analyse(dm, reference, [window(np.random.default_rng(0), 300)], now)
    s = dr.compute_status(dm, v, dr.decide(dm, v, now), now)
    assert len(s.history) == MAX_HISTORY and s.history[-1].time == now and s.history[0].time == old[1].time


def test_cooldown_suppresses_a_second_action(reference: Profile) -> None:
    # Persistent drift, a check every 5 minutes, consecutive 2, cooldown 30m: act at the 2nd check, then hold until
    # 30 minutes have passed since that action, then act again on the breach counted since the first action.
    dm = monitor(consecutive=2, cooldown="30m", actions=["Alert"])
    dm, verdicts, decisions = simulate(dm, reference, 10, lambda rng, i: [window(rng, 800, shift=0.7)], seed=21)
    assert all(v.drifted for v in verdicts)
    acted = [i for i, d in enumerate(decisions) if d.act]
    assert acted == [1, 7]
    # One fresh breach is not enough to act again; two are, but the cooldown holds the action until 12:35.
    assert [d.reason for d in decisions[2:7]] == ["BreachPending"] + ["CoolingDown"] * 4
    assert "next action possible at 2026-03-01T12:35:00Z" in decisions[3].message
    assert decisions[7].breach_started == T0 + 2 * INTERVAL and decisions[1].breach_started == T0
    assert dm.status.last_action.time == T0 + 7 * INTERVAL


def test_restart_continuity_same_inputs_same_decision(reference: Profile) -> None:
    retrain = {"template": {"template": {"spec": {"containers": [{"name": "t", "image": "mlsteward"}]}}}}
    dm = monitor(consecutive=3, actions=["Alert", "Retrain"], retrain=retrain)
    dm, _, _ = simulate(dm, reference, 2, lambda rng, i: [window(rng, 800, shift=0.7)], seed=5)
    ws = [window(np.random.default_rng(99), 800, shift=0.7, replica=r) for r in ("p-0", "p-1")]
    now = T0 + 2 * INTERVAL
    # A restarted operator reads the object back from the API server: the wire form of spec and status.
    wire = {"metadata": dm.metadata.model_dump(by_alias=True), "spec": dm.spec.to_k8s(), "status": dm.status.to_k8s()}
    restarted = DriftMonitor.model_validate(wire)
    first = dr.decide(dm, dra.analyse(dm, reference, ws, now), now)
    again = dr.decide(restarted, dra.analyse(restarted, reference, ws, now), now)
    assert first == again and first.act and first.job_name == "iris-drift-retrain-20260301120000"
    v = dra.analyse(dm, reference, ws, now)
    status = dr.compute_status(dm, v, first, now)
    assert status == dr.compute_status(restarted, dra.analyse(restarted, reference, ws, now), again, now)
    assert status.last_action.type == Action.retrain and status.last_action.job == first.job_name

    # The same check run once more after its status was written: counted once, not acted on twice.
    written = DriftMonitor.model_validate({**wire, "status": status.to_k8s()})
    replay = dr.decide(written, dra.analyse(written, reference, ws, now), now)
    assert not replay.act and replay.reason == "ActionRecorded" and replay.job_name == first.job_name
    assert dr.compute_status(written, v, replay, now) == status


# ---- calibration by simulation -------------------------------------------------------------------------------


@pytest.mark.parametrize("consecutive", [2, 3])
def test_no_shift_stays_under_the_false_alarm_budget_with_default_thresholds(
    reference: Profile, consecutive: int
) -> None:
    # Budget: at most 1% of checks lead to an action. With pValue 0.01 (Holm) a window is in breach with
    # probability at most 0.01, and an action needs `consecutive` of them in a row.
    checks = 120
    dm = monitor(consecutive=consecutive, cooldown="0s", window={"minSamples": 200, "maxSamples": 5000})
    dm, verdicts, decisions = simulate(dm, reference, checks, lambda rng, i: replicas(rng, 300), seed=100 + consecutive)
    breaches = sum(v.drifted for v in verdicts) / checks
    actions = sum(d.act for d in decisions) / checks
    assert all(v.window_size == 600 for v in verdicts)  # replicas saw 300, 600, 900 rows: 300 * 6 / 3
    assert breaches <= 0.01 + three_sigma(0.01, checks)
    assert actions <= 0.01


def test_large_pooled_windows_without_shift_do_not_cry_wolf(reference: Profile) -> None:
    # 3 replicas x 15k kept rows pooled into 30k-row windows: no breach expected, and no action at all.
    checks = 15
    dm = monitor(consecutive=2, cooldown="0s", window={"minSamples": 200, "maxSamples": 30_000})
    _, verdicts, decisions = simulate(dm, reference, checks, lambda rng, i: replicas(rng, 15_000), seed=7)
    assert all(v.window_size == 30_000 for v in verdicts)
    assert sum(v.drifted for v in verdicts) <= 1 and not any(d.act for d in decisions)


@pytest.mark.parametrize("consecutive", [2, 3])
def test_consecutive_bounds_the_false_alarm_rate_when_single_windows_breach_often(
    reference: Profile, consecutive: int
) -> None:
    # A deliberately loose configuration (pValue 0.3, no effect thresholds) makes single windows breach often; the
    # rate of actions stays under pValue ** consecutive, the budget `consecutive` buys (windows are independent).
    checks = 300
    loose = {"pValue": 0.3, "psi": 0.0, "wasserstein": 0.0, "jensenShannon": 0.0, "ks": 0.0}
    dm = monitor(consecutive=consecutive, cooldown="0s", thresholds=loose, window={"minSamples": 100,
                                                                                  "maxSamples": 400})
    _, verdicts, decisions = simulate(dm, reference, checks, lambda rng, i: [window(rng, 400)], seed=40 + consecutive)
    breaches = sum(v.drifted for v in verdicts) / checks
    actions = sum(d.act for d in decisions) / checks
    budget = 0.3**consecutive
    assert 0.05 < breaches <= 0.3 + three_sigma(0.3, checks)  # single windows do breach
    assert actions <= budget + three_sigma(budget, checks)
    assert actions < breaches / 2


@pytest.mark.parametrize("consecutive", [2, 3])
def test_a_real_shift_is_acted_on_within_consecutive_windows(reference: Profile, consecutive: int) -> None:
    # Mean shift of half a standard deviation in x1: PSI about 0.25 on the reference deciles.
    checks = consecutive + 1
    dm = monitor(consecutive=consecutive, actions=["Alert"])
    _, verdicts, decisions = simulate(dm, reference, checks,
                                      lambda rng, i: replicas(rng, 400, shift=0.5), seed=60 + consecutive)
    psi = [v.report.features[0].effect_size for v in verdicts]
    assert all(0.17 < p < 0.35 for p in psi), psi
    first = next(i for i, d in enumerate(decisions) if d.act)
    assert first == consecutive - 1  # acted on the `consecutive`-th window
    assert decisions[first].actions == (Action.alert,) and decisions[first].drifted_features == ("x1",)


def test_detection_delay_over_many_seeds(reference: Profile) -> None:
    # PSI ~0.25 with 1000-row windows: every run acts exactly at window `consecutive` (delay 3 checks).
    delays = []
    for seed in range(8):
        dm = monitor(consecutive=3)
        _, _, decisions = simulate(dm, reference, 5, lambda rng, i: [window(rng, 1000, shift=0.5)], seed=seed)
        delays.append(next((i + 1 for i, d in enumerate(decisions) if d.act), None))
    assert delays == [3] * 8
