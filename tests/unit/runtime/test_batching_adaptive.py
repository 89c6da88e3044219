"""The adaptive batcher: when it waits, the direct path for large requests, shedding by expected model time, calls
queued behind a busy executor, the per-step timings, and batched answers over HTTP equal scikit-learn's own."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlsteward_runtime.app import create_app
from mlsteward_runtime.batching import Batcher, CallCost
from mlsteward_runtime.contracts import RuntimeConfig
from mlsteward_runtime.dataplane import DataPlane
from mlsteward_runtime.errors import Overloaded
from mlsteward_runtime.settings import ServeSettings


def _predictor(est):
    def predict(X):
        return est.predict(X), est.predict_proba(X)
    return predict


def test_call_cost_recovers_fixed_and_per_row_parts():
    cost = CallCost()
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows = int(rng.integers(1, 65))
        cost.observe(rows, 0.002 + 3e-5 * rows)
    assert cost.fixed == pytest.approx(0.002, rel=1e-6)
    assert cost.per_row == pytest.approx(3e-5, rel=1e-6)
    assert cost.seconds(100, 2) == pytest.approx(2 * 0.002 + 100 * 3e-5, rel=1e-6)


def test_call_cost_of_one_size_is_all_fixed():
    cost = CallCost()
    for _ in range(10):
        cost.observe(1, 0.004)
    assert cost.fixed == pytest.approx(0.004) and cost.per_row == 0.0


@pytest.mark.parametrize(("gap", "fixed", "shared", "waits"), [
    (0.05, 0.01, 4.0, False),  # arrivals further apart than a call costs: flush on the next loop iteration
    (1e-4, 0.01, 4.0, True),   # the next request is expected long before a separate call would pay off: wait
    (1e-3, 1e-4, 4.0, False),  # a cheap model: a separate call costs less than waiting for company
    (1e-4, 0.01, 1.0, False),  # sequential traffic (one request per call): nobody else can come meanwhile
])
def test_first_request_waits_only_when_waiting_pays_off(iris_lr, gap, fixed, shared, waits):
    async def main():
        b = Batcher(_predictor(iris_lr), max_batch_size=64, max_wait_ms=20)
        b.cost.fixed, b.gap, b._avg_requests = fixed, gap, shared
        task = asyncio.ensure_future(b.submit(np.zeros((1, 4))))
        await asyncio.sleep(0)  # the request is queued and the flush decided
        scheduled = b._scheduled
        deadline = b._deadline - time.perf_counter()
        await task
        return scheduled, deadline

    scheduled, deadline = asyncio.run(main())
    assert isinstance(scheduled, asyncio.TimerHandle) is waits
    if waits:
        assert 0 < deadline <= 0.020  # never past max_wait_ms


def test_a_full_batch_does_not_wait_for_the_timer(iris_lr):
    async def main():
        b = Batcher(_predictor(iris_lr), max_batch_size=4, max_wait_ms=10_000)
        b.cost.fixed, b.gap, b._avg_requests = 1.0, 1e-4, 4.0
        tasks = [asyncio.ensure_future(b.submit(np.zeros((1, 4)))) for _ in range(4)]
        await asyncio.sleep(0)
        return type(b._scheduled), await asyncio.wait_for(asyncio.gather(*tasks), 5)

    kind, out = asyncio.run(main())
    assert kind is asyncio.Handle and len(out) == 4  # flushed on the next iteration, not after 10 s


def test_a_request_that_fills_a_batch_skips_the_queue(iris_lr):
    calls: list[int] = []
    done: list[str] = []

    async def main():
        b = Batcher(_predictor(iris_lr), max_batch_size=8, max_wait_ms=50, on_batch=calls.append)
        b.cost.fixed, b.gap, b._avg_requests = 1.0, 1e-4, 4.0  # a small request waits for company

        async def go(name, rows):
            await b.submit(np.zeros((rows, 4)))
            done.append(name)

        small = asyncio.ensure_future(go("small", 1))
        await asyncio.sleep(0)
        await go("large", 8)
        waiting = b.queued
        await small
        return waiting

    waiting = asyncio.run(main())
    # The large request was answered by its own call while the small one still waited for its batch.
    assert done == ["large", "small"] and waiting == 1 and calls == [8, 1]


def test_queue_sheds_by_expected_model_time(iris_lr):
    async def main():
        b = Batcher(_predictor(iris_lr), max_batch_size=2, max_wait_ms=0, max_queue=100, max_queue_delay_ms=250)
        b.cost.per_row = 0.1  # each row is expected to take 100 ms of model time; the queue may hold 250 ms
        tasks = [asyncio.ensure_future(b.submit(np.zeros((1, 4)))) for _ in range(4)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    out = asyncio.run(main())
    errors = [r for r in out if isinstance(r, Overloaded)]
    assert sum(isinstance(r, tuple) for r in out) == 2 and len(errors) == 2
    e = errors[0]
    assert e.status_code == 503 and e.headers["Retry-After"] == "1"
    assert e.to_json()["field"] == "queue" and e.to_json()["rule"] == "max_queue_delay"


def test_a_slow_model_still_fills_one_batch(iris_lr):
    """The model-time budget never refuses a request that joins the forming batch: it waits for one call."""
    async def main():
        b = Batcher(_predictor(iris_lr), max_batch_size=8, max_wait_ms=0, max_queue_delay_ms=250)
        b.cost.fixed = 2.0  # a call is expected to take 2 s, far over the budget
        tasks = [asyncio.ensure_future(b.submit(np.zeros((1, 4)))) for _ in range(8)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    assert all(isinstance(r, tuple) for r in asyncio.run(main()))


def test_requests_wait_in_the_queue_behind_a_busy_executor(iris_lr):
    """With one executor thread, requests arriving during a call join the next batch instead of queueing one
    call each in the executor."""
    calls: list[int] = []
    active = [0, 0]  # now, most at once
    lock = threading.Lock()

    def predict(X):
        with lock:
            active[0] += 1
            active[1] = max(active[1], active[0])
        time.sleep(0.05)  # a slow model
        with lock:
            active[0] -= 1
        return iris_lr.predict(X), None

    async def main():
        with ThreadPoolExecutor(1) as ex:
            b = Batcher(predict, max_batch_size=64, max_wait_ms=0, executor=ex, on_batch=calls.append)
            first = asyncio.ensure_future(b.submit(np.zeros((1, 4))))
            await asyncio.sleep(0.005)
            rest = []
            for _ in range(6):
                rest.append(asyncio.ensure_future(b.submit(np.zeros((1, 4)))))
                await asyncio.sleep(0.001)
            await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert active[1] == 1 and calls == [1, 6]


def test_gc_freeze_after_start(artifacts):
    path, digest = artifacts["lr.skops"]
    cfg = RuntimeConfig(name="iris", version="1", artifact={"uri": str(path), "sha256": digest})
    plane = DataPlane(cfg, replica="t", gc_freeze=True)
    plane.load()
    gc.unfreeze()
    try:
        plane.start_worker()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_step_times_are_exported(artifacts, iris):
    from fastapi.testclient import TestClient

    from .helpers import loaded_app

    path, digest = artifacts["lr.skops"]
    app, _plane = loaded_app(RuntimeConfig(name="iris", version="1", artifact={"uri": str(path), "sha256": digest}))
    with TestClient(app) as client:
        for _ in range(3):
            assert client.post("/predict", json={"instances": iris[0][:5].tolist()}).status_code == 200
        text = client.get("/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith("mlsteward_request_stage_seconds_total{"):
            values[line.split('stage="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    assert 'mlsteward_request_stage_requests_total{version="1"} 3.0' in text
    for stage in ("read", "parse", "validate", "queue", "predict", "observe", "encode", "total"):
        assert values.get(stage, 0.0) > 0.0, stage
    assert values["total"] > values["predict"] + values["parse"]


# -- batched answers over HTTP equal scikit-learn's own ---------------------------------------------------------

_PROTOCOLS = ("v2", "v1", "simple")


def _request(protocol: str, X: np.ndarray) -> tuple[str, dict]:
    if protocol == "v2":
        return "/v2/models/cancer/infer", {"inputs": [{"name": "input-0", "shape": list(X.shape), "datatype": "FP64",
                                                       "data": X.ravel().tolist()}]}
    path = "/v1/models/cancer:predict" if protocol == "v1" else "/predict"
    return path, {"instances": X.tolist()}


def _predictions(protocol: str, doc: dict) -> list:
    if protocol == "v2":
        return next(o for o in doc["outputs"] if o["name"] == "predict")["data"]
    return doc["predictions"]


@pytest.fixture(scope="module")
def cancer_app(tmp_path_factory, cancer_rf):
    from mlsteward_runtime.models import dump_model

    est, _ = cancer_rf
    path = tmp_path_factory.mktemp("rf") / "rf.skops"
    digest = dump_model(est, path, "skops")
    cfg = RuntimeConfig(name="cancer", version="1", artifact={"uri": str(path), "sha256": digest},
                        batching={"max_batch_size": 8, "max_wait_ms": 2.0})
    plane = DataPlane(cfg, replica="t")
    plane.load()
    plane.start_worker()
    return create_app(ServeSettings(runtime=cfg, replica="t"), plane), plane


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mix=st.lists(st.tuples(st.integers(1, 20), st.sampled_from(_PROTOCOLS)), min_size=1, max_size=16),
       waiting=st.booleans(), seed=st.integers(0, 2**16))
def test_concurrent_mixed_requests_answer_as_sklearn_does(cancer_app, cancer_rf, mix, waiting, seed):
    app, plane = cancer_app
    est, X = cancer_rf
    rng = np.random.default_rng(seed)
    chunks = [(X[rng.integers(0, len(X), rows)] + rng.normal(0, 0.01, (rows, X.shape[1])), protocol)
              for rows, protocol in mix]
    calls: list[int] = []
    b = plane.batcher
    assert b is not None
    b.on_batch = calls.append
    b.cost.fixed, b.gap, b._avg_requests = (0.005, 1e-4, 4.0) if waiting else (0.0, 0.05, 1.0)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            async def one(Xc, protocol):
                path, body = _request(protocol, Xc)
                r = await client.post(path, json=body)
                assert r.status_code == 200, r.text
                return _predictions(protocol, r.json())

            return await asyncio.gather(*(one(Xc, p) for Xc, p in chunks))

    answers = asyncio.run(main())
    for (Xc, _), got in zip(chunks, answers):
        assert got == est.predict(Xc).tolist()
    assert sum(calls) == sum(rows for rows, _ in mix)
    # A request of more than max_batch_size rows is a call of its own; queued requests never make a larger one.
    assert sorted(c for c in calls if c > b.max_batch_size) == sorted(r for r, _ in mix if r > b.max_batch_size)


def test_concurrent_large_requests_share_a_call_by_default(tmp_path, cancer_rf):
    """A scikit-learn call's fixed cost dwarfs its cost per row, so 100-row requests are batched like small ones
    under the default configuration: eight concurrent ones make far fewer than eight calls, with the same answers."""
    from mlsteward_runtime.models import dump_model

    est, X = cancer_rf
    path = tmp_path / "rf.skops"
    digest = dump_model(est, path, "skops")
    cfg = RuntimeConfig(name="cancer", version="1", artifact={"uri": str(path), "sha256": digest})
    plane = DataPlane(cfg, replica="t")
    plane.load()
    plane.start_worker()
    app = create_app(ServeSettings(runtime=cfg, replica="t"), plane)
    calls: list[int] = []
    assert plane.batcher is not None and plane.batcher.max_batch_size >= 800
    plane.batcher.on_batch = calls.append
    rng = np.random.default_rng(7)
    chunks = [X[rng.integers(0, len(X), 100)] for _ in range(8)]

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            async def one(Xc):
                path, body = _request("v2", Xc)
                r = await client.post(path, json=body)
                assert r.status_code == 200, r.text
                return _predictions("v2", r.json())

            return await asyncio.gather(*(one(Xc) for Xc in chunks))

    answers = asyncio.run(main())
    for Xc, got in zip(chunks, answers):
        assert got == est.predict(Xc).tolist()
    assert sum(calls) == 800 and len(calls) < 8, calls
