"""(n, mean, M2) with Welford's update, Chan's merge and its inverse, against numpy on the concatenated values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mlsteward_runtime.contracts import VersionStats
from mlsteward_runtime.stats.ab import ArmStats
from mlsteward_runtime.stats.moments import Moments, Welford


def split(rng: np.random.Generator, x: np.ndarray, parts: int) -> list[np.ndarray]:
    cuts = np.sort(rng.choice(np.arange(1, x.size), size=parts - 1, replace=False))
    return np.split(x, cuts)


@pytest.mark.parametrize("loc, scale", [(1e9, 1.0), (-1e9, 0.1), (0.0, 1.0), (1e6, 1e3)])
def test_one_pass_and_random_merges_equal_numpy(loc: float, scale: float) -> None:
    rng = np.random.default_rng(11)
    x = rng.normal(loc, scale, size=5_000)
    expected_mean, expected_var = float(np.mean(x)), float(np.var(x, ddof=1))
    acc = Welford()
    for v in x:
        acc.add(float(v))
    assert acc.mean == pytest.approx(expected_mean, rel=1e-12)
    assert acc.moments().var == pytest.approx(expected_var, rel=1e-6)
    for seed in range(5):
        r = np.random.default_rng(seed)
        parts = [Moments.of_values([float(v) for v in p]) for p in split(r, x, int(r.integers(2, 12)))]
        merged = Moments()
        for i in r.permutation(len(parts)):
            merged = merged.merge(parts[int(i)])
        assert merged.n == x.size
        assert merged.mean == pytest.approx(expected_mean, rel=1e-12)
        assert merged.var == pytest.approx(expected_var, rel=1e-6)


def test_subtracting_a_checkpoint_leaves_what_was_counted_since() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(1e9, 2.0, size=3_000)
    before, after = x[:1_234], x[1_234:]
    rest = Moments.of_values([float(v) for v in x]).subtract(Moments.of_values([float(v) for v in before]))
    assert rest.n == after.size
    assert rest.mean == pytest.approx(float(np.mean(after)), rel=1e-12)
    assert rest.var == pytest.approx(float(np.var(after, ddof=1)), rel=1e-4)
    assert Moments.of_values([1.0, 2.0]).subtract(Moments.of_values([1.0, 2.0])) == Moments()
    with pytest.raises(ValueError):
        Moments.of_values([1.0]).subtract(Moments.of_values([1.0, 2.0]))


def test_a_large_mean_keeps_its_variance_through_arm_stats() -> None:
    # Rewards at the default bound (1e9) minus a little: sumsq - sum^2/n has nothing left of a variance of ~8.
    rng = np.random.default_rng(5)
    x = 1e9 - rng.integers(0, 10, size=2_000).astype(float)
    halves = [ArmStats.from_values(h) for h in np.array_split(x, 2)]
    merged = halves[0] + halves[1]
    assert merged.var == pytest.approx(float(np.var(x, ddof=1)), rel=1e-6)
    assert (merged - halves[0]).var == pytest.approx(float(np.var(x[1_000:], ddof=1)), rel=1e-4)
    # What the router exports reads back the same way.
    w = Welford()
    for v in x:
        w.add(float(v))
    vs = VersionStats(version="v", outcomes=w.n, outcome_sum=w.total, outcome_sumsq=w.total_sq,
                      outcome_mean=w.mean, outcome_m2=w.m2)
    assert ArmStats.from_version_stats(vs).var == pytest.approx(float(np.var(x, ddof=1)), rel=1e-6)


def test_no_value_within_the_bounds_makes_inf_or_nan() -> None:
    acc = Welford()
    for v in [1e9, -1e9] * 1_000 + [1e9] * 10:
        acc.add(v)
    m = acc.moments()
    assert all(math.isfinite(v) for v in (m.mean, m.m2, m.var, acc.total, acc.total_sq))
    x = np.array([1e9, -1e9] * 1_000 + [1e9] * 10)
    assert m.var == pytest.approx(float(np.var(x, ddof=1)), rel=1e-9)
