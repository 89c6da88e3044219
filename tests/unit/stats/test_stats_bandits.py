"""Bandit arm choice: cold start, exploitation, exploration and seeding."""

from __future__ import annotations

import numpy as np

from mlsteward_runtime.stats.ab import ArmStats
from mlsteward_runtime.stats.bandits import epsilon_greedy, thompson, thompson_allocation


def _binary(n: int, s: int) -> ArmStats:
    return ArmStats(n=n, sum=float(s), sumsq=float(s))


def test_unseen_arm_is_tried_first():
    arms = [_binary(100, 90), ArmStats()]
    rng = np.random.default_rng(0)
    assert epsilon_greedy(arms, 0.0, rng) == 1
    assert thompson(arms, rng) == 1
    assert thompson([ArmStats.from_values([1.0, 2.0]), ArmStats.from_values([5.0])], rng, metric="continuous") == 1


def test_epsilon_greedy_exploits_and_explores_at_rate_epsilon():
    arms = [_binary(100, 10), _binary(100, 30), _binary(100, 20)]
    rng = np.random.default_rng(1)
    picks = np.array([epsilon_greedy(arms, 0.3, rng) for _ in range(6000)])
    # Greedy share is 1 - eps + eps/3; each other arm gets eps/3.
    assert abs(np.mean(picks == 1) - (0.7 + 0.1)) < 0.02
    assert abs(np.mean(picks == 0) - 0.1) < 0.02
    assert epsilon_greedy(arms, 0.0, rng, goal="minimize") == 0


def test_thompson_prefers_the_clearly_better_arm_and_is_seeded():
    arms = [_binary(1000, 100), _binary(1000, 200)]
    picks = [thompson(arms, np.random.default_rng(s)) for s in range(200)]
    assert sum(picks) == 200
    assert [thompson(arms, np.random.default_rng(7)) for _ in range(3)] == [thompson(arms, np.random.default_rng(7))] * 3
    shares = thompson_allocation([_binary(50, 5), _binary(50, 6)], rng=np.random.default_rng(0))
    assert 0.3 < shares[1] < 0.9 and abs(sum(shares) - 1) < 1e-9
