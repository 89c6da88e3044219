"""Wake-ups: which objects of a kind need a reconcile now, and which at a deadline they set themselves (STYLE §9).

A `WorkQueue` per kind holds object keys, as controller-runtime's rate-limited work queue does. A watch event that
matters calls `wake(key)`; a reconcile that must look again later (the end of a canary step, the next drift check,
the next health sample, a retry) returns a deadline, and the key is woken when it comes due. A steady object
therefore costs nothing: no timer fires for it and no request is made.

Why a queue and not one kopf daemon (or timer) per object: a daemon needs a finalizer on every object (kopf adds
one so that it can stop the daemon before deletion), i.e. a write per object and a deletion that hangs while the
operator is down; a timer writes kopf's bookkeeping every interval (N objects at interval T cost N/T requests/s).
A queue also bounds concurrency (`workers`) whatever N is, and gives each key three guarantees:

- one reconcile of a key at a time; a wake-up that arrives while it runs is not lost: the key runs once more after;
- wake-ups that arrive while a key waits in the queue collapse into one reconcile;
- a key's deadline is the one its latest reconcile returned (an earlier wake-up runs it sooner; the new run then
  sets the next deadline), so stale deadlines never fire.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger(__name__)

# A reconcile callback returns the loop time (seconds, asyncio's clock) at which it wants to run again, or None
# to wait for a wake-up only.
Reconcile = Callable[[Hashable], Awaitable[float | None]]


class WorkQueue:
    """Keys to reconcile now or at a deadline, run by `workers` tasks (see the module docstring)."""

    def __init__(self, name: str, reconcile: Reconcile, *, workers: int = 4) -> None:
        self.name = name
        self._reconcile = reconcile
        self._workers = workers
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._running: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._deadlines: dict[Hashable, float] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._seq = 0
        self._timer_changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # ----------------------------------------------------------------------------------------------------------
    # Producers
    # ----------------------------------------------------------------------------------------------------------

    def wake(self, key: Hashable) -> None:
        """Reconcile `key` as soon as a worker is free (once, however many wake-ups arrive meanwhile)."""
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def wake_at(self, key: Hashable, when: float) -> None:
        """Reconcile `key` at loop time `when`, replacing the deadline it had."""
        self._deadlines[key] = when
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, key))
        self._timer_changed.set()

    def forget(self, key: Hashable) -> None:
        """The object is gone: drop its deadline (a queued run finds no object and does nothing)."""
        self._deadlines.pop(key, None)

    def deadline(self, key: Hashable) -> float | None:
        return self._deadlines.get(key)

    def idle(self) -> bool:
        """Nothing queued or running (deadlines may be pending)."""
        return not self._queued and not self._running

    # ----------------------------------------------------------------------------------------------------------
    # Workers
    # ----------------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
                       for i in range(self._workers)]
        self._tasks.append(asyncio.create_task(self._timer(), name=f"{self.name}-timer"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _worker(self) -> None:
        while True:
            key = await self._ready.get()
            self._queued.discard(key)
            self._running.add(key)
            when: float | None = None
            try:
                when = await self._reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception:  # a reconcile maps its own errors; this is a bug, logged, and the key retried later
                log.exception("Failed to reconcile %s %s", self.name, key)
                when = asyncio.get_running_loop().time() + 30.0
            finally:
                self._running.discard(key)
            if when is None:
                self._deadlines.pop(key, None)
            else:
                self.wake_at(key, when)
            if key in self._dirty:
                self._dirty.discard(key)
                self.wake(key)

    async def _timer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            while self._heap and self._heap[0][0] <= now:
                when, _, key = heapq.heappop(self._heap)
                if self._deadlines.get(key) == when:  # else stale: a later run replaced or dropped it
                    del self._deadlines[key]
                    self.wake(key)
            self._timer_changed.clear()
            timeout = self._heap[0][0] - now if self._heap else None
            try:
                await asyncio.wait_for(self._timer_changed.wait(), timeout)
            except TimeoutError:
                pass
