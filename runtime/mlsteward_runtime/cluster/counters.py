"""The router's Prometheus counters over a range, from their raw samples: the arithmetic of `mlsteward report`'s
exact traffic figures. Pure: answers of the Prometheus HTTP API in, numbers out.

A counter's increase starts from its last sample at or before the range's start (or from zero when the series
appears inside the range), and a drop is a restart; latency quantiles are interpolated inside a histogram bucket as
PromQL's `histogram_quantile` does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "QUANTILES", "ROUTER_ATTEMPTS", "ROUTER_BUCKETS", "ROUTER_ERRORS", "ROUTER_FEEDBACK", "PromAnswers",
    "counter_increase", "histogram_quantile", "quantiles_ms", "sum_counter",
]

# Metric names, as runtime/mlsteward_runtime/router/metrics.py registers them (prometheus_client adds `_total` to
# counters and `_count`/`_bucket` to histograms).
ROUTER_ATTEMPTS = "mlsteward_router_backend_latency_seconds_count"
ROUTER_BUCKETS = "mlsteward_router_backend_latency_seconds_bucket"
ROUTER_ERRORS = "mlsteward_router_backend_errors_total"
ROUTER_FEEDBACK = "mlsteward_router_feedback_total"
QUANTILES = (0.5, 0.95, 0.99)


class PromAnswers(BaseModel):
    """What the Prometheus client fetched: metric name -> the range-vector answer of the HTTP API (`data.result`:
    `[{metric: {...}, values: [[t, "v"], ...]}, ...]`) over [since - lookback, until]."""

    url: str
    counters: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)


def counter_increase(values: Sequence[tuple[float, float]], since: float) -> float:
    """Increase of one counter series after `since` (Unix seconds), from its raw samples ((t, value), ascending).

    The baseline is the last sample at or before `since`, or zero when the series has none (it appeared inside
    the range). A value below the previous one is a restart: the counter began again from zero.
    """
    prev = 0.0
    total = 0.0
    for t, v in values:
        if t <= since:
            prev = v
            continue
        total += v - prev if v >= prev else v
        prev = v
    return total


def sum_counter(series: list[dict[str, Any]], since: float, *by: str) -> dict[tuple[str, ...], float]:
    """The increase of every series after `since`, summed by the labels `by`."""
    out: dict[tuple[str, ...], float] = {}
    for s in series:
        labels = s.get("metric") or {}
        key = tuple(str(labels.get(b, "")) for b in by)
        vals = sorted((float(t), float(v)) for t, v in s.get("values") or [])
        out[key] = out.get(key, 0.0) + counter_increase(vals, since)
    return out


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of cumulative bucket counts (upper bound -> count, +Inf included), as PromQL's
    histogram_quantile computes it: linear interpolation inside the bucket where the rank falls, the lowest
    bucket starting at 0, the highest finite bound when the rank falls in +Inf. None without observations."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    counts, running = [], 0.0
    for b in bounds:  # non-monotonic counts (a scrape between bucket updates) are raised, as PromQL does
        running = max(running, buckets[b])
        counts.append(running)
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    i = next(i for i, c in enumerate(counts) if c >= rank)
    if i == len(bounds) - 1:
        return bounds[-2] if len(bounds) > 1 else None
    start, prev = (0.0, 0.0) if i == 0 else (bounds[i - 1], counts[i - 1])
    if i == 0 and bounds[0] <= 0:
        return bounds[0]
    return start + (bounds[i] - start) * (rank - prev) / (counts[i] - prev)


def quantiles_ms(increase: dict[tuple[str, ...], float], version: str | None) -> dict[float, float | None]:
    """p50/p95/p99 in ms of the bucket increases (keys (version, le)) of one version, or of all with None."""
    buckets: dict[float, float] = {}
    for (v, le), n in increase.items():
        if version is None or v == version:
            buckets[float(le)] = buckets.get(float(le), 0.0) + n
    out: dict[float, float | None] = {}
    for q in QUANTILES:
        value = histogram_quantile(q, buckets)
        out[q] = None if value is None else value * 1000.0
    return out
