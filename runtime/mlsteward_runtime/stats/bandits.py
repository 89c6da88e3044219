"""Bandit arm choice over arms' sufficient statistics, for the router's EpsilonGreedy and ThompsonSampling.

Pure functions: the caller passes the arms' `ArmStats` and a `numpy.random.Generator`, so the router can keep
one generator per process and tests can seed it. Index i of the result is the i-th arm given.

- Cold start (both strategies): an arm with no outcome (n = 0; n < 2 for a continuous metric under Thompson,
  which needs a variance) is chosen first, uniformly among such arms, so every arm gets a first look.
- Epsilon-greedy: with probability epsilon a uniformly random arm, otherwise the arm with the best observed mean
  (ties broken uniformly).
- Thompson sampling: one draw from each arm's posterior (`stats.ab.posterior_draws`: Beta(1 + s, 1 + n - s) for
  binary rewards, N(mean, var / n) for continuous ones), then the best draw.
- `thompson_allocation`: the share of traffic Thompson sampling would give each arm, i.e. P(best) by Monte Carlo;
  the operator can write it into the router's weight table when arms are chosen centrally.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlsteward_runtime.stats.ab import ArmStats, Goal, Metric, posterior_draws, prob_best


def _pick(candidates: np.ndarray, rng: np.random.Generator) -> int:
    return int(candidates[rng.integers(candidates.size)])


def _cold(arms: Sequence[ArmStats], min_n: int) -> np.ndarray:
    return np.flatnonzero(np.array([a.n < min_n for a in arms]))


def epsilon_greedy(
    arms: Sequence[ArmStats], epsilon: float, rng: np.random.Generator, *, goal: Goal = "maximize"
) -> int:
    """Index of the arm to serve under epsilon-greedy (module docstring)."""
    if not arms:
        raise ValueError("no arms")
    if not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    cold = _cold(arms, 1)
    if cold.size:
        return _pick(cold, rng)
    if rng.random() < epsilon:
        return int(rng.integers(len(arms)))
    means = np.array([a.mean for a in arms])
    if goal == "minimize":
        means = -means
    return _pick(np.flatnonzero(means == means.max()), rng)


def thompson(
    arms: Sequence[ArmStats], rng: np.random.Generator, *, metric: Metric = "binary", goal: Goal = "maximize"
) -> int:
    """Index of the arm to serve under Thompson sampling (module docstring)."""
    if not arms:
        raise ValueError("no arms")
    cold = _cold(arms, 1 if metric == "binary" else 2)
    if cold.size:
        return _pick(cold, rng)
    draw = posterior_draws(arms, metric, 1, rng)[0]
    return int(np.argmax(draw if goal == "maximize" else -draw))


def thompson_allocation(
    arms: Sequence[ArmStats],
    *,
    metric: Metric = "binary",
    goal: Goal = "maximize",
    draws: int = 10_000,
    rng: np.random.Generator | None = None,
) -> list[float]:
    """Traffic shares Thompson sampling implies: each arm's posterior probability of being best."""
    return prob_best(arms, metric, goal=goal, draws=draws, rng=rng)
