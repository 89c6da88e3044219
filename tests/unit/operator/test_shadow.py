"""status.shadow (modeldeployment/shadow.py, pure): the router replicas' shadow counters merged, the statistics on
them (against statsmodels and scipy on the pooled raw numbers), and the promotion gate on fixed numbers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from mlsteward_runtime.contracts import RouterStats, ShadowStats
from scipy import stats as st
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from mlsteward_operator.api.shadow import ShadowGateResult, ShadowPhase, ShadowPromote, ShadowStatus
from mlsteward_operator.modeldeployment import shadow

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def replica(name: str, **stats) -> RouterStats:
    return RouterStats(deployment="iris", replica=name, started=1.0, versions={},
                       shadow={"iris-v2": ShadowStats(version="iris-v2", **stats)})


def _moments(x: np.ndarray) -> dict[str, float]:
    return {"n": int(x.size), "mean": float(x.mean()), "m2": float(((x - x.mean()) ** 2).sum())}


def test_merge_adds_counts_and_buckets_and_merges_moments_with_chans_formula():
    rng = np.random.default_rng(1)
    d1, d2 = rng.normal(0.3, 1.0, 40), rng.normal(-0.1, 2.0, 25)
    m1, m2 = _moments(d1), _moments(d2)
    a = replica("r-a", mirrored=100, errors=2, dropped=1, compared=98, agreed=90, pairs=30, both_correct=20,
                served_only=4, shadow_only=5, neither=1, latency_buckets={"10": 50, "100": 100, "+Inf": 100},
                error_diff_n=m1["n"], error_diff_mean=m1["mean"], error_diff_m2=m1["m2"])
    b = replica("r-b", mirrored=60, errors=0, dropped=3, compared=60, agreed=51, pairs=10, both_correct=6,
                served_only=1, shadow_only=2, neither=1, latency_buckets={"10": 10, "100": 60, "+Inf": 60},
                error_diff_n=m2["n"], error_diff_mean=m2["mean"], error_diff_m2=m2["m2"])
    other = RouterStats(deployment="iris", replica="r-c", started=1.0, versions={}, shadow=None)
    merged, replicas = shadow.merge([a, b, other], "iris-v2")
    assert replicas == 3
    assert (merged.mirrored, merged.errors, merged.dropped, merged.compared, merged.agreed) == (160, 2, 4, 158, 141)
    assert (merged.pairs, merged.both_correct, merged.served_only, merged.shadow_only, merged.neither) == \
        (40, 26, 5, 7, 2)
    assert merged.latency_buckets == {"10": 60, "100": 160, "+Inf": 160}
    pooled = np.r_[d1, d2]
    assert merged.error_diff_n == 65
    assert merged.error_diff_mean == pytest.approx(pooled.mean())
    assert merged.error_diff_m2 == pytest.approx(((pooled - pooled.mean()) ** 2).sum())


def test_measure_classification_matches_statsmodels_on_the_summed_table():
    merged, n = shadow.merge([replica("a", mirrored=500, errors=5, compared=495, agreed=470, pairs=200,
                                      both_correct=150, served_only=10, shadow_only=25, neither=15)], "iris-v2")
    m = shadow.measure(merged, n, "classification", 0.95)
    lo, hi = proportion_confint(470, 495, method="wilson")
    assert m["agreement"] == pytest.approx(470 / 495, rel=1e-5)
    assert (m["agreement_low"], m["agreement_high"]) == pytest.approx((lo, hi), rel=1e-5)
    assert m["error_rate"] == pytest.approx(0.01)
    assert m["served_accuracy"] == pytest.approx(160 / 200) and m["shadow_accuracy"] == pytest.approx(175 / 200)
    assert m["accuracy_diff"] == pytest.approx(15 / 200)
    table = np.array([[150, 10], [25, 15]])
    assert m["mcnemar_p"] == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-5)
    assert m["accuracy_diff_low"] < m["accuracy_diff"] < m["accuracy_diff_high"]
    assert "mean_error_diff" not in m


def test_measure_regression_matches_scipy_on_the_pooled_rows():
    rng = np.random.default_rng(4)
    served_err, shadow_err = np.abs(rng.normal(0, 1, 80)), np.abs(rng.normal(0, 1, 80))
    d = shadow_err - served_err
    mom = _moments(d)
    merged, n = shadow.merge([replica("a", mirrored=80, compared=80, agreed=0, kind="regression", diff_n=80,
                                      diff_mean=0.4, diff_m2=3.0, pairs=80, error_diff_n=mom["n"],
                                      error_diff_mean=mom["mean"], error_diff_m2=mom["m2"])], "iris-v2")
    m = shadow.measure(merged, n, "regression", 0.9)
    res = st.ttest_rel(shadow_err, served_err)
    ci = st.ttest_1samp(d, 0.0).confidence_interval(0.9)
    assert m["p_value"] == pytest.approx(res.pvalue, rel=1e-5)
    assert (m["mean_error_diff_low"], m["mean_error_diff_high"]) == pytest.approx((ci.low, ci.high), rel=1e-5)
    assert m["mean_abs_diff"] == pytest.approx(0.4) and "served_accuracy" not in m


def numbers(**kw):
    base = {"compared": 1000, "pairs": 400, "agreement": 0.95, "agreement_low": 0.936, "agreement_high": 0.961}
    return base | kw


def test_gate_is_pending_until_min_requests_and_min_pairs():
    promote = ShadowPromote(min_requests=2000, min_agreement=0.9)
    v = shadow.judge(numbers(), promote, "classification")
    assert v.result == ShadowGateResult.pending and "1000 of 2000 compared requests" in v.message
    v = shadow.judge(numbers(), ShadowPromote(min_requests=100, min_pairs=500, min_agreement=0.9), "classification")
    assert v.result == ShadowGateResult.pending and "400 of 500 labelled pairs" in v.message


def test_gate_on_agreement_passes_on_the_lower_bound_and_fails_on_the_upper():
    assert shadow.judge(numbers(), ShadowPromote(min_agreement=0.93), "classification").result == \
        ShadowGateResult.passed
    undecided = shadow.judge(numbers(), ShadowPromote(min_agreement=0.95), "classification")
    assert undecided.result == ShadowGateResult.pending and "not yet conclusive" in undecided.message
    failed = shadow.judge(numbers(), ShadowPromote(min_agreement=0.97), "classification")
    assert failed.result == ShadowGateResult.failed and "0.961" in failed.message and "0.97" in failed.message
    assert failed.numbers["agreementHigh"] == 0.961 and failed.thresholds["minAgreement"] == 0.97


def test_gate_not_worse_for_classification_uses_newcombe_against_the_margin():
    promote = ShadowPromote(not_worse=True, margin=0.02)
    ok = numbers(accuracy_diff=0.0, accuracy_diff_low=-0.015, accuracy_diff_high=0.016, mcnemar_p=1.0)
    assert shadow.judge(ok, promote, "classification").result == ShadowGateResult.passed
    open_ = numbers(accuracy_diff=-0.01, accuracy_diff_low=-0.03, accuracy_diff_high=0.01)
    assert shadow.judge(open_, promote, "classification").result == ShadowGateResult.pending
    worse = numbers(accuracy_diff=-0.08, accuracy_diff_low=-0.11, accuracy_diff_high=-0.05, mcnemar_p=0.0001)
    failed = shadow.judge(worse, promote, "classification")
    assert failed.result == ShadowGateResult.failed and "less accurate" in failed.message
    assert failed.numbers["mcnemarP"] == 0.0001 and failed.thresholds["margin"] == 0.02
    # Without pairs nothing can be shown: pending, never passed.
    assert shadow.judge(numbers(pairs=0), promote, "classification").result == ShadowGateResult.pending


def test_gate_not_worse_for_regression_uses_the_t_interval_against_the_margin():
    promote = ShadowPromote(not_worse=True, margin=0.1)
    assert shadow.judge(numbers(mean_error_diff=0.02, mean_error_diff_low=-0.03, mean_error_diff_high=0.07),
                        promote, "regression").result == ShadowGateResult.passed
    assert shadow.judge(numbers(mean_error_diff=0.1, mean_error_diff_low=0.05, mean_error_diff_high=0.15),
                        promote, "regression").result == ShadowGateResult.pending
    failed = shadow.judge(numbers(mean_error_diff=0.3, mean_error_diff_low=0.2, mean_error_diff_high=0.4),
                          promote, "regression")
    assert failed.result == ShadowGateResult.failed and "errors are larger" in failed.message


def test_both_rules_must_pass_and_either_fails():
    promote = ShadowPromote(min_agreement=0.9, not_worse=True)
    worse = numbers(accuracy_diff=-0.08, accuracy_diff_low=-0.11, accuracy_diff_high=-0.05)
    assert shadow.judge(worse, promote, "classification").result == ShadowGateResult.failed
    fine = numbers(accuracy_diff=0.01, accuracy_diff_low=0.001, accuracy_diff_high=0.02)
    assert shadow.judge(fine, promote, "classification").result == ShadowGateResult.passed


def look(prev, answers, *, promote=None, generation=1, now=T0, phase=ShadowPhase.mirroring):
    return shadow.shadow_status(prev, version="iris-v2", percent=50, phase=phase, message="m", kind=None,
                                promote=promote, generation=generation, now=now, answers=answers)


def test_status_gate_since_verdicts_once_and_updated_at_only_on_change():
    promote = ShadowPromote(min_requests=100, min_agreement=0.9)
    few = [replica("a", mirrored=50, compared=50, agreed=50)]
    status, verdict = look(None, few, promote=promote)
    assert status.gate.result == ShadowGateResult.pending and verdict is None
    assert status.updated_at == T0 and status.requests == 50 and status.kind == "classification"
    # Nothing changed: the same status (no write), updatedAt kept.
    again, verdict = look(status, few, promote=promote, now=T0 + dt.timedelta(seconds=10))
    assert again == status and verdict is None
    bad = [replica("a", mirrored=400, compared=400, agreed=300)]
    t1 = T0 + dt.timedelta(seconds=20)
    failed, verdict = look(status, bad, promote=promote, now=t1)
    assert failed.gate.result == ShadowGateResult.failed and failed.gate.since == t1
    assert verdict is not None and verdict.result == ShadowGateResult.failed
    # A verdict is given once; Failed holds at this generation even if the numbers recover.
    good = [replica("a", mirrored=4000, compared=4000, agreed=3990)]
    held, verdict = look(failed, good, promote=promote, now=t1 + dt.timedelta(seconds=10))
    assert held.gate == failed.gate and verdict is None and held.agreement == pytest.approx(3990 / 4000)
    # A spec change (generation) judges again.
    passed, verdict = look(held, good, promote=promote, generation=2, now=t1 + dt.timedelta(seconds=20))
    assert passed.gate.result == ShadowGateResult.passed and verdict.result == ShadowGateResult.passed


def test_numbers_are_kept_when_mirroring_stops_and_dropped_for_another_version():
    status, _ = look(None, [replica("a", mirrored=10, compared=10, agreed=9)])
    kept, _ = look(status, None, phase=ShadowPhase.promoted)
    assert kept.requests == 10 and kept.agreement == 0.9 and kept.phase == ShadowPhase.promoted
    other = ShadowStatus(version="iris-v3", phase=ShadowPhase.mirroring, requests=99)
    fresh, _ = look(other, None, phase=ShadowPhase.waiting)
    assert fresh.requests == 0 and fresh.agreement is None


def test_a_restarted_replica_counts_from_zero_so_the_sum_goes_down():
    before, _ = look(None, [replica("a", mirrored=100, compared=100, agreed=90),
                            replica("b", mirrored=100, compared=100, agreed=95)])
    after, _ = look(before, [replica("a", mirrored=100, compared=100, agreed=90),
                             replica("b", mirrored=3, compared=3, agreed=3)])
    assert (before.requests, after.requests) == (200, 103) and after.replicas == 2


def test_an_inconsistent_report_gives_no_rate_rather_than_a_crash():
    status, _ = look(None, [replica("a", mirrored=5, errors=9, compared=3, agreed=7, pairs=4, both_correct=9)])
    assert status.requests == 5 and status.error_rate is None and status.agreement is None
    assert status.served_accuracy is None
