"""Metric alerts and anomaly detection (modeldeployment/health.py): pooling of the predictors' stats into a sample, the threshold
rules with `consecutive`, minRequests and minFeedback, z-score and IQR anomalies checked against scipy and numpy,
resolution, the history bound, missing metrics, and the false-positive rate of a steady noisy series."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from mlsteward_runtime.contracts import Quantiles, RuntimeStats
from scipy import stats as sps

from mlsteward_operator.modeldeployment import health
from mlsteward_operator.api.modeldeployment import (
    ActiveAlert,
    Alerts,
    AlertRule,
    HealthMetric,
    HealthSample,
    HealthStatus,
)
from mlsteward_operator.modeldeployment.status import alerting_condition

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


def rs(count: int = 100, errors: int = 0, *, rps: float = 2.0, p50: float | None = 5.0, p95: float | None = 8.0,
       p99: float | None = 10.0, feedback: int = 0, accuracy: float | None = None, reward: float | None = None,
       version: str = "1.0.0") -> RuntimeStats:
    return RuntimeStats(name="iris", version=version, window_s=300, count=count, errors=errors,
                        error_rate=errors / count if count else 0.0, throughput_rps=rps,
                        latency_ms=Quantiles(p50=p50, p95=p95, p99=p99), feedback=feedback, accuracy=accuracy,
                        mean_reward=reward)


def sample(i: int, *, version: str = "iris-v1", **fields: Any) -> HealthSample:
    base = {"requests": 100, "errors": 0, "error_rate": 0.0, "p99_ms": 10.0, "request_rate": 2.0}
    return HealthSample(time=T0 + dt.timedelta(minutes=i), version=version, window_seconds=300, replicas=1,
                        **(base | fields))


def run(alerts: Alerts | None, samples: list[HealthSample],
        prev: HealthStatus | None = None) -> list[health.HealthOutcome]:
    """Feeds the samples one by one, as the controller does every interval."""
    out = []
    for s in samples:
        o = health.advance(prev, alerts, s, s.time)
        out.append(o)
        prev = o.status
    return out


# --------------------------------------------------------------------------------------------------------------
# Pooling and sampling
# --------------------------------------------------------------------------------------------------------------


def test_pool_sums_counts_weighs_medians_and_feedback_and_takes_the_slowest_tail() -> None:
    s = health.pool_sample([rs(300, 3, rps=1.0, p50=4.0, p95=9.0, p99=12.0, feedback=100, accuracy=0.9, reward=1.0),
                            rs(100, 7, rps=0.5, p50=8.0, p95=20.0, p99=30.0, feedback=300, accuracy=0.5, reward=0.0)],
                           "iris-v1", T0)
    assert s is not None
    assert (s.version, s.replicas, s.requests, s.errors, s.feedback) == ("iris-v1", 2, 400, 10, 400)
    assert s.error_rate == pytest.approx(10 / 400) and s.request_rate == pytest.approx(1.5)
    assert s.p50_ms == pytest.approx((4.0 * 300 + 8.0 * 100) / 400)
    assert (s.p95_ms, s.p99_ms) == (20.0, 30.0)
    assert s.accuracy == pytest.approx((0.9 * 100 + 0.5 * 300) / 400)
    assert s.mean_reward == pytest.approx(0.25)


def test_pool_without_answers_or_requests() -> None:
    assert health.pool_sample([], "iris-v1", T0) is None
    s = health.pool_sample([rs(0, p50=None, p95=None, p99=None)], "iris-v1", T0)
    assert s is not None and s.requests == 0
    assert (s.error_rate, s.p50_ms, s.p99_ms, s.accuracy) == (None, None, None, None)


def test_due_after_the_interval_and_with_defaults_without_spec_alerts() -> None:
    st = HealthStatus(last_sample_time=T0)
    assert health.due(None, None, T0)
    assert not health.due(st, None, T0 + dt.timedelta(seconds=59))
    assert health.due(st, None, T0 + dt.timedelta(seconds=60))
    assert health.due(st, Alerts(interval="10s"), T0 + dt.timedelta(seconds=10))


def test_without_spec_alerts_samples_are_kept_up_to_the_default_history_and_nothing_fires() -> None:
    outs = run(None, [sample(i, error_rate=0.9, errors=90) for i in range(70)])
    last = outs[-1].status
    assert len(last.samples) == health.DEFAULT_HISTORY
    assert last.samples[0].time == T0 + dt.timedelta(minutes=70 - health.DEFAULT_HISTORY)
    assert not any(o.fired for o in outs) and last.alerts == [] and last.breaches == {}


def test_history_bound_drops_the_oldest() -> None:
    outs = run(Alerts(history=10), [sample(i) for i in range(25)])
    assert [s.time for s in outs[-1].status.samples] == [T0 + dt.timedelta(minutes=i) for i in range(15, 25)]


def test_no_answer_appends_nothing_but_records_the_attempt() -> None:
    prev = run(Alerts(maxErrorRate=0.1), [sample(0, errors=50, error_rate=0.5)])[-1].status
    o = health.advance(prev, Alerts(maxErrorRate=0.1), None, T0 + dt.timedelta(minutes=5))
    assert o.status.samples == prev.samples and o.status.breaches == prev.breaches
    assert o.status.last_sample_time == T0 + dt.timedelta(minutes=5)


# --------------------------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------------------------


def test_error_rate_fires_after_consecutive_breaches_with_since_the_first_and_resolves_on_the_first_good() -> None:
    alerts = Alerts(maxErrorRate=0.05, consecutive=3)
    rates = [0.01, 0.2, 0.3, 0.25, 0.4, 0.01]
    outs = run(alerts, [sample(i, errors=int(r * 100), error_rate=r) for i, r in enumerate(rates)])
    assert [o.status.breaches.get("ErrorRate/errorRate", 0) for o in outs] == [0, 1, 2, 3, 4, 0]
    assert [len(o.fired) for o in outs] == [0, 0, 0, 1, 0, 0]
    alert = outs[3].fired[0]
    assert (alert.rule, alert.metric, alert.reason) == (AlertRule.error_rate, "errorRate", "ErrorRateAbove")
    assert alert.since == T0 + dt.timedelta(minutes=1) and alert.value == 0.25 and alert.threshold == 0.05
    assert outs[4].status.alerts[0].value == 0.4 and outs[4].status.alerts[0].since == alert.since
    assert [a.reason for a in outs[5].resolved] == ["ErrorRateAbove"] and outs[5].status.alerts == []
    assert outs[5].resolved[0].value == 0.01


def test_a_good_sample_breaks_the_run() -> None:
    alerts = Alerts(maxErrorRate=0.05, consecutive=2)
    outs = run(alerts, [sample(i, error_rate=r) for i, r in enumerate([0.2, 0.0, 0.2, 0.0, 0.2])])
    assert not any(o.fired for o in outs)


def test_too_few_requests_give_no_verdict_the_run_neither_grows_nor_breaks() -> None:
    alerts = Alerts(maxErrorRate=0.05, maxP99LatencyMs=50, consecutive=2, minRequests=20)
    outs = run(alerts, [sample(0, error_rate=0.5, p99_ms=80.0),
                        sample(1, requests=5, error_rate=0.0, p99_ms=1.0),
                        sample(2, error_rate=0.5, p99_ms=90.0)])
    assert outs[1].status.breaches == {"ErrorRate/errorRate": 1, "P99Latency/p99Ms": 1}
    assert {a.reason for a in outs[2].fired} == {"ErrorRateAbove", "P99LatencyAbove"}
    # The run started at the first sample; the one without a verdict in between is skipped.
    assert {a.since for a in outs[2].fired} == {T0}


def test_accuracy_needs_min_feedback() -> None:
    alerts = Alerts(minAccuracy=0.8, minFeedback=50, consecutive=1)
    outs = run(alerts, [sample(0, feedback=49, accuracy=0.5), sample(1, feedback=50, accuracy=0.5),
                        sample(2, feedback=10, accuracy=0.95), sample(3, feedback=60, accuracy=0.85)])
    assert [len(o.fired) for o in outs] == [0, 1, 0, 0]
    assert outs[1].fired[0].reason == "AccuracyBelow" and outs[2].status.alerts  # no verdict: still firing
    assert [a.reason for a in outs[3].resolved] == ["AccuracyBelow"]
    assert Alerts(minAccuracy=0.8).effective_min_feedback == 30


def test_a_rule_removed_from_the_spec_resolves_its_alert() -> None:
    prev = run(Alerts(maxErrorRate=0.05, consecutive=1), [sample(0, error_rate=0.5)])[-1].status
    assert prev.alerts
    o = health.advance(prev, Alerts(maxP99LatencyMs=100), sample(1, error_rate=0.5), T0 + dt.timedelta(minutes=1))
    assert [a.reason for a in o.resolved] == ["ErrorRateAbove"] and o.status.alerts == []
    assert o.status.breaches == {}


def test_alerting_condition_lists_the_firing_alerts() -> None:
    assert alerting_condition(None) == (False, "NoAlerts", "no metric alert fires")
    firing = [ActiveAlert(rule=AlertRule.p99_latency, metric="p99Ms", reason="P99LatencyAbove", value=90,
                          since=T0, message="p99 high"),
              ActiveAlert(rule=AlertRule.error_rate, metric="errorRate", reason="ErrorRateAbove", value=0.3,
                          since=T0, message="errors high")]
    status, reason, message = alerting_condition(HealthStatus(alerts=firing))
    assert (status, reason) == (True, "P99LatencyAbove")
    assert "2 alert(s)" in message and "p99 high" in message and "errors high" in message


# --------------------------------------------------------------------------------------------------------------
# Anomalies
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_zscore_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    history = rng.normal(10, 2, 30).tolist()
    value = float(rng.normal(10, 8))
    verdict = health.zscore_verdict(value, history, 3.0)
    assert verdict is not None
    # scipy's z-score of the value against the history's mean and sample std (ddof=1).
    z = float(sps.zmap([value], history, ddof=1)[0])
    assert verdict.breach == (abs(z) > 3.0)
    assert f"{abs(z):.2f} standard deviations" in verdict.message
    assert verdict.threshold == pytest.approx(np.mean(history) + np.sign(z) * 3.0 * np.std(history, ddof=1))


@pytest.mark.parametrize("seed", range(5))
def test_iqr_matches_scipy_and_numpy(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    history = rng.lognormal(2, 0.4, 40).tolist()
    q1, q3 = np.percentile(history, [25, 75])
    iqr = sps.iqr(history)
    for value in (q3 + 1.49 * iqr, q3 + 1.51 * iqr, q1 - 1.51 * iqr, float(np.median(history))):
        verdict = health.iqr_verdict(value, history, 1.5)
        assert verdict is not None
        assert verdict.breach == (value < q1 - 1.5 * iqr or value > q3 + 1.5 * iqr)


def test_flat_or_short_history_gives_no_verdict() -> None:
    assert health.zscore_verdict(5.0, [1.0] * 30, 3.0) is None
    assert health.iqr_verdict(5.0, [1.0] * 30, 1.5) is None
    assert health.zscore_verdict(5.0, [1.0], 3.0) is None


def test_a_p99_spike_after_a_steady_history_fires_an_anomaly() -> None:
    rng = np.random.default_rng(3)
    alerts = Alerts(consecutive=2, anomaly={"minHistory": 20, "metrics": ["p99Ms"]})
    steady = [sample(i, p99_ms=float(10 + rng.normal(0, 0.5))) for i in range(25)]
    outs = run(alerts, [*steady, sample(25, p99_ms=100.0), sample(26, p99_ms=100.0)])
    assert not any(o.fired for o in outs[:26])
    assert outs[25].status.breaches == {"Anomaly/p99Ms": 1}
    alert = outs[26].fired[0]
    assert (alert.rule, alert.metric, alert.reason) == (AlertRule.anomaly, "p99Ms", "AnomalyDetected")
    assert alert.since == T0 + dt.timedelta(minutes=25) and "standard deviations above" in alert.message
    assert alert.threshold is not None and alert.threshold < 100.0


def test_anomaly_needs_min_history_and_leaves_out_missing_values_and_other_versions() -> None:
    alerts = Alerts(consecutive=1, anomaly={"minHistory": 10, "metrics": ["p99Ms"]})

    def history(usable: int) -> list[HealthSample]:
        # `usable` samples with a p99 among three without one and two of another version.
        rng = np.random.default_rng(4)
        other = [sample(i, p99_ms=None, requests=0, error_rate=None) for i in range(3)] + \
            [sample(3 + i, version="iris-v0", p99_ms=float(10 + rng.normal())) for i in range(2)]
        return other + [sample(5 + i, p99_ms=float(10 + rng.normal())) for i in range(usable)]

    short = run(alerts, [*history(9), sample(20, p99_ms=100.0)])[-1]
    assert short.status.breaches == {} and not short.fired
    enough = run(alerts, [*history(10), sample(20, p99_ms=100.0)])[-1]
    assert [a.metric for a in enough.fired] == ["p99Ms"]
    # A sample without the metric gets no verdict at all.
    missing = health.advance(enough.status, alerts, sample(21, p99_ms=None), T0 + dt.timedelta(minutes=21))
    assert missing.status.alerts == enough.status.alerts and not missing.resolved


def test_iqr_method_uses_its_k() -> None:
    rng = np.random.default_rng(5)
    alerts = Alerts(consecutive=1, anomaly={"method": "IQR", "minHistory": 20, "metrics": ["requestRate"]})
    assert alerts.anomaly is not None and alerts.anomaly.effective_threshold == 2.2
    steady = [sample(i, request_rate=float(rng.normal(50, 3))) for i in range(30)]
    history = [s.request_rate for s in steady]
    q1, q3 = np.percentile(history, [25, 75])
    inside, low = float(q1 - 2.1 * (q3 - q1)), float(q1 - 2.3 * (q3 - q1))
    assert not run(alerts, [*steady, sample(30, request_rate=inside)])[-1].fired
    outs = run(alerts, [*steady, sample(30, request_rate=low)])
    assert [(a.metric, a.threshold) for a in outs[-1].fired] == [("requestRate", pytest.approx(q1 - 2.2 * (q3 - q1)))]


@pytest.mark.parametrize("method", ["ZScore", "IQR"])
def test_steady_noisy_series_rarely_fire(method: str) -> None:
    """200 series of 100 samples of Gaussian noise: with the default thresholds and consecutive 2, few fire.

    (Tukey's k = 1.5 made about 10% of such series fire: judged against nearly the same history, consecutive samples
    breach together; hence the IQR default of 2.2.)"""
    rng = np.random.default_rng(11)
    alerts = Alerts(history=60, consecutive=2, anomaly={"method": method, "metrics": ["p99Ms", "requestRate"]})
    fired_series = 0
    for _ in range(200):
        p99 = rng.normal(20, 2, 100)
        rate = rng.normal(5, 0.5, 100)
        outs = run(alerts, [sample(i, p99_ms=float(p99[i]), request_rate=float(rate[i])) for i in range(100)])
        fired_series += any(o.fired for o in outs)
    # For Gaussian noise a 3-sigma breach has p ~ 0.0027 per sample, and the 2.2 fences (about 3.6 sigma) less.
    assert fired_series / 200 < 0.05


def test_webhook_payload_names_the_deployment_and_the_state() -> None:
    alert = ActiveAlert(rule=AlertRule.error_rate, metric="errorRate", reason="ErrorRateAbove", value=0.3,
                        threshold=0.05, since=T0, message="high")
    body = health.webhook_payload("ml", "iris", "iris-v1", alert, health.FIRING)
    assert body["deployment"] == "iris" and body["namespace"] == "ml" and body["state"] == "firing"
    assert body["version"] == "iris-v1" and "ml/iris" in str(body["text"]) and "[firing]" in str(body["text"])
    assert (body["rule"], body["metric"], body["value"], body["threshold"]) == ("ErrorRate", "errorRate", 0.3, 0.05)
    assert body["since"] == "2026-03-01T12:00:00Z"


def test_metrics_of_anomaly_are_the_sample_fields() -> None:
    for metric in HealthMetric:
        assert health.value_of(sample(0, accuracy=0.7, feedback=40), metric) is not None


def test_alert_gauge_follows_the_configured_rules() -> None:
    from prometheus_client import CollectorRegistry

    from mlsteward_operator.kernel.metrics import AlertMetrics

    registry = CollectorRegistry()
    m = AlertMetrics(registry)

    def value(rule: str, metric: str) -> float | None:
        return registry.get_sample_value("mlsteward_deployment_alert_firing", {
            "namespace": "ml", "deployment": "iris", "rule": rule, "metric": metric})

    m.record("ml", "iris", [("ErrorRate", "errorRate"), ("Anomaly", "p99Ms")], [("ErrorRate", "errorRate")])
    assert (value("ErrorRate", "errorRate"), value("Anomaly", "p99Ms")) == (1.0, 0.0)
    m.record("ml", "iris", [("Anomaly", "p99Ms")], [])
    assert (value("ErrorRate", "errorRate"), value("Anomaly", "p99Ms")) == (None, 0.0)
    m.forget("ml", "iris")
    assert value("Anomaly", "p99Ms") is None


def test_the_main_reconcile_patch_leaves_health_to_the_health_timer() -> None:
    """status_patch(others=("health",)): neither a stale copy of status.health nor a null for it is sent."""
    from mlsteward_operator.api.modeldeployment import ModelDeploymentStatus
    from mlsteward_operator.kernel.status import status_patch

    old = ModelDeploymentStatus(serving_version="iris-v1", health=HealthStatus(samples=[sample(0)]))
    stale = ModelDeploymentStatus(serving_version="iris-v2", health=HealthStatus())
    gone = ModelDeploymentStatus(serving_version="iris-v2")
    for new in (stale, gone):
        out = status_patch(new, old, replaced=("rollout",), others=("health",))
        assert "health" not in out and out["servingVersion"] == "iris-v2"
    assert status_patch(gone, old, replaced=())["health"] is None  # what a merge patch would do without it
