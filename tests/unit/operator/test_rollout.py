"""Canary and BlueGreen planning: every transition, the gates on exact numbers, restart continuity, rollback
remembered. Pure: observations and status.rollout in, a plan out."""

from __future__ import annotations

import datetime as dt

import pytest

from mlsteward_operator.modeldeployment.rollout.canary import MAX_STEP_INTERVALS
from mlsteward_operator.modeldeployment.rollout.base import (
    Counters,
    Gates,
    Observed,
    RolloutSpec,
    RolloutState,
    VersionFacts,
)
from mlsteward_operator.modeldeployment.rollout.analysis import (
    Measurement,
    histogram_quantile,
    judge,
    measure,
    merge_counters,
)
from mlsteward_operator.modeldeployment.decide import plan_rollout

V1 = VersionFacts("iris-1", exists=True, model="iris", phase="Ready")
V2 = VersionFacts("iris-2", exists=True, model="iris", phase="Ready")
T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
GATES = Gates(max_error_rate=0.05, max_p99_latency_ms=100.0, min_requests=20)
CANARY = RolloutSpec(strategy="Canary", steps=(10, 50, 100), interval_s=30.0, gates=GATES)
READY = {"iris-1": True, "iris-2": True}


def buckets(**by_bound: int) -> dict[str, int]:
    """Cumulative histogram from per-bucket counts, keyed like the router's (`b5=3` -> bound 5)."""
    out, running = {}, 0
    for bound in ("0.5", "1", "2", "5", "10", "20", "50", "100", "200", "500", "1000", "+Inf"):
        running += by_bound.get("b" + bound.replace(".", "_").replace("+Inf", "inf"), 0)
        out[bound] = running
    return out


def stats(requests: int, errors: int = 0, *, replica: str = "r-a", started: float = 1000.0,
          hist: dict[str, int] | None = None) -> Counters:
    return Counters(replica, started, "iris-2", requests, errors, hist if hist is not None else buckets(b5=requests))


def step_state(step: int, started: dt.datetime | None = T0, baseline: tuple[Counters, ...] = ()) -> RolloutState:
    return RolloutState("Progressing", "iris-2", step, started, baseline)


def plan(observed: Observed, prev: RolloutState, now: dt.datetime = T0, spec: RolloutSpec = CANARY):
    return plan_rollout(V2, V1, observed, spec, prev, now)


def on(table: dict[str, int], *counters: Counters, ready: dict[str, bool] = READY) -> Observed:
    return Observed(predictor_ready=ready, router_table=table, router_stats=tuple(counters))


# ------------------------------------------------------------------------------------------------ measurement


def test_histogram_quantile_interpolates_within_the_bucket_like_prometheus():
    # 100 requests: 90 in (2, 5], 10 in (50, 100]; rank 99 falls in (50, 100] at 9/10 of the way.
    assert histogram_quantile(0.99, buckets(b5=90, b100=10)) == pytest.approx(95.0)
    assert histogram_quantile(0.5, buckets(b5=90, b100=10)) == pytest.approx(2 + 3 * 50 / 90)
    assert histogram_quantile(0.99, buckets(b0_5=10)) == pytest.approx(0.495)  # first bucket starts at 0
    assert histogram_quantile(0.99, buckets(binf=5)) == 1000.0  # +Inf: the highest finite bound
    assert histogram_quantile(0.99, buckets()) is None


def test_merge_counters_adds_every_count_across_replicas():
    merged = merge_counters([stats(10, 1, replica="a", hist=buckets(b5=10)),
                             stats(30, 2, replica="b", hist=buckets(b5=20, b100=10))])
    assert (merged.requests, merged.errors) == (40, 3)
    assert merged.latency_buckets["5"] == 30 and merged.latency_buckets["100"] == 40
    assert merged.latency_buckets["+Inf"] == 40


