"""Several worker processes sharing one loaded model: the supervisor and the state workers share.

The parent loads and verifies the model, binds the socket, then forks the workers; copy-on-write pages keep one copy
of the model's arrays. Each worker keeps its own sliding-window stats, drift reservoir and feedback store on the
request path (no locks or IPC per request) and shares them off the request path through files in a private
directory:

- every second a worker publishes its stats snapshot and drift window (`worker-<i>.json`, atomic rename); a worker
  answering /v1/stats or /v1/drift/window merges its live numbers with the other workers' latest snapshots (stats
  add exactly; windows are pooled by `seen`, the rule the operator uses across replicas), so those numbers lag by
  at most about a second for other workers' requests;
- every worker appends the predictions it serves to its journal (`journal-<i>.jsonl`, from a background thread);
  when feedback names a request id the worker did not answer, it reads the other workers' journals and joins the
  outcome there. An outcome joined on one worker is not marked joined on the others, so a duplicate feedback sent
  to a different worker can be counted twice.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import orjson

from mlsteward_runtime.contracts import DriftWindow
from mlsteward_runtime.feedback import entry_bytes

log = logging.getLogger("mlsteward.workers")

PUBLISH_INTERVAL_S = 1.0


class Peers:
    """A worker's view of its siblings, plus the background thread that publishes its own state."""

    def __init__(self, plane: Any, shared_dir: str, index: int, workers: int) -> None:
        self.plane = plane
        self.dir = Path(shared_dir)
        self.index = index
        self.workers = workers
        self._journal_q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._offsets: dict[int, int] = {}
        # request id -> (predictions, estimated bytes); bounded by the feedback store's count and byte budget.
        self._peer_preds: OrderedDict[str, tuple[np.ndarray, int]] = OrderedDict()  # oldest first
        self._peer_bytes = 0
        self._capacity = plane.config.feedback_capacity
        self._budget = plane.feedback.max_bytes
        self._evicted = plane.metrics.evictions.labels("journal", plane.version)
        self._written = 0
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._stop = threading.Event()
        self._journal_path = self.dir / f"journal-{index}.jsonl"
        self._journal_path.write_bytes(b"")
        self._lines = 0
        threading.Thread(target=self._publisher, name="peer-publisher", daemon=True).start()
        threading.Thread(target=self._journal_writer, name="peer-journal", daemon=True).start()

    # -- publishing (background threads) ------------------------------------------------------------------------

    def _publisher(self) -> None:
        last_seen = -1
        window_json: Any = None
        while not self._stop.wait(PUBLISH_INTERVAL_S):
            try:
                plane = self.plane
                if plane.window is not None and plane.window.seen != last_seen:
                    last_seen = plane.window.seen
                    window_json = plane.window.to_contract(plane.name, plane.version, plane.replica).model_dump(
                        mode="json")
                doc = {"pid": os.getpid(), "time": time.time(), "stats": plane.stats.snapshot(),
                       "window": window_json}
                tmp = self.dir / f".worker-{self.index}.tmp"
                tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY))
                os.replace(tmp, self.dir / f"worker-{self.index}.json")
            except Exception:  # noqa: BLE001 - publishing must never take the worker down
                log.exception("Failed to publish worker snapshot")

    def journal(self, request_id: str, predictions: np.ndarray) -> None:
        # The writer's backlog is bounded by the feedback byte budget: past it a prediction is not journaled (its
        # feedback can then join only on the worker that answered) rather than held in memory without bound.
        size = predictions.nbytes
        with self._pending_lock:
            if self._budget is not None and self._pending + size > self._budget:
                self._evicted.inc()
                return
            self._pending += size
        self._journal_q.put((request_id, predictions))

    def _journal_writer(self) -> None:
        fh = open(self._journal_path, "ab")
        while True:
            item = self._journal_q.get()
            lines = [item]
            while not self._journal_q.empty() and len(lines) < 4096:
                lines.append(self._journal_q.get())
            with self._pending_lock:
                self._pending -= sum(p.nbytes for _, p in lines)
            # Keep the journal bounded: past twice the feedback capacity, or twice its byte budget, start it over;
            # readers notice the shorter file and restart from the beginning.
            if self._lines > 2 * self._capacity or (self._budget is not None and self._written > 2 * self._budget):
                fh.close()
                fh = open(self._journal_path, "wb")
                self._lines = self._written = 0
            chunk = b"".join(orjson.dumps([rid, p.tolist()], option=orjson.OPT_APPEND_NEWLINE) for rid, p in lines)
            fh.write(chunk)
            fh.flush()
            self._lines += len(lines)
            self._written += len(chunk)

    # -- reading siblings ---------------------------------------------------------------------------------------

    def _docs(self) -> list[dict[str, Any]]:
        docs = []
        for i in range(self.workers):
            if i == self.index:
                continue
            try:
                docs.append(orjson.loads((self.dir / f"worker-{i}.json").read_bytes()))
            except (OSError, orjson.JSONDecodeError):
                continue
        return docs

    def stats_snapshots(self) -> list[dict[str, Any]]:
        now = time.time()
        window = self.plane.stats.window_s
        # A snapshot older than the window describes requests that have left it.
        return [d["stats"] for d in self._docs() if now - d["time"] <= window]

    def windows(self) -> list[DriftWindow]:
        return [DriftWindow.model_validate(d["window"]) for d in self._docs() if d.get("window")]

    def lookup(self, request_id: str, wait_s: float = 0.2) -> np.ndarray | None:
        """Find a prediction another worker journaled; waits briefly for a journal write still in flight."""
        deadline = time.monotonic() + wait_s
        while True:
            self._scan()
            entry = self._peer_preds.get(request_id)
            if entry is not None:
                return entry[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def _scan(self) -> None:
        for i in range(self.workers):
            if i == self.index:
                continue
            path = self.dir / f"journal-{i}.jsonl"
            try:
                size = path.stat().st_size
            except OSError:
                continue
            off = self._offsets.get(i, 0)
            if size < off:
                off = 0
            if size == off:
                continue
            with open(path, "rb") as fh:
                fh.seek(off)
                data = fh.read(size - off)
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                try:
                    rid, preds = orjson.loads(line)
                except (orjson.JSONDecodeError, ValueError):
                    continue
                self._adopt(rid, np.asarray(preds))
            self._offsets[i] = off + end

    def _adopt(self, rid: str, preds: np.ndarray) -> None:
        """Keep a sibling's prediction, evicting the oldest past the feedback store's count or byte budget."""
        entries = self._peer_preds
        old = entries.pop(rid, None)
        if old is not None:
            self._peer_bytes -= old[1]
        size = entry_bytes(rid, preds)
        evicted = 0
        while entries and (len(entries) >= self._capacity or
                           (self._budget is not None and self._peer_bytes + size > self._budget)):
            self._peer_bytes -= entries.popitem(last=False)[1][1]
            evicted += 1
        entries[rid] = (preds, size)
        self._peer_bytes += size
        if evicted:
            self._evicted.inc(evicted)


class Supervisor:
    """Forks the workers, forwards SIGTERM/SIGINT (as SIGTERM: each worker drains, then exits), and replaces a
    worker that dies unexpectedly."""

    def __init__(self, settings: Any, plane: Any, sock: Any, shared_dir: str,
                 serve: Callable[[Any, Any, Any], None]) -> None:
        self.settings = settings
        self.plane = plane
        self.sock = sock
        self.shared = shared_dir
        self.serve = serve
        self.children: dict[int, int] = {}  # pid -> worker index
        self.stopping = False

    def _fork(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                settings = self.settings.model_copy(update={"worker_index": index})
                self.plane.peers = Peers(self.plane, self.shared, index, settings.workers)
                self.serve(settings, self.plane, self.sock)
            except BaseException:  # noqa: BLE001
                log.exception("Worker failed", extra={"worker": index})
                code = 1
            finally:
                os._exit(code)
        self.children[pid] = index

    def run(self) -> int:
        def stop(signum: int, _frame: Any) -> None:
            # Each worker drains, then closes its copy of the listening socket (`drain`); closing the supervisor's
            # copy now means that once the last worker has closed its own, connections are refused rather than
            # queued on a socket nobody accepts from.
            self.stopping = True
            for pid in list(self.children):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            self.sock.close()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        for i in range(self.settings.workers):
            self._fork(i)
        from prometheus_client import multiprocess

        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            index = self.children.pop(pid, None)
            if index is None:
                continue
            multiprocess.mark_process_dead(pid)
            if not self.stopping:
                log.warning("Worker exited; starting a replacement",
                            extra={"worker": index, "pid": pid, "status": status})
                self._fork(index)
        return 0
