"""The work queue behind the watch-driven controllers (kernel/wakeups.py): wake-ups collapse, a wake-up during a
reconcile is not lost, one reconcile of a key at a time, deadlines fire and are replaced, and the watch cache
(kube/cache.py) never lets an older copy replace a newer one. Real asyncio, no mocks: the reconcile callback
records what it was called with."""

from __future__ import annotations

import asyncio
from collections import Counter

from mlsteward_operator.kernel.wakeups import WorkQueue
from mlsteward_operator.kube.cache import Store


class Recorder:
    def __init__(self, *, hold: float = 0.0, deadline_after: float | None = None) -> None:
        self.calls: Counter[object] = Counter()
        self.times: list[float] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self.hold = hold
        self.deadline_after = deadline_after

    async def __call__(self, key: object) -> float | None:
        loop = asyncio.get_running_loop()
        self.calls[key] += 1
        self.times.append(loop.time())
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            await asyncio.sleep(self.hold)
        finally:
            self.concurrent -= 1
        return None if self.deadline_after is None else loop.time() + self.deadline_after


async def settle(q: WorkQueue, seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)
    while not q.idle():
        await asyncio.sleep(0.01)


async def test_wakeups_of_a_queued_key_collapse_into_one_reconcile():
    rec = Recorder()
    q = WorkQueue("t", rec, workers=2)
    for _ in range(50):
        q.wake(("ns", "a"))
    q.wake(("ns", "b"))
    q.start()
    await settle(q)
    await q.stop()
    assert rec.calls == {("ns", "a"): 1, ("ns", "b"): 1}


async def test_a_wakeup_during_a_reconcile_runs_it_once_more_and_never_concurrently():
    rec = Recorder(hold=0.1)
    q = WorkQueue("t", rec, workers=4)
    q.start()
    q.wake("k")
    await asyncio.sleep(0.03)  # the first reconcile is running
    for _ in range(10):
        q.wake("k")
    await settle(q, 0.3)
    await q.stop()
    assert rec.calls["k"] == 2
    assert rec.max_concurrent == 1


async def test_a_deadline_wakes_the_key_when_due_and_none_waits_for_events():
    rec = Recorder(deadline_after=0.2)
    q = WorkQueue("t", rec, workers=1)
    q.start()
    q.wake("k")
    await asyncio.sleep(0.5)
    await q.stop()
    # Runs at 0, 0.2 and 0.4 s: each run set the next deadline.
    assert rec.calls["k"] == 3
    gaps = [b - a for a, b in zip(rec.times, rec.times[1:])]
    assert all(0.19 <= g < 0.3 for g in gaps), gaps

    idle = Recorder(deadline_after=None)
    q = WorkQueue("t", idle, workers=1)
    q.start()
    q.wake("k")
    await asyncio.sleep(0.3)
    await q.stop()
    assert idle.calls["k"] == 1


async def test_a_new_deadline_replaces_the_old_one_and_forget_drops_it():
    rec = Recorder()
    q = WorkQueue("t", rec, workers=1)
    q.start()
    loop = asyncio.get_running_loop()
    q.wake_at("late", loop.time() + 0.1)
    q.wake_at("late", loop.time() + 0.4)  # replaces: nothing at 0.1 s
    q.wake_at("gone", loop.time() + 0.1)
    q.forget("gone")
    await asyncio.sleep(0.25)
    assert rec.calls == {}
    await asyncio.sleep(0.3)
    await q.stop()
    assert rec.calls == {"late": 1}


async def test_a_failing_reconcile_is_retried_later_not_lost():
    calls = Counter()

    async def boom(key: object) -> float | None:
        calls[key] += 1
        raise RuntimeError("bug")

    q = WorkQueue("t", boom, workers=1)
    q.start()
    q.wake("k")
    await asyncio.sleep(0.05)
    await q.stop()
    assert calls["k"] == 1
    assert q.deadline("k") is not None


def test_the_cache_keeps_the_newest_copy():
    store = Store()
    obj = {"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "10"}, "status": {"x": 1}}
    assert store.put(obj) is None
    store.put({"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "12"}, "status": {"x": 2}})
    # The watch event of the write that produced resourceVersion 12 arrives late with an older copy.
    store.put({"metadata": {"namespace": "ns", "name": "a", "resourceVersion": "11"}, "status": {"x": 9}})
    assert store.get(("ns", "a"))["status"] == {"x": 2}
    assert [o["metadata"]["name"] for o in store.in_namespace("ns")] == ["a"]
    assert list(store.in_namespace("other")) == []
    assert store.delete(("ns", "a")) is not None and store.get(("ns", "a")) is None