def test_measure_subtracts_each_replicas_baseline_and_counts_new_or_restarted_replicas_from_zero():
    baseline = (stats(100, 5, replica="a", hist=buckets(b5=100)),
                stats(50, 0, replica="b", started=1000.0, hist=buckets(b5=50)))
    now = (stats(130, 6, replica="a", hist=buckets(b5=120, b100=10)),           # +30 requests, +1 error
           stats(7, 0, replica="b", started=2000.0, hist=buckets(b5=7)),        # b restarted: all 7 count
           stats(3, 1, replica="c", hist=buckets(b5=3)))                        # new replica: all 3 count
    m = measure(now, baseline, "iris-2")
    assert (m.requests, m.errors, m.replicas) == (40, 2, 3)
    assert m.error_rate == pytest.approx(0.05)
    # Since the baselines: 20 + 7 + 3 = 30 in (2, 5], 10 in (50, 100] -> rank 39.6 at 9.6/10 of (50, 100].
    assert m.p99_latency_ms == pytest.approx(50 + 50 * 9.6 / 10)


def test_measure_treats_counters_below_the_baseline_as_a_reset_and_ignores_other_versions():
    other = Counters("a", 1000.0, "iris-1", 999, 999, buckets(binf=999))
    m = measure((stats(4, 0), other), (stats(10, 0),), "iris-2")
    assert (m.requests, m.errors) == (4, 0)
    assert measure((), (), "iris-2") is None


def test_judge_gates_on_exact_numbers():
    assert judge(Measurement(20, 1, 100.0, 1), GATES)[0] == "pass"  # 0.05 <= 0.05 and 100 <= 100
    verdict, why = judge(Measurement(20, 2, 50.0, 1), GATES)
    assert verdict == "fail" and why == "error rate 0.1 > 0.05"
    verdict, why = judge(Measurement(20, 0, 100.5, 1), GATES)
    assert verdict == "fail" and why == "p99 100.5 ms > 100 ms"
    assert judge(Measurement(19, 0, 1.0, 1), GATES) == ("wait", "19 of 20 requests")
    assert judge(Measurement(0, 0, None, 1), Gates(max_p99_latency_ms=1.0))[0] == "pass"  # nothing to hold against


# ------------------------------------------------------------------------------------------------ transitions


def test_immediate_strategy_and_first_deployment_are_unchanged():
    immediate = plan_rollout(V2, V1, Observed(predictor_ready=READY, router_on="iris-1"), RolloutSpec(),
                             RolloutState(), T0)
    assert (immediate.router_target, immediate.traffic, immediate.rollout) == ("iris-2", None, None)
    first = plan_rollout(V1, None, Observed(), CANARY, RolloutState(), T0)
    assert (first.live, first.router_target, first.serving, first.rollout) == (("iris-1",), "iris-1", None, None)


def test_canary_warms_the_new_version_with_all_traffic_on_stable():
    p = plan(Observed(predictor_ready={"iris-1": True, "iris-2": False}, router_table={"iris-1": 100}),
             RolloutState("Stable"))
    assert p.live == ("iris-1", "iris-2")
    assert p.router_target == "iris-1" and p.traffic is None
    assert (p.serving, p.stable) == ("iris-1", "iris-1")
    assert p.progressing.reason == "WarmingUp"
    assert p.rollout == RolloutState("Progressing", "iris-2", 0)


def test_canary_step_zero_splits_traffic_and_waits_for_the_router_before_the_clock_starts():
    p = plan(on({"iris-1": 100}), RolloutState("Progressing", "iris-2", 0))
    assert p.traffic == {"iris-1": 90, "iris-2": 10}
    assert p.fallback == "iris-1" and p.router_target == "iris-2"
    assert p.progressing.reason == "Stepping"
    assert p.rollout == RolloutState("Progressing", "iris-2", 0, None)


def test_step_begins_when_every_router_pod_runs_the_split_and_records_the_baseline():
    counted = stats(3, 0)
    p = plan(on({"iris-1": 90, "iris-2": 10}, counted, Counters("r-a", 1000.0, "iris-1", 50, 0)),
             RolloutState("Progressing", "iris-2", 0), now=T0 + dt.timedelta(microseconds=700))
    assert p.rollout == RolloutState("Progressing", "iris-2", 0, T0, (counted,))
    assert p.progressing.reason == "Analysing"
    assert p.traffic == {"iris-1": 90, "iris-2": 10}
    assert (p.serving, p.stable, p.decisions) == ("iris-1", "iris-1", ())


