"""Reference profiles: the training-data baseline that drift tests compare live inputs against.

A numeric feature keeps count, missing, mean, std (ddof=1), min, max, the PSI bins and a bounded uniform sample
(for KS and Wasserstein, which need raw values). A categorical or boolean feature keeps its category counts, which
are sufficient for chi-square, Jensen-Shannon and PSI.

PSI bins: `quantile_edges` holds the *interior* cut points at the reference deciles, de-duplicated (a feature with
ties has fewer bins). Bin i holds values x with edges[i-1] < x <= edges[i]; the first and last bins are open, so a
live value outside the reference range still lands in a bin. `bin_fractions` (one more entry than the edges) are
the reference shares computed with that same rule, so they stay honest when ties make deciles uneven.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mlsteward_runtime.contracts import FeatureProfile, FeatureType, Profile, Signature
from mlsteward_runtime.stats.table import NUMERIC_TYPES, category_key, infer_type, is_missing, to_float_array

DEFAULT_SAMPLE_SIZE = 5_000
DEFAULT_BINS = 10


def quantile_edges(x: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Interior cut points at the reference quantiles 1/bins .. (bins-1)/bins, de-duplicated."""
    if x.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(x, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_counts(x: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Counts per PSI bin; bin i holds edges[i-1] < x <= edges[i] (open first and last bins)."""
    idx = np.searchsorted(np.asarray(edges, dtype=float), x, side="left")
    return np.bincount(idx, minlength=len(edges) + 1)


def profile_numeric(
    values: Iterable[Any],
    *,
    ftype: FeatureType = FeatureType.number,
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    bins: int = DEFAULT_BINS,
    rng: np.random.Generator | None = None,
    what: str = "feature",
) -> FeatureProfile:
    raw = to_float_array(values, what=what)
    x = raw[~np.isnan(raw)]
    missing = int(raw.size - x.size)
    if x.size == 0:
        return FeatureProfile(type=ftype, count=0, missing=missing, sample=[])
    edges = quantile_edges(x, bins)
    counts = bin_counts(x, edges)
    rng = rng if rng is not None else np.random.default_rng(0)
    sample = x if x.size <= sample_size else rng.choice(x, size=sample_size, replace=False)
    return FeatureProfile(
        type=ftype,
        count=int(x.size),
        missing=missing,
        mean=float(np.mean(x)),
        std=float(np.std(x, ddof=1)) if x.size > 1 else 0.0,
        min=float(np.min(x)),
        max=float(np.max(x)),
        quantile_edges=[float(e) for e in edges],
        bin_fractions=[float(c) for c in counts / x.size],
        sample=[float(v) for v in sample],
    )


def profile_categorical(values: Iterable[Any], *, ftype: FeatureType = FeatureType.categorical) -> FeatureProfile:
    vals = list(values)
    present = [category_key(v) for v in vals if not is_missing(v)]
    counts = Counter(present)
    return FeatureProfile(
        type=ftype,
        count=len(present),
        missing=len(vals) - len(present),
        categories=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
    )


def types_from_signature(signature: Signature) -> dict[str, FeatureType]:
    return {f.name: f.type for f in signature.inputs}


def build_profile(
    columns: Mapping[str, Sequence[Any]],
    *,
    types: Mapping[str, FeatureType] | None = None,
    categorical: Iterable[str] = (),
    sample_size: int = DEFAULT_SAMPLE_SIZE,
    bins: int = DEFAULT_BINS,
    seed: int = 0,
) -> Profile:
    """Profile every column. Types come from `types` (e.g. a signature), then `categorical`, then the data.

    The sample of each numeric feature is drawn without replacement from its own generator seeded from `seed`
    and the feature's position, so adding a column does not change the samples of the others.
    """
    forced = set(categorical)
    feats: dict[str, FeatureProfile] = {}
    rows = 0
    for pos, (name, values) in enumerate(columns.items()):
        vals = list(values.tolist() if isinstance(values, np.ndarray) else values)
        rows = max(rows, len(vals))
        if types and name in types:
            ftype = FeatureType(types[name])
        elif name in forced:
            ftype = FeatureType.categorical
        else:
            ftype = infer_type(vals)
        if ftype in NUMERIC_TYPES:
            feats[name] = profile_numeric(
                vals, ftype=ftype, sample_size=sample_size, bins=bins,
                rng=np.random.default_rng([seed, pos]), what=f"feature {name!r}",
            )
        else:
            feats[name] = profile_categorical(vals, ftype=ftype)
    return Profile(rows=rows, features=feats)
