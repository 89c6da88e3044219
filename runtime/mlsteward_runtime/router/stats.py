"""Per-arm counters of one router replica, exported as RouterStats for the operator to merge.

Counts (requests, errors, fallbacks, histogram buckets) merge across replicas by addition. Outcomes and
latencies are kept as (n, mean, M2) with Welford's update and merge with Chan's formula
(`mlsteward_runtime.stats.moments`), so no single value can turn them into inf or NaN (rewards are bounded before
they get here) and a metric with a large mean keeps its variance; the sums and sums of squares are still exported,
derived from those, for readers that predate them. Quantiles are per replica, computed from a bounded window of
recent latencies; the operator should derive fleet quantiles from the merged buckets instead.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

import numpy as np

from mlsteward_runtime.contracts import Quantiles, RouterStats, ShadowStats, VersionStats
from mlsteward_runtime.stats.moments import Moments, Welford

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

    __slots__ = ("counts", "window", "moments")

    def __init__(self, window: int) -> None:
        self.counts = [0] * len(LATENCY_BOUNDS_MS)
        self.window: deque[float] = deque(maxlen=window)
        # Every latency observed, as (n, mean, M2): the sufficient statistics of a latency experiment.
        self.moments = Welford()

    def observe(self, ms: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BOUNDS_MS, ms)] += 1
        self.window.append(ms)
        self.moments.add(ms)

    def buckets(self) -> dict[str, int]:
        out: dict[str, int] = {}
        running = 0
        for bound, count in zip(LATENCY_BOUNDS_MS, self.counts):
            running += count
            out[bound_label(bound)] = running
        return out


class ArmCounters:
    __slots__ = ("version", "requests", "errors", "fallbacks", "latency", "outcomes", "since")

    def __init__(self, version: str, window: int) -> None:
        self.version = version
        self.requests = 0
        self.errors = 0
        self.fallbacks = 0
        self.latency = LatencyRecorder(window)
        self.outcomes = Welford()
        # Outcomes since the current config was loaded: the bandits add these to the config's merged priors,
        # which already include everything the operator had collected when it wrote the config.
        self.since = Welford()

    def record_outcome(self, value: float) -> None:
        self.outcomes.add(value)
        self.since.add(value)

    def export(self) -> VersionStats:
        out, lat = self.outcomes, self.latency.moments
        return VersionStats(
            version=self.version,
            requests=self.requests,
            errors=self.errors,
            fallbacks=self.fallbacks,
            latency_ms=quantiles(self.latency.window),
            latency_buckets=self.latency.buckets(),
            latency_sum_ms=lat.total,
            latency_sumsq_ms=lat.total_sq,
            latency_mean_ms=lat.mean,
            latency_m2_ms=lat.m2,
            outcomes=out.n,
            outcome_sum=out.total,
            outcome_sumsq=out.total_sq,
            outcome_mean=out.mean,
            outcome_m2=out.m2,
        )


PAIR_CELLS = ("both_correct", "served_only", "shadow_only", "neither")


class ShadowCounters:
    """How the shadow version would have done on mirrored traffic, exported as `ShadowStats`.

    `kind` is the comparison the config asks for (ShadowConfig.kind), set with every mirror and exported as
    "classification" when unset. Regression adds, per compared row where both answers are numbers, |served - shadow| to `diff`; and per
    labelled row |shadow error| - |served error| to `error_diff` (see `pairs`). Classification pairs fill the four
    cells of the paired table. A difference that is not finite (two answers near the float limits) is left out, so
    no answer can turn the moments into inf or NaN.
    """

    __slots__ = ("version", "kind", "mirrored", "errors", "dropped", "compared", "agreed", "rows_compared",
                 "rows_agreed", "latency", "diff", "pairs", "both_correct", "served_only", "shadow_only", "neither",
                 "error_diff")

    def __init__(self, version: str, window: int) -> None:
        self.version = version
        self.kind: str | None = None
        self.mirrored = 0
        self.errors = 0
        self.dropped = 0
        self.compared = 0
        self.agreed = 0
        self.rows_compared = 0
        self.rows_agreed = 0
        self.latency = LatencyRecorder(window)
        self.diff = Welford()
        self.pairs = 0
        self.both_correct = 0
        self.served_only = 0
        self.shadow_only = 0
        self.neither = 0
        self.error_diff = Welford()

    def add_diff(self, value: float) -> bool:
        return _add_finite(self.diff, value)

    def add_pair(self, cell: str) -> None:
        """One classification pair, `cell` one of both_correct, served_only, shadow_only, neither."""
        if cell not in PAIR_CELLS:
            raise ValueError(f"not a cell of the paired table: {cell!r}")
        setattr(self, cell, getattr(self, cell) + 1)
        self.pairs += 1

    def add_error_pair(self, diffs: list[float]) -> int:
        """One regression pair: its rows' |shadow error| - |served error|. Returns the rows taken (the finite ones);
        with none, nothing is counted."""
        taken = sum(_add_finite(self.error_diff, d) for d in diffs)
        self.pairs += taken > 0
        return taken

    def export(self) -> ShadowStats:
        d, e = self.diff, self.error_diff
        return ShadowStats(
            version=self.version,
            kind="regression" if self.kind == "regression" else "classification",
            mirrored=self.mirrored,
            errors=self.errors,
            dropped=self.dropped,
            compared=self.compared,
            agreed=self.agreed,
            rows_compared=self.rows_compared,
            rows_agreed=self.rows_agreed,
            diff_n=d.n,
            diff_mean=d.mean,
            diff_m2=max(0.0, d.m2),
            latency_ms=quantiles(self.latency.window),
            latency_buckets=self.latency.buckets(),
            pairs=self.pairs,
            both_correct=self.both_correct,
            served_only=self.served_only,
            shadow_only=self.shadow_only,
            neither=self.neither,
            error_diff_n=e.n,
            error_diff_mean=e.mean,
            error_diff_m2=max(0.0, e.m2),
        )


def _add_finite(w: Welford, x: float) -> bool:
    """Adds x unless x, or the mean or M2 it would leave, is not finite (values near the float limits)."""
    if not math.isfinite(x):
        return False
    saved = (w.n, w.mean, w.m2, w.total, w.total_sq)
    w.add(x)
    if math.isfinite(w.mean) and math.isfinite(w.m2):
        return True
    w.n, w.mean, w.m2, w.total, w.total_sq = saved
    return False


class StatsStore:
    """All counters of this replica. Counters survive config reloads; versions are added as they appear."""

    def __init__(self, deployment: str, replica: str, started: float, window: int = 4096) -> None:
        self.deployment = deployment
        self.replica = replica
        self.started = started
        self.window = window
        self.generation: str | None = None  # of the config served, and when it was loaded
        self.config_loaded_at: float | None = None
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
            c.since = Welford()

    def outcomes_since(self) -> dict[str, tuple[int, float, float, float]]:
        """(n, sum, sum of squares, M2) per version, the shape the bandits take."""
        return {v: (c.since.n, c.since.total, c.since.total_sq, c.since.m2) for v, c in self.arms.items()}

    def export(self) -> RouterStats:
        shadow = None
        if self.shadow_version is not None or self.shadows:
            shadow = {v: c.export() for v, c in self.shadows.items()}
        return RouterStats(
            deployment=self.deployment,
            replica=self.replica,
            started=self.started,
            generation=self.generation,
            config_loaded_at=self.config_loaded_at,
            versions={v: c.export() for v, c in self.arms.items()},
            shadow=shadow,
        )


def version_moments(vs: VersionStats, kind: str = "outcome") -> Moments:
    """A VersionStats' outcomes (or, kind "latency", latencies) as Moments; from the sums when M2 is missing."""
    if kind == "latency":
        n, mean, m2, total, total_sq = vs.requests, vs.latency_mean_ms, vs.latency_m2_ms, vs.latency_sum_ms, \
            vs.latency_sumsq_ms
    else:
        n, mean, m2, total, total_sq = vs.outcomes, vs.outcome_mean, vs.outcome_m2, vs.outcome_sum, vs.outcome_sumsq
    if mean is not None and m2 is not None:
        return Moments(n, mean, m2) if n else Moments()
    return Moments.from_sums(n, total, total_sq)