def test_step_is_not_judged_before_its_interval():
    p = plan(on({"iris-1": 90, "iris-2": 10}, stats(500, 500)), step_state(0), now=T0 + dt.timedelta(seconds=29))
    assert p.rollout == step_state(0) and p.decisions == ()
    assert p.degraded is None and p.progressing.message == "step 1/3 (10% to iris-2) began; judged after 30s"
    # The same message all step long: status is not rewritten on every reconcile.
    assert plan(on({"iris-1": 90, "iris-2": 10}), step_state(0), now=T0 + dt.timedelta(seconds=1)) == p


def test_passed_step_moves_to_the_next_split_and_records_the_numbers():
    p = plan(on({"iris-1": 90, "iris-2": 10}, stats(40, 1, hist=buckets(b5=40))), step_state(0, baseline=(stats(0),)),
             now=T0 + dt.timedelta(seconds=30))
    assert p.traffic == {"iris-1": 50, "iris-2": 50} and p.fallback == "iris-1"
    assert p.rollout == RolloutState("Progressing", "iris-2", 1)
    assert p.progressing.reason == "Stepping"
    (d,) = p.decisions
    assert (d.kind, d.from_, d.to, d.reason, d.git_version) == ("Rollout", "iris-1", "iris-2", "StepPassed", None)
    assert d.numbers == {"step": 0, "weight": 10, "requests": 40, "errors": 1, "errorRate": 0.025,
                         "replicas": 1, "p99LatencyMs": pytest.approx(2 + 3 * 39.6 / 40)}
    assert d.thresholds == {"minRequests": 20, "maxErrorRate": 0.05, "maxP99LatencyMs": 100.0}


def test_last_step_keeps_stable_as_fallback_then_promotion_switches_like_immediate():
    table = {"iris-1": 0, "iris-2": 100}
    assert plan(on(table), RolloutState("Progressing", "iris-2", 2)).traffic == table
    passed = plan(on(table, stats(40)), step_state(2), now=T0 + dt.timedelta(seconds=30))
    assert passed.decisions[0].message.endswith("promoting it")
    assert passed.traffic is None and passed.router_target == "iris-2" and passed.fallback is None
    assert passed.rollout == RolloutState("Progressing", "iris-2", 3)
    assert (passed.live, passed.serving, passed.stable) == (("iris-1", "iris-2"), "iris-1", "iris-1")

    # router_on reads iris-2 from {iris-1: 0, iris-2: 100}, but those router pods still fall back to iris-1.
    switching = plan(Observed(predictor_ready=READY, router_on="iris-2", router_table=table),
                     RolloutState("Progressing", "iris-2", 3))
    assert switching.live == ("iris-1", "iris-2")
    assert switching.router_target == "iris-2" and switching.serving == "iris-1"
    assert switching.rollout == RolloutState("Progressing", "iris-2", 3)

    done = plan(Observed(predictor_ready=READY, router_on="iris-2", router_table={"iris-2": 100}),
                RolloutState("Progressing", "iris-2", 3))
    assert (done.live, done.router_target, done.serving, done.stable) == (("iris-2",), "iris-2", "iris-2", "iris-2")
    assert done.rollout is None and done.progressing is None  # status derives Stable, as for Immediate


