"""Per-arm counters of one router replica, exported as RouterStats for the operator to merge.

Everything the operator merges across replicas is a count or a sum (requests, errors, fallbacks, histogram
buckets, outcome n/sum/sumsq), so merging is addition. Quantiles are per replica, computed from a bounded window
of recent latencies; the operator should derive fleet quantiles from the merged buckets instead.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Any

import numpy as np

from mlsteward_runtime.contracts import Quantiles, RouterStats, VersionStats

# Upper bounds (ms) of the latency histogram. Fixed so that every replica's buckets line up and can be summed.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, math.inf,
)


def bound_label(b: float) -> str:
    return "+Inf" if math.isinf(b) else f"{b:g}"


def quantiles(samples: deque[float] | list[float]) -> Quantiles:
    if not samples:
        return Quantiles()
    p50, p95, p99 = np.percentile(np.fromiter(samples, dtype=float, count=len(samples)), [50, 95, 99])
    return Quantiles(p50=round(float(p50), 3), p95=round(float(p95), 3), p99=round(float(p99), 3))


class LatencyRecorder:
    """A fixed-bound histogram (mergeable) plus a window of recent samples (for this replica's quantiles)."""

    __slots__ = ("counts", "window", "total", "total_sq")

    def __init__(self, window: int) -> None:
        self.counts = [0] * len(LATENCY_BOUNDS_MS)
        self.window: deque[float] = deque(maxlen=window)
        # Sum and sum of squares of every latency observed: the sufficient statistics of a latency experiment.
        self.total = 0.0
        self.total_sq = 0.0

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BOUNDS_MS, ms)] += 1
        self.window.append(ms)
        self.total += ms
        self.total_sq += ms * ms

    def buckets(self) -> dict[str, int]:
        out: dict[str, int] = {}
        running = 0
        for bound, count in zip(LATENCY_BOUNDS_MS, self.counts):
            running += count
            out[bound_label(bound)] = running
        return out


class ArmCounters:
    __slots__ = ("version", "requests", "errors", "fallbacks", "latency", "outcomes", "outcome_sum",
                 "outcome_sumsq", "since_n", "since_sum", "since_sumsq")

    def __init__(self, version: str, window: int) -> None:
        self.version = version
        self.requests = 0
        self.errors = 0
        self.fallbacks = 0
        self.latency = LatencyRecorder(window)
        self.outcomes = 0
        self.outcome_sum = 0.0
        self.outcome_sumsq = 0.0
        # Outcomes since the current config was loaded: the bandits add these to the config's merged priors,
        # which already include everything the operator had collected when it wrote the config.
        self.since_n = 0
        self.since_sum = 0.0
        self.since_sumsq = 0.0

    def record_outcome(self, value: float) -> None:
        self.outcomes += 1
        self.outcome_sum += value
        self.outcome_sumsq += value * value
        self.since_n += 1
        self.since_sum += value
        self.since_sumsq += value * value

    def export(self) -> VersionStats:
        return VersionStats(
            version=self.version,
            requests=self.requests,
            errors=self.errors,
            fallbacks=self.fallbacks,
            latency_ms=quantiles(self.latency.window),
            latency_buckets=self.latency.buckets(),
            latency_sum_ms=self.latency.total,
            latency_sumsq_ms=self.latency.total_sq,
            outcomes=self.outcomes,
            outcome_sum=self.outcome_sum,
            outcome_sumsq=self.outcome_sumsq,
        )


class ShadowCounters:
    """How the shadow version would have done on mirrored traffic."""

    def __init__(self, version: str, window: int) -> None:
        self.version = version
        self.mirrored = 0
        self.errors = 0
        self.dropped = 0
        self.compared = 0
        self.agreed = 0
        self.rows_compared = 0
        self.rows_agreed = 0
        self.latency = LatencyRecorder(window)

    def export(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "mirrored": self.mirrored,
            "errors": self.errors,
            "dropped": self.dropped,
            "compared": self.compared,
            "agreed": self.agreed,
            "agreement": (self.agreed / self.compared) if self.compared else None,
            "rows_compared": self.rows_compared,
            "rows_agreed": self.rows_agreed,
            "latency_ms": quantiles(self.latency.window).model_dump(),
            "latency_buckets": self.latency.buckets(),
        }


class StatsStore:
    """All counters of this replica. Counters survive config reloads; versions are added as they appear."""

    def __init__(self, deployment: str, replica: str, started: float, window: int = 4096) -> None:
        self.deployment = deployment
        self.replica = replica
        self.started = started
        self.window = window
        self.arms: dict[str, ArmCounters] = {}
        self.shadows: dict[str, ShadowCounters] = {}
        self.shadow_version: str | None = None

    def arm(self, version: str) -> ArmCounters:
        c = self.arms.get(version)
        if c is None:
            c = self.arms[version] = ArmCounters(version, self.window)
        return c

    def shadow(self, version: str) -> ShadowCounters:
        c = self.shadows.get(version)
        if c is None:
            c = self.shadows[version] = ShadowCounters(version, self.window)
        return c

    def reset_since(self) -> None:
        for c in self.arms.values():
            c.since_n, c.since_sum, c.since_sumsq = 0, 0.0, 0.0

    def outcomes_since(self) -> dict[str, tuple[int, float, float]]:
        return {v: (c.since_n, c.since_sum, c.since_sumsq) for v, c in self.arms.items()}

    def export(self) -> RouterStats:
        shadow = None
        if self.shadow_version is not None or self.shadows:
            shadow = {v: c.export() for v, c in self.shadows.items()}
        return RouterStats(
            deployment=self.deployment,
            replica=self.replica,
            started=self.started,
            versions={v: c.export() for v, c in self.arms.items()},
            shadow=shadow,
        )


def merge_version_stats(replicas: list[RouterStats]) -> dict[str, VersionStats]:
    """Sum the per-version counters of several replicas (what the operator does). Quantiles are left empty."""
    merged: dict[str, VersionStats] = {}
    for r in replicas:
        for v, s in r.versions.items():
            m = merged.setdefault(v, VersionStats(version=v))
            m.requests += s.requests
            m.errors += s.errors
            m.fallbacks += s.fallbacks
            m.outcomes += s.outcomes
            m.outcome_sum += s.outcome_sum
            m.outcome_sumsq += s.outcome_sumsq
            m.latency_sum_ms += s.latency_sum_ms
            m.latency_sumsq_ms += s.latency_sumsq_ms
            for k, c in s.latency_buckets.items():
                m.latency_buckets[k] = m.latency_buckets.get(k, 0) + c
    return merged
