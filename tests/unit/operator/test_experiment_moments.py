"""The operator's merge of router counters keeps the variance of a metric with a large mean: router processes
report (n, mean, M2), the operator subtracts each process's checkpoint with the inverse of Chan's merge and adds
the rest, and the totals (through the status' JSON and back) give numpy's mean and variance of every value
counted."""

from __future__ import annotations

import numpy as np
import pytest
from mlsteward_operator.experiment import decide as ex
from mlsteward_operator.api.experiment import ExperimentStatus, MetricName, VariantStatus
from mlsteward_operator.experiment.reconcile import metric_view
from mlsteward_runtime.contracts import RouterStats, VersionStats
from mlsteward_runtime.stats.moments import Welford


def counters(values: np.ndarray) -> VersionStats:
    """What a router exports after recording `values` as outcomes (and as latencies, one per request)."""
    w = Welford()
    for v in values:
        w.add(float(v))
    return VersionStats(version="v1", requests=w.n, outcomes=w.n, outcome_sum=w.total, outcome_sumsq=w.total_sq,
                        outcome_mean=w.mean, outcome_m2=w.m2, latency_sum_ms=w.total, latency_sumsq_ms=w.total_sq,
                        latency_mean_ms=w.mean, latency_m2_ms=w.m2)


def report(replica: str, started: float, values: np.ndarray) -> RouterStats:
    return RouterStats(deployment="iris", replica=replica, started=started, versions={"v1": counters(values)})


def through_json(totals: dict[str, ex.VersionTotals], checkpoints: list) -> ExperimentStatus:
    variants = [VariantStatus(name=v, version=v, requests=t.requests, outcomes=t.outcomes.n,
                              outcome_sum=t.outcomes.sum, outcome_sumsq=t.outcomes.sumsq, outcome_m2=t.outcomes.m2)
                for v, t in totals.items()]
    status = ExperimentStatus(variants=variants, checkpoints=checkpoints)
    return ExperimentStatus.model_validate(status.to_k8s())


def test_checkpoint_deltas_of_a_large_mean_metric_keep_numpys_variance() -> None:
    rng = np.random.default_rng(8)
    a = 1e9 - rng.integers(0, 30, size=900).astype(float)  # one process, read three times as it counts
    b = 1e9 - rng.integers(0, 30, size=400).astype(float)  # another, restarted after its first read
    b2 = 1e9 - rng.integers(0, 30, size=300).astype(float)
    polls = [
        [report("r-a", 100.0, a[:200]), report("r-b", 100.0, b)],
        [report("r-a", 100.0, a[:650]), report("r-b", 300.0, b2[:100])],
        [report("r-a", 100.0, a), report("r-b", 300.0, b2)],
        [report("r-a", 100.0, a), report("r-b", 300.0, b2)],  # read again: adds nothing
    ]
    status = ExperimentStatus()
    for reports in polls:
        totals, cps = ex.merge_router_stats(status, reports)
        status = through_json(totals, cps)
    counted = np.concatenate([a, b, b2])
    arm = ex.totals_from_status(status)["v1"].outcomes
    assert arm.n == counted.size
    assert arm.mean == pytest.approx(float(np.mean(counted)), rel=1e-12)
    assert arm.var == pytest.approx(float(np.var(counted, ddof=1)), rel=1e-6)


def test_the_latency_view_carries_m2() -> None:
    rng = np.random.default_rng(9)
    lat = 5e8 + rng.normal(0.0, 3.0, size=500)
    view = metric_view(report("r-a", 100.0, lat), MetricName.latency)
    totals, _ = ex.merge_router_stats(ExperimentStatus(), [view])
    assert totals["v1"].outcomes.var == pytest.approx(float(np.var(lat, ddof=1)), rel=1e-6)
    errors = metric_view(RouterStats(deployment="iris", replica="r", started=1.0, versions={
        "v1": VersionStats(version="v1", requests=40, errors=10)}), MetricName.error_rate)
    totals, _ = ex.merge_router_stats(ExperimentStatus(), [errors])
    outcomes = np.array([1.0] * 10 + [0.0] * 30)
    assert totals["v1"].outcomes.var == pytest.approx(float(np.var(outcomes, ddof=1)), rel=1e-12)


def test_the_bandits_priors_carry_m2() -> None:
    from test_render import _experiment, _router

    config, _ = _router(_experiment(variants=[
        {"name": "control", "version": "iris-1-0-0", "outcomes": 3, "outcomeSum": 3e9, "outcomeSumsq": 3e18,
         "outcomeM2": 2.0},
    ]))
    assert config.outcome_priors["iris-1-0-0"].m2 == 2.0
