"""A bounded uniform sample of recent input rows (reservoir sampling) for drift monitoring.

Algorithm L (Li, 1994) computes how many rows to skip before the next replacement, so a request costs O(1) work
however many rows it carries; only the rows that enter the sample are copied. The whole row is kept, so the
per-feature samples stay aligned. `seen` travels with the sample: a replica that saw more rows stands for more of
the traffic when the operator pools replicas.
"""

from __future__ import annotations

import math
import random
import threading
import numpy as np

from mlsteward_runtime.contracts import DriftWindow, FeatureType, FeatureWindow, Signature

__all__ = ["Reservoir", "merge_windows"]


class Reservoir:
    """`pii_fields` (the runtime's setting, the same that redacts the logs) are left out of the window it reports:
    a drift window leaves the pod, and personal data has no place in it. Leaving the feature out, rather than
    marking its values, keeps the other features' samples aligned and their types honest."""

    def __init__(self, sig: Signature, size: int, seed: int | None = None, pii_fields: list[str] | None = None) -> None:
        self.sig = sig
        self.pii = frozenset(pii_fields or ())
        self.size = int(size)
        self.n = len(sig.inputs)
        self.categorical = any(s.type == FeatureType.categorical for s in sig.inputs)
        self._data = np.empty((self.size, self.n), dtype=object if self.categorical else np.float64)
        self._rng = random.Random(seed)
        self.seen = 0
        self._filled = 0
        self._w = 1.0
        self._next = 0
        # The app runs on one event loop, but model calls may run in executor threads; the lock keeps the skip
        # counters consistent if observe() is ever called from several threads.
        self._lock = threading.Lock()

    def _advance(self) -> None:
        # Next replacement position after the current one (Algorithm L).
        r = self._rng.random() or 1e-300
        self._w *= math.exp(math.log(r) / self.size)
        r2 = self._rng.random() or 1e-300
        denom = math.log1p(-self._w) if self._w < 1.0 else -1e-300
        self._next += int(math.floor(math.log(r2) / denom)) + 1

    def observe(self, X: np.ndarray) -> None:
        m = len(X)
        if m == 0:
            return
        with self._lock:
            start = self.seen
            self.seen += m
            if self._filled < self.size:
                take = min(self.size - self._filled, m)
                self._data[self._filled:self._filled + take] = X[:take]
                self._filled += take
                if self._filled == self.size:
                    self._w = 1.0
                    self._next = self.size - 1
                    self._advance()
            # Positions are 0-based row numbers since start; replace while the next one falls in this request.
            while self._filled == self.size and self._next < self.seen:
                self._data[self._rng.randrange(self.size)] = X[self._next - start]
                self._advance()

    def values(self) -> np.ndarray:
        with self._lock:
            return self._data[: self._filled].copy()

    def to_contract(self, name: str, version: str, replica: str) -> DriftWindow:
        data = self.values()
        feats: dict[str, FeatureWindow] = {}
        for j, spec in enumerate(self.sig.inputs):
            if spec.name in self.pii:
                continue
            col = data[:, j]
            if spec.type == FeatureType.categorical:
                vals = [None if v is None else v for v in col.tolist()]
            else:
                vals = [None if (v is None or v != v) else v for v in col.tolist()]
            feats[spec.name] = FeatureWindow(type=spec.type, values=vals)
        return DriftWindow(name=name, version=version, replica=replica, seen=self.seen, features=feats)


def merge_windows(windows: list[DriftWindow], size: int, seed: int | None = None) -> DriftWindow | None:
    """Pool the windows of several workers into one uniform sample of at most `size` rows.

    Each kept row of a window stands for seen/len rows, so rows are drawn with probability proportional to that
    weight (the same rule the operator uses across replicas). Rows stay aligned across features.
    """
    windows = [w for w in windows if w.features]
    if not windows:
        return None
    if len(windows) == 1:
        return windows[0]
    rng = np.random.default_rng(seed)
    names = list(windows[0].features)
    rows: list[tuple[int, int]] = []
    weights: list[float] = []
    for wi, w in enumerate(windows):
        k = len(next(iter(w.features.values())).values)
        for r in range(k):
            rows.append((wi, r))
            weights.append(w.seen / k)
    total_seen = sum(w.seen for w in windows)
    if len(rows) > size:
        p = np.asarray(weights) / sum(weights)
        pick = rng.choice(len(rows), size=size, replace=False, p=p)
        rows = [rows[i] for i in sorted(pick)]
    feats = {}
    for name in names:
        ftype = windows[0].features[name].type
        feats[name] = FeatureWindow(type=ftype, values=[windows[wi].features[name].values[r] for wi, r in rows])
    w0 = windows[0]
    return DriftWindow(name=w0.name, version=w0.version, replica=w0.replica, seen=total_seen, features=feats)
