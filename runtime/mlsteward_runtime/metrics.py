"""Prometheus metrics and the sliding-window numbers behind GET /v1/stats.

Prometheus: each app owns a registry, so several apps can live in one process (tests) without clashing. When
PROMETHEUS_MULTIPROC_DIR is set before this module is imported (the server does that for --workers > 1), every
worker writes its samples to memory-mapped files there and /metrics aggregates all workers' files, so the numbers
stay correct whichever worker answers the scrape.

Sliding window: one bucket per second holding counts and a log-spaced latency histogram. Recording a request is a
few integer increments; quantiles are computed only when /v1/stats is read. Histograms add up, so the snapshots of
several workers merge exactly (see `SlidingStats.snapshot` and `merge_snapshots`).
"""

from __future__ import annotations

import bisect
import math
import os
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401 - re-exported for the app

__all__ = ["Metrics", "SlidingStats", "merge_snapshots", "quantiles_from_hist"]

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)

# Upper bounds in milliseconds of the sliding-window latency histogram: 20 bins per decade from 10 us to 100 s, so
# a quantile read from it is within about 12% of the true value.
_EDGES_MS: list[float] = [10 ** (-2 + i / 20) for i in range(0, 141)]


class Metrics:
    """The runtime's Prometheus metrics. Children are cached so the request path does one dict lookup."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mlsteward_requests", "Requests answered, by endpoint, HTTP status and model version.",
            ["endpoint", "status", "version"], registry=r,
        )
        self.latency = Histogram(
            "mlsteward_request_duration_seconds", "Time from the first byte of a request to its response.",
            ["endpoint", "version"], buckets=LATENCY_BUCKETS_S, registry=r,
        )
        self.batch_size = Histogram(
            "mlsteward_batch_rows", "Rows per model call after micro-batching.", ["version"],
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.in_flight = Gauge(
            "mlsteward_requests_in_flight", "Requests being processed.", ["version"], registry=r,
            multiprocess_mode="livesum",
        )
        self.load_seconds = Gauge(
            "mlsteward_model_load_seconds", "Time to fetch, verify and load the model.", ["version"], registry=r,
            multiprocess_mode="max",
        )
        self.digest_failures = Counter(
            "mlsteward_digest_failures", "Artifacts refused because their sha256 did not match.", ["version"],
            registry=r,
        )
        self.ready = Gauge(
            "mlsteward_model_ready", "1 when the model passed its readiness check.", ["version"], registry=r,
            multiprocess_mode="max",
        )
        self.rejected = Counter(
            "mlsteward_overload_rejections", "Requests refused with 503 because the batch queue was full.",
            ["version"], registry=r,
        )
        self.evictions = Counter(
            "mlsteward_buffer_evictions",
            "Entries dropped to keep a buffer within its byte budget (the oldest first where the buffer allows).",
            ["buffer", "version"], registry=r,
        )
        self.stage_seconds = Counter(
            "mlsteward_request_stage_seconds",
            "Time spent by prediction requests in each step of the request path, summed over requests: read (the "
            "body), parse (JSON), validate (protocol decode and signature checks), queue (waiting for a batch), "
            "predict (the request's share of its model call), observe (drift window, feedback store, logs), encode "
            "(response JSON) and total (the whole request inside the app); divide by stage_requests for a mean.",
            ["stage", "version"], registry=r,
        )
        self.stage_requests = Counter(
            "mlsteward_request_stage_requests", "Prediction requests counted in mlsteward_request_stage_seconds.",
            ["version"], registry=r,
        )
        self.stages = StageTimes(self)
        self._req_children: dict[tuple[str, int], Any] = {}
        self._lat_children: dict[str, Any] = {}
        self.batch_rows = self.batch_size.labels(version)
        self.in_flight_v = self.in_flight.labels(version)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        c = self._req_children.get(key)
        if c is None:
            c = self._req_children[key] = self.requests.labels(endpoint, str(status), self.version)
        c.inc()
        h = self._lat_children.get(endpoint)
        if h is None:
            h = self._lat_children[endpoint] = self.latency.labels(endpoint, self.version)
        h.observe(seconds)

    def exposition(self) -> bytes:
        self.stages.flush()
        if self.multiprocess_dir:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            return generate_latest(registry)
        return generate_latest(self.registry)


STAGES = ("read", "parse", "validate", "queue", "predict", "observe", "encode", "total")


class StageTimes:
    """Per-step seconds of the request path, summed in plain floats on the request path (a Prometheus increment
    per step and request would cost more than some steps) and added to the counters at most once a second and
    before every scrape."""

    __slots__ = ("seconds", "requests", "_metrics", "_last")

    def __init__(self, metrics: Metrics) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.requests = 0
        self._metrics = metrics
        self._last = time.monotonic()

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    def request_done(self, total: float) -> None:
        self.seconds["total"] += total
        self.requests += 1
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            self.flush()

    def flush(self) -> None:
        m, v = self._metrics, self._metrics.version
        for stage, secs in self.seconds.items():
            if secs:
                m.stage_seconds.labels(stage, v).inc(secs)
                self.seconds[stage] = 0.0
        if self.requests:
            m.stage_requests.labels(v).inc(self.requests)
            self.requests = 0


class _Bucket:
    __slots__ = ("second", "count", "errors", "client_errors", "hist", "fb", "correct", "labelled", "reward_n",
                 "reward_sum")

    def __init__(self, second: int, nbins: int) -> None:
        self.second = second
        self.count = 0
        self.errors = 0
        self.client_errors = 0
        self.hist = [0] * nbins
        self.fb = 0
        self.correct = 0
        self.labelled = 0
        self.reward_n = 0
        self.reward_sum = 0.0


class SlidingStats:
    """Per-second buckets over `window_s` seconds: requests, errors, latency histogram and feedback outcomes."""

    def __init__(self, window_s: float, clock: Any = time.time) -> None:
        self.window_s = float(window_s)
        self.nb = max(1, int(math.ceil(self.window_s)))
        self.clock = clock
        self.started = clock()
        self._nbins = len(_EDGES_MS) + 1
        self._buckets: list[_Bucket] = [_Bucket(-1, self._nbins) for _ in range(self.nb)]

    def _bucket(self, now: float) -> _Bucket:
        sec = int(now)
        b = self._buckets[sec % self.nb]
        if b.second != sec:
            b.__init__(sec, self._nbins)  # type: ignore[misc]
        return b

    def record(self, latency_ms: float, error: bool, client_error: bool = False) -> None:
        b = self._bucket(self.clock())
        b.count += 1
        if error:
            b.errors += 1
        elif client_error:
            b.client_errors += 1
        b.hist[bisect.bisect_left(_EDGES_MS, latency_ms)] += 1

    def record_feedback(self, correct: bool | None, reward: float | None, labelled: int = 1) -> None:
        b = self._bucket(self.clock())
        b.fb += 1
        if correct is not None:
            b.labelled += labelled
            b.correct += int(correct) if isinstance(correct, bool) else correct
        if reward is not None:
            b.reward_n += 1
            b.reward_sum += reward

    def snapshot(self) -> dict[str, Any]:
        """Mergeable totals over the window: counts and the latency histogram."""
        now = self.clock()
        lo = int(now) - self.nb + 1
        snap = {"count": 0, "errors": 0, "client_errors": 0, "hist": [0] * self._nbins, "fb": 0, "correct": 0,
                "labelled": 0, "reward_n": 0, "reward_sum": 0.0,
                "span_s": min(self.window_s, max(now - self.started, 1e-9))}
        hist = snap["hist"]
        for b in self._buckets:
            if b.second >= lo:
                snap["count"] += b.count
                snap["errors"] += b.errors
                snap["client_errors"] += b.client_errors
                snap["fb"] += b.fb
                snap["correct"] += b.correct
                snap["labelled"] += b.labelled
                snap["reward_n"] += b.reward_n
                snap["reward_sum"] += b.reward_sum
                for i, v in enumerate(b.hist):
                    if v:
                        hist[i] += v
        return snap


def merge_snapshots(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the snapshots of several workers; the span is the longest (they cover the same wall-clock window)."""
    out = {"count": 0, "errors": 0, "client_errors": 0, "hist": None, "fb": 0, "correct": 0, "labelled": 0,
           "reward_n": 0, "reward_sum": 0.0, "span_s": 1e-9}
    for s in snaps:
        for k in ("count", "errors", "client_errors", "fb", "correct", "labelled", "reward_n", "reward_sum"):
            out[k] += s[k]
        out["span_s"] = max(out["span_s"], s["span_s"])
        if out["hist"] is None:
            out["hist"] = list(s["hist"])
        else:
            out["hist"] = [a + b for a, b in zip(out["hist"], s["hist"], strict=True)]
    if out["hist"] is None:
        out["hist"] = [0] * (len(_EDGES_MS) + 1)
    return out


def quantiles_from_hist(hist: list[int], qs: tuple[float, ...] = (0.5, 0.95, 0.99)) -> list[float | None]:
    """Quantiles (ms) by linear interpolation inside the log-spaced bins; None when the histogram is empty."""
    total = sum(hist)
    if total == 0:
        return [None for _ in qs]
    out: list[float | None] = []
    for q in qs:
        target = q * total
        cum = 0
        for i, v in enumerate(hist):
            if v and cum + v >= target:
                lo = _EDGES_MS[i - 1] if i > 0 else 0.0
                hi = _EDGES_MS[i] if i < len(_EDGES_MS) else _EDGES_MS[-1]
                frac = (target - cum) / v
                out.append(round(lo + (hi - lo) * frac, 4))
                break
            cum += v
    return out
