"""Pooling the predictor replicas' drift windows into one sample per feature (numpy only: the operator pools
before it tests, and the tests are in stats.drift, which re-exports these)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlsteward_runtime.contracts import DriftWindow, FeatureType


def _largest_remainder(quotas: np.ndarray, total: int) -> np.ndarray:
    base = np.floor(quotas).astype(int)
    short = total - int(base.sum())
    if short > 0:
        base[np.argsort(-(quotas - base), kind="stable")[:short]] += 1
    return base


def pool_windows(windows: Sequence[DriftWindow], max_samples: int, seed: int | None = 0) -> dict[str, list[Any]]:
    """Pool replicas' reservoirs into one sample per feature that weighs each replica by the traffic it saw.

    A kept row of replica r stands for w_r = seen_r / len(values_r) rows. Replica r's share of the pooled sample
    is seen_r / sum(seen), so a busy replica is not drowned by an idle one with an equally full reservoir. The pool
    size is the largest N <= max_samples for which every replica can supply its share from its own reservoir,
    N = min(max_samples, min_r len_r * sum(seen) / seen_r); each replica's share is then drawn uniformly without
    replacement (largest-remainder rounding). Features absent from a replica are pooled from the others.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_samples}")
    rng = np.random.default_rng(seed)
    names: list[str] = []
    for w in windows:
        names.extend(n for n in w.features if n not in names)
    pooled: dict[str, list[Any]] = {}
    for name in names:
        parts = [(w.features[name].values, max(w.seen, len(w.features[name].values)))
                 for w in windows if name in w.features and w.features[name].values]
        if not parts:
            pooled[name] = []
            continue
        seen = np.array([s for _, s in parts], dtype=float)
        lens = np.array([len(v) for v, _ in parts], dtype=float)
        share = seen / seen.sum()
        n_total = int(min(max_samples, np.floor(np.min(lens / share) + 1e-9)))
        take = np.minimum(_largest_remainder(share * n_total, n_total), lens.astype(int))
        out: list[Any] = []
        for (values, _), k in zip(parts, take):
            idx = rng.choice(len(values), size=int(k), replace=False) if k < len(values) else np.arange(len(values))
            out.extend(values[i] for i in np.sort(idx))
        pooled[name] = out
    return pooled


def window_types(windows: Sequence[DriftWindow]) -> dict[str, FeatureType]:
    """Feature types as the replicas report them (first replica that has the feature wins)."""
    out: dict[str, FeatureType] = {}
    for w in windows:
        for n, f in w.features.items():
            out.setdefault(n, f.type)
    return out
