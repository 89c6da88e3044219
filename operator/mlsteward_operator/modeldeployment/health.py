"""Metric alerts and anomaly detection on a ModelDeployment's served version (pure: no clock, no I/O).

The controller (reconcile_health.py) passes the predictors' `GET /v1/stats` answers and `now`; this module pools them
into one HealthSample, appends it to status.health (at most `spec.alerts.history` samples, oldest dropped), judges the
latest sample and returns the new HealthStatus with what changed (alerts fired and resolved) as data.

Sampling. Every `interval` (default 1m) the ready predictor pods of the served version are asked. A sample sums
requests, errors and the request rate over the pods; errorRate is errors / requests; p50 is the pods' medians
weighed by their requests; p95 and p99 are the slowest pod's (a quantile cannot be pooled from quantiles, and the
slowest pod is what the worst-served clients see); accuracy and mean reward are weighed by feedback. Without
spec.alerts the predictors are still sampled (1m, 60 kept), with no alerts.

Rules, each keyed `<Rule>/<metric>` in status.health.breaches:
- ErrorRate/errorRate: errorRate above maxErrorRate; P99Latency/p99Ms: p99 above maxP99LatencyMs. Both get a verdict
  only with at least minRequests requests in the window.
- Accuracy/accuracy: accuracy below minAccuracy, with at least minFeedback labelled requests.
- Anomaly/<metric>: the latest value against the previous samples of the same version that have the metric (at least
  anomaly.minHistory of them). ZScore: |x - mean| / std > threshold, std being the sample standard deviation
  (ddof 1). IQR: x outside [Q1 - k*IQR, Q3 + k*IQR] (linear percentiles), k being the threshold. A history without
  spread (std or IQR of 0) gives no verdict: it has no scale to judge a change by; a hard bound is a threshold rule.

A sample in breach extends the rule's run; one within bounds ends it (and resolves the alert); a sample without a
verdict (too few requests, feedback or history, or the metric missing) neither grows nor breaks it. An alert fires
when the run reaches `consecutive`; its `since` is the first sample of the run. A rule removed from the spec
resolves its alert.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from mlsteward_runtime.contracts import RuntimeStats

from mlsteward_operator.api.common import parse_duration
from mlsteward_operator.api.modeldeployment import (
    ActiveAlert,
    Alerts,
    AnomalyMethod,
    AlertRule,
    HealthMetric,
    HealthSample,
    HealthStatus,
)
from mlsteward_operator.kernel.conditions import second
from mlsteward_operator.kernel.pooling import pool_feedback, weighted_mean

DEFAULT_INTERVAL = "1m"
DEFAULT_HISTORY = 60

FIRING = "firing"
RESOLVED = "resolved"

# The sample field behind each metric name (wire name -> python attribute).
_FIELD = {HealthMetric.request_rate: "request_rate", HealthMetric.error_rate: "error_rate",
          HealthMetric.p99_ms: "p99_ms", HealthMetric.accuracy: "accuracy"}
_REASON = {AlertRule.error_rate: "ErrorRateAbove", AlertRule.p99_latency: "P99LatencyAbove",
           AlertRule.accuracy: "AccuracyBelow", AlertRule.anomaly: "AnomalyDetected"}


@dataclass(frozen=True)
class Verdict:
    """One rule on one sample: in breach or not, the value judged, the bound and the reading in words."""

    breach: bool
    value: float
    threshold: float | None
    message: str


@dataclass(frozen=True)
class HealthOutcome:
    """The new status.health and the alerts that fired or resolved with this sample."""

    status: HealthStatus
    fired: tuple[ActiveAlert, ...] = ()
    resolved: tuple[ActiveAlert, ...] = ()


# --------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------


def interval_seconds(alerts: Alerts | None) -> float:
    return parse_duration(alerts.interval if alerts is not None else DEFAULT_INTERVAL)


def due(health: HealthStatus | None, alerts: Alerts | None, now: dt.datetime) -> bool:
    """Whether a sample is due: never sampled, or `interval` has passed since the last one."""
    if health is None or health.last_sample_time is None:
        return True
    return (second(now) - second(health.last_sample_time)).total_seconds() >= interval_seconds(alerts)


def pool_sample(stats: Sequence[RuntimeStats], version: str, now: dt.datetime) -> HealthSample | None:
    """One sample of the answers of a version's predictors (see the module docstring); None without answers."""
    if not stats:
        return None
    requests = sum(s.count for s in stats)
    errors = sum(s.errors for s in stats)
    p50, _ = weighted_mean((s.latency_ms.p50, s.count) for s in stats)
    accuracy, feedback = pool_feedback(stats)
    reward, _ = pool_feedback(stats, reward=True)
    return HealthSample(
        time=second(now), version=version, window_seconds=max(s.window_s for s in stats), replicas=len(stats),
        requests=requests, errors=errors, request_rate=sum(s.throughput_rps for s in stats),
        error_rate=errors / requests if requests else None, p50_ms=p50 if requests else None,
        p95_ms=_slowest(s.latency_ms.p95 for s in stats if s.count),
        p99_ms=_slowest(s.latency_ms.p99 for s in stats if s.count),
        feedback=sum(s.feedback for s in stats), accuracy=accuracy, mean_reward=reward,
    )


