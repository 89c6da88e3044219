"""Per-feature drift tests and the decision rule of DESIGN §5.

Tests (all computed by scipy on the samples given, never re-derived):

- numeric (number, integer):
  - Kolmogorov-Smirnov, `scipy.stats.ks_2samp(reference, current)`: statistic D and p-value.
  - Wasserstein-1, `scipy.stats.wasserstein_distance(reference, current)`; `normalized` = W / std_ref, the shift
    in reference standard deviations (W itself when the reference is constant, std_ref = 0).
  - PSI on the reference-quantile bins of `stats.profile` (deciles, open-ended first and last bins):
    PSI = sum_i (c_i - r_i) * ln(c_i / r_i), with r_i, c_i the reference and current shares of bin i.
- categorical (categorical, boolean):
  - chi-square on the 2 x k table of counts [reference; current] over the union of categories,
    `scipy.stats.chi2_contingency` with its defaults (Yates' correction when k = 2).
  - Jensen-Shannon distance, base 2 (in [0, 1]), between the two category frequency vectors,
    `scipy.spatial.distance.jensenshannon`.
  - PSI over the categories, same formula.
  PSI is undefined for an empty cell (ln 0), so shares are floored at `PSI_EPSILON` = 1e-4 before the sum: a
  category never seen on one side then contributes a large but finite term. 1e-4 is the usual choice in credit
  scoring, where PSI comes from; it bounds one empty cell's term at about |share| * 9.2.

Decision rule (a feature drifts only if all three hold):

1. enough data: at least `min_samples` non-missing values on both sides;
2. a material effect: numeric PSI >= `psi` or normalized Wasserstein >= `wasserstein` (or, when `ks` is set, the
   KS statistic >= `ks`); categorical Jensen-Shannon >= `jensen_shannon` or PSI >= `psi`;
3. significance: the feature's p-value (KS for numeric, chi-square for categorical), adjusted across the features
   that passed rule 1 with Holm's step-down method (family-wise error, the default) or Benjamini-Hochberg
   (`scipy.stats.false_discovery_control`), is below `alpha`.

Rule 2 is what keeps large windows honest: with 200k rows KS rejects a shift of a hundredth of a standard
deviation, which nobody should roll back for. Rule 3 keeps small windows honest: with 100 rows PSI and JS are
noisy and cross their thresholds by chance. The defaults (PSI 0.2, W/std 0.1, JS 0.1, alpha 0.05, 100 samples) are
the customary "significant shift" PSI level and a tenth of a standard deviation; every one is configurable.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats as st
from scipy.spatial.distance import jensenshannon

from mlsteward_runtime.contracts import FeatureProfile, FeatureType, Profile
from mlsteward_runtime.stats.pooling import pool_windows, window_types  # noqa: F401 - part of stats.drift's API
from mlsteward_runtime.stats.profile import DEFAULT_BINS, bin_counts, quantile_edges
from mlsteward_runtime.stats.table import (
    NUMERIC_TYPES, category_key, infer_type, is_missing, to_float_array,
)

PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class DriftThresholds:
    """Knobs of the decision rule (module docstring). DriftMonitor.spec.thresholds maps onto these."""

    alpha: float = 0.05
    correction: Literal["holm", "bh"] = "holm"
    min_samples: int = 100
    psi: float = 0.2
    wasserstein: float = 0.1
    jensen_shannon: float = 0.1
    # The KS statistic as one more numeric effect size (DriftMonitor spec.thresholds.ks); None leaves it out.
    ks: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.correction not in ("holm", "bh"):
            raise ValueError(f"correction must be 'holm' or 'bh', got {self.correction!r}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be at least 1, got {self.min_samples}")
        for name in ("psi", "wasserstein", "jensen_shannon", "ks"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} threshold must be >= 0, got {getattr(self, name)}")


# ----------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------


def psi(reference_fractions: Sequence[float], current_fractions: Sequence[float], eps: float = PSI_EPSILON) -> float:
    """PSI = sum (c - r) ln(c / r) over aligned cells, shares floored at `eps` (see the module docstring)."""
    r = np.maximum(np.asarray(reference_fractions, dtype=float), eps)
    c = np.maximum(np.asarray(current_fractions, dtype=float), eps)
    return float(np.sum((c - r) * np.log(c / r)))


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def numeric_tests(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    reference_std: float | None = None,
    edges: Sequence[float] | None = None,
    reference_fractions: Sequence[float] | None = None,
) -> dict[str, dict[str, float | None]]:
    """KS, Wasserstein (raw and normalized) and PSI of two 1-D float samples without NaN.

    `edges`/`reference_fractions` come from a profile (computed on the full reference); without them the bins are
    the deciles of `reference`. `reference_std` likewise defaults to the sample's std (ddof=1).
    """
    if reference.size == 0 or current.size == 0:
        return {"ks": {"statistic": None, "p_value": None}, "wasserstein": {"value": None, "normalized": None},
                "psi": {"value": None}}
    ks = st.ks_2samp(reference, current)
    w = float(st.wasserstein_distance(reference, current))
    std = reference_std if reference_std is not None else (float(np.std(reference, ddof=1)) if reference.size > 1
                                                           else 0.0)
    normalized = w / std if std and std > 0 else w
    if edges is None or reference_fractions is None:
        edges = quantile_edges(reference, DEFAULT_BINS)
        reference_fractions = bin_counts(reference, edges) / reference.size
    cur_fr = bin_counts(current, edges) / current.size
    return {
        "ks": {"statistic": float(ks.statistic), "p_value": float(ks.pvalue)},
        "wasserstein": {"value": w, "normalized": float(normalized)},
        "psi": {"value": psi(reference_fractions, cur_fr)},
    }


def categorical_tests(
    reference_counts: Mapping[str, int], current_counts: Mapping[str, int]
) -> dict[str, dict[str, float | None]]:
    """Chi-square on the 2 x k table of counts, Jensen-Shannon distance (base 2) and PSI over the categories."""
    cats = sorted(set(reference_counts) | set(current_counts))
    ref = np.array([reference_counts.get(c, 0) for c in cats], dtype=float)
    cur = np.array([current_counts.get(c, 0) for c in cats], dtype=float)
    if ref.sum() == 0 or cur.sum() == 0:
        return {"chi2": {"statistic": None, "p_value": None}, "jensen_shannon": {"value": None},
                "psi": {"value": None}}
    if len(cats) < 2:
        # One category on both sides: the distributions are identical and the table has no degrees of freedom.
        chi2_stat, chi2_p = 0.0, 1.0
    else:
        res = st.chi2_contingency(np.vstack([ref, cur]))
        chi2_stat, chi2_p = float(res.statistic), float(res.pvalue)
    rf, cf = ref / ref.sum(), cur / cur.sum()
    return {
        "chi2": {"statistic": chi2_stat, "p_value": chi2_p},
        "jensen_shannon": {"value": float(jensenshannon(rf, cf, base=2))},
        "psi": {"value": psi(rf, cf)},
    }


def adjust_pvalues(pvalues: Sequence[float], method: Literal["holm", "bh"] = "holm") -> np.ndarray:
    """Multiple-testing adjusted p-values: Holm's step-down (FWER) or Benjamini-Hochberg (FDR, via scipy).

    Holm: with p sorted ascending, adj_(i) = max_{j<=i} min(1, (m - j) * p_(j)) (0-based j).
    """
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return p
    if method == "bh":
        return st.false_discovery_control(p, method="bh")
    order = np.argsort(p, kind="stable")
    m = p.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj = np.empty(m)
    adj[order] = np.maximum.accumulate(scaled)
    return adj


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class FeatureDrift:
    """One feature's verdict. `to_dict()` is the shape of `mlsteward drift`; the other fields explain it."""

    name: str
    kind: Literal["numeric", "categorical"]
    n_reference: int
    n_current: int
    tests: dict[str, dict[str, float | None]]
    p_value: float | None = None
    p_adjusted: float | None = None
    effect_passed: bool = False
    drift: bool = False
    reason: str = ""

    @property
    def statistic(self) -> float | None:
        return self.tests["ks" if self.kind == "numeric" else "chi2"]["statistic"]

    @property
    def effect_size(self) -> float | None:
        """PSI: the one effect size both kinds share, for status summaries and metrics."""
        return self.tests["psi"]["value"]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "drift": self.drift, "tests": self.tests}

    def summary(self) -> dict[str, Any]:
        """Compact form for DriftMonitor status: statistic, p-values, effect size, verdict and why."""
        return {
            "type": self.kind, "statistic": self.statistic, "p_value": self.p_value, "p_adjusted": self.p_adjusted,
            "effect_size": self.effect_size, "n_current": self.n_current, "drift": self.drift, "reason": self.reason,
        }


