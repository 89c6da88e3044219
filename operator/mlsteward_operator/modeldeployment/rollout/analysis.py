"""A step's analysis (pure): what the router replicas counted for the new version since the step began, summed,
and the verdict of the gates of spec.rollout.analysis on it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from mlsteward_operator.modeldeployment.rollout.base import Counters, Gates


# Tolerance when matching a replica's start time read back from status (a JSON number) with the router's.
_STARTED_TOLERANCE_S = 1e-3


@dataclass(frozen=True)
class Measurement:
    """What the router replicas counted for the target version during a step, summed."""

    requests: int
    errors: int
    p99_latency_ms: float | None  # None: no request measured
    replicas: int  # replicas that answered

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _bound(label: str) -> float:
    return math.inf if label in ("+Inf", "inf", "Inf") else float(label)


def histogram_quantile(q: float, buckets: Mapping[str, int]) -> float | None:
    """The q-quantile of a cumulative histogram {upper bound in ms: count}, as Prometheus' histogram_quantile:
    linear within the bucket that holds the rank (from 0 for the first bucket); a rank in the +Inf bucket gives
    the highest finite bound. None when the histogram is empty."""
    rows = sorted((_bound(k), c) for k, c in buckets.items())
    if not rows or rows[-1][1] <= 0:
        return None
    total = rows[-1][1]
    rank = q * total
    lower, below = 0.0, 0
    for upper, cum in rows:
        if cum >= rank and cum > below:
            if math.isinf(upper):
                finite = [b for b, _ in rows if not math.isinf(b)]
                return finite[-1] if finite else None
            return lower + (upper - lower) * (rank - below) / (cum - below)
        lower, below = upper, cum
    return None


def merge_counters(counters: tuple[Counters, ...] | list[Counters]) -> Counters:
    """The sum of several replicas' counters (all counts, so merging is addition)."""
    buckets: dict[str, int] = {}
    for c in counters:
        for k, n in c.latency_buckets.items():
            buckets[k] = buckets.get(k, 0) + n
    return Counters(replica="*", started=0.0, version=counters[0].version if counters else "",
                    requests=sum(c.requests for c in counters), errors=sum(c.errors for c in counters),
                    latency_buckets=buckets)


def _since(current: Counters, baseline: tuple[Counters, ...]) -> Counters:
    """What one replica counted since its baseline. No baseline for this replica and start time (a new or
    restarted router), or counters below the baseline (a reset), mean it counted everything since it started."""
    base = next((b for b in baseline if b.replica == current.replica
                 and abs(b.started - current.started) <= _STARTED_TOLERANCE_S), None)
    if base is None or current.requests < base.requests or current.errors < base.errors:
        return current
    buckets = {k: max(0, n - base.latency_buckets.get(k, 0)) for k, n in current.latency_buckets.items()}
    return Counters(current.replica, current.started, current.version, current.requests - base.requests,
                    current.errors - base.errors, buckets)


def measure(stats: tuple[Counters, ...], baseline: tuple[Counters, ...], version: str) -> Measurement | None:
    """The step's measurement of `version` from the replicas' counters now and at the step's start.
    None when no replica answered."""
    if not stats:
        return None
    mine = [c for c in stats if c.version == version]
    total = merge_counters([_since(c, baseline) for c in mine])
    replicas = len({c.replica for c in stats})
    return Measurement(total.requests, total.errors, histogram_quantile(0.99, total.latency_buckets), replicas)


def judge(m: Measurement, gates: Gates) -> tuple[str, str]:
    """('pass' | 'fail' | 'wait', why). 'wait': fewer requests than min_requests. A gate without a measurement
    (no request, with min_requests 0) passes: there is nothing to hold against the version."""
    if m.requests < gates.min_requests:
        return "wait", f"{m.requests} of {gates.min_requests} requests"
    failed = []
    if gates.max_error_rate is not None and m.error_rate > gates.max_error_rate:
        failed.append(f"error rate {m.error_rate:.4g} > {gates.max_error_rate:g}")
    if gates.max_p99_latency_ms is not None and m.p99_latency_ms is not None \
            and m.p99_latency_ms > gates.max_p99_latency_ms:
        failed.append(f"p99 {m.p99_latency_ms:.4g} ms > {gates.max_p99_latency_ms:g} ms")
    if failed:
        return "fail", "; ".join(failed)
    return "pass", f"error rate {m.error_rate:.4g}, p99 " + (
        f"{m.p99_latency_ms:.4g} ms" if m.p99_latency_ms is not None else "n/a") + f" over {m.requests} requests"


def _numbers(m: Measurement | None, step: int, weight: int) -> dict[str, float]:
    out: dict[str, float] = {"step": step, "weight": weight}
    if m is not None:
        out |= {"requests": m.requests, "errors": m.errors, "errorRate": round(m.error_rate, 6),
                "replicas": m.replicas}
        if m.p99_latency_ms is not None:
            out["p99LatencyMs"] = round(m.p99_latency_ms, 4)
    return out


def _thresholds(g: Gates) -> dict[str, float]:
    out: dict[str, float] = {"minRequests": g.min_requests}
    if g.max_error_rate is not None:
        out["maxErrorRate"] = g.max_error_rate
    if g.max_p99_latency_ms is not None:
        out["maxP99LatencyMs"] = g.max_p99_latency_ms
    return out
