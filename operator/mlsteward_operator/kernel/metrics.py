"""The operator's own Prometheus metrics: the drift statistics of every DriftMonitor, per feature (DESIGN §4), and
what ModelVersion retention deleted and kept, and whether each metric alert of a ModelDeployment (spec.alerts)
fires.

Gauges carry the latest check; a feature that a monitor no longer tests, or a monitor that is gone, has its series
removed (`forget`), so a dashboard never shows a stale verdict as current. `serve(port)` starts the HTTP endpoint
once per process (the in-process tests start several operators in one process).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, start_http_server

log = logging.getLogger(__name__)

_FEATURE_LABELS = ("namespace", "monitor", "feature", "method")
_MONITOR_LABELS = ("namespace", "monitor")


class DriftMetrics:
    """Gauges of one registry (the process's default one in the operator, a private one in tests)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.statistic = Gauge("mlsteward_drift_statistic", "Test statistic of the latest drift check of a feature "
                               "(KS for numbers, chi-square for categories).", _FEATURE_LABELS, registry=registry)
        self.p_value = Gauge("mlsteward_drift_p_value", "p-value of the latest check after multiple-testing "
                             "correction.", _FEATURE_LABELS, registry=registry)
        self.effect = Gauge("mlsteward_drift_effect_size", "Effect size (PSI) of the latest check of a feature.",
                            _FEATURE_LABELS, registry=registry)
        self.drifted = Gauge("mlsteward_drift_drifted", "1 when the feature drifted in the latest check, else 0.",
                             _FEATURE_LABELS, registry=registry)
        self.window = Gauge("mlsteward_drift_window_rows", "Pooled rows tested by the latest check.",
                            _MONITOR_LABELS, registry=registry)
        self.breaches = Gauge("mlsteward_drift_consecutive_breaches", "Windows in breach in a row.",
                              _MONITOR_LABELS, registry=registry)
        self.checks = Counter("mlsteward_drift_checks", "Drift checks run, by outcome (DriftDetected, NoDrift, or "
                              "why there was no verdict).", (*_MONITOR_LABELS, "outcome"), registry=registry)
        self.actions = Counter("mlsteward_drift_actions", "Actions run on confirmed drift.",
                               (*_MONITOR_LABELS, "action"), registry=registry)
        self._features: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def record(self, namespace: str, monitor: str, features: Iterable[tuple[str, str, float | None, float | None,
                                                                            float | None, bool]],
               window_rows: int, breaches: int) -> None:
        """Set the gauges of one check: `features` are (name, method, statistic, p-value, effect size, drifted)."""
        seen: set[tuple[str, str]] = set()
        for name, method, statistic, p_value, effect, drifted in features:
            labels = (namespace, monitor, name, method)
            seen.add((name, method))
            for gauge, value in ((self.statistic, statistic), (self.p_value, p_value), (self.effect, effect)):
                if value is None:
                    _remove(gauge, labels)
                else:
                    gauge.labels(*labels).set(value)
            self.drifted.labels(*labels).set(1.0 if drifted else 0.0)
        with self._lock:
            gone = self._features.get((namespace, monitor), set()) - seen
            self._features[(namespace, monitor)] = seen
        for name, method in gone:
            for gauge in (self.statistic, self.p_value, self.effect, self.drifted):
                _remove(gauge, (namespace, monitor, name, method))
        self.window.labels(namespace, monitor).set(window_rows)
        self.breaches.labels(namespace, monitor).set(breaches)

    def forget(self, namespace: str, monitor: str) -> None:
        """Remove every gauge series of a monitor (deleted)."""
        with self._lock:
            gone = self._features.pop((namespace, monitor), set())
        for name, method in gone:
            for gauge in (self.statistic, self.p_value, self.effect, self.drifted):
                _remove(gauge, (namespace, monitor, name, method))
        for gauge in (self.window, self.breaches):
            _remove(gauge, (namespace, monitor))


class RetentionMetrics:
    """ModelVersions deleted by retention (a counter, so deletions stay countable after their Events expire) and
    versions kept per model by the latest pass."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.deletions = Counter("mlsteward_retention_deletions", "ModelVersions deleted by retention.",
                                 ("namespace", "model"), registry=registry)
        self.kept = Gauge("mlsteward_retention_kept_versions", "ModelVersions of a model kept by the latest "
                          "retention pass (the last N, pinned, referenced or under validation).",
                          ("namespace", "model"), registry=registry)


def _remove(gauge: Gauge, labels: tuple[str, ...]) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


_ALERT_LABELS = ("namespace", "deployment", "rule", "metric")


class AlertMetrics:
    """`mlsteward_deployment_alert_firing`: 1 per configured rule of a ModelDeployment that fires, 0 per one that
    does not; a rule removed from the spec, or a deployment deleted, has its series removed."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.firing = Gauge("mlsteward_deployment_alert_firing", "1 while the metric alert (spec.alerts) of a "
                            "ModelDeployment fires, else 0.", _ALERT_LABELS, registry=registry)
        self._rules: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self._lock = threading.Lock()

    def record(self, namespace: str, deployment: str, rules: Iterable[tuple[str, str]],
               firing: Iterable[tuple[str, str]]) -> None:
        """Set the gauge of every configured (rule, metric) in `rules`; those in `firing` are 1."""
        seen, on = set(rules), set(firing)
        for rule, metric in seen:
            self.firing.labels(namespace, deployment, rule, metric).set(1.0 if (rule, metric) in on else 0.0)
        with self._lock:
            gone = self._rules.get((namespace, deployment), set()) - seen
            self._rules[(namespace, deployment)] = seen
        for rule, metric in gone:
            _remove(self.firing, (namespace, deployment, rule, metric))

    def forget(self, namespace: str, deployment: str) -> None:
        self.record(namespace, deployment, (), ())
        with self._lock:
            self._rules.pop((namespace, deployment), None)


# The process's metric sets, by class, each created on first use (not at import).
_sets: dict[type, Any] = {}
_served: int | None = None
_guard = threading.Lock()

S = TypeVar("S")


def _process_set(cls: type[S]) -> S:
    with _guard:
        if cls not in _sets:
            _sets[cls] = cls()
        return _sets[cls]  # type: ignore[no-any-return]


def drift_metrics() -> DriftMetrics:
    """The process's drift metrics."""
    return _process_set(DriftMetrics)


def retention_metrics() -> RetentionMetrics:
    """The process's retention metrics."""
    return _process_set(RetentionMetrics)


def alert_metrics() -> AlertMetrics:
    """The process's alert gauge."""
    return _process_set(AlertMetrics)


def serve(port: int) -> bool:
    """Start the /metrics endpoint on `port` (0: none) once per process; False when it could not listen."""
    global _served
    with _guard:
        if port == 0 or _served == port:
            return port != 0
        try:
            start_http_server(port)
        except OSError as exc:
            log.warning("Failed to serve metrics port=%d: %s", port, exc)
            return False
        _served = port
        log.info("Serving metrics port=%d", port)
        return True
