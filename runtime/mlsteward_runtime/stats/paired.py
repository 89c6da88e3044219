"""Paired comparisons of two models answering the same requests (a shadow version against the served one).

Every function takes counts or moments, never raw answers, so the router replicas' counters merge exactly (cells add
up; moments merge with Chan's formula, `mlsteward_runtime.stats.moments`). Differences are always shadow minus
served. Only scipy at runtime; the tests check each function against the statsmodels function named below.

- Agreement rate (agreed / compared) and any single proportion: the Wilson score interval without continuity
  correction, `scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`, as `ab.mean_ci` does for an arm
  (statsmodels' `proportion_confint(k, n, method="wilson")`).
- Labelled pairs of a classifier, the paired 2x2 table of "right or not" per request: both right (a), only the
  served one right (b), only the shadow right (c), neither (d), n = a + b + c + d.
  - McNemar's exact test of equal accuracy, from the discordant cells: two-sided p = 2 P(X <= min(b, c)) for
    X ~ Binomial(b + c, 1/2), capped at 1, and 1 when b + c = 0 (statsmodels'
    `statsmodels.stats.contingency_tables.mcnemar(table, exact=True)`); computed as
    `scipy.stats.binomtest(min(b, c), b + c, 0.5)`, whose two-sided p for p = 1/2 is that same sum.
  - The accuracy difference shadow - served = (c - b) / n with Newcombe's score interval for paired proportions
    (Newcombe 1998, "Improved confidence intervals for the difference between binomial proportions based on paired
    data", Statistics in Medicine 17:2635-2650, method 10). With the Wilson intervals (l1, u1) of the shadow's
    accuracy p1 = (a + c) / n and (l2, u2) of the served one's p2 = (a + b) / n, and the correlation of the two
    "right" indicators phi = (a d - b c) / sqrt((a + b)(c + d)(a + c)(b + d)) (0 when a margin is 0; when
    a d > b c its numerator is max(a d - b c - n/2, 0), Newcombe's correction),
        low  = (p1 - p2) - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2),
        high = (p1 - p2) + sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2).
    The n/2 correction of a positive phi is Newcombe's (as in Altman et al., "Statistics with Confidence", and R's
    biostatUZH and psychometric packages); Fagerland et al.'s "square-and-add" interval leaves phi uncorrected,
    which gives a slightly narrower interval when the two models are right on the same requests. statsmodels 0.15
    has no paired version of this interval (`confint_proportions_2indep` is Newcombe's method for independent
    samples), so the tests check it assembled from statsmodels' `proportion_confint(method="wilson")` pieces.
- Labelled rows of a regressor: d = |shadow error| - |served error| per row (positive: the shadow is worse), kept
  as moments (n, mean, M2). The paired t-test of mean d = 0 and Student's t interval of the mean:
  t = mean / (s / sqrt(n)), s^2 = M2 / (n - 1), df = n - 1 (scipy's `ttest_rel(shadow_err, served_err)` and
  `ttest_1samp(d, 0)` on the same raw numbers; statsmodels' `DescrStatsW(d).ttest_mean()` and `tconfint_mean()`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as st

from mlsteward_runtime.stats.moments import Moments


def wilson(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of the proportion successes / n; None without a trial."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n={n}, got {successes}")
    ci = st.binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(served_only: int, shadow_only: int) -> float:
    """McNemar's exact two-sided p-value from the discordant cells (module docstring); 1 with none."""
    if served_only < 0 or shadow_only < 0:
        raise ValueError("discordant counts must not be negative")
    m = served_only + shadow_only
    if m == 0:
        return 1.0
    return min(1.0, float(st.binomtest(min(served_only, shadow_only), m, 0.5).pvalue))


@dataclass(frozen=True)
class PairedProportions:
    """The comparison of two classifiers on the same labelled requests."""

    n: int
    served_accuracy: float
    shadow_accuracy: float
    difference: float  # shadow - served
    ci: tuple[float, float]  # Newcombe's method 10
    mcnemar_p: float


def _phi(a: int, b: int, c: int, d: int) -> float:
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins == 0:
        return 0.0
    n = a + b + c + d
    num = float(a * d - b * c)
    if num > 0:
        num = max(num - n / 2, 0.0)
    return num / math.sqrt(margins)


def newcombe_paired(both: int, served_only: int, shadow_only: int, neither: int, *,
                    confidence: float = 0.95) -> tuple[float, float] | None:
    """Newcombe's interval (method 10) of shadow accuracy - served accuracy; None without a pair."""
    a, b, c, d = both, served_only, shadow_only, neither
    if min(a, b, c, d) < 0:
        raise ValueError("cell counts must not be negative")
    n = a + b + c + d
    if n == 0:
        return None
    p1, p2 = (a + c) / n, (a + b) / n
    ci1, ci2 = wilson(a + c, n, confidence=confidence), wilson(a + b, n, confidence=confidence)
    assert ci1 is not None and ci2 is not None
    (l1, u1), (l2, u2) = ci1, ci2
    phi = _phi(a, c, b, d)  # rows: shadow right / wrong; columns: served right / wrong
    theta = p1 - p2
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    eps = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, theta - delta), min(1.0, theta + eps)


def paired_proportions(both: int, served_only: int, shadow_only: int, neither: int, *,
                       confidence: float = 0.95) -> PairedProportions | None:
    """Accuracies, their difference with Newcombe's interval, and McNemar's exact p; None without a pair."""
    ci = newcombe_paired(both, served_only, shadow_only, neither, confidence=confidence)
    if ci is None:
        return None
    n = both + served_only + shadow_only + neither
    return PairedProportions(n, (both + served_only) / n, (both + shadow_only) / n, (shadow_only - served_only) / n,
                             ci, mcnemar_exact(served_only, shadow_only))


@dataclass(frozen=True)
class PairedMean:
    """The paired t-test of a mean difference and Student's t interval of it."""

    n: int
    mean: float
    ci: tuple[float, float]
    statistic: float
    p_value: float


def paired_t(diffs: Moments, *, confidence: float = 0.95) -> PairedMean | None:
    """The paired t-test of mean difference 0 from the differences' moments; None below two differences.

    With every difference equal (s = 0) there is no spread to test against: the interval is the mean itself and p
    is 1 when the mean is 0, else 0 (scipy gives NaN there).
    """
    n = diffs.n
    if n < 2:
        return None
    se = math.sqrt(diffs.m2 / (n - 1) / n)
    if se == 0:
        return PairedMean(n, diffs.mean, (diffs.mean, diffs.mean), 0.0 if diffs.mean == 0 else math.copysign(
            math.inf, diffs.mean), 1.0 if diffs.mean == 0 else 0.0)
    t = diffs.mean / se
    p = float(2 * st.t.sf(abs(t), n - 1))
    h = float(st.t.ppf(0.5 + confidence / 2, n - 1)) * se
    return PairedMean(n, diffs.mean, (diffs.mean - h, diffs.mean + h), t, p)
