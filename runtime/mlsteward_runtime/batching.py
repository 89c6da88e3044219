"""Adaptive micro-batching: concurrent requests share one model call.

Requests append their validated matrix to a pending list and await a future. A flush concatenates the pending
matrices (up to `max_batch_size` rows), calls the model once and hands each request its slice, so results are
exactly those of one call per request for row-wise models (tested). Adaptivity: while traffic is sequential (the
recent batches held one request) a flush is scheduled for the next loop iteration, adding no wait; once requests
overlap, the flush waits up to `max_wait_ms` for the batch to fill. When more than `max_queue` requests, or more
than `max_queue_bytes` bytes of input matrices, are waiting, new ones are refused with Overloaded (503 with
Retry-After) instead of growing the queue without bound: a count alone does not bound memory when one request may
carry 10,000 rows of hundreds of features.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from mlsteward_runtime.errors import Overloaded

__all__ = ["Batcher", "Predictor"]

# (predictions, probabilities or None) for a matrix.
Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


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
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.executor = executor
        self.on_batch = on_batch
        self.max_queue_bytes = max_queue_bytes
        self.on_shed = on_shed
        self._bytes = 0
        self._pending: list[tuple[np.ndarray, asyncio.Future[Any]]] = []
        self._rows = 0
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._running = 0
        # Exponential average of requests per flush; above ~1.5 the traffic overlaps and waiting pays off.
        self._avg_requests = 1.0

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def submit(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if len(self._pending) >= self.max_queue:
            self._shed(f"{len(self._pending)} requests are waiting for the model; retry shortly", "max_queue")
        # One request is always admitted to an empty queue, however large: the request limits bound it.
        if self.max_queue_bytes is not None and self._pending and self._bytes + X.nbytes > self.max_queue_bytes:
            self._shed(f"{self._bytes} bytes of input are waiting for the model (budget {self.max_queue_bytes}); "
                       "retry shortly", "max_queue_bytes")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((X, fut))
        self._rows += len(X)
        self._bytes += X.nbytes
        if self._rows >= self.max_batch_size:
            self._cancel_scheduled()
            self._scheduled = loop.call_soon(self._flush)
        elif self._scheduled is None:
            if self._avg_requests < 1.5 or self.max_wait_s == 0:
                self._scheduled = loop.call_soon(self._flush)
            else:
                self._scheduled = loop.call_later(self.max_wait_s, self._flush)
        return await fut

    def _shed(self, message: str, rule: str) -> None:
        if self.on_shed is not None:
            self.on_shed()
        raise Overloaded(message, field="queue", rule=rule)

    def _cancel_scheduled(self) -> None:
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future[Any]]]:
        # Take whole requests up to max_batch_size rows (at least one request, however large it is).
        taken: list[tuple[np.ndarray, asyncio.Future[Any]]] = []
        rows = 0
        while self._pending:
            X, fut = self._pending[0]
            if taken and rows + len(X) > self.max_batch_size:
                break
            self._pending.pop(0)
            rows += len(X)
            self._bytes -= X.nbytes
            if not fut.cancelled():
                taken.append((X, fut))
        self._rows -= rows
        return taken

    def _flush(self) -> None:
        self._scheduled = None
        batch = self._take()
        if self._pending:
            loop = asyncio.get_running_loop()
            self._scheduled = loop.call_soon(self._flush)
        if not batch:
            return
        self._avg_requests = 0.8 * self._avg_requests + 0.2 * len(batch)
        if self.executor is None:
            self._run(batch)
        else:
            loop = asyncio.get_running_loop()
            loop.run_in_executor(self.executor, self._run_threaded, batch, loop)

    def _run_threaded(self, batch: list[tuple[np.ndarray, asyncio.Future[Any]]], loop: asyncio.AbstractEventLoop) -> None:
        results = self._compute(batch)
        loop.call_soon_threadsafe(self._deliver, batch, results)

    def _run(self, batch: list[tuple[np.ndarray, asyncio.Future[Any]]]) -> None:
        self._deliver(batch, self._compute(batch))

    def _compute(self, batch: list[tuple[np.ndarray, asyncio.Future[Any]]]) -> list[Any]:
        """One result (or exception) per request."""
        if len(batch) == 1:
            X = batch[0][0]
            try:
                if self.on_batch:
                    self.on_batch(len(X))
                return [self.predict(X)]
            except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
                return [exc]
        X = np.concatenate([x for x, _ in batch]) if len(batch) > 1 else batch[0][0]
        try:
            if self.on_batch:
                self.on_batch(len(X))
            pred, proba = self.predict(X)
        except Exception:  # noqa: BLE001
            # One request's rows broke the joint call; retry one by one so only that request gets the error.
            out: list[Any] = []
            for x, _ in batch:
                try:
                    out.append(self.predict(x))
                except Exception as exc:  # noqa: BLE001
                    out.append(exc)
            return out
        results: list[Any] = []
        start = 0
        for x, _ in batch:
            end = start + len(x)
            results.append((pred[start:end], None if proba is None else proba[start:end]))
            start = end
        return results

    @staticmethod
    def _deliver(batch: list[tuple[np.ndarray, asyncio.Future[Any]]], results: list[Any]) -> None:
        for (_, fut), res in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)