def _slowest(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and v == v]
    return max(present) if present else None


# --------------------------------------------------------------------------------------------------------------
# Judging
# --------------------------------------------------------------------------------------------------------------


def value_of(sample: HealthSample, metric: HealthMetric) -> float | None:
    value = getattr(sample, _FIELD[metric])
    return None if value is None or value != value else float(value)


def zscore_verdict(value: float, history: Sequence[float], threshold: float) -> Verdict | None:
    """|value - mean| / std of `history` (ddof 1) against `threshold`; None when std is 0 or history has < 2."""
    if len(history) < 2:
        return None
    import numpy as np  # here, not at the top: importing the operator loads no numerical library

    arr = np.asarray(history, dtype=float)
    mean, std = float(arr.mean()), float(arr.std(ddof=1))
    if not std > 0:
        return None
    z = (value - mean) / std
    bound = mean + threshold * std if z > 0 else mean - threshold * std
    return Verdict(abs(z) > threshold, value, bound, f"{value:.4g} is {abs(z):.2f} standard deviations "
                   f"{'above' if z > 0 else 'below'} the mean {mean:.4g} of the previous {len(arr)} samples "
                   f"(threshold {threshold:g})")


def iqr_verdict(value: float, history: Sequence[float], k: float) -> Verdict | None:
    """`value` outside [Q1 - k*IQR, Q3 + k*IQR] of `history` (linear percentiles); None when the IQR is 0."""
    if len(history) < 2:
        return None
    import numpy as np

    q1, q3 = (float(q) for q in np.percentile(np.asarray(history, dtype=float), [25, 75]))
    iqr = q3 - q1
    if not iqr > 0:
        return None
    lo, hi = q1 - k * iqr, q3 + k * iqr
    breach = value < lo or value > hi
    bound = hi if value > hi or not breach and value >= (q1 + q3) / 2 else lo
    return Verdict(breach, value, bound, f"{value:.4g} is {'outside' if breach else 'within'} [{lo:.4g}, {hi:.4g}] "
                   f"(Q1 {q1:.4g}, Q3 {q3:.4g}, k {k:g}) of the previous {len(history)} samples")


Judge = Callable[[Sequence[HealthSample], int], Verdict | None]


def _anomaly_judge(alerts: Alerts, metric: HealthMetric) -> Judge:
    assert alerts.anomaly is not None
    spec = alerts.anomaly
    threshold = spec.effective_threshold

    def judge(samples: Sequence[HealthSample], i: int) -> Verdict | None:
        value = value_of(samples[i], metric)
        if value is None:
            return None
        version = samples[i].version
        history = [v for s in samples[:i] if s.version == version and (v := value_of(s, metric)) is not None]
        if len(history) < spec.min_history:
            return None
        verdict = zscore_verdict(value, history, threshold) if spec.method == AnomalyMethod.z_score else \
            iqr_verdict(value, history, threshold)
        if verdict is None:
            return None
        return Verdict(verdict.breach, value, verdict.threshold, f"{metric.value} {verdict.message}")

    return judge


def rules_of(alerts: Alerts | None) -> dict[str, tuple[AlertRule, HealthMetric, Judge]]:
    """The rules spec.alerts asks for, by breaches key `<Rule>/<metric>`, in a stable order."""
    out: dict[str, tuple[AlertRule, HealthMetric, Judge]] = {}
    if alerts is None:
        return out

    def add(rule: AlertRule, metric: HealthMetric, judge: Judge) -> None:
        out[f"{rule.value}/{metric.value}"] = (rule, metric, judge)

    def requests(s: HealthSample) -> bool:
        return s.requests >= alerts.min_requests

    if alerts.max_error_rate is not None:
        add(AlertRule.error_rate, HealthMetric.error_rate, _threshold(
            HealthMetric.error_rate, alerts.max_error_rate, True, requests, lambda s: f"{s.requests} requests"))
    if alerts.max_p99_latency_ms is not None:
        add(AlertRule.p99_latency, HealthMetric.p99_ms, _threshold(
            HealthMetric.p99_ms, alerts.max_p99_latency_ms, True, requests, lambda s: f"{s.requests} requests"))
    if alerts.min_accuracy is not None:
        min_feedback = alerts.effective_min_feedback
        add(AlertRule.accuracy, HealthMetric.accuracy, _threshold(
            HealthMetric.accuracy, alerts.min_accuracy, False, lambda s: s.feedback >= min_feedback,
            lambda s: f"{s.feedback} labelled requests"))
    if alerts.anomaly is not None:
        for metric in sorted(set(alerts.anomaly.metrics), key=list(HealthMetric).index):
            add(AlertRule.anomaly, metric, _anomaly_judge(alerts, metric))
    return out


