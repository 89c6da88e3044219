"""Experiment analysis: restart-safe merging of router counters, the statistics (against statsmodels), the stopping
rules, the winner and the promotion as data, and the status, including simulations of whole experiments."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pytest
from mlsteward_runtime.contracts import RouterStats, VersionStats
from mlsteward_runtime.stats.ab import ArmStats
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_chisquare,
    proportions_ztest,
)
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttest_ind

from mlsteward_operator.experiment import analysis as exa
from mlsteward_operator.experiment import decide as ex
from mlsteward_operator.modeldeployment import status as st
from mlsteward_operator.api import Experiment, ModelDeployment
from mlsteward_operator.api.experiment import ExperimentPhase, ExperimentStatus
from mlsteward_operator.api.modeldeployment import DecisionKind

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def make_exp(
    *,
    variants: tuple[tuple[str, str, int], ...] = (("control", "iris-v1", 50), ("treatment", "iris-v2", 50)),
    kind: str = "binary",
    goal: str = "maximize",
    stopping: dict[str, Any] | None = None,
    on_success: str = "Promote",
    strategy: str = "Weighted",
    sticky: dict[str, str] | None = None,
    uid: str = "0b7c1a52-5f3e-4a8e-9d1c-2f0e5a6b7c8d",
    status: dict[str, Any] | None = None,
) -> Experiment:
    spec: dict[str, Any] = {
        "deployment": "iris",
        "variants": [{"name": n, "version": v, "weight": w} for n, v, w in variants],
        "metric": {"name": "reward" if kind == "continuous" else "accuracy", "kind": kind, "goal": goal},
        "stopping": {"confidence": 0.95, "minSamplesPerVariant": 100, "sequential": True, **(stopping or {})},
        "onSuccess": on_success,
        "strategy": {"type": strategy},
    }
    if sticky:
        spec["sticky"] = sticky
    body = {"metadata": {"name": "iris-ab", "namespace": "ml", "uid": uid, "generation": 3}, "spec": spec}
    if status is not None:
        body["status"] = status
    return Experiment.model_validate(body)


def report(replica: str, started: float, counters: dict[str, tuple[int, float, float, int]]) -> RouterStats:
    """counters: version -> (outcomes, sum, sumsq, requests)."""
    return RouterStats(
        deployment="iris", replica=replica, started=started,
        versions={v: VersionStats(version=v, requests=r, outcomes=n, outcome_sum=s, outcome_sumsq=q)
                  for v, (n, s, q, r) in counters.items()},
    )


def binary(n: int, s: int, requests: int | None = None) -> tuple[int, float, float, int]:
    return n, float(s), float(s), n if requests is None else requests


def totals_of(**arms: tuple[int, float, float, int]) -> dict[str, exa.VersionTotals]:
    return {v: exa.VersionTotals(r, ArmStats(n, s, q)) for v, (n, s, q, r) in arms.items()}


def look(exp: Experiment, totals: dict[str, exa.VersionTotals], now: dt.datetime
         ) -> tuple[ExperimentStatus, exa.ExperimentAnalysis, ex.ExperimentDecision]:
    analysis = exa.analyse(exp, totals, now)
    decision = ex.decide(exp, analysis, now)
    return ex.compute_status(exp, analysis, decision, now), analysis, decision


def with_status(exp: Experiment, status: ExperimentStatus) -> Experiment:
    # Through the API server's JSON, as the operator reads it back after a write (or after its own restart).
    return Experiment.model_validate({**exp.to_k8s(), "status": status.to_k8s()})


# ---- merging router counters ---------------------------------------------------------------------------------


def test_merge_sums_replicas_and_reading_the_same_counters_again_adds_nothing() -> None:
    reports = [report("r-a", 100.0, {"iris-v1": binary(10, 3, 12), "iris-v2": binary(8, 5, 11)}),
               report("r-b", 120.0, {"iris-v1": binary(4, 1, 5), "iris-v2": binary(6, 6, 6)})]
    totals, cps = ex.merge_router_stats(ExperimentStatus(), reports)
    assert totals["iris-v1"] == exa.VersionTotals(17, ArmStats(14, 4.0, 4.0))
    assert totals["iris-v2"] == exa.VersionTotals(17, ArmStats(14, 11.0, 11.0))
    assert [(c.replica, c.started) for c in cps] == [("r-a", 100.0), ("r-b", 120.0)]
    status = ExperimentStatus(variants=_variants(totals), checkpoints=cps)
    again, _ = ex.merge_router_stats(status, reports)
    assert again == totals


def _variants(totals: dict[str, exa.VersionTotals]) -> list[Any]:
    from mlsteward_operator.api.experiment import VariantStatus

    return [VariantStatus(name=v, version=v, requests=t.requests, outcomes=t.outcomes.n,
                          outcome_sum=t.outcomes.sum, outcome_sumsq=t.outcomes.sumsq) for v, t in totals.items()]


def test_a_router_restart_adds_its_new_counts_instead_of_losing_or_doubling_them() -> None:
    status = ExperimentStatus()
    polls = [
        [report("r-a", 100.0, {"iris-v1": binary(50, 10)}), report("r-b", 100.0, {"iris-v1": binary(30, 3)})],
        # r-a restarted (new `started`): its counters start again from zero.
        [report("r-a", 500.0, {"iris-v1": binary(7, 2)}), report("r-b", 100.0, {"iris-v1": binary(40, 4)})],
        [report("r-a", 500.0, {"iris-v1": binary(12, 4)}), report("r-b", 100.0, {"iris-v1": binary(40, 4)})],
        # A late answer of r-a's old process is ignored.
        [report("r-a", 100.0, {"iris-v1": binary(60, 12)})],
    ]
    for reports in polls:
        totals, cps = ex.merge_router_stats(status, reports)
        status = ExperimentStatus(variants=_variants(totals), checkpoints=cps)
    # 50 before r-a's restart + 12 after it + r-b's 40: nothing lost, nothing counted twice.
    assert totals["iris-v1"].outcomes == ArmStats(102, 18.0, 18.0)
    assert totals["iris-v1"].requests == 102
    # The dead process's checkpoint is dropped; its counts live on in the totals.
    assert [(c.replica, c.started) for c in status.checkpoints] == [("r-a", 500.0), ("r-b", 100.0)]


def test_a_replica_that_misses_a_poll_loses_nothing() -> None:
    status = ExperimentStatus()
    for reports in ([report("r-a", 1.0, {"v": binary(10, 1)}), report("r-b", 1.0, {"v": binary(10, 2)})],
                    [report("r-a", 1.0, {"v": binary(20, 2)})],
                    [report("r-a", 1.0, {"v": binary(25, 3)}), report("r-b", 1.0, {"v": binary(30, 9)})]):
        totals, cps = ex.merge_router_stats(status, reports)
        status = ExperimentStatus(variants=_variants(totals), checkpoints=cps)
    assert totals["v"].outcomes == ArmStats(55, 12.0, 12.0)


def test_counts_from_before_the_split_are_a_baseline_not_part_of_the_experiment() -> None:
    since = 1000.0
    # r-a served iris-v1 alone for a long time before the experiment; r-b started after the split.
    first = [report("r-a", 10.0, {"iris-v1": binary(5000, 900)}), report("r-b", 1001.0, {"iris-v1": binary(3, 1)})]
    totals, cps = ex.merge_router_stats(ExperimentStatus(), first, since=since)
    assert totals["iris-v1"].outcomes.n == 3
    status = ExperimentStatus(variants=_variants(totals), checkpoints=cps)
    totals, _ = ex.merge_router_stats(
        status, [report("r-a", 10.0, {"iris-v1": binary(5010, 902), "iris-v2": binary(9, 4)})], since=since)
    assert totals["iris-v1"].outcomes == ArmStats(13, 3.0, 3.0)
    assert totals["iris-v2"].outcomes == ArmStats(9, 4.0, 4.0)


def test_only_the_experiments_versions_are_counted_and_checkpoints_stay_bounded() -> None:
    reports = [report(f"r-{i:03d}", float(i), {"iris-v1": binary(1, 1), "other": binary(5, 5)})
               for i in range(ex.MAX_CHECKPOINTS + 10)]
    totals, cps = ex.merge_router_stats(ExperimentStatus(), reports, arms={"iris-v1": "control"})
    assert set(totals) == {"iris-v1"} and totals["iris-v1"].outcomes.n == ex.MAX_CHECKPOINTS + 10
    assert len(cps) == ex.MAX_CHECKPOINTS and min(c.started for c in cps) == 10.0  # the newest are kept
    assert {v.name for c in cps for v in c.variants} == {"control"}


def test_an_operator_restart_recomputes_the_same_totals_and_status() -> None:
    rng = np.random.default_rng(7)
    exp = make_exp(stopping={"minSamplesPerVariant": 10_000})
    cum = {("r-a", 1.0): {"iris-v1": [0, 0], "iris-v2": [0, 0]}, ("r-b", 1.0): {"iris-v1": [0, 0], "iris-v2": [0, 0]}}
    polls = []
    for k in range(8):
        if k == 4:  # r-b restarts between polls 4 and 5
            cum[("r-b", 50.0)] = {"iris-v1": [0, 0], "iris-v2": [0, 0]}
            del cum[("r-b", 1.0)]
        for counters in cum.values():
            for version, c in counters.items():
                n = int(rng.integers(20, 40))
                c[0] += n
                c[1] += int(rng.binomial(n, 0.2))
        polls.append([report(r, s, {v: binary(n, x) for v, (n, x) in c.items()}) for (r, s), c in cum.items()])

    def run(exp: Experiment, polls: list[list[RouterStats]], restart_after: int | None) -> ExperimentStatus:
        for k, reports in enumerate(polls):
            now = T0 + dt.timedelta(minutes=k)
            totals, cps = ex.merge_router_stats(exp.status, reports)
            analysis = exa.analyse(exp, totals, now)
            status = ex.compute_status(exp, analysis, ex.decide(exp, analysis, now), now, checkpoints=cps)
            exp = with_status(exp, status)
            if restart_after == k:
                # A fresh operator: only what the API server holds, and it reads the same routers again.
                exp = Experiment.model_validate(exp.to_k8s())
                totals, cps = ex.merge_router_stats(exp.status, reports)
                analysis = exa.analyse(exp, totals, now)
                exp = with_status(exp, ex.compute_status(exp, analysis, ex.decide(exp, analysis, now), now,
                                                         checkpoints=cps))
        return exp.status

    straight, restarted = run(exp, polls, None), run(exp, polls, 5)
    assert restarted == straight
    true_n = sum(c["iris-v1"][0] for c in cum.values())
    assert straight.variants[0].outcomes > true_n  # includes r-b's first process as well
    assert straight.phase == ExperimentPhase.running and straight.p_value is not None


# ---- statistics against statsmodels --------------------------------------------------------------------------


def test_binary_statistics_match_statsmodels_on_counts_merged_across_replicas() -> None:
    rng = np.random.default_rng(1)
    c, t = rng.binomial(1, 0.30, 700), rng.binomial(1, 0.36, 650)
    reports = [
        report("r-a", 1.0, {"iris-v1": binary(400, int(c[:400].sum())), "iris-v2": binary(300, int(t[:300].sum()))}),
        report("r-b", 1.0, {"iris-v1": binary(300, int(c[400:].sum())), "iris-v2": binary(350, int(t[300:].sum()))}),
    ]
    totals, _ = ex.merge_router_stats(ExperimentStatus(), reports)
    a = exa.analyse(make_exp(stopping={"sequential": False}), totals, T0)
    (cmp,) = a.comparisons
    z, p = proportions_ztest([t.sum(), c.sum()], [t.size, c.size])
    assert cmp.test == "two-proportion-z" and a.test == "two-proportion-z"
    assert cmp.statistic == pytest.approx(z, rel=1e-9) and cmp.p_value == pytest.approx(p, rel=1e-9)
    assert a.p_value == pytest.approx(p, rel=1e-9)
    lo, hi = confint_proportions_2indep(t.sum(), t.size, c.sum(), c.size, method="wald", compare="diff")
    assert cmp.ci95 == pytest.approx((lo, hi), rel=1e-9)
    assert cmp.difference == pytest.approx(t.mean() - c.mean())
    assert cmp.lift == pytest.approx((t.mean() - c.mean()) / c.mean())
    assert cmp.effect_size == pytest.approx(2 * math.asin(math.sqrt(t.mean())) - 2 * math.asin(math.sqrt(c.mean())))
    for arm, x in zip(a.arms, (c, t)):
        assert (arm.stats.n, arm.mean) == (x.size, pytest.approx(x.mean()))
        assert arm.ci95 == pytest.approx(proportion_confint(x.sum(), x.size, method="wilson"), rel=1e-9)
        assert (arm.posterior.alpha, arm.posterior.beta) == (1 + x.sum(), 1 + x.size - x.sum())
    assert sum(arm.probability_best for arm in a.arms) == pytest.approx(1.0)


def test_continuous_statistics_match_statsmodels_welch() -> None:
    rng = np.random.default_rng(2)
    c, t = rng.normal(1.0, 2.0, 400), rng.normal(1.3, 3.0, 250)
    totals = {"iris-v1": exa.VersionTotals(400, ArmStats.from_values(c)),
              "iris-v2": exa.VersionTotals(250, ArmStats.from_values(t))}
    a = exa.analyse(make_exp(kind="continuous", stopping={"sequential": False}), totals, T0)
    (cmp,) = a.comparisons
    tstat, p, _df = ttest_ind(t, c, usevar="unequal")
    assert cmp.test == "welch-t"
    assert cmp.statistic == pytest.approx(tstat, rel=1e-7) and cmp.p_value == pytest.approx(p, rel=1e-7)
    lo, hi = CompareMeans(DescrStatsW(t), DescrStatsW(c)).tconfint_diff(usevar="unequal")
    assert cmp.ci95 == pytest.approx((lo, hi), rel=1e-7)
    assert a.arms[1].posterior.sd == pytest.approx(t.std(ddof=1) / math.sqrt(t.size))
    assert a.arms[0].ci95 == pytest.approx(DescrStatsW(c).tconfint_mean(), rel=1e-7)


def test_chi_square_across_three_binary_arms_matches_statsmodels() -> None:
    exp = make_exp(variants=(("control", "v1", 34), ("b", "v2", 33), ("c", "v3", 33)), stopping={"sequential": False})
    totals = totals_of(v1=binary(500, 100), v2=binary(480, 120), v3=binary(510, 90))
    a = exa.analyse(exp, totals, T0)
    chi2, p, _ = proportions_chisquare([100, 120, 90], [500, 480, 510])
    assert a.chi_square[0] == pytest.approx(chi2) and a.chi_square[1] == pytest.approx(p)
    assert (a.test, a.p_value) == ("chi-square", pytest.approx(p))
    assert len(a.comparisons) == 2


def test_probability_best_is_reproducible_and_follows_the_goal() -> None:
    totals = totals_of(**{"iris-v1": binary(300, 60), "iris-v2": binary(300, 70)})
    first, second = exa.analyse(make_exp(), totals, T0), exa.analyse(make_exp(), totals, T0)
    assert [a.probability_best for a in first.arms] == [a.probability_best for a in second.arms]
    assert first.leader == "treatment"
    bare = exa.analyse(make_exp(), {v: t.outcomes for v, t in totals.items()}, T0)  # ArmStats alone also do
    assert bare.arms == first.arms and bare.p_value == first.p_value
    minimize = exa.analyse(make_exp(goal="minimize"), totals, T0)
    assert minimize.leader == "control"
    assert minimize.arms[0].probability_best == pytest.approx(first.arms[1].probability_best, abs=0.02)
    assert first.comparisons[0].better is True and minimize.comparisons[0].better is False


def test_sequential_p_value_is_carried_from_status_and_never_rises() -> None:
    exp = make_exp(stopping={"minSamplesPerVariant": 10**6})
    status, a1, _ = look(exp, totals_of(**{"iris-v1": binary(400, 80), "iris-v2": binary(400, 112)}), T0)
    assert status.test == "msprt two-proportion-z" and a1.p_value < 0.5
    # The difference then vanishes; the always-valid p-value keeps its minimum.
    exp = with_status(exp, status)
    _, a2, _ = look(exp, totals_of(**{"iris-v1": binary(800, 160), "iris-v2": binary(800, 161)}), T0)
    assert a2.comparisons[0].sequential_p > a1.p_value
    assert a2.p_value == a1.p_value


# ---- decisions -------------------------------------------------------------------------------------------------


def test_min_samples_per_variant_is_respected_however_large_the_effect() -> None:
    exp = make_exp(stopping={"minSamplesPerVariant": 500})
    _, a, d = look(exp, totals_of(**{"iris-v1": binary(499, 50), "iris-v2": binary(600, 400)}), T0)
    assert a.comparisons[0].significant
    assert (d.phase, d.reason, d.winner, d.promotion) == (ExperimentPhase.running, "CollectingSamples", None, None)
    _, _, d = look(exp, totals_of(**{"iris-v1": binary(500, 50), "iris-v2": binary(600, 400)}), T0)
    assert (d.phase, d.winner) == (ExperimentPhase.concluded, "treatment")


def test_sample_ratio_mismatch_stops_the_experiment_instead_of_concluding() -> None:
    exp = make_exp()
    totals = totals_of(**{"iris-v1": binary(1000, 100, 5600), "iris-v2": binary(1000, 300, 4400)})
    status, a, d = look(exp, totals, T0)
    assert a.srm.mismatch and a.comparisons[0].significant
    assert (d.phase, d.reason, d.winner, d.promotion) == (ExperimentPhase.stopped, "SampleRatioMismatch", None, None)
    conds = {c.type: c for c in status.conditions}
    assert conds["Degraded"].status == "True" and conds["Ready"].status == "False"
    assert status.sample_ratio.mismatch and status.sample_ratio.p_value < exa.SRM_ALPHA
    assert status.concluded_at == T0 and status.winner is None
    # A bandit moves the split on purpose, so the same counts are no mismatch there.
    _, a, d = look(make_exp(strategy="ThompsonSampling"), totals, T0)
    assert a.srm is None and "moves the split" in a.srm_skipped and d.phase == ExperimentPhase.concluded
    # Nor with sticky assignment, which splits users rather than requests.
    _, a, _ = look(make_exp(sticky={"header": "x-user"}), totals, T0)
    assert a.srm is None


def test_a_matching_split_is_no_mismatch() -> None:
    _, a, d = look(make_exp(), totals_of(**{"iris-v1": binary(200, 20, 5030), "iris-v2": binary(200, 22, 4970)}), T0)
    assert a.srm is not None and not a.srm.mismatch and d.phase == ExperimentPhase.running


def test_a_winner_with_promote_yields_the_promotion_as_data() -> None:
    exp = make_exp()
    status, a, d = look(exp, totals_of(**{"iris-v1": binary(2000, 200), "iris-v2": binary(2000, 300)}), T0)
    assert (d.phase, d.reason, d.winner) == (ExperimentPhase.concluded, "WinnerFound", "treatment")
    p = d.promotion
    assert (p.deployment, p.namespace, p.arm, p.version) == ("iris", "ml", "treatment", "iris-v2")
    rec = p.decision
    assert (rec.kind, rec.from_, rec.to, rec.reason) == (DecisionKind.promote, "iris-v1", "iris-v2",
                                                         "ExperimentConcluded")
    md = ModelDeployment.model_validate({"metadata": {"name": "iris", "namespace": "ml"},
                                         "spec": {"version": "iris-v1"}})
    assert rec.git_change == st.git_change(md, "iris-v2")
    assert rec.numbers["pValue"] == a.comparisons[0].sequential_p < 0.05
    assert rec.numbers["effect"] == pytest.approx(0.05)
    assert rec.numbers["effectLower"] > 0 and rec.numbers["controlSamples"] == 2000
    assert rec.thresholds == {"alpha": pytest.approx(0.05), "confidence": 0.95, "minSamplesPerVariant": 100.0,
                              "srmAlpha": exa.SRM_ALPHA}
    assert st.append_decision([], rec)[-1] == rec  # fits the ModelDeployment's decision log as it is
    assert (status.phase, status.winner, status.concluded_at) == (ExperimentPhase.concluded, "treatment", T0)
    assert status.effect == pytest.approx(0.05) and status.effect_ci.lower > 0
    # Report only reports.
    _, _, d = look(make_exp(on_success="Report"), totals_of(**{"iris-v1": binary(2000, 200),
                                                                "iris-v2": binary(2000, 300)}), T0)
    assert d.winner == "treatment" and d.promotion is None


def test_minimize_goal_picks_the_lower_arm_and_a_worse_treatment_leaves_control_the_winner() -> None:
    totals = totals_of(**{"iris-v1": binary(2000, 300), "iris-v2": binary(2000, 200)})
    _, _, d = look(make_exp(goal="minimize"), totals, T0)
    assert (d.winner, d.promotion.version) == ("treatment", "iris-v2")
    _, _, d = look(make_exp(goal="maximize"), totals, T0)
    assert (d.phase, d.reason, d.winner, d.promotion) == (ExperimentPhase.concluded, "ControlWins", "control", None)


def test_fixed_horizon_is_analysed_once_at_the_minimum_sample_size() -> None:
    exp = make_exp(stopping={"sequential": False, "minSamplesPerVariant": 1000})
    status, a, d = look(exp, totals_of(**{"iris-v1": binary(1000, 100), "iris-v2": binary(1000, 110)}), T0)
    assert a.test == "two-proportion-z" and a.p_value > 0.05
    assert (d.phase, d.reason, d.winner) == (ExperimentPhase.concluded, "NoSignificantDifference", None)
    # Later looks change nothing: the result is final.
    exp = with_status(exp, status)
    later, _, d = look(exp, totals_of(**{"iris-v1": binary(5000, 500), "iris-v2": binary(5000, 700)}), T0)
    assert (d.phase, d.winner, later.p_value, later.variants) == (ExperimentPhase.concluded, None, status.p_value,
                                                                   status.variants)


def test_three_arms_the_best_significant_treatment_wins() -> None:
    exp = make_exp(variants=(("control", "v1", 34), ("b", "v2", 33), ("c", "v3", 33)))
    _, a, d = look(exp, totals_of(v1=binary(3000, 300, 3060), v2=binary(3000, 390, 2970), v3=binary(3000, 450, 2970)),
                   T0)
    assert [c.significant for c in a.comparisons] == [True, True]
    assert (d.winner, d.promotion.version) == ("c", "v3")


def test_max_duration_stops_without_a_conclusion() -> None:
    exp = make_exp(stopping={"maxDuration": "2h"}, status={"startedAt": T0.isoformat(), "phase": "Running"})
    totals = totals_of(**{"iris-v1": binary(300, 30), "iris-v2": binary(300, 31)})
    _, _, d = look(exp, totals, T0 + dt.timedelta(hours=1, minutes=59))
    assert (d.phase, d.reason) == (ExperimentPhase.running, "NotSignificantYet")
    status, _, d = look(exp, totals, T0 + dt.timedelta(hours=2))
    assert (d.phase, d.reason, d.winner) == (ExperimentPhase.stopped, "MaxDurationReached", None)
    assert status.started_at == T0
    _, _, d = look(exp, totals_of(**{"iris-v1": binary(50, 5), "iris-v2": binary(50, 6)}), T0 + dt.timedelta(hours=3))
    assert (d.phase, d.reason) == (ExperimentPhase.stopped, "MaxDurationReached")


def test_status_conditions_and_a_concluded_result_survive_later_looks() -> None:
    exp = make_exp(stopping={"minSamplesPerVariant": 500})
    status, _, d = look(exp, {}, T0)
    assert (status.phase, d.reason, status.started_at, status.observed_generation) == (
        ExperimentPhase.running, "WaitingForOutcomes", T0, 3)
    conds = {c.type: c for c in status.conditions}
    assert (conds["Ready"].status, conds["Progressing"].status, conds["Degraded"].status) == ("True", "True", "False")
    exp = with_status(exp, status)
    status, _, d = look(exp, totals_of(**{"iris-v1": binary(100, 10), "iris-v2": binary(100, 12)}),
                        T0 + dt.timedelta(minutes=1))
    assert d.reason == "CollectingSamples"
    assert {c.type: c.last_transition_time for c in status.conditions}["Progressing"] == T0  # no flip, no move
    exp = with_status(exp, status)
    win = totals_of(**{"iris-v1": binary(3000, 300), "iris-v2": binary(3000, 420)})
    done, _, d = look(exp, win, T0 + dt.timedelta(minutes=2))
    progressing = {c.type: c for c in done.conditions}["Progressing"]
    assert (progressing.status, progressing.last_transition_time) == ("False", T0 + dt.timedelta(minutes=2))
    exp = with_status(exp, done)
    # After the conclusion, other numbers (say, late feedback) change nothing and the promotion is still there.
    again, _, d = look(exp, totals_of(**{"iris-v1": binary(3000, 300), "iris-v2": binary(3000, 290)}),
                       T0 + dt.timedelta(minutes=3))
    assert again == done
    assert (d.phase, d.winner, d.promotion.version) == (ExperimentPhase.concluded, "treatment", "iris-v2")
    assert d.promotion.decision.time == T0 + dt.timedelta(minutes=2)


# ---- simulations -----------------------------------------------------------------------------------------------


def _simulate(exp: Experiment, rates: tuple[float, float], batches: int, batch: int,
              rng: np.random.Generator) -> tuple[ExperimentStatus, ex.ExperimentDecision, int]:
    """An experiment fed by one router replica, analysed after every batch, until it concludes or stops."""
    counts = {"iris-v1": [0, 0], "iris-v2": [0, 0]}
    d = None
    for k in range(batches):
        for (version, c), rate in zip(counts.items(), rates):
            c[0] += batch
            c[1] += int(rng.binomial(batch, rate))
        now = T0 + dt.timedelta(minutes=k)
        reports = [report("r-a", 1.0, {v: binary(n, s) for v, (n, s) in counts.items()})]
        totals, cps = ex.merge_router_stats(exp.status, reports)
        analysis = exa.analyse(exp, totals, now)
        d = ex.decide(exp, analysis, now)
        exp = exp.model_copy(update={"status": ex.compute_status(exp, analysis, d, now, checkpoints=cps)})
        if d.phase != ExperimentPhase.running:
            return exp.status, d, k + 1
    return exp.status, d, batches


def test_simulated_ab_where_the_treatment_is_better_concludes_with_it_and_promotes() -> None:
    rng = np.random.default_rng(11)
    wins, looks = 0, []
    for _ in range(10):
        status, d, k = _simulate(make_exp(), (0.10, 0.15), batches=40, batch=100, rng=rng)
        wins += d.winner == "treatment" and d.promotion is not None and d.promotion.version == "iris-v2"
        looks.append(k)
        assert d.winner != "control"
    assert wins >= 9, (wins, looks)
    assert status.variants[1].outcomes == looks[-1] * 100


@pytest.mark.slow
def test_under_the_null_checking_after_every_batch_keeps_false_conclusions_at_alpha(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # P(best) takes no part in a two-arm decision; fewer posterior draws keep 4,000 looks within seconds.
    monkeypatch.setattr(exa, "PROB_BEST_DRAWS", 2000)
    rng = np.random.default_rng(2026)
    runs, alpha = 200, 0.05
    false = sum(
        _simulate(make_exp(), (0.2, 0.2), batches=20, batch=50, rng=rng)[1].phase == ExperimentPhase.concluded
        for _ in range(runs)
    )
    bound = alpha + 2 * math.sqrt(alpha * (1 - alpha) / runs)
    assert false / runs <= bound, (false, runs)


def test_metric_view_puts_errors_or_latency_in_the_outcome_fields() -> None:
    from mlsteward_runtime.contracts import RouterStats, VersionStats
    from mlsteward_runtime.router.stats import StatsStore

    from mlsteward_operator.api.experiment import MetricName
    from mlsteward_operator.experiment.reconcile import metric_view

    # The router's own counters produce the report, so the sums are the ones a real router exports.
    counters = StatsStore("iris", "router-0", 1.0)
    arm = counters.arm("v1")
    latencies = [3.0, 5.0, 12.0, 40.0]
    for i, ms in enumerate(latencies):
        arm.requests += 1
        arm.errors += i % 2
        arm.latency.observe(ms)
    arm.record_outcome(1.0)
    report = counters.export()
    assert metric_view(report, MetricName.reward) is report
    err = metric_view(report, MetricName.error_rate).versions["v1"]
    assert (err.outcomes, err.outcome_sum, err.outcome_sumsq) == (4, 2.0, 2.0)
    lat = metric_view(report, MetricName.latency).versions["v1"]
    assert lat.outcomes == 4
    assert lat.outcome_sum == sum(latencies) and lat.outcome_sumsq == sum(x * x for x in latencies)
    assert isinstance(report, RouterStats) and isinstance(err, VersionStats)
