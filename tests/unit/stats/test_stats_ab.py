"""Experiment statistics against scipy/statsmodels oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint, proportions_ztest

from mlsteward_runtime.contracts import VersionStats
from mlsteward_runtime.stats.ab import (
    ArmStats, chi2_proportions, mean_ci, msprt, prob_best, sample_ratio_mismatch, two_proportion_ztest, welch_ttest,
)
from mlsteward_runtime.stats.comparison import compare


def _binary(n: int, s: int) -> ArmStats:
    return ArmStats(n=n, sum=float(s), sumsq=float(s))


def test_sufficient_statistics_merge_by_addition():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=100), rng.normal(size=50)
    merged = ArmStats.from_values(x) + ArmStats.from_values(y)
    both = ArmStats.from_values(np.r_[x, y])
    assert merged.n == both.n and merged.mean == pytest.approx(both.mean) and merged.var == pytest.approx(both.var)
    vs = VersionStats(version="v1", outcomes=3, outcome_sum=2.0, outcome_sumsq=2.0)
    assert ArmStats.from_version_stats(vs) == ArmStats(3, 2.0, 2.0)


def test_two_proportion_z_matches_statsmodels():
    c, t = _binary(1000, 100), _binary(1100, 140)
    res = two_proportion_ztest(c, t)
    z, p = proportions_ztest([140, 100], [1100, 1000])
    assert res.statistic == pytest.approx(z) and res.p_value == pytest.approx(p)
    lo, hi = confint_proportions_2indep(140, 1100, 100, 1000, method="wald", compare="diff")
    assert res.ci95 == pytest.approx((lo, hi))
    assert res.difference == pytest.approx(140 / 1100 - 0.1)


def test_chi2_for_two_arms_is_z_squared_and_handles_n_arms():
    c, t = _binary(1000, 100), _binary(1100, 140)
    chi2, p, dof = chi2_proportions([c, t])
    assert chi2 == pytest.approx(two_proportion_ztest(c, t).statistic ** 2) and dof == 1
    arms = [_binary(500, 50), _binary(500, 65), _binary(500, 80)]
    chi2, p, dof = chi2_proportions(arms)
    table = [[50, 450], [65, 435], [80, 420]]
    res = st.chi2_contingency(table, correction=False)
    assert (chi2, p, dof) == (pytest.approx(res.statistic), pytest.approx(res.pvalue), 2)


def test_welch_matches_scipy_on_raw_values():
    rng = np.random.default_rng(1)
    x, y = rng.normal(1.0, 1.0, size=80), rng.normal(1.4, 2.0, size=120)
    res = welch_ttest(ArmStats.from_values(x), ArmStats.from_values(y))
    oracle = st.ttest_ind(y, x, equal_var=False)
    assert res.statistic == pytest.approx(oracle.statistic) and res.p_value == pytest.approx(oracle.pvalue)
    ci = oracle.confidence_interval(0.95)
    assert res.ci95 == pytest.approx((ci.low, ci.high)) and res.df == pytest.approx(oracle.df)


def test_mean_ci_matches_statsmodels_and_scipy():
    assert mean_ci(_binary(200, 30), "binary") == pytest.approx(proportion_confint(30, 200, method="wilson"))
    x = np.array([1.0, 2.0, 4.0, 7.0])
    ci = st.ttest_1samp(x, 0).confidence_interval()
    assert mean_ci(ArmStats.from_values(x), "continuous") == pytest.approx((ci.low, ci.high))


def test_prob_best_binary_monte_carlo_matches_exact_integral():
    from scipy.integrate import quad

    c, t = _binary(200, 20), _binary(200, 30)
    bc, bt = st.beta(21, 181), st.beta(31, 171)
    exact = quad(lambda x: bt.pdf(x) * bc.cdf(x), 0, 1)[0]
    p = prob_best([c, t], "binary", draws=200_000)
    assert p[1] == pytest.approx(exact, abs=0.005) and sum(p) == pytest.approx(1)
    assert prob_best([c, t], "binary", goal="minimize", draws=200_000)[0] == pytest.approx(exact, abs=0.005)


def test_prob_best_continuous_two_arms_is_exact_normal():
    c, t = ArmStats.from_values([1.0, 2.0, 3.0]), ArmStats.from_values([2.0, 3.0, 4.0, 5.0])
    se = math.sqrt(c.var / c.n + t.var / t.n)
    assert prob_best([c, t], "continuous")[1] == pytest.approx(st.norm.cdf((t.mean - c.mean) / se))


def test_srm_flags_a_broken_split_only():
    ok = sample_ratio_mismatch([5020, 4980], [50, 50])
    assert not ok.mismatch and ok.p_value == pytest.approx(st.chisquare([5020, 4980]).pvalue)
    bad = sample_ratio_mismatch([5300, 4700], [50, 50])
    assert bad.mismatch and bad.p_value < 1e-3
    assert sample_ratio_mismatch([900, 100], [90, 10]).mismatch is False
    assert sample_ratio_mismatch([10, 1], [100, 0]).mismatch is True


def test_msprt_matches_the_closed_form_and_never_increases():
    c, t = _binary(2000, 200), _binary(2000, 260)
    r = msprt(c, t, "binary", tau_std=0.1)
    pooled = 460 / 4000
    v = pooled * (1 - pooled) * (2 / 2000)
    tau2 = 0.01 * pooled * (1 - pooled)
    d = 0.03
    lam = math.sqrt(v / (v + tau2)) * math.exp(d * d * tau2 / (2 * v * (v + tau2)))
    assert r.likelihood_ratio == pytest.approx(lam) and r.p_value == pytest.approx(min(1, 1 / lam))
    later = msprt(_binary(3000, 300), _binary(3000, 305), "binary", previous_p=r.p_value)
    assert later.p_value <= r.p_value
    assert r.ci[0] < d < r.ci[1]


def test_compare_to_dict_is_the_cli_contract():
    c, t = _binary(1000, 100), _binary(1000, 130)
    out = compare(c, t, "binary").to_dict()
    assert set(out) == {"test", "control", "treatment", "lift", "p_value", "ci95", "prob_treatment_better",
                        "significant"}
    assert out["test"] == "two_proportion_z" and out["lift"] == pytest.approx(0.3)
    assert out["control"] == {"n": 1000, "mean": 0.1} and out["significant"] is (out["p_value"] < 0.05)


def test_binary_check_rejects_non_binary_outcomes():
    with pytest.raises(ValueError, match="not binary"):
        two_proportion_ztest(ArmStats.from_values([0.0, 2.0]), _binary(3, 1))
