"""Adaptive micro-batching: concurrent requests share one model call.

Requests append their validated matrix to a pending list and await a future. A flush concatenates the pending
matrices (up to `max_batch_size` rows), calls the model once and hands each request its slice, so results are
exactly those of one call per request for row-wise models (tested).

When to flush. The batcher measures what a model call costs (a fixed part per call and a part per row, fitted on
the recent calls), how often requests arrive and how many share a call. A request waits for company only while
waiting is expected to pay off: when requests overlap (recent calls served more than one; a sequential client
cannot send its next request before this one is answered) and the next request is expected sooner than the fixed
cost of the separate call it would otherwise need,
and never longer than `max_wait_ms` nor past the moment the batch is expected to be full. Otherwise (sequential
traffic, a cheap model, arrivals further apart than a call costs) the flush runs on the next loop iteration, adding
no wait; requests that arrive while the loop is busy still share that call. A batch that is full is flushed at
once, and a request that carries `direct_rows` rows or more is a batch by itself: it skips the queue and the hop.

Large requests are batched too. A scikit-learn call has a large fixed cost next to its cost per row (input checks
and dispatch: about 90 µs for a LogisticRegression, milliseconds for a forest's trees, against well under a
microsecond and about 10 µs a row), so concurrent requests of 100 rows gain from sharing a call as much as
single rows do; hence a default `max_batch_size` of 1024 rows rather than a few dozen.

With an executor, at most `concurrency` calls run at once and requests wait in this queue (where the bounds below
apply and where they join the next batch) rather than in the executor's unbounded one.

Shedding. When more than `max_queue` requests, or more than `max_queue_bytes` bytes of input matrices, are waiting,
or when full batches queue up and the queue holds more work than the model is expected to finish within
`max_queue_delay_ms`, a new request is refused with Overloaded (503 with Retry-After; the rule names which bound)
instead of letting latency grow without bound. A request is always admitted to an empty queue, however large: the
request limits bound it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from mlsteward_runtime.errors import Overloaded

__all__ = ["Batcher", "CallCost", "Predictor"]

# (predictions, probabilities or None) for a matrix.
Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]
# (seconds the batch's requests waited in the queue, summed; seconds of the model call; requests; rows)
TimingHook = Callable[[float, float, int, int], None]

# Weight of the newest sample in the running estimates (about the last 20 calls or arrivals count).
_ALPHA = 0.05
# An arrival gap longer than this is idleness, not a rate: it is clipped so one pause does not dominate the average.
_GAP_CLIP_S = 0.05


class CallCost:
    """What a model call costs, `fixed + per_row * rows` seconds, fitted by exponentially weighted least squares
    over the recent calls. Until two different batch sizes were seen, the whole cost counts as fixed."""

    __slots__ = ("fixed", "per_row", "_w", "_n", "_t", "_nn", "_nt")

    def __init__(self) -> None:
        self.fixed = 0.0
        self.per_row = 0.0
        self._w = self._n = self._t = self._nn = self._nt = 0.0

    def observe(self, rows: int, seconds: float) -> None:
        k = 1.0 - _ALPHA
        self._w = self._w * k + 1.0
        self._n = self._n * k + rows
        self._t = self._t * k + seconds
        self._nn = self._nn * k + rows * rows
        self._nt = self._nt * k + rows * seconds
        mean_n, mean_t = self._n / self._w, self._t / self._w
        var = self._nn / self._w - mean_n * mean_n
        slope = (self._nt / self._w - mean_n * mean_t) / var if var > 1e-6 * max(mean_n * mean_n, 1.0) else 0.0
        slope = max(slope, 0.0)
        fixed = mean_t - slope * mean_n
        if fixed < 0.0:
            fixed, slope = 0.0, mean_t / max(mean_n, 1.0)
        self.fixed, self.per_row = fixed, slope

    def seconds(self, rows: int, calls: int = 1) -> float:
        return self.fixed * calls + self.per_row * rows


class Batcher:
    def __init__(
        self,
        predict: Predictor,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 1.0,
        max_queue: int = 2048,
        executor: Executor | None = None,
        on_batch: Callable[[int], None] | None = None,
        max_queue_bytes: int | None = None,
        on_shed: Callable[[], None] | None = None,
        direct_rows: int | None = None,
        max_queue_delay_ms: float | None = None,
        concurrency: int = 1,
        on_timing: TimingHook | None = None,
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.executor = executor
        self.on_batch = on_batch
        self.max_queue_bytes = max_queue_bytes
        self.on_shed = on_shed
        self.direct_rows = direct_rows if direct_rows else max_batch_size
        self.max_queue_delay_s = max_queue_delay_ms / 1000.0 if max_queue_delay_ms else None
        self.concurrency = max(1, concurrency)
        self.on_timing = on_timing
        self.cost = CallCost()
        # Mean seconds between arrivals (exponential average, gaps clipped at _GAP_CLIP_S); starts "idle".
        self.gap = _GAP_CLIP_S
        self._last_arrival: float | None = None
        self._bytes = 0
        self._pending: deque[tuple[np.ndarray, asyncio.Future[Any], float]] = deque()
        self._rows = 0
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._deadline = 0.0  # when the forming batch is flushed at the latest (while a timer is set)
        self._running = 0  # calls in the executor
        # Exponential average of requests per queued call; near 1 the traffic is sequential (a client waits for
        # its answer before sending the next request), and then nobody else can arrive while a request waits.
        self._avg_requests = 1.0

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def submit(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        now = time.perf_counter()
        if self._last_arrival is not None:
            self.gap += _ALPHA * (min(now - self._last_arrival, _GAP_CLIP_S) - self.gap)
        self._last_arrival = now
        if len(X) >= self.direct_rows:
            return await self._direct(X)
        if self._pending:
            self._admit(X)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((X, fut, now))
        self._rows += len(X)
        self._bytes += X.nbytes
        if self.executor is not None and self._running >= self.concurrency:
            return await fut  # the running call's completion flushes the queue
        if self._rows >= self.max_batch_size:
            if self._scheduled is None or isinstance(self._scheduled, asyncio.TimerHandle):
                self._cancel_scheduled()
                self._scheduled = loop.call_soon(self._flush)
        elif self._scheduled is None:
            wait = self._wait_s()
            if wait <= 0.0:
                self._scheduled = loop.call_soon(self._flush)
            else:
                self._deadline = now + wait
                self._scheduled = loop.call_at(self._loop_time(loop, now, self._deadline), self._flush)
        elif isinstance(self._scheduled, asyncio.TimerHandle) and now + self.gap > self._deadline:
            # The next arrival is not expected before the deadline: waiting longer buys nothing.
            self._cancel_scheduled()
            self._scheduled = loop.call_soon(self._flush)
        return await fut

    @staticmethod
    def _loop_time(loop: asyncio.AbstractEventLoop, now: float, at: float) -> float:
        return loop.time() + (at - now)

    def _wait_s(self) -> float:
        """How long the first request of a new batch waits for company: zero unless requests overlap (recent
        calls served more than one) and the next arrival is expected sooner than the fixed cost of the call it
        would otherwise need; then until the batch is expected to be full, at most max_wait_ms."""
        if self.max_wait_s <= 0.0 or self._avg_requests < 1.5 or self.gap >= self.cost.fixed:
            return 0.0
        return min(self.max_wait_s, self.gap * (self.max_batch_size - self._rows))

    def _admit(self, X: np.ndarray) -> None:
        """Refuse a request the queue cannot take (the queue is not empty)."""
        if len(self._pending) >= self.max_queue:
            self._shed(f"{len(self._pending)} requests are waiting for the model; retry shortly", "max_queue")
        if self.max_queue_bytes is not None and self._bytes + X.nbytes > self.max_queue_bytes:
            self._shed(f"{self._bytes} bytes of input are waiting for the model (budget {self.max_queue_bytes}); "
                       "retry shortly", "max_queue_bytes")
        rows = self._rows + len(X)
        # A request that still fits the forming batch waits for one call, whatever it costs: the budget applies
        # once full batches queue up ahead of it.
        if self.max_queue_delay_s is not None and rows > self.max_batch_size:
            ahead = self.cost.seconds(rows, math.ceil(rows / self.max_batch_size))
            if self.executor is not None:
                ahead /= self.concurrency
            if ahead > self.max_queue_delay_s:
                self._shed(f"the requests waiting for the model need about {ahead * 1000:.0f} ms of model time, "
                           f"over the {self.max_queue_delay_s * 1000:g} ms budget; retry shortly", "max_queue_delay")

    def _shed(self, message: str, rule: str) -> None:
        if self.on_shed is not None:
            self.on_shed()
        raise Overloaded(message, field="queue", rule=rule)

    async def _direct(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A request that fills a batch by itself: one call, no queue, no future."""
        if self.executor is None:
            res = self._compute([(X, None, time.perf_counter())])[0]
        else:
            loop = asyncio.get_running_loop()
            res = (await loop.run_in_executor(self.executor, self._compute, [(X, None, time.perf_counter())]))[0]
        if isinstance(res, BaseException):
            raise res
        return res  # type: ignore[no-any-return]

    def _cancel_scheduled(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future[Any], float]]:
        # Take whole requests up to max_batch_size rows (at least one request, however large it is).
        taken: list[tuple[np.ndarray, asyncio.Future[Any], float]] = []
        rows = 0
        pending = self._pending
        while pending:
            X = pending[0][0]
            if taken and rows + len(X) > self.max_batch_size:
                break
            item = pending.popleft()
            rows += len(X)
            self._bytes -= X.nbytes
            if not item[1].cancelled():
                taken.append(item)
        self._rows -= rows
        return taken

    def _flush(self) -> None:
        self._scheduled = None
        if self.executor is not None and self._running >= self.concurrency:
            return
        batch = self._take()
        loop = asyncio.get_running_loop()
        if self._pending and (self.executor is None or self._running + 1 < self.concurrency):
            self._scheduled = loop.call_soon(self._flush)
        if not batch:
            return
        self._avg_requests += 0.2 * (len(batch) - self._avg_requests)
        if self.executor is None:
            self._deliver(batch, self._compute(batch))
        else:
            self._running += 1
            loop.run_in_executor(self.executor, self._run_threaded, batch, loop)

    def _run_threaded(self, batch: list[tuple[np.ndarray, asyncio.Future[Any], float]],
                      loop: asyncio.AbstractEventLoop) -> None:
        try:
            results = self._compute(batch)
        except BaseException as exc:  # noqa: BLE001 - every waiting request must hear back
            results = [exc] * len(batch)
        loop.call_soon_threadsafe(self._done_threaded, batch, results)

    def _done_threaded(self, batch: list[tuple[np.ndarray, asyncio.Future[Any], float]], results: list[Any]) -> None:
        self._running -= 1
        self._deliver(batch, results)
        if self._pending and self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_soon(self._flush)

    def _call(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        t0 = time.perf_counter()
        out = self.predict(X)
        self.cost.observe(len(X), time.perf_counter() - t0)
        return out

    def _compute(self, batch: list[tuple[np.ndarray, Any, float]]) -> list[Any]:
        """One result (or exception) per request."""
        start_t = time.perf_counter()
        waited = sum(start_t - t for _, _, t in batch)
        X = np.concatenate([x for x, _, _ in batch]) if len(batch) > 1 else batch[0][0]
        if self.on_batch:
            self.on_batch(len(X))
        try:
            pred, proba = self._call(X)
        except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
            if len(batch) == 1:
                return [exc]
            # One request's rows broke the joint call; retry one by one so only that request gets the error.
            out: list[Any] = []
            for x, _, _ in batch:
                try:
                    out.append(self.predict(x))
                except Exception as exc1:  # noqa: BLE001
                    out.append(exc1)
            return out
        finally:
            if self.on_timing is not None:
                self.on_timing(waited, time.perf_counter() - start_t, len(batch), len(X))
        if len(batch) == 1:
            return [(pred, proba)]
        results: list[Any] = []
        start = 0
        for x, _, _ in batch:
            end = start + len(x)
            results.append((pred[start:end], None if proba is None else proba[start:end]))
            start = end
        return results

    @staticmethod
    def _deliver(batch: list[tuple[np.ndarray, asyncio.Future[Any], float]], results: list[Any]) -> None:
        for (_, fut, _), res in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)
