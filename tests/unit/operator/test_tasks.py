"""The controllers' own concurrency state (kernel/tasks.py): one reconcile at a time per object, nothing left behind
for objects that are gone, and background work kept alive until it ends."""

from __future__ import annotations

import asyncio
import gc

from mlsteward_operator.kernel.tasks import Background, KeyedLocks


async def test_keyed_locks_serialise_one_key_and_leave_others_free():
    locks = KeyedLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    both = 0

    async def work(key: str) -> None:
        nonlocal both
        async with locks.hold(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            both = max(both, inside["a"] + inside["b"])
            await asyncio.sleep(0.01)
            inside[key] -= 1

    await asyncio.gather(*(work("a") for _ in range(5)), *(work("b") for _ in range(5)))
    assert most == {"a": 1, "b": 1}  # never two holders of one key at once ...
    assert both == 2  # ... while the two keys ran side by side ...
    assert len(locks) == 0  # ... and no lock kept once nobody holds or waits


async def test_keyed_locks_let_another_key_run_while_one_is_held():
    locks = KeyedLocks()
    async with locks.hold("a"):
        await asyncio.wait_for(_hold_briefly(locks, "b"), timeout=1)
        assert len(locks) == 1


async def _hold_briefly(locks: KeyedLocks, key: str) -> None:
    async with locks.hold(key):
        await asyncio.sleep(0)


async def test_background_keeps_a_task_referenced_until_it_ends():
    bg = Background()
    done = asyncio.Event()
    seen: list[str] = []

    async def deliver() -> None:
        await asyncio.sleep(0.02)
        gc.collect()
        seen.append("delivered")
        done.set()

    bg.start(deliver(), name="t")  # the caller keeps no reference
    gc.collect()
    assert len(bg) == 1
    await asyncio.wait_for(done.wait(), timeout=1)
    await asyncio.sleep(0)
    assert seen == ["delivered"] and len(bg) == 0


def test_two_controllers_share_no_state():
    from mlsteward_operator.driftmonitor.reconcile import DriftMonitors
    from mlsteward_operator.modeldeployment.reconcile_health import Health

    a, b = DriftMonitors(), DriftMonitors()
    assert a.locks is not b.locks and a.deliveries is not b.deliveries and a.retraining is not b.retraining
    assert Health().deliveries is not Health().deliveries
