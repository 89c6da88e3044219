"""Paired statistics of a shadow against the served version, checked against statsmodels and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import DescrStatsW

from mlsteward_runtime.stats.moments import Moments
from mlsteward_runtime.stats.paired import (
    mcnemar_exact, newcombe_paired, paired_proportions, paired_t, wilson,
)


def _table(both: int, served_only: int, shadow_only: int, neither: int) -> np.ndarray:
    # Rows: served right / wrong; columns: shadow right / wrong.
    return np.array([[both, served_only], [shadow_only, neither]])


FIXED = [(36, 12, 2, 0), (18, 12, 2, 18), (53, 0, 0, 1), (0, 30, 0, 0), (5, 7, 1, 3), (100, 40, 20, 40),
         (10, 0, 9, 1), (3, 1, 1, 0)]


@pytest.mark.parametrize("cells", FIXED)
def test_mcnemar_exact_matches_statsmodels_on_fixed_tables(cells):
    both, served_only, shadow_only, neither = cells
    expected = mcnemar(_table(*cells), exact=True).pvalue
    assert mcnemar_exact(served_only, shadow_only) == pytest.approx(min(1.0, expected), rel=1e-12)


def test_mcnemar_exact_matches_statsmodels_on_random_tables():
    rng = np.random.default_rng(7)
    for _ in range(300):
        b, c = (int(x) for x in rng.integers(0, 60, size=2))
        a, d = (int(x) for x in rng.integers(0, 500, size=2))
        expected = min(1.0, mcnemar(_table(a, b, c, d), exact=True).pvalue)
        assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-10, abs=1e-300), (b, c)


def test_mcnemar_without_discordant_pairs_is_one():
    assert mcnemar_exact(0, 0) == 1.0


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (7, 20), (93, 100), (1, 1), (500, 1000)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_statsmodels(k, n, confidence):
    lo, hi = proportion_confint(k, n, alpha=1 - confidence, method="wilson")
    assert wilson(k, n, confidence=confidence) == pytest.approx((lo, hi), abs=1e-12)


def test_wilson_without_a_trial_is_none():
    assert wilson(0, 0) is None


def test_newcombe_on_tables_whose_interval_follows_from_wilson_alone():
    # Every pair right for one model, wrong for the other: a margin is 0, so the correlation term is 0 and the
    # bounds are the Wilson bounds of 30/30 and 0/30 added in quadrature (truncated at 1).
    l1, _ = proportion_confint(30, 30, method="wilson")
    _, u2 = proportion_confint(0, 30, method="wilson")
    lo, hi = newcombe_paired(both=0, served_only=0, shadow_only=30, neither=0)
    assert lo == pytest.approx(1 - math.sqrt((1 - l1) ** 2 + u2**2)) and hi == 1.0
    # No discordant pair: the estimate is 0 and the interval symmetric about it.
    lo, hi = newcombe_paired(both=53, served_only=0, shadow_only=0, neither=1)
    assert lo == pytest.approx(-hi) and hi > 0


def test_newcombe_corrects_a_positive_correlation_by_half_a_table():
    # a d - b c = 53 > n/2 = 27: phi = (53 - 27) / 53 rather than 53 / 53, which would shrink the interval to the
    # difference of the two Wilson half-widths.
    n = 54
    p = 53 / n
    lo_w, hi_w = proportion_confint(53, n, method="wilson")
    phi = 26 / 53
    half = math.sqrt((p - lo_w) ** 2 - 2 * phi * (p - lo_w) * (hi_w - p) + (hi_w - p) ** 2)
    assert newcombe_paired(53, 0, 0, 1) == pytest.approx((-half, half))


def _newcombe_from_statsmodels_pieces(a, b, c, d, confidence):
    """Method 10 assembled from statsmodels' Wilson intervals (the independent oracle of each piece)."""
    n = a + b + c + d
    p1, p2 = (a + c) / n, (a + b) / n
    l1, u1 = proportion_confint(a + c, n, alpha=1 - confidence, method="wilson")
    l2, u2 = proportion_confint(a + b, n, alpha=1 - confidence, method="wilson")
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    num = a * d - b * c
    num = max(num - n / 2, 0) if num > 0 else num
    phi = num / math.sqrt(margins) if margins else 0.0
    delta = math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    eps = math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    return p1 - p2 - delta, p1 - p2 + eps


def test_newcombe_matches_its_pieces_on_random_tables():
    rng = np.random.default_rng(11)
    for _ in range(200):
        a, b, c, d = (int(x) for x in rng.integers(0, 80, size=4))
        if a + b + c + d == 0:
            continue
        confidence = float(rng.choice([0.9, 0.95, 0.99]))
        got = newcombe_paired(a, b, c, d, confidence=confidence)
        assert got == pytest.approx(_newcombe_from_statsmodels_pieces(a, b, c, d, confidence), abs=1e-9)
        assert got[0] <= (c - b) / (a + b + c + d) <= got[1]


def test_paired_proportions_reports_accuracies_difference_and_mcnemar():
    res = paired_proportions(both=100, served_only=40, shadow_only=20, neither=40)
    assert res is not None
    assert res.n == 200 and res.served_accuracy == 0.7 and res.shadow_accuracy == 0.6
    assert res.difference == pytest.approx(-0.1)
    assert res.ci[1] < 0  # the shadow is significantly worse here
    assert res.mcnemar_p == pytest.approx(mcnemar(_table(100, 40, 20, 40), exact=True).pvalue)
    assert paired_proportions(0, 0, 0, 0) is None


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_paired_t_matches_scipy_and_statsmodels(seed, confidence):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 400))
    served_err = np.abs(rng.normal(0, 1.0, n))
    shadow_err = np.abs(rng.normal(0.05 * seed, 1.0, n))
    d = shadow_err - served_err
    res = paired_t(Moments.of_values(list(d)), confidence=confidence)
    assert res is not None
    rel = st.ttest_rel(shadow_err, served_err)
    one = st.ttest_1samp(d, 0.0)
    assert res.statistic == pytest.approx(rel.statistic, rel=1e-9)
    assert res.p_value == pytest.approx(rel.pvalue, rel=1e-9)
    assert res.p_value == pytest.approx(one.pvalue, rel=1e-9)
    assert res.ci == pytest.approx(tuple(one.confidence_interval(confidence)), rel=1e-9, abs=1e-12)
    assert res.ci == pytest.approx(DescrStatsW(d).tconfint_mean(alpha=1 - confidence), rel=1e-9, abs=1e-12)


def test_paired_t_from_merged_replicas_equals_the_pooled_values():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.2, 1, 120), rng.normal(0.1, 2, 80)
    merged = Moments.of_values(list(x)).merge(Moments.of_values(list(y)))
    res = paired_t(merged)
    one = st.ttest_1samp(np.r_[x, y], 0.0)
    assert res is not None and res.p_value == pytest.approx(one.pvalue, rel=1e-9)


def test_paired_t_edge_cases():
    assert paired_t(Moments()) is None
    assert paired_t(Moments.of_values([0.5])) is None
    same = paired_t(Moments.of_values([0.5, 0.5, 0.5]))
    assert same is not None and same.ci == (0.5, 0.5) and same.p_value == 0.0
    zero = paired_t(Moments.of_values([0.0, 0.0]))
    assert zero is not None and zero.p_value == 1.0
