"""Labelled pairs: the shadow's answers kept until a label scores them beside the served ones.

When a mirror answers, its predictions are kept under the request's nonce (`ShadowAnswers`); when feedback with a
label arrives for that request, both answers are scored against the label (`paired_cell` for classification,
`error_diffs` for regression) and the entry is taken out, so a repeat of the feedback (even one that got past the
duplicate check after its id was forgotten there) never counts a second pair.

The memory is per replica: feedback that arrives at a replica other than the one that mirrored the request finds
nothing here and makes no pair (the operator sums the pairs of all replicas). Entries are bounded by count, by
bytes (ids, kept answers and bookkeeping together) and by the feedback window.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from mlsteward_runtime.router.feedback import label_outcome

# The states of a kept entry. Only ANSWERED pairs; the others name why feedback for it made no pair.
PENDING = "pending"  # mirrored, no answer yet
DROPPED = "dropped"  # not sent: the mirrors' in-flight bounds were full
ERROR = "error"  # the shadow failed (non-2xx, timeout, refused)
UNREADABLE = "unreadable"  # 2xx without predictions in it
TOO_LARGE = "too_large"  # predictions larger than a kept answer may be
ANSWERED = "answered"

# Bytes an entry costs beyond the characters of its nonce and kept answer: the entry object, the map's node and hash
# slot, the object headers of the nonce, the answer and the time. Measured with tracemalloc on CPython 3.11 at about
# 250 (test_shadow_pairs.py checks the estimate stays above what is allocated); rounded up, as
# feedback.ENTRY_OVERHEAD.
ANSWER_OVERHEAD = 400


@dataclass(slots=True)
class ShadowAnswer:
    version: str
    kind: str | None  # ShadowConfig.kind when the request was mirrored
    at: float  # monotonic seconds, when mirrored
    state: str = PENDING
    # The shadow's predictions as JSON: parsed again only when a label arrives, as most requests get none.
    body: bytes | None = None

    def cost(self, nonce: str) -> int:
        return ANSWER_OVERHEAD + len(nonce) + (len(self.body) if self.body is not None else 0)


class ShadowAnswers:
    """nonce -> ShadowAnswer, oldest first, bounded by `capacity` entries and `max_bytes` (strictly: past either the
    oldest are forgotten, counted in `evicted`), and by `window_s` (older entries are dropped, not counted, as
    feedback for them is refused anyway). An answer larger than `max_answer_bytes` is not kept (TOO_LARGE)."""

    def __init__(self, capacity: int, max_bytes: int, window_s: float, max_answer_bytes: int,
                 on_evict: Callable[[], None] | None = None) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.window_s = window_s
        self.max_answer_bytes = max_answer_bytes
        self.bytes = 0
        self.evicted = 0
        self._on_evict = on_evict
        self._items: OrderedDict[str, ShadowAnswer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, nonce: str) -> ShadowAnswer | None:
        return self._items.get(nonce)

    def mirrored(self, nonce: str, version: str, kind: str | None, now: float, state: str = PENDING) -> None:
        """Remembers that the request `nonce` was mirrored to `version` (or, state DROPPED, that it was not)."""
        old = self._items.pop(nonce, None)
        if old is not None:
            self.bytes -= old.cost(nonce)
        entry = ShadowAnswer(version, kind, now, state)
        self._items[nonce] = entry
        self.bytes += entry.cost(nonce)
        self._bound(now)

    def answered(self, nonce: str, state: str, predictions: list[Any] | None, now: float) -> bool:
        """Records how the mirror of `nonce` ended; False when its entry is gone (taken by feedback, forgotten)."""
        entry = self._items.get(nonce)
        if entry is None:
            return False
        body = None
        if state == ANSWERED:
            try:
                # A copy of exact size: the bytes orjson returns keep its whole output buffer (4 KiB at least).
                body = bytes(memoryview(orjson.dumps(predictions)))
            except (TypeError, orjson.JSONEncodeError):
                state = UNREADABLE
            else:
                if len(body) > self.max_answer_bytes:
                    state, body = TOO_LARGE, None
        self.bytes -= entry.cost(nonce)
        entry.state, entry.body = state, body
        self.bytes += entry.cost(nonce)
        self._bound(now)
        return True

    def take(self, nonce: str) -> ShadowAnswer | None:
        """The entry of `nonce`, removed: each mirrored request is paired at most once."""
        entry = self._items.pop(nonce, None)
        if entry is not None:
            self.bytes -= entry.cost(nonce)
        return entry

    def _bound(self, now: float) -> None:
        items = self._items
        oldest = now - self.window_s
        while items:
            nonce, first = next(iter(items.items()))
            expired = first.at < oldest
            if not expired and len(items) <= self.capacity and self.bytes <= self.max_bytes:
                break
            del items[nonce]
            self.bytes -= first.cost(nonce)
            if not expired:
                self.evicted += 1
                if self._on_evict is not None:
                    self._on_evict()


def number(x: Any) -> float | None:
    """x as a finite float when it is a JSON number (not a boolean), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        value = float(x)
    except OverflowError:  # an integer past the float range
        return None
    return value if math.isfinite(value) else None


def paired_cell(label: Any, served: list[Any], shadow: list[Any]) -> str:
    """The cell of the paired table the two answers fall in: both_correct, served_only, shadow_only, neither. Each
    answer is scored as the served one always is (`label_outcome`: right only when every row matches)."""
    s, m = label_outcome(label, served) == 1.0, label_outcome(label, shadow) == 1.0
    return "both_correct" if s and m else "served_only" if s else "shadow_only" if m else "neither"


def error_diffs(label: Any, served: list[Any], shadow: list[Any]) -> list[float]:
    """Per row, |shadow - label| - |served - label| (positive: the shadow erred more). Rows where any of the three
    is not a number are left out; so is everything when the row counts differ. A single row may be labelled with a
    scalar."""
    labels = [label] if len(served) == 1 and not isinstance(label, list) else label
    if not isinstance(labels, list) or not (len(labels) == len(served) == len(shadow)):
        return []
    out: list[float] = []
    for y, p, q in zip(labels, served, shadow):
        fy, fp, fq = number(y), number(p), number(q)
        if fy is not None and fp is not None and fq is not None:
            d = abs(fq - fy) - abs(fp - fy)
            if math.isfinite(d):
                out.append(d)
    return out
