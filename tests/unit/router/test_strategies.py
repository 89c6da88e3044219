"""The pure choice functions, by counting and by simulation."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from mlsteward_runtime.contracts import RouterConfig
from mlsteward_runtime.router.config import ConfigError, parse_config
from mlsteward_runtime.router.strategies import (
    Assigner,
    cumulative,
    epsilon_greedy,
    pick_bucket,
    pick_weighted,
    sticky_bucket,
    thompson,
)


def test_sticky_buckets_are_stable_and_uniform():
    assert sticky_bucket("user-42") == sticky_bucket("user-42")
    counts = Counter(sticky_bucket(f"user-{i}") for i in range(20_000))
    assert set(counts) == set(range(100))
    # Chi-square with 99 degrees of freedom: its 99.99th percentile is about 155.
    chi2 = sum((c - 200) ** 2 / 200 for c in counts.values())
    assert chi2 < 155, chi2


def test_weighted_pick_matches_the_weights():
    rng = np.random.default_rng(1)
    cum = cumulative([70, 20, 10])
    n = 10_000
    counts = Counter(pick_weighted(cum, u) for u in rng.random(n))
    for arm, p in enumerate((0.7, 0.2, 0.1)):
        assert abs(counts[arm] - n * p) <= 5 * math.sqrt(n * p * (1 - p)), counts
    assert pick_weighted(cumulative([0, 100]), 0.0) == 1  # a zero-weight arm is never picked


def test_bucket_moves_are_minimal_when_weight_shifts_between_two_arms():
    before, after = cumulative([90, 10]), cumulative([50, 50])
    moved = [b for b in range(100) if pick_bucket(before, b) != pick_bucket(after, b)]
    assert len(moved) == 40 and all(pick_bucket(before, b) == 0 for b in moved)


def simulate(choose, means, rounds, rng, binary=True, sd=1.0):
    k = len(means)
    n, s, ss = np.zeros(k), np.zeros(k), np.zeros(k)
    pulls = np.zeros(k, dtype=int)
    for _ in range(rounds):
        arm = choose(n, s, ss)
        x = float(rng.random() < means[arm]) if binary else float(rng.normal(means[arm], sd))
        n[arm] += 1
        s[arm] += x
        ss[arm] += x * x
        pulls[arm] += 1
    return pulls


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thompson_sends_most_traffic_to_the_better_binary_arm(seed):
    rng = np.random.default_rng(seed)
    pulls = simulate(lambda n, s, ss: thompson(rng, n, s, ss, True), [0.3, 0.5], 2000, rng)
    assert pulls[1] / pulls.sum() > 0.75, pulls


def test_thompson_handles_continuous_outcomes():
    rng = np.random.default_rng(5)
    pulls = simulate(lambda n, s, ss: thompson(rng, n, s, ss, False), [1.0, 1.5, 0.5], 2000, rng, binary=False)
    assert pulls[1] / pulls.sum() > 0.75 and pulls.min() >= 2, pulls


def test_epsilon_greedy_exploits_and_still_explores():
    rng = np.random.default_rng(2)
    pulls = simulate(lambda n, s, ss: epsilon_greedy(rng, n, s, 0.1), [0.3, 0.6], 3000, rng)
    assert pulls[1] / pulls.sum() > 0.8, pulls
    # With probability 0.1 a random arm, so about 5% of pulls land on the worse arm even once it is known worse.
    assert pulls[0] >= 0.03 * pulls.sum(), pulls


def test_unseen_arms_are_tried_first():
    rng = np.random.default_rng(0)
    n, s = np.array([50.0, 0.0]), np.array([50.0, 0.0])
    assert all(epsilon_greedy(rng, n, s, 0.0) == 1 for _ in range(10))
    assert all(thompson(rng, n, s, s.copy(), False) == 1 for _ in range(10))


def test_assigner_adds_priors_and_local_outcomes():
    cfg = RouterConfig.model_validate({
        "deployment": "d", "model": "m", "strategy": "EpsilonGreedy", "epsilon": 0.0,
        "backends": [{"version": "a", "url": "http://a", "weight": 50}, {"version": "b", "url": "http://b",
                                                                         "weight": 50}],
        "outcome_priors": {"a": {"n": 10, "sum": 6, "sumsq": 6}, "b": {"n": 10, "sum": 5, "sumsq": 5}},
    })
    local = {"b": (10, 10.0, 10.0)}
    assigner = Assigner(cfg, lambda: local, seed=0)
    arms = assigner.arms()
    assert arms.n.tolist() == [10, 20] and arms.s.tolist() == [6, 15] and arms.binary
    assert assigner.choose(None) == 1


def test_config_errors_name_the_field():
    good = {"deployment": "d", "model": "m", "backends": [{"version": "a", "url": "http://a", "weight": 100}]}
    parse_config(__import__("json").dumps(good))
    bad = [
        ({**good, "backends": []}, "backends"),
        ({**good, "backends": good["backends"] * 2}, "unique"),
        ({**good, "stable_version": "zz"}, "stable_version"),
        ({**good, "strategy": "Random"}, "strategy"),
        ({**good, "sticky": {}}, "sticky"),
    ]
    for cfg, word in bad:
        with pytest.raises(ConfigError, match=word):
            parse_config(__import__("json").dumps(cfg))


def test_thompson_keeps_the_variance_of_a_large_mean_metric():
    # Two arms around 1e9, b better by 2 with a spread of ~3: the posterior must be that narrow. From sums and
    # sums of squares the variance cancels to rounding noise (clipped to 0 or huge), and the draws go astray.
    from mlsteward_runtime.router.stats import StatsStore

    rng = np.random.default_rng(4)
    values = {"a": 1e9 + rng.normal(0, 3, 400), "b": 1e9 + 2 + rng.normal(0, 3, 400)}
    store = StatsStore("d", "r", 0.0)
    for v, xs in values.items():
        for x in xs:
            store.arm(v).record_outcome(float(x))
    cfg = RouterConfig.model_validate({
        "deployment": "d", "model": "m", "strategy": "ThompsonSampling", "metric_kind": "continuous",
        "backends": [{"version": "a", "url": "http://a"}, {"version": "b", "url": "http://b"}],
    })
    arms = Assigner(cfg, store.outcomes_since, seed=0).arms()
    expected = [float(np.sum((xs - xs.mean()) ** 2)) for xs in values.values()]
    assert arms.m2 is not None and arms.m2.tolist() == pytest.approx(expected, rel=1e-6)
    # P(b is drawn) under the exact posterior is Phi(2 / sqrt(9/400 + 9/400)) = 1 - 1e-21: b every time.
    assigner = Assigner(cfg, store.outcomes_since, seed=1)
    assert [assigner.choose(None) for _ in range(200)] == [1] * 200


def test_sticky_memory_under_a_bandit_does_not_grow_with_the_key_length():
    import tracemalloc

    cfg = RouterConfig.model_validate({
        "deployment": "d", "model": "m", "strategy": "EpsilonGreedy", "sticky": {"body_key": "user"},
        "backends": [{"version": "a", "url": "http://a"}, {"version": "b", "url": "http://b"}],
    })
    assigner = Assigner(cfg, lambda: {}, seed=0, sticky_capacity=1_000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    firsts = [assigner.choose(f"{i:06d}" + "u" * 100_000) for i in range(300)]
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert kept < 300 * 1_000, kept  # 300 keys of 100 kB would be 30 MB
    # Still sticky: the same long key gets the same arm.
    assert [assigner.choose(f"{i:06d}" + "u" * 100_000) for i in range(300)] == firsts