@dataclass
class DriftReport:
    n_reference: int
    n_current: int
    features: dict[str, FeatureDrift] = field(default_factory=dict)
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)

    @property
    def drift_detected(self) -> bool:
        return any(f.drift for f in self.features.values())

    @property
    def drifted_features(self) -> list[str]:
        return [n for n, f in self.features.items() if f.drift]

    def to_dict(self) -> dict[str, Any]:
        """`{"drift_detected", "n_reference", "n_current", "features": {NAME: {"type", "drift", "tests"}}}`."""
        return {
            "drift_detected": self.drift_detected,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "features": {n: f.to_dict() for n, f in self.features.items()},
        }


def _numeric_current(values: Iterable[Any], name: str) -> np.ndarray:
    x = to_float_array(values, what=f"current feature {name!r}")
    return x[~np.isnan(x)]


def _counts(values: Iterable[Any]) -> Counter[str]:
    return Counter(category_key(v) for v in values if not is_missing(v))


def _effect_passes(f: FeatureDrift, t: DriftThresholds) -> bool:
    tests = f.tests
    if f.kind == "numeric":
        p, w, d = tests["psi"]["value"], tests["wasserstein"]["normalized"], tests["ks"]["statistic"]
        return ((p is not None and p >= t.psi) or (w is not None and w >= t.wasserstein)
                or (t.ks is not None and d is not None and d >= t.ks))
    js, p = tests["jensen_shannon"]["value"], tests["psi"]["value"]
    return (js is not None and js >= t.jensen_shannon) or (p is not None and p >= t.psi)