def test_failed_gate_rolls_back_to_stable_with_the_numbers_and_the_git_change():
    slow = stats(40, 0, hist=buckets(b200=40))
    p = plan(on({"iris-1": 50, "iris-2": 50}, slow), step_state(1), now=T0 + dt.timedelta(seconds=31))
    assert p.traffic is None and p.router_target == "iris-1" and p.fallback is None
    assert p.live == ("iris-1", "iris-2")  # the canary stays until every router pod has left it
    assert (p.serving, p.stable) == ("iris-1", "iris-1")
    assert p.rollout == RolloutState("RolledBack", "iris-2", 1, T0)
    assert p.degraded.reason == "AnalysisFailed" and p.progressing.reason == "RollingBack"
    (d,) = p.decisions
    assert (d.kind, d.from_, d.to, d.reason, d.git_version) == ("Rollback", "iris-2", "iris-1", "AnalysisFailed",
                                                                 "iris-1")
    assert d.numbers["p99LatencyMs"] == pytest.approx(199.0) and d.numbers["requests"] == 40
    assert d.thresholds["maxP99LatencyMs"] == 100.0
    assert "p99 199 ms > 100 ms" in d.message


def test_rollback_is_remembered_until_spec_version_changes():
    rolled = RolloutState("RolledBack", "iris-2", 1, T0)
    rolling = plan(on({"iris-1": 50, "iris-2": 50}), rolled, now=T0 + dt.timedelta(hours=1))
    assert rolling.live == ("iris-1", "iris-2") and rolling.router_target == "iris-1"
    back = plan(on({"iris-1": 100}), rolled, now=T0 + dt.timedelta(hours=1))
    assert (back.live, back.router_target, back.serving, back.traffic) == (("iris-1",), "iris-1", "iris-1", None)
    assert back.rollout == rolled and back.decisions == () and back.progressing is None
    assert back.degraded.reason == "AnalysisFailed"

    v3 = VersionFacts("iris-3", exists=True, model="iris", phase="Ready")
    fresh = plan_rollout(v3, V1, Observed(predictor_ready={"iris-1": True, "iris-3": True},
                                          router_table={"iris-1": 100}), CANARY, rolled, T0)
    assert fresh.rollout == RolloutState("Progressing", "iris-3", 0)
    assert fresh.traffic == {"iris-1": 90, "iris-3": 10}


def test_too_few_requests_extend_the_step_then_fail_it():
    few = on({"iris-1": 90, "iris-2": 10}, stats(5))
    waiting = plan(few, step_state(0), now=T0 + dt.timedelta(seconds=60))
    assert waiting.progressing.reason == "WaitingForTraffic" and waiting.decisions == ()
    assert waiting.rollout == step_state(0)
    failed = plan(few, step_state(0), now=T0 + dt.timedelta(seconds=30 * MAX_STEP_INTERVALS))
    (d,) = failed.decisions
    assert (d.kind, d.reason) == ("Rollback", "NotEnoughTraffic")
    assert failed.rollout.phase == "RolledBack"


def test_unreadable_router_stats_hold_the_step_then_fail_it():
    silent = Observed(predictor_ready=READY, router_table={"iris-1": 90, "iris-2": 10}, router_stats=())
    assert plan(silent, step_state(0), now=T0 + dt.timedelta(seconds=30)).progressing.reason == "WaitingForTraffic"
    failed = plan(silent, step_state(0), now=T0 + dt.timedelta(seconds=90))
    assert failed.decisions[0].reason == "AnalysisUnavailable" and failed.rollout.phase == "RolledBack"


def test_failed_gate_without_rollback_holds_the_split_and_stays_paused():
    spec = RolloutSpec(strategy="Canary", steps=(10, 50, 100), interval_s=30.0, gates=GATES, rollback=False)
    observed = on({"iris-1": 90, "iris-2": 10}, stats(40, 40))
    p = plan(observed, step_state(0), now=T0 + dt.timedelta(seconds=30), spec=spec)
    assert p.traffic == {"iris-1": 90, "iris-2": 10} and p.live == ("iris-1", "iris-2")
    assert p.rollout.phase == "Paused" and p.degraded.reason == "AnalysisFailed"
    (d,) = p.decisions
    assert (d.kind, d.from_, d.to, d.git_version) == ("Hold", "iris-1", "iris-1", "iris-1")
    again = plan(observed, p.rollout, now=T0 + dt.timedelta(hours=1), spec=spec)
    assert again.decisions == () and again.rollout.phase == "Paused" and again.traffic == p.traffic