def merge_version_stats(replicas: list[RouterStats]) -> dict[str, VersionStats]:
    """Merge the per-version counters of several replicas (what the operator does): counts and sums add, the
    means and M2 of outcomes and latencies merge with Chan's formula. Quantiles are left empty."""
    merged: dict[str, VersionStats] = {}
    outcomes: dict[str, Moments] = {}
    latencies: dict[str, Moments] = {}
    for r in replicas:
        for v, s in r.versions.items():
            m = merged.setdefault(v, VersionStats(version=v))
            m.requests += s.requests
            m.errors += s.errors
            m.fallbacks += s.fallbacks
            outcomes[v] = outcomes.get(v, Moments()).merge(version_moments(s))
            latencies[v] = latencies.get(v, Moments()).merge(version_moments(s, "latency"))
            for k, c in s.latency_buckets.items():
                m.latency_buckets[k] = m.latency_buckets.get(k, 0) + c
            m.outcomes += s.outcomes
            m.outcome_sum += s.outcome_sum
            m.outcome_sumsq += s.outcome_sumsq
            m.latency_sum_ms += s.latency_sum_ms
            m.latency_sumsq_ms += s.latency_sumsq_ms
    for v, m in merged.items():
        m.outcome_mean, m.outcome_m2 = outcomes[v].mean, outcomes[v].m2
        m.latency_mean_ms, m.latency_m2_ms = latencies[v].mean, latencies[v].m2
    return merged
