"""Bounded memories of feedback: the response bodies kept to score labels against, and the ids already counted.

Which version served a request is in its signed id (see `ids`), so any replica can attribute feedback. What a
replica remembers only helps it: `ServedMap` keeps the response bodies whose predictions were too large to carry in
the id (so a label can still be scored where the prediction was served), and `CountedIds` the ids it has already
counted an outcome for, so a repeat gets 409.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson


# Bytes an entry costs beyond its id and kept body: the Served object, the map's node and hash slot, and the id's
# str header. Measured with tracemalloc on CPython 3.11 at about 180; rounded up so the
# budget errs on the side of using less memory than it says (allocator slack, older interpreters).
ENTRY_OVERHEAD = 400


@dataclass(slots=True)
class Served:
    version: str
    url: str
    # The raw response body, parsed only when a label arrives: most requests never get feedback, so parsing
    # every response on the request path would be wasted work. None when the body was too large to keep.
    body: bytes | None

    def cost(self, request_id: str) -> int:
        return ENTRY_OVERHEAD + len(request_id) + (len(self.body) if self.body is not None else 0)


class ServedMap:
    """An LRU map request_id -> Served bounded by count and by bytes (oldest ids are forgotten first).

    Bounding by count alone let the kept response bodies (up to feedback_max_body_bytes each) grow the router
    without limit in practice: 100,000 ids of 60 kB is 6 GB. `max_bytes` caps ids, bodies and bookkeeping
    together; `evicted` counts the ids forgotten to stay within either bound.
    """

    def __init__(self, capacity: int, max_bytes: int | None = None,
                 on_evict: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evicted = 0
        self._on_evict = on_evict
        self._items: OrderedDict[str, Served] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, request_id: str, served: Served) -> None:
        items = self._items
        old = items.pop(request_id, None)
        if old is not None:
            self.bytes -= old.cost(request_id)
        items[request_id] = served
        self.bytes += served.cost(request_id)
        limit = self.max_bytes
        while len(items) > self.capacity or (limit is not None and self.bytes > limit and len(items) > 1):
            rid, gone = items.popitem(last=False)
            self.bytes -= gone.cost(rid)
            self.evicted += 1
            if self._on_evict is not None:
                self._on_evict()

    def get(self, request_id: str) -> Served | None:
        return self._items.get(request_id)


# Bytes a counted id costs: a 32-character str key, an int and the ordered map's node and hash slot. Measured with
# tracemalloc on CPython 3.11 at about 210; rounded up, as ENTRY_OVERHEAD.
COUNTED_ENTRY_BYTES = 256


class CountedIds:
    """The nonces of the ids this replica counted an outcome for, with when each id was issued.

    Bounded by count and by bytes (`COUNTED_ENTRY_BYTES` each). Past either bound the id counted longest ago is
    forgotten first (`evicted` counts them, and `on_evict` is called): a repeat of a forgotten id that is still
    within the feedback window would be counted again. Ids whose window has passed are dropped when they reach the
    front, since feedback for them is refused anyway (they do not count as evicted).
    """

    def __init__(self, capacity: int, max_bytes: int, on_evict: Callable[[], None] | None = None) -> None:
        self.capacity = max(1, min(capacity, max_bytes // COUNTED_ENTRY_BYTES))
        self.evicted = 0
        self._on_evict = on_evict
        self._items: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return len(self._items) * COUNTED_ENTRY_BYTES

    def __contains__(self, nonce: str) -> bool:
        return nonce in self._items

    def add(self, nonce: str, issued: int, oldest_valid: float) -> None:
        """Remembers `nonce` (issued at `issued`); ids issued before `oldest_valid` may be dropped."""
        items = self._items
        items[nonce] = issued
        while items:
            first, first_issued = next(iter(items.items()))
            if first_issued < oldest_valid and first != nonce:
                del items[first]
            elif len(items) > self.capacity:
                del items[first]
                self.evicted += 1
                if self._on_evict is not None:
                    self._on_evict()
            else:
                break


def extract_predictions(body: bytes | None) -> list[Any] | None:
    """The predictions in a response of any protocol: simple/V1 `predictions`, V2 `outputs[0].data`."""
    if not body:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, dict):
        if isinstance(doc.get("predictions"), list):
            return doc["predictions"]
        if "prediction" in doc:
            return [doc["prediction"]]
        outputs = doc.get("outputs")
        if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
            data = outputs[0].get("data")
            if isinstance(data, list):
                return data
    elif isinstance(doc, list):
        return doc
    return None


def same(a: Any, b: Any) -> bool:
    """Prediction equality, tolerant of float noise and of 1 versus 1.0 (JSON round trips differ)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def label_outcome(label: Any, predictions: list[Any] | None) -> float | None:
    """1.0 when the label equals the served prediction, else 0.0; None when the prediction is unknown.

    A single-row request is compared with its one prediction, so a client may send the label as a scalar; a
    multi-row request takes a list of labels and scores 1.0 only when every row matched.
    """
    if predictions is None:
        return None
    if len(predictions) == 1 and not isinstance(label, list):
        return 1.0 if same(label, predictions[0]) else 0.0
    return 1.0 if same(label, predictions) else 0.0
