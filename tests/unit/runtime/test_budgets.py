"""Buffers bounded by bytes: the feedback store evicts oldest first, the batch queue sheds with 503, both counted."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from starlette.testclient import TestClient

from mlsteward_runtime.app import create_app
from mlsteward_runtime.batching import Batcher
from mlsteward_runtime.contracts import RuntimeConfig
from mlsteward_runtime.errors import Overloaded
from mlsteward_runtime.settings import ServeSettings


def test_feedback_store_is_bounded_by_bytes_and_evicts_oldest_first(artifacts, iris, iris_lr):
    path, digest = artifacts["lr.skops"]
    cfg = RuntimeConfig(name="iris", version="1", artifact={"uri": str(path), "sha256": digest})
    budget = 1 << 20
    app = create_app(ServeSettings(runtime=cfg, replica="t", feedback_max_bytes=budget))
    rows = np.tile(iris[0], (60, 1))[:9000].tolist()  # 9,000 predictions: 72 kB each in the store
    with TestClient(app) as client:
        plane = app.state.plane
        deadline = time.monotonic() + 60
        while client.get("/v2/health/ready").status_code != 200:  # the lifespan loads the model in a thread
            assert time.monotonic() < deadline, client.get("/v2/health/ready").text
            time.sleep(0.05)
        for i in range(30):  # 2.2 MB of predictions: more than twice the budget
            r = client.post("/predict", json={"instances": rows}, headers={"x-request-id": f"r{i}"})
            assert r.status_code == 200, r.text
            assert plane.feedback.bytes <= budget
        assert len(plane.feedback) < 30
        oldest = client.post("/v1/feedback", json={"request_id": "r0", "label": [0] * 9000})
        assert oldest.status_code == 404 and oldest.json()["rule"] == "exists"
        labels = iris_lr.predict(np.asarray(rows)).tolist()
        newest = client.post("/v1/feedback", json={"request_id": "r29", "label": labels})
        assert newest.status_code == 200 and newest.json()["correct"] == 9000
        evicted = 30 - len(plane.feedback)
        metrics = client.get("/metrics").text
        assert f'mlsteward_buffer_evictions_total{{buffer="feedback",version="1"}} {float(evicted)}' in metrics


def test_batch_queue_sheds_by_bytes_with_503(iris_lr):
    shed: list[int] = []

    async def main():
        b = Batcher(lambda X: (iris_lr.predict(X), None), max_batch_size=100_000, max_wait_ms=50,
                    max_queue=1000, max_queue_bytes=1 << 20, on_shed=lambda: shed.append(1))
        # Overlapping traffic, costly calls, frequent arrivals: the flush waits, so the queue fills.
        b.cost.fixed, b.gap, b._avg_requests = 1.0, 1e-3, 2.0
        X = np.zeros((5000, 4))  # 160 kB each
        tasks = [asyncio.ensure_future(b.submit(X)) for _ in range(10)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    out = asyncio.run(main())
    errors = [r for r in out if isinstance(r, Overloaded)]
    served = [r for r in out if isinstance(r, tuple)]
    assert len(served) == 6 and len(errors) == 4 and len(shed) == 4  # 6 x 160 kB fit in 1 MiB
    assert errors[0].status_code == 503 and errors[0].headers["Retry-After"] == "1"
    assert (errors[0].field, errors[0].rule) == ("queue", "max_queue_bytes")


def test_worker_journal_and_adopted_predictions_are_bounded_by_bytes(artifacts, tmp_path):
    """With several workers each journals its predictions for the others to join feedback; both the journal file
    and a sibling's adopted copies stay within the feedback byte budget."""
    from mlsteward_runtime.dataplane import DataPlane
    from mlsteward_runtime.workers import Peers

    path, digest = artifacts["lr.skops"]
    cfg = RuntimeConfig(name="iris", version="1", artifact={"uri": str(path), "sha256": digest})
    budget = 1 << 20
    planes = [DataPlane(cfg, replica="t", feedback_max_bytes=budget) for _ in range(2)]
    writer, reader = (Peers(p, str(tmp_path), i, 2) for i, p in enumerate(planes))
    try:
        preds = np.arange(9000, dtype=np.int64)  # 72 kB per request
        for i in range(40):  # 2.9 MB of predictions
            writer.journal(f"r{i}", preds + i)
            if i % 5 == 4:
                time.sleep(0.05)  # let the writer thread write, as traffic would
                assert reader.lookup(f"r{i}") is not None
                assert (tmp_path / "journal-0.jsonl").stat().st_size <= 2 * budget + 5 * 60_000
        found = reader.lookup("r39")
        assert found is not None and (found == preds + 39).all()
        assert reader._peer_bytes <= budget and reader.lookup("r0", wait_s=0) is None
        evicted = planes[1].metrics.registry.get_sample_value("mlsteward_buffer_evictions_total",
                                                              {"buffer": "journal", "version": "1"})
        assert evicted is not None and evicted >= 25
    finally:
        writer._stop.set()
        reader._stop.set()


def test_prediction_log_backlog_is_bounded_by_bytes(tmp_path):
    """A writer that falls behind (a slow or full disk) must not queue records without bound in memory."""
    import threading

    from mlsteward_runtime.feedback import PredictionLog

    dropped: list[int] = []
    log = PredictionLog(str(tmp_path / "p.jsonl"), ["a", "b"], [], "1", max_pending_bytes=1 << 20,
                        on_drop=dropped.append)
    gate = threading.Event()
    encode = log._encode
    log._encode = lambda *a: (gate.wait(10), encode(*a))[1]  # the disk stalls until the gate opens
    X = np.zeros((10_000, 2))  # 160 kB per record
    for i in range(20):
        log.submit(f"r{i}", X, np.zeros(10_000))
    assert log.pending_bytes <= 1 << 20 and len(dropped) >= 13
    gate.set()
    log.flush()
    log.close()
    written = (tmp_path / "p.jsonl").read_bytes().count(b"\n")
    assert written == 20 - len(dropped) and log.pending_bytes == 0


def test_worker_journal_backlog_is_bounded_by_bytes(artifacts, tmp_path, monkeypatch):
    import threading

    from mlsteward_runtime.dataplane import DataPlane
    from mlsteward_runtime.workers import Peers

    path, digest = artifacts["lr.skops"]
    cfg = RuntimeConfig(name="iris", version="1", artifact={"uri": str(path), "sha256": digest})
    plane = DataPlane(cfg, replica="t", feedback_max_bytes=1 << 20)
    # A stalled writer (a full disk, a slow volume): it never takes a record off the queue. Stalled from the start,
    # so that no record can reach it before the test looks at the backlog.
    stalled = threading.Event()
    monkeypatch.setattr(Peers, "_journal_writer", lambda self: stalled.wait())
    peers = Peers(plane, str(tmp_path), 0, 2)
    try:
        for i in range(40):
            peers.journal(f"r{i}", np.zeros(10_000, dtype=np.int64))  # 80 kB each, 3.2 MB in all
        assert peers._journal_q.qsize() == 13 and peers._pending <= 1 << 20
        evicted = plane.metrics.registry.get_sample_value("mlsteward_buffer_evictions_total",
                                                          {"buffer": "journal", "version": "1"})
        assert evicted == 27
    finally:
        stalled.set()
        peers._stop.set()
