"""Every PromQL expression the chart ships (Grafana dashboard, alerting rules) names only metrics the code exports.

The exported names come from the metric objects themselves: the runtime's, the router's and the operator's
metrics classes, instantiated on fresh registries, so renaming a metric in the code fails this test until the
dashboard and the rules follow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

CHART = Path(__file__).resolve().parents[3] / "charts" / "mlsteward"
DASHBOARD = CHART / "dashboards" / "mlsteward.json"
RULES = CHART / "rules" / "mlsteward.rules.yaml"

_KEYWORDS = {"by", "without", "and", "or", "unless", "on", "ignoring", "group_left", "group_right", "bool", "offset",
             "inf", "nan"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "summary": ("_sum", "_count", "")}


def exported_series() -> dict[str, str]:
    """Series name as scraped -> family name, for every metric the three metrics modules register."""
    from mlsteward_operator.kernel.metrics import AlertMetrics, DriftMetrics
    from mlsteward_runtime.metrics import Metrics
    from mlsteward_runtime.router.metrics import RouterMetrics

    registries = [Metrics("1.0.0").registry, RouterMetrics().registry]
    operator_registry = CollectorRegistry()
    DriftMetrics(operator_registry)
    AlertMetrics(operator_registry)
    registries.append(operator_registry)
    out: dict[str, str] = {}
    for registry in registries:
        for family in registry.collect():
            for suffix in _SUFFIXES[family.type]:
                out[family.name + suffix] = family.name
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords, label names
    (inside {} or the () of by/without/on/ignoring/group_*), strings, durations or Grafana variables."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    e = re.sub(r"\boffset\s+-?[0-9][0-9a-z]*", " ", e)
    e = re.sub(r"(?<![\w:])[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w:])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e):
        if m.group(2) or m.group(1).lower() in _KEYWORDS:
            continue
        names.add(m.group(1))
    return names


def dashboard_exprs() -> Iterator[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())

    def panels(items: list[dict]) -> Iterator[dict]:
        for p in items:
            yield p
            yield from panels(p.get("panels") or [])

    for p in panels(dash["panels"]):
        for t in p.get("targets") or []:
            yield f"panel {p['title']!r} {t['refId']}", t["expr"]
    for var in dash["templating"]["list"]:
        if var.get("type") == "query":
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
            assert m, var["query"]
            yield f"variable {var['name']}", m.group(1)


def rule_exprs() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            yield f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]


def test_the_tokenizer_finds_metrics_and_skips_the_rest():
    expr = ('histogram_quantile(0.99, sum by (le, version) (rate(foo_seconds_bucket{version=~"$v", status=~"5.."}'
            '[$__rate_interval]))) / ignoring(version) group_left sum(bar_total offset 5m) > 1e-3 and on(x) baz')
    assert metric_names(expr) == {"foo_seconds_bucket", "bar_total", "baz"}


def test_the_exported_names_are_read_from_the_code():
    series = exported_series()
    # One of each type, as a scrape shows them.
    assert series["mlsteward_router_requests_total"] == "mlsteward_router_requests"
    assert series["mlsteward_request_duration_seconds_bucket"] == "mlsteward_request_duration_seconds"
    assert series["mlsteward_drift_effect_size"] == "mlsteward_drift_effect_size"
    assert "mlsteward_router_requests" not in series  # a counter is scraped with _total


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_every_query_names_exported_metrics(source):
    series = exported_series()
    exprs = list(dashboard_exprs() if source == "dashboard" else rule_exprs())
    assert exprs
    unknown = {}
    for where, expr in exprs:
        names = metric_names(expr)
        assert names, f"{where}: no metric found in {expr!r}"
        missing = sorted(n for n in names if n not in series)
        if missing:
            unknown[where] = missing
    assert not unknown, f"metrics not exported by the code: {unknown}"


def test_the_dashboard_covers_every_area():
    used = {series_family for _, e in dashboard_exprs() for n in metric_names(e)
            if (series_family := exported_series().get(n))}
    # Traffic and errors by version, latency of router and predictors, experiment outcomes, drift per feature.
    assert {"mlsteward_router_requests", "mlsteward_requests", "mlsteward_router_backend_latency_seconds",
            "mlsteward_request_duration_seconds", "mlsteward_router_feedback", "mlsteward_drift_effect_size",
            "mlsteward_drift_drifted"} <= used
    alerts = {where.split(" ", 1)[1] for where, _ in rule_exprs()}
    assert alerts == {"MlstewardHighErrorRate", "MlstewardHighP99Latency", "MlstewardDriftDetected",
                      "MlstewardDeploymentAlertFiring"}