def _threshold(metric: HealthMetric, bound: float, above: bool, need: Callable[[HealthSample], bool],
               over: Callable[[HealthSample], str]) -> Judge:
    def judge(samples: Sequence[HealthSample], i: int) -> Verdict | None:
        s = samples[i]
        value = value_of(s, metric)
        if value is None or not need(s):
            return None
        breach = value > bound if above else value < bound
        word = ("above" if breach else "at or below") if above else ("below" if breach else "at or above")
        return Verdict(breach, value, bound, f"{metric.value} {value:.4g} is {word} {bound:g} over {over(s)}")

    return judge


def _run_start(samples: Sequence[HealthSample], judge: Judge, run: int) -> dt.datetime:
    """Time of the first sample of the current run of `run` breaches (samples without a verdict are skipped)."""
    seen, since = 0, samples[-1].time
    for i in range(len(samples) - 1, -1, -1):
        verdict = judge(samples, i)
        if verdict is None:
            continue
        if not verdict.breach:
            break
        seen, since = seen + 1, samples[i].time
        if seen >= run:
            break
    return since


def advance(prev: HealthStatus | None, alerts: Alerts | None, sample: HealthSample | None,
            now: dt.datetime) -> HealthOutcome:
    """status.health after one sampling at `now`: `sample` appended (None: no pod answered, nothing appended and
    nothing judged), the rules judged on it, alerts fired and resolved (see the module docstring)."""
    prev = prev or HealthStatus()
    history = alerts.history if alerts is not None else DEFAULT_HISTORY
    consecutive = alerts.consecutive if alerts is not None else 1
    samples = list(prev.samples)
    if sample is not None:
        samples.append(sample)
    samples = samples[-history:]
    rules = rules_of(alerts)
    firing = {f"{a.rule.value}/{a.metric}": a for a in prev.alerts}
    breaches = {k: n for k, n in prev.breaches.items() if k in rules}
    fired: list[ActiveAlert] = []
    resolved = [a for k, a in firing.items() if k not in rules]
    alerts_now: list[ActiveAlert] = []

    for key, (rule, metric, judge) in rules.items():
        current = firing.get(key)
        verdict = judge(samples, len(samples) - 1) if sample is not None else None
        if verdict is None:
            if current is not None:
                alerts_now.append(current)
            continue
        if not verdict.breach:
            breaches.pop(key, None)
            if current is not None:
                resolved.append(current.model_copy(update={
                    "value": verdict.value, "threshold": verdict.threshold,
                    "message": f"resolved: {verdict.message}"[:4096]}))
            continue
        breaches[key] = breaches.get(key, 0) + 1
        if current is not None:
            alerts_now.append(current.model_copy(update={"value": verdict.value, "threshold": verdict.threshold,
                                                          "message": _message(verdict, breaches[key])}))
        elif breaches[key] >= consecutive:
            alert = ActiveAlert(rule=rule, metric=metric.value, reason=_REASON[rule], value=verdict.value,
                                threshold=verdict.threshold, since=_run_start(samples, judge, breaches[key]),
                                message=_message(verdict, breaches[key]))
            alerts_now.append(alert)
            fired.append(alert)

    status = HealthStatus(last_sample_time=second(now), samples=samples, breaches=breaches, alerts=alerts_now)
    return HealthOutcome(status=status, fired=tuple(fired), resolved=tuple(resolved))


def _message(verdict: Verdict, run: int) -> str:
    return f"{verdict.message}; {run} sample(s) in a row"[:4096]


def webhook_payload(namespace: str, deployment: str, version: str | None, alert: ActiveAlert,
                    state: str) -> dict[str, object]:
    """The JSON posted to spec.alerts.notify for an alert that fired (`firing`) or resolved (`resolved`):
    Slack-compatible (`text`) plus the alert's fields for a receiver to route on."""
    text = (f"[{state}] {alert.rule.value} alert on {alert.metric} of ModelDeployment {namespace}/{deployment}"
            f"{' (version ' + version + ')' if version else ''}: {alert.message}")
    return {"text": text, "state": state, "namespace": namespace, "deployment": deployment, "version": version,
            **alert.to_k8s()}
