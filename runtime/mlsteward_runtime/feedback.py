"""Joining delayed outcomes to predictions, and the JSONL prediction log written off the request path.

`FeedbackStore` keeps the most recent predictions by request id (a bounded insertion-ordered dict, O(1) per
request). POST /v1/feedback looks the id up, compares a label with the prediction (accuracy) or records a reward,
and marks the entry joined so an outcome is counted once.

`PredictionLog` hands records to a background thread through a queue; the request path only enqueues a tuple, and
the thread does the JSON encoding, redaction and file writes.
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import orjson

from mlsteward_runtime.errors import Conflict, InvalidInput, NotFound

__all__ = ["FeedbackStore", "PredictionLog", "Outcome"]


class Outcome:
    __slots__ = ("correct", "labelled", "reward")

    def __init__(self, correct: int | None, labelled: int, reward: float | None) -> None:
        self.correct = correct
        self.labelled = labelled
        self.reward = reward


# Bytes of a stored entry besides its id and predictions: the dict slot, the list, the ndarray header.
_ENTRY_OVERHEAD = 300


def entry_bytes(request_id: str, predictions: np.ndarray) -> int:
    """An estimate of what one stored prediction costs in memory; object arrays (text labels) count their text."""
    size = _ENTRY_OVERHEAD + len(request_id) + predictions.nbytes
    if predictions.dtype.kind == "O":
        size += sum(len(str(v)) + 50 for v in predictions.tolist())
    return size


class FeedbackStore:
    """Recent predictions by request id, bounded by count (`capacity`) and by bytes (`max_bytes`): the oldest
    entries are evicted first, and `on_evict` is told how many (for the eviction metric)."""

    def __init__(self, capacity: int, max_bytes: int | None = None,
                 on_evict: Callable[[int], None] | None = None) -> None:
        self.capacity = int(capacity)
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        self.bytes = 0
        # request id -> [predictions (ndarray), joined flag, bytes], oldest first. An OrderedDict, because a dict
        # evicting from its front makes each lookup of the oldest entry skip every slot deleted before it (tens of
        # µs per prediction once a store of 100,000 is full).
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, request_id: str, predictions: np.ndarray) -> None:
        """Remembers the first prediction made under `request_id`; a later one under the same id (two requests
        racing with one client-chosen id) never replaces it."""
        entries = self._entries
        size = entry_bytes(request_id, predictions)
        evicted = 0
        with self._lock:
            if request_id in entries:
                return
            budget = self.max_bytes
            while entries and (len(entries) >= self.capacity or
                               (budget is not None and self.bytes + size > budget)):
                self.bytes -= entries.popitem(last=False)[1][2]
                evicted += 1
            entries[request_id] = [predictions, False, size]
            self.bytes += size
        if evicted and self.on_evict is not None:
            self.on_evict(evicted)

    def get(self, request_id: str) -> np.ndarray | None:
        e = self._entries.get(request_id)
        return None if e is None else e[0]

    def join(self, request_id: str, label: Any = None, reward: Any = None) -> Outcome:
        """Join an outcome; NotFound for unknown (or evicted) ids, Conflict when already joined."""
        with self._lock:
            e = self._entries.get(request_id)
            if e is None:
                raise NotFound(
                    f"no recent prediction has request id {request_id!r} (unknown, or evicted: the last "
                    f"{self.capacity} predictions within {self.max_bytes} bytes are kept)", field="request_id",
                    rule="exists",
                )
            if e[1]:
                raise Conflict(f"feedback for {request_id!r} was already recorded", field="request_id", rule="unique")
            outcome = evaluate(e[0], label, reward)
            e[1] = True
        return outcome


def evaluate(predictions: np.ndarray, label: Any, reward: Any) -> Outcome:
    """Compare a label (one per predicted row, or a scalar for a one-row request) with the predictions."""
    correct: int | None = None
    labelled = 0
    if label is not None:
        preds = predictions.tolist()
        labels = label if isinstance(label, list) else [label]
        if len(labels) != len(preds):
            raise InvalidInput(
                f"label has {len(labels)} values but the prediction had {len(preds)} rows",
                field="label", rule="length",
            )
        for i, lab in enumerate(labels):
            if not isinstance(lab, (str, int, float, bool)) or lab is None:
                raise InvalidInput(f"label[{i}] must be a class label or a number", field=f"label[{i}]", rule="type")
        correct = sum(1 for p, lab in zip(preds, labels) if _same(p, lab))
        labelled = len(labels)
    rv: float | None = None
    if reward is not None:
        if type(reward) not in (int, float) or reward != reward or reward in (float("inf"), float("-inf")):
            raise InvalidInput("reward must be a finite number", field="reward", rule="type")
        rv = float(reward)
    return Outcome(correct, labelled, rv)


def _same(pred: Any, label: Any) -> bool:
    if pred == label:
        return True
    # Labels sent as text ("1") for numeric classes, or numbers for text classes, still count as equal.
    return str(pred) == str(label)


class PredictionLog:
    """Appends one JSON object per prediction request to a file, from a background thread.

    Records waiting for the writer are bounded by bytes (`max_pending_bytes`): when the disk falls behind, new
    records are dropped and counted through `on_drop` rather than queued without bound in memory.
    """

    def __init__(self, path: str, feature_names: list[str], pii_fields: list[str], version: str,
                 max_pending_bytes: int | None = None, on_drop: Callable[[int], None] | None = None) -> None:
        self.max_pending_bytes = max_pending_bytes
        self.on_drop = on_drop
        self.pending_bytes = 0
        self._pending_lock = threading.Lock()
        self.path = path
        self.names = feature_names
        self.redact = {i for i, n in enumerate(feature_names) if n in set(pii_fields)}
        self.version = version
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)
        self._closed = False

    def submit(self, request_id: str, X: np.ndarray, predictions: np.ndarray) -> None:
        size = X.nbytes + predictions.nbytes
        with self._pending_lock:
            if self.max_pending_bytes is not None and self.pending_bytes + size > self.max_pending_bytes:
                if self.on_drop is not None:
                    self.on_drop(1)
                return
            self.pending_bytes += size
        self._q.put((time.time(), request_id, X, predictions))

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(None)
        self._thread.join(timeout)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything submitted so far is on disk (tests and shutdown)."""
        done = threading.Event()
        self._q.put(done)
        done.wait(timeout)

    def _run(self) -> None:
        with open(self.path, "ab", buffering=1 << 16) as fh:
            while True:
                item = self._q.get()
                if item is None:
                    fh.flush()
                    return
                if isinstance(item, threading.Event):
                    fh.flush()
                    item.set()
                    continue
                with self._pending_lock:
                    self.pending_bytes -= item[2].nbytes + item[3].nbytes
                try:
                    fh.write(self._encode(*item))
                except Exception:  # noqa: BLE001 - a log record must never stop the writer thread
                    continue
                if self._q.empty():
                    fh.flush()

    def _encode(self, ts: float, request_id: str, X: np.ndarray, predictions: np.ndarray) -> bytes:
        rows = X.tolist()
        if self.redact:
            for row in rows:
                for j in self.redact:
                    row[j] = "[REDACTED]"
        inputs = [dict(zip(self.names, row)) for row in rows]
        rec = {"ts": ts, "request_id": request_id, "version": self.version, "inputs": inputs,
               "predictions": predictions.tolist()}
        return orjson.dumps(rec, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_SERIALIZE_NUMPY)
