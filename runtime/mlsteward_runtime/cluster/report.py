"""Performance reports of a ModelDeployment over a time range (`mlsteward report`).

Pure: plain dicts in the wire form (`kubectl get -o yaml`, or the kubernetes client's custom-object answers), an
optional set of Prometheus answers already fetched, the range and nothing else in; a `Report` out, rendered as
text, Markdown or JSON. No I/O, no clock (the caller resolves `--until now`).

Traffic figures per version and in total (requests, errors, error rate, latency p50/p95/p99, feedback) come from
one of two sources, and the report names it for every figure:

- **Prometheus** (when a URL is given): the router's counters `mlsteward_router_backend_latency_seconds_count`
  (backend attempts, what the router's /v1/router/stats calls requests), `mlsteward_router_backend_errors_total`
  (connect errors, timeouts, 5xx) and `mlsteward_router_feedback_total`. Counts are the exact increase of the raw
  samples over the range: each series from its last sample at or before the start (or from zero when it appears
  inside the range: prometheus_client creates a labelled series at its first increment), a drop counted as a
  restart of the process. PromQL's `increase()` would extrapolate to the range's edges and give fractions.
  Latency percentiles come from the increase of the router's histogram buckets (counted the same way), summed by
  version and interpolated inside a bucket as PromQL's `histogram_quantile` does (so as exact as the buckets).
- **status** (otherwise): `status.health.samples` of the ModelDeployment, one every `spec.alerts.interval`, each
  the predictors' sliding-window numbers for the version served then. Requests are estimated as the sum of
  requests / windowSeconds x the time since the previous sample (over time, a sliding window's count divided by its
  length adds up to what it saw), errors and feedback likewise; p50 is the median of the sampled windows' p50, p95 and p99 the largest
  sampled value. These are estimates, and the report says so; it also gives the range the samples cover when it
  is shorter than asked (at most 240 samples are kept).

Accuracy and mean reward always come from the samples (feedback-weighted mean of the windows' values): the
router's metrics count feedback but not its outcome. Decisions (`status.decisions`), alerts (`status.health.alerts`,
firing now), drift checks and actions (DriftMonitors of the deployment: `status.history`, `status.lastAction`)
and Experiments (on the deployment, running at some point of the range) come from the objects in both cases.
"""

from __future__ import annotations

import datetime as dt
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlsteward_runtime.cluster.counters import (
    ROUTER_ATTEMPTS, ROUTER_BUCKETS, ROUTER_ERRORS, ROUTER_FEEDBACK, PromAnswers, counter_increase, histogram_quantile,
    quantiles_ms, sum_counter,
)
from mlsteward_runtime.cluster.inventory import dig, fnum, parse_time
from mlsteward_runtime.cluster.reportview import render, show_time

__all__ = [
    "ROUTER_ATTEMPTS", "ROUTER_BUCKETS", "ROUTER_ERRORS", "ROUTER_FEEDBACK", "PromAnswers", "Report", "ReportError",
    "build_report", "counter_increase", "histogram_quantile", "parse_duration", "parse_time", "render", "versions_of",
]

GROUP = "mlsteward.io"
FORMATS = ("text", "markdown", "json")


class ReportError(ValueError):
    """The report cannot be made from what was given (no such ModelDeployment, a bad range)."""


# --------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> dt.timedelta:
    """`24h`, `90m`, `1h30m`, `7d`, `2w`, `45s` (Prometheus' units); ValueError naming the text otherwise."""
    s = text.strip()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"{text!r} is not a duration (e.g. 24h, 90m, 1h30m, 7d)")
    if total <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return dt.timedelta(seconds=total)


def _name(obj: Mapping[str, Any]) -> str:
    return str(dig(obj, "metadata", "name") or "")


def _ns(obj: Mapping[str, Any]) -> str | None:
    return dig(obj, "metadata", "namespace") or None