def test_a_restarted_operator_continues_the_same_step_from_status():
    """Two reconciles from the same status and observations decide the same; nothing else is remembered."""
    prev = step_state(1, baseline=(stats(100),))
    observed = on({"iris-1": 50, "iris-2": 50}, stats(125))
    before = plan(observed, prev, now=T0 + dt.timedelta(seconds=10))
    after_restart = plan(observed, prev, now=T0 + dt.timedelta(seconds=10))
    assert before == after_restart and before.rollout == prev
    judged = plan(observed, prev, now=T0 + dt.timedelta(seconds=30))
    assert judged.decisions[0].numbers["requests"] == 25  # measured from the baseline in status, not from zero
    assert judged.rollout == RolloutState("Progressing", "iris-2", 2)


def test_spec_version_changed_mid_canary_starts_over_for_the_new_version():
    v3 = VersionFacts("iris-3", exists=True, model="iris", phase="Ready")
    p = plan_rollout(v3, V1, Observed(predictor_ready={"iris-1": True, "iris-3": False}), CANARY, step_state(1), T0)
    assert p.rollout == RolloutState("Progressing", "iris-3", 0) and p.progressing.reason == "WarmingUp"
    assert p.live == ("iris-1", "iris-3")


def test_blue_green_waits_for_every_replica_then_switches_in_one_step():
    spec = RolloutSpec(strategy="BlueGreen", interval_s=30.0, gates=Gates(max_error_rate=0.0))
    partly = Observed(predictor_ready=READY, predictor_full={"iris-1": True, "iris-2": False},
                      router_table={"iris-1": 100})
    warming = plan(partly, RolloutState("Stable"), spec=spec)
    assert warming.progressing.reason == "WarmingUp" and warming.traffic is None
    assert warming.router_target == "iris-1"
    full = Observed(predictor_ready=READY, predictor_full=READY, router_table={"iris-1": 100})
    switching = plan(full, RolloutState("Progressing", "iris-2", 0), spec=spec)
    assert switching.traffic == {"iris-1": 0, "iris-2": 100} and switching.fallback == "iris-1"
    # After the switch the old version stays warm; a failed analysis goes straight back.
    on_new = Observed(predictor_ready=READY, predictor_full=READY, router_table={"iris-1": 0, "iris-2": 100},
                      router_stats=(stats(10, 1),))
    failed = plan(on_new, step_state(0), now=T0 + dt.timedelta(seconds=30), spec=spec)
    assert failed.decisions[0].kind == "Rollback" and failed.router_target == "iris-1"
    passed = plan(Observed(predictor_ready=READY, predictor_full=READY, router_table={"iris-1": 0, "iris-2": 100},
                           router_stats=(stats(10),)), step_state(0), now=T0 + dt.timedelta(seconds=30), spec=spec)
    assert passed.rollout == RolloutState("Progressing", "iris-2", 1) and passed.router_target == "iris-2"


def test_a_version_that_cannot_be_served_is_not_canaried():
    pending = VersionFacts("iris-2", exists=True, model="iris", phase="Validating")
    p = plan_rollout(pending, V1, Observed(predictor_ready={"iris-1": True}, router_on="iris-1"), CANARY,
                     RolloutState("Stable"), T0)
    assert (p.live, p.router_target, p.traffic, p.rollout) == (("iris-1",), "iris-1", None, None)
    assert p.degraded.reason == "VersionNotReady"


def test_every_strategy_of_the_api_has_its_module_behind_one_interface():
    from mlsteward_operator.api.modeldeployment import RolloutStrategy
    from mlsteward_operator.modeldeployment.rollout import strategy_for
    from mlsteward_operator.modeldeployment.rollout.base import Strategy

    for value in RolloutStrategy:
        strategy = strategy_for(value.value)
        assert isinstance(strategy, Strategy) and strategy.name == value.value
        assert type(strategy).__module__.rsplit(".", 1)[1] == value.value.lower()
    assert [strategy_for(v.value).measures_traffic for v in RolloutStrategy] == [
        v.value != "Immediate" for v in RolloutStrategy]
