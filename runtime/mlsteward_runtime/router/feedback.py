"""Bounded memory of which version served which request id, so that feedback can be joined to its arm."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(slots=True)
class Served:
    version: str
    url: str
    # The raw response body, parsed only when a label arrives: most requests never get feedback, so parsing
    # every response on the request path would be wasted work. None when the body was too large to keep.
    body: bytes | None
    feedback: bool = False


class ServedMap:
    """An LRU map request_id -> Served with a fixed capacity (oldest ids are forgotten first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Served] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, request_id: str, served: Served) -> None:
        items = self._items
        items[request_id] = served
        items.move_to_end(request_id)
        if len(items) > self.capacity:
            items.popitem(last=False)

    def get(self, request_id: str) -> Served | None:
        return self._items.get(request_id)


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