def _feature_from_profile(name: str, fp: FeatureProfile, current: Sequence[Any]) -> FeatureDrift:
    if fp.type in NUMERIC_TYPES:
        cur = _numeric_current(current, name)
        ref = np.asarray(fp.sample, dtype=float)
        tests = numeric_tests(ref, cur, reference_std=fp.std, edges=fp.quantile_edges,
                              reference_fractions=fp.bin_fractions)
        return FeatureDrift(name, "numeric", fp.count, int(cur.size), tests)
    cur_counts = _counts(current)
    tests = categorical_tests(fp.categories or {}, cur_counts)
    return FeatureDrift(name, "categorical", fp.count, sum(cur_counts.values()), tests)


def _feature_from_raw(name: str, ftype: FeatureType, reference: Sequence[Any], current: Sequence[Any]) -> FeatureDrift:
    if ftype in NUMERIC_TYPES:
        ref = to_float_array(reference, what=f"reference feature {name!r}")
        ref = ref[~np.isnan(ref)]
        cur = _numeric_current(current, name)
        return FeatureDrift(name, "numeric", int(ref.size), int(cur.size), numeric_tests(ref, cur))
    rc, cc = _counts(reference), _counts(current)
    return FeatureDrift(name, "categorical", sum(rc.values()), sum(cc.values()), categorical_tests(rc, cc))


def _as_list(values: Any) -> list[Any]:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def _apply_rule(results: dict[str, FeatureDrift], t: DriftThresholds) -> None:
    """The decision rule on every feature's tests, in place: p_value, p_adjusted, effect_passed, drift, reason."""
    # Rule 1 picks the family for the multiple-testing correction: a feature without enough data is not tested.
    family = [
        f for f in results.values()
        if min(f.n_reference, f.n_current) >= t.min_samples
        and f.tests["ks" if f.kind == "numeric" else "chi2"]["p_value"] is not None
    ]
    adjusted = adjust_pvalues([f.tests["ks" if f.kind == "numeric" else "chi2"]["p_value"] for f in family],
                              t.correction)
    tested = {f.name for f in family}
    for f, adj in zip(family, adjusted):
        f.p_adjusted = float(adj)
    for f in results.values():
        f.p_value = f.tests["ks" if f.kind == "numeric" else "chi2"]["p_value"]
        f.effect_passed = _effect_passes(f, t)
        if f.name not in tested:
            f.reason = (f"insufficient samples (reference {f.n_reference}, current {f.n_current}, "
                        f"minimum {t.min_samples})")
        elif not f.effect_passed:
            f.reason = "effect below threshold"
        elif f.p_adjusted is None or f.p_adjusted >= t.alpha:
            f.reason = f"not significant after {t.correction} correction"
        else:
            f.drift = True
            f.reason = "drift"


def drift_report(
    reference: Profile | Mapping[str, Sequence[Any]],
    current: Mapping[str, Sequence[Any]],
    *,
    thresholds: DriftThresholds | None = None,
    features: Iterable[str] | None = None,
    types: Mapping[str, FeatureType] | None = None,
    categorical: Iterable[str] = (),
) -> DriftReport:
    """Test each feature of `current` against `reference` (a Profile or raw columns) and apply the decision rule.

    `features` defaults to every reference feature; each must be in `current` (KeyError naming it otherwise).
    With raw reference columns, a feature's type comes from `types`, then `categorical`, then the reference data.
    A profile carries its own types. Missing cells are dropped before testing.
    """
    t = thresholds or DriftThresholds()
    forced = set(categorical)
    ref_names = list(reference.features) if isinstance(reference, Profile) else list(reference)
    names = list(features) if features is not None else ref_names
    for n in names:
        if n not in ref_names:
            raise KeyError(f"feature {n!r} is not in the reference (features: {', '.join(ref_names)})")
        if n not in current:
            raise KeyError(f"feature {n!r} is not in the current data")
    results: dict[str, FeatureDrift] = {}
    for n in names:
        cur = _as_list(current[n])
        if isinstance(reference, Profile):
            results[n] = _feature_from_profile(n, reference.features[n], cur)
        else:
            ref = _as_list(reference[n])
            ftype = FeatureType(types[n]) if types and n in types else (
                FeatureType.categorical if n in forced else infer_type(ref))
            results[n] = _feature_from_raw(n, ftype, ref, cur)

    _apply_rule(results, t)
    n_ref = reference.rows if isinstance(reference, Profile) else max((len(v) for v in reference.values()), default=0)
    n_cur = max((len(_as_list(current[n])) for n in names), default=0)
    return DriftReport(n_reference=n_ref, n_current=n_cur, features=results, thresholds=t)
