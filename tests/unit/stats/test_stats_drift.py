"""Drift statistics against scipy oracles, and the decision rule on small deterministic cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st
from scipy.spatial.distance import jensenshannon

from mlsteward_runtime.contracts import DriftWindow, FeatureType, FeatureWindow
from mlsteward_runtime.stats.drift import (
    DriftThresholds, adjust_pvalues, categorical_tests, drift_report, numeric_tests, pool_windows, psi,
)
from mlsteward_runtime.stats.profile import bin_counts, build_profile, quantile_edges


def test_numeric_tests_equal_scipy_on_raw_samples():
    rng = np.random.default_rng(3)
    ref, cur = rng.normal(size=700), rng.normal(0.3, 1.2, size=400)
    out = numeric_tests(ref, cur)
    ks = st.ks_2samp(ref, cur)
    assert out["ks"] == {"statistic": pytest.approx(ks.statistic), "p_value": pytest.approx(ks.pvalue)}
    w = st.wasserstein_distance(ref, cur)
    assert out["wasserstein"]["value"] == pytest.approx(w)
    assert out["wasserstein"]["normalized"] == pytest.approx(w / np.std(ref, ddof=1))
    edges = np.quantile(ref, np.arange(1, 10) / 10)
    r = np.histogram(ref, np.r_[-np.inf, edges, np.inf])[0] / ref.size
    c = np.histogram(cur, np.r_[-np.inf, edges, np.inf])[0] / cur.size
    assert out["psi"]["value"] == pytest.approx(np.sum((c - r) * np.log(c / r)), rel=1e-6)


def test_categorical_tests_equal_scipy_on_counts():
    ref = {"a": 50, "b": 30, "c": 20}
    cur = {"a": 20, "b": 30, "c": 45, "d": 5}
    out = categorical_tests(ref, cur)
    table = np.array([[50, 30, 20, 0], [20, 30, 45, 5]])
    res = st.chi2_contingency(table)
    assert out["chi2"]["statistic"] == pytest.approx(res.statistic)
    assert out["chi2"]["p_value"] == pytest.approx(res.pvalue)
    rf, cf = table[0] / 100, table[1] / 100
    assert out["jensen_shannon"]["value"] == pytest.approx(jensenshannon(rf, cf, base=2))
    assert out["psi"]["value"] == pytest.approx(psi(rf, cf))


def test_psi_floors_empty_cells_at_epsilon():
    # A category absent from the reference contributes (0.1 - 1e-4) * ln(0.1 / 1e-4), not infinity.
    value = psi([0.5, 0.5, 0.0], [0.45, 0.45, 0.1])
    expected = 2 * (0.45 - 0.5) * np.log(0.45 / 0.5) + (0.1 - 1e-4) * np.log(0.1 / 1e-4)
    assert value == pytest.approx(expected)


def test_holm_and_bh_match_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2, 0.001]
    assert adjust_pvalues(p, "holm") == pytest.approx(multipletests(p, method="holm")[1])
    assert adjust_pvalues(p, "bh") == pytest.approx(multipletests(p, method="fdr_bh")[1])


def test_profile_bins_and_reference_fractions_agree():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=1000).astype(float)  # ties: fewer than ten bins
    prof = build_profile({"x": x}).features["x"]
    assert prof.type == FeatureType.integer
    assert prof.quantile_edges == sorted(set(prof.quantile_edges))
    assert len(prof.bin_fractions) == len(prof.quantile_edges) + 1
    assert sum(prof.bin_fractions) == pytest.approx(1.0)
    counts = bin_counts(x, quantile_edges(x))
    assert prof.bin_fractions == pytest.approx((counts / x.size).tolist())


def test_profile_sample_is_bounded_and_seeded():
    x = np.arange(20_000, dtype=float)
    a = build_profile({"x": x}, sample_size=500, seed=1).features["x"]
    b = build_profile({"x": x}, sample_size=500, seed=1).features["x"]
    assert len(a.sample) == 500 and a.sample == b.sample
    assert a.count == 20_000 and a.min == 0 and a.max == 19_999


def test_report_shape_is_the_cli_contract():
    rng = np.random.default_rng(1)
    ref = {"n": rng.normal(size=500), "c": rng.choice(["x", "y"], size=500)}
    cur = {"n": rng.normal(size=300), "c": rng.choice(["x", "y"], size=300)}
    rep = drift_report(ref, cur).to_dict()
    assert set(rep) == {"drift_detected", "n_reference", "n_current", "features"}
    assert rep["n_reference"] == 500 and rep["n_current"] == 300
    assert set(rep["features"]["n"]) == {"type", "drift", "tests"}
    assert rep["features"]["n"]["type"] == "numeric"
    assert set(rep["features"]["n"]["tests"]) == {"ks", "wasserstein", "psi"}
    assert set(rep["features"]["n"]["tests"]["wasserstein"]) == {"value", "normalized"}
    assert rep["features"]["c"]["type"] == "categorical"
    assert set(rep["features"]["c"]["tests"]) == {"chi2", "jensen_shannon", "psi"}


def test_large_window_with_negligible_shift_is_significant_but_not_drift():
    rng = np.random.default_rng(2)
    prof = build_profile({"x": rng.normal(size=50_000)})
    rep = drift_report(prof, {"x": rng.normal(0.03, 1.0, size=200_000)})
    f = rep.features["x"]
    assert not f.drift and f.reason == "effect below threshold"


def test_shift_is_drift_and_small_window_is_not_tested():
    rng = np.random.default_rng(4)
    prof = build_profile({"x": rng.normal(size=10_000)})
    shifted = rng.normal(0.5, 1.0, size=5_000)
    f = drift_report(prof, {"x": shifted}).features["x"]
    assert f.drift and f.reason == "drift" and f.p_adjusted < 0.05
    strict = DriftThresholds(min_samples=1000)
    small = drift_report(prof, {"x": shifted[:400]}, thresholds=strict).features["x"]
    assert not small.drift and small.reason.startswith("insufficient samples")
    assert drift_report(prof, {"x": shifted[:400]}).features["x"].drift


def test_profile_and_raw_reference_give_the_same_categorical_verdict():
    rng = np.random.default_rng(5)
    ref = {"c": rng.choice(["a", "b", "c"], size=3000, p=[0.5, 0.3, 0.2])}
    cur = {"c": rng.choice(["a", "b", "c"], size=3000, p=[0.2, 0.3, 0.5])}
    raw = drift_report(ref, cur).features["c"]
    prof = drift_report(build_profile(ref), cur).features["c"]
    assert raw.tests == prof.tests and raw.drift and prof.drift


def test_missing_feature_is_named():
    with pytest.raises(KeyError, match="'b'"):
        drift_report({"a": [1, 2], "b": [1, 2]}, {"a": [1, 2]})


def _window(replica: str, seen: int, values: list) -> DriftWindow:
    return DriftWindow(name="m", version="v1", replica=replica, seen=seen,
                       features={"x": FeatureWindow(type=FeatureType.number, values=values)})


def test_pool_windows_weights_replicas_by_traffic_seen():
    busy = _window("a", 9000, [1.0] * 1000)  # each kept row stands for 9 rows
    idle = _window("b", 1000, [2.0] * 1000)  # each kept row stands for 1 row
    pooled = pool_windows([busy, idle], max_samples=1000, seed=0)["x"]
    assert len(pooled) == 1000
    assert pooled.count(1.0) == 900 and pooled.count(2.0) == 100


def test_pool_windows_keeps_everything_when_it_fits_and_is_seeded():
    a = _window("a", 100, list(np.arange(100.0)))
    b = _window("b", 100, list(np.arange(100.0, 200.0)))
    assert sorted(pool_windows([a, b], max_samples=10_000)["x"]) == list(np.arange(200.0))
    assert pool_windows([a, b], 50, seed=3) == pool_windows([a, b], 50, seed=3)
    assert len(pool_windows([a, b], 50, seed=3)["x"]) == 50


def test_ks_threshold_counts_the_ks_statistic_as_an_effect_size():
    """DriftMonitor's thresholds.ks lives here, so `mlsteward drift` and the operator apply one rule."""
    rng = np.random.default_rng(9)
    reference, current = rng.normal(size=20_000), rng.normal(0.12, 1.0, size=3_000)
    d = st.ks_2samp(reference, current).statistic
    off = DriftThresholds(psi=5.0, wasserstein=5.0)
    f = drift_report({"x": reference}, {"x": current}, thresholds=off).features["x"]
    assert not f.drift and f.reason == "effect below threshold"
    below = drift_report({"x": reference}, {"x": current}, thresholds=DriftThresholds(
        psi=5.0, wasserstein=5.0, ks=d * 1.01)).features["x"]
    assert not below.drift and below.reason == "effect below threshold"
    at = drift_report({"x": reference}, {"x": current}, thresholds=DriftThresholds(
        psi=5.0, wasserstein=5.0, ks=d)).features["x"]
    assert at.drift and at.reason == "drift" and at.statistic == pytest.approx(d, rel=1e-12)
    with pytest.raises(ValueError, match="ks"):
        DriftThresholds(ks=-0.1)