def _of_kind(objects: Iterable[Any], kind: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for o in objects:
        if not isinstance(o, dict):
            continue
        if str(o.get("kind", "")).endswith("List") and "items" in o:
            out.extend(_of_kind(o.get("items") or [], kind))
        elif o.get("kind") == kind and str(o.get("apiVersion", "")).split("/", 1)[0] == GROUP:
            out.append(o)
    return out


def find_deployment(objects: Sequence[Any], name: str, namespace: str | None) -> dict[str, Any]:
    """The ModelDeployment `name` (in `namespace`, or the only namespace it exists in); ReportError otherwise."""
    found = [o for o in _of_kind(objects, "ModelDeployment")
             if _name(o) == name and (namespace is None or _ns(o) in (None, namespace))]
    if not found:
        where = f" in namespace {namespace}" if namespace else ""
        others = sorted({_name(o) for o in _of_kind(objects, "ModelDeployment")})
        known = f" (ModelDeployments: {', '.join(others)})" if others else " (no ModelDeployments found)"
        raise ReportError(f"no ModelDeployment {name}{where}{known}")
    spaces = sorted({_ns(o) or "" for o in found})
    if len(spaces) > 1:
        raise ReportError(f"ModelDeployment {name} exists in several namespaces ({', '.join(spaces)}): choose one "
                          "with -n")
    return found[0]


def versions_of(md: Mapping[str, Any]) -> list[str]:
    """Every version the deployment names: wanted, served, stable, previous, in its traffic table, shadow, samples
    and decisions. The Prometheus queries select these (the router's metrics are labelled by version only)."""
    status = md.get("status") or {}
    names = [dig(md, "spec", "version"), dig(md, "spec", "shadow", "version"), status.get("servingVersion"),
             status.get("stableVersion"), status.get("previousVersion")]
    names += [t.get("version") for t in status.get("traffic") or [] if isinstance(t, dict)]
    names += [s.get("version") for s in dig(status, "health", "samples") or [] if isinstance(s, dict)]
    for d in status.get("decisions") or []:
        if isinstance(d, dict):
            names += [d.get("from"), d.get("to")]
    return sorted({str(n) for n in names if n})


# --------------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------------


class Traffic(BaseModel):
    """Traffic figures of one version (or of all, `version` "total")."""

    version: str
    requests: float | None = None
    errors: float | None = None
    error_rate: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    feedback: float | None = None
    accuracy: float | None = None
    mean_reward: float | None = None
    samples: int = Field(default=0, description="Health samples of this version in the range.")


class DriftSummary(BaseModel):
    monitor: str
    checks: int
    drifted: int
    max_drifted_features: int
    last_action: dict[str, Any] | None = Field(default=None, description="status.lastAction, if it ran in range.")


class ExperimentSummary(BaseModel):
    name: str
    phase: str | None
    started_at: dt.datetime | None
    concluded_at: dt.datetime | None
    winner: str | None
    variants: list[str]


class Report(BaseModel):
    """A performance report; `sources` says where each figure came from, `notes` what to keep in mind."""

    deployment: str
    namespace: str | None
    since: dt.datetime
    until: dt.datetime
    source: Literal["prometheus", "status"]
    covered_since: dt.datetime | None = Field(default=None, description="First health sample in range.")
    covered_until: dt.datetime | None = Field(default=None, description="Last health sample in range.")
    serving_version: str | None = None
    versions: list[Traffic] = Field(default_factory=list)
    total: Traffic
    sources: dict[str, str] = Field(default_factory=dict)
    decisions: list[dict[str, Any]] = Field(default_factory=list)
    alerts: list[dict[str, Any]] = Field(default_factory=list)
    drift: list[DriftSummary] = Field(default_factory=list)
    experiments: list[ExperimentSummary] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def _in(t: dt.datetime | None, since: dt.datetime, until: dt.datetime) -> bool:
    return t is not None and since <= t <= until


def _samples_in(md: Mapping[str, Any], since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    out = []
    for s in dig(md, "status", "health", "samples") or []:
        if isinstance(s, dict) and _in(parse_time(s.get("time")), since, until):
            out.append(s)
    return sorted(out, key=lambda s: parse_time(s.get("time")))  # type: ignore[arg-type,return-value]


def _status_traffic(version: str, samples: list[dict[str, Any]], gaps: list[float]) -> Traffic:
    """Figures of `samples` (each with the seconds since the previous sample in `gaps`; 0 for the first)."""
    # A window's count over its length, times the time it stands for: integrated over time, a sliding window's
    # count divided by its length adds up to the requests it saw, also while a young pod's window is not yet full
    # (requestRate divides by the pod's uptime then, and would overcount).
    req, err, fb = (sum((fnum(s.get(key)) or 0.0) / w * g for s, g in zip(samples, gaps)
                        if (w := fnum(s.get("windowSeconds")) or 0.0) > 0)
                    for key in ("requests", "errors", "feedback"))
    p50 = [v for s in samples if (v := fnum(s.get("p50Ms"))) is not None]
    p95 = [v for s in samples if (v := fnum(s.get("p95Ms"))) is not None]
    p99 = [v for s in samples if (v := fnum(s.get("p99Ms"))) is not None]
    return Traffic(
        version=version, requests=req, errors=err, error_rate=err / req if req > 0 else None,
        p50_ms=statistics.median(p50) if p50 else None, p95_ms=max(p95) if p95 else None,
        p99_ms=max(p99) if p99 else None, feedback=fb, samples=len(samples),
        **_outcomes(samples),
    )


def _outcomes(samples: list[dict[str, Any]]) -> dict[str, float | None]:
    """Feedback-weighted means of the sampled windows' accuracy and mean reward."""
    out: dict[str, float | None] = {}
    for key, field in (("accuracy", "accuracy"), ("meanReward", "mean_reward")):
        pairs = [(v, fnum(s.get("feedback")) or 0.0) for s in samples if (v := fnum(s.get(key))) is not None]
        weight = sum(w for _, w in pairs)
        out[field] = sum(v * w for v, w in pairs) / weight if weight > 0 else None
    return out


def _status_figures(samples: list[dict[str, Any]]) -> tuple[list[Traffic], Traffic]:
    times = [parse_time(s.get("time")) for s in samples]
    # The first sample's window began before the range (or before the previous sample, which is not known):
    # only the spans between consecutive samples count.
    gaps = [0.0] + [(b - a).total_seconds() for a, b in zip(times, times[1:])]  # type: ignore[operator]
    by_version: dict[str, tuple[list[dict[str, Any]], list[float]]] = {}
    for s, g in zip(samples, gaps):
        bucket = by_version.setdefault(str(s.get("version") or "?"), ([], []))
        bucket[0].append(s)
        bucket[1].append(g)
    versions = [_status_traffic(v, ss, gs) for v, (ss, gs) in sorted(by_version.items())]
    return versions, _status_traffic("total", samples, gaps)


def _prom_figures(prom: PromAnswers, samples: list[dict[str, Any]], since: dt.datetime,
                  wanted: list[str]) -> tuple[list[Traffic], Traffic]:
    t0 = since.timestamp()
    req = {k[0]: n for k, n in sum_counter(prom.counters.get(ROUTER_ATTEMPTS, []), t0, "version").items()}
    err = {k[0]: n for k, n in sum_counter(prom.counters.get(ROUTER_ERRORS, []), t0, "version").items()}
    fb = {k[0]: n for k, n in sum_counter(prom.counters.get(ROUTER_FEEDBACK, []), t0, "version").items()}
    buckets = {k: n for k, n in sum_counter(prom.counters.get(ROUTER_BUCKETS, []), t0, "version", "le").items()
               if k[0] in wanted}
    versions = []
    for v in sorted(x for x in set(req) | set(err) | set(fb) if x in wanted):
        r, e, qs = req.get(v, 0.0), err.get(v, 0.0), quantiles_ms(buckets, v)
        mine = [s for s in samples if s.get("version") == v]
        versions.append(Traffic(
            version=v, requests=r, errors=e, error_rate=e / r if r > 0 else None, p50_ms=qs[0.5],
            p95_ms=qs[0.95], p99_ms=qs[0.99], feedback=fb.get(v, 0.0), samples=len(mine), **_outcomes(mine),
        ))
    r, e, qs = sum(t.requests or 0.0 for t in versions), sum(t.errors or 0.0 for t in versions), quantiles_ms(
        buckets, None)
    total = Traffic(version="total", requests=r, errors=e, error_rate=e / r if r > 0 else None, p50_ms=qs[0.5],
                    p95_ms=qs[0.95], p99_ms=qs[0.99], feedback=sum(t.feedback or 0.0 for t in versions),
                    samples=len(samples), **_outcomes(samples))
    return versions, total


_SOURCES_STATUS = {
    "requests": "status.health.samples: sum of requests / windowSeconds x seconds since the previous sample "
                "(estimate)",
    "errors": "status.health.samples: sum of errors / windowSeconds x seconds since the previous sample "
              "(estimate; 5xx and model errors, 4xx excluded)",
    "latency": "status.health.samples: p50 = median of the sampled windows' p50, p95/p99 = largest sampled "
               "window value (predictor latency)",
    "feedback": "status.health.samples: sum of feedback / windowSeconds x seconds since the previous sample "
                "(estimate)",
}
_SOURCES_PROM = {
    "requests": f"prometheus: increase of {ROUTER_ATTEMPTS} over the range, from raw samples (router to backend "
                "attempts)",
    "errors": f"prometheus: increase of {ROUTER_ERRORS} over the range (connect errors, timeouts, 5xx)",
    "latency": f"prometheus: quantiles of the increase of {ROUTER_BUCKETS} summed by version, interpolated "
               "within a bucket as histogram_quantile does (router to backend round trip)",
    "feedback": f"prometheus: increase of {ROUTER_FEEDBACK} over the range",
}
_SOURCE_OUTCOMES = "status.health.samples: feedback-weighted mean of the sampled windows' values"


def _coverage_notes(samples: list[dict[str, Any]], since: dt.datetime, until: dt.datetime) -> list[str]:
    """A note when the health samples start or end more than one and a half sampling steps inside the range."""
    covered_since, covered_until = parse_time(samples[0].get("time")), parse_time(samples[-1].get("time"))
    times = [parse_time(s.get("time")) for s in samples]
    spans = [(b - a).total_seconds() for a, b in zip(times, times[1:])]  # type: ignore[operator]
    step = statistics.median(spans) if spans else 60.0
    if (covered_since - since).total_seconds() > 1.5 * step \
            or (until - covered_until).total_seconds() > 1.5 * step:  # type: ignore[operator]
        return [f"The samples cover {show_time(covered_since)} to {show_time(covered_until)}, less than the range "
                "asked (status keeps the last 240 samples, one per spec.alerts.interval)."]
    return []


def _drift(monitors: Iterable[dict[str, Any]], since: dt.datetime, until: dt.datetime) -> list[DriftSummary]:
    """Each DriftMonitor's checks in the range, how many drifted, and its last action when in the range."""
    drift = []
    for dm in sorted(monitors, key=_name):
        hist = [h for h in dig(dm, "status", "history") or []
                if isinstance(h, dict) and _in(parse_time(h.get("time")), since, until)]
        act = dig(dm, "status", "lastAction")
        drift.append(DriftSummary(
            monitor=_name(dm), checks=len(hist), drifted=sum(1 for h in hist if h.get("drifted")),
            max_drifted_features=max((int(h.get("driftedFeatures") or 0) for h in hist), default=0),
            last_action=act if isinstance(act, dict) and _in(parse_time(act.get("time")), since, until) else None,
        ))
    return drift


def _experiments(objs: Iterable[dict[str, Any]], since: dt.datetime, until: dt.datetime) -> list[ExperimentSummary]:
    """The Experiments that ran during the range."""
    experiments = []
    for exp in sorted(objs, key=_name):
        st = exp.get("status") or {}
        started, concluded = parse_time(st.get("startedAt")), parse_time(st.get("concludedAt"))
        if started is None or started > until or (concluded is not None and concluded < since):
            continue
        experiments.append(ExperimentSummary(
            name=_name(exp), phase=st.get("phase"), started_at=started, concluded_at=concluded,
            winner=st.get("winner"),
            variants=[str(v.get("name")) for v in dig(exp, "spec", "variants") or [] if isinstance(v, dict)],
        ))
    return experiments


def build_report(objects: Sequence[Any], deployment: str, *, since: dt.datetime, until: dt.datetime,
                 namespace: str | None = None, prometheus: PromAnswers | None = None) -> Report:
    """The report of ModelDeployment `deployment` over [since, until]; ReportError when it cannot be made."""
    if since >= until:
        raise ReportError(f"the range is empty: since {since.isoformat()} is not before until {until.isoformat()}")
    md = find_deployment(objects, deployment, namespace)
    ns = _ns(md) or namespace
    samples = _samples_in(md, since, until)
    notes: list[str] = []
    if prometheus is not None:
        versions, total = _prom_figures(prometheus, samples, since, versions_of(md))
        sources = dict(_SOURCES_PROM)
    else:
        versions, total = _status_figures(samples)
        sources = dict(_SOURCES_STATUS)
        if not samples:
            notes.append("No health samples in the range: status.health.samples is filled while spec.alerts is "
                         "set; pass --prometheus for figures from the router's metrics.")
    sources["accuracy"] = sources["mean_reward"] = _SOURCE_OUTCOMES
    sources["decisions"] = "ModelDeployment status.decisions"
    sources["alerts"] = "ModelDeployment status.health.alerts (firing now, not over the range)"
    sources["drift"] = "DriftMonitor status.history and status.lastAction"
    sources["experiments"] = "Experiment status (startedAt, concludedAt, phase, winner)"

    covered_since = parse_time(samples[0].get("time")) if samples else None
    covered_until = parse_time(samples[-1].get("time")) if samples else None
    if samples and prometheus is None:
        notes += _coverage_notes(samples, since, until)

    def ours(o: dict[str, Any]) -> bool:
        return dig(o, "spec", "deployment") == deployment and (ns is None or _ns(o) in (None, ns))

    decisions = [d for d in dig(md, "status", "decisions") or []
                 if isinstance(d, dict) and _in(parse_time(d.get("time")), since, until)]
    drift = _drift(filter(ours, _of_kind(objects, "DriftMonitor")), since, until)
    experiments = _experiments(filter(ours, _of_kind(objects, "Experiment")), since, until)
    return Report(
        deployment=deployment, namespace=ns, since=since, until=until,
        source="prometheus" if prometheus is not None else "status",
        covered_since=covered_since, covered_until=covered_until,
        serving_version=dig(md, "status", "servingVersion"), versions=versions, total=total, sources=sources,
        decisions=decisions, alerts=[a for a in dig(md, "status", "health", "alerts") or [] if isinstance(a, dict)],
        drift=drift, experiments=experiments, notes=notes,
    )
