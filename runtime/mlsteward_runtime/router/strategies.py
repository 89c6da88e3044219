"""Arm assignment: weighted and sticky splits, epsilon-greedy and Thompson sampling.

The choice functions are pure. The bandits take a numpy Generator and the arms' sufficient statistics (n, sum,
sum of squares) and return an arm index, so they can be tested by simulation and later share code with
`mlsteward_runtime.stats.bandits`. `Assigner` turns one RouterConfig into a callable used on the request path.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from mlsteward_runtime.contracts import RouterConfig, RouterStrategy
from mlsteward_runtime.stats.moments import Moments

BUCKETS = 100


def sticky_bucket(key: str) -> int:
    """Map a user key to a bucket in 0..99, the same on every replica and across restarts.

    blake2b rather than Python's hash(), which is salted per process and would scatter a user across replicas.
    """
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def cumulative(weights: Sequence[float]) -> list[float]:
    """Running totals of the weights, the ranges that `pick_weighted` and `pick_bucket` search."""
    out: list[float] = []
    total = 0.0
    for w in weights:
        total += max(float(w), 0.0)
        out.append(total)
    return out


def pick_weighted(cum: Sequence[float], u: float) -> int:
    """Index of the arm whose range contains u * total, for u uniform in [0, 1)."""
    return min(bisect.bisect_right(cum, u * cum[-1]), len(cum) - 1)


def pick_bucket(cum: Sequence[float], bucket: int) -> int:
    """Arm of a sticky bucket.

    Arms own contiguous bucket ranges in config order, so when weights move between two arms only the buckets
    in the moved share change arm (the fewest users possible); everyone else keeps their arm.
    """
    return pick_weighted(cum, (bucket + 0.5) / BUCKETS)


def _means(n: np.ndarray, s: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), 0.0)


def epsilon_greedy(rng: np.random.Generator, n: np.ndarray, s: np.ndarray, epsilon: float) -> int:
    """Explore a uniformly random arm with probability epsilon, else exploit the best mean (maximizing).

    Arms without outcomes are tried first: a mean of nothing cannot be compared, and one outcome each is cheap.
    Ties are broken at random so no arm is favoured by its position.
    """
    k = len(n)
    unseen = np.flatnonzero(n <= 0)
    if unseen.size:
        return int(rng.choice(unseen))
    if rng.random() < epsilon:
        return int(rng.integers(k))
    means = _means(n, s)
    best = np.flatnonzero(means == means.max())
    return int(rng.choice(best))


def thompson(
    rng: np.random.Generator, n: np.ndarray, s: np.ndarray, ss: np.ndarray, binary: bool,
    m2: np.ndarray | None = None,
) -> int:
    """Draw each arm's mean from its posterior and pick the largest draw (maximizing).

    Binary outcomes: Beta(1 + successes, 1 + failures), the conjugate posterior under a uniform prior.
    Continuous outcomes: Normal(mean, variance / n), the large-sample posterior of the mean under a flat prior,
    with the variance pooled across arms while an arm has too few outcomes to estimate its own. Arms with
    fewer than two outcomes are tried first, since a one-point variance is undefined. The variance comes from
    `m2` (sums of squared deviations) when given: ss - n mean^2 loses it for a metric with a large mean.
    """
    if binary:
        successes = np.clip(s, 0.0, n)
        draws = rng.beta(1.0 + successes, 1.0 + n - successes)
        return int(np.argmax(draws))
    few = np.flatnonzero(n < 2)
    if few.size:
        return int(rng.choice(few))
    means = s / n
    dev = m2 if m2 is not None else ss - n * means**2
    var = np.maximum(dev / (n - 1), 0.0)
    pooled = float(np.sum(dev) / max(float(np.sum(n - 1)), 1.0))
    var = np.where(var > 0, var, max(pooled, 1e-12))
    draws = rng.normal(means, np.sqrt(var / n))
    return int(np.argmax(draws))


def is_binary(n: np.ndarray, s: np.ndarray, ss: np.ndarray) -> bool:
    """Whether the outcomes so far can all be 0/1: then sum equals sum of squares and the sum is within [0, n]."""
    return bool(np.allclose(s, ss, rtol=1e-9, atol=1e-9) and np.all(s >= 0) and np.all(s <= n))


def _moments(n: int, total: float, total_sq: float, m2: float | None) -> Moments:
    if n <= 0:
        return Moments()
    return Moments(n, total / n, m2) if m2 is not None else Moments.from_sums(n, total, total_sq)


@dataclass(frozen=True)
class Arms:
    """The bandits' view of the arms, oriented so that larger is better (minimizing negates the outcomes)."""

    n: np.ndarray
    s: np.ndarray
    ss: np.ndarray
    binary: bool
    m2: np.ndarray | None = None  # sums of squared deviations (prior and local merged with Chan's formula)


class Assigner:
    """Picks the arm (backend index) of one request under one RouterConfig.

    Weighted splits use Python's `random` (a few hundred nanoseconds) because they run on every request;
    the bandits use a numpy Generator as their pure functions require. Sticky keys map to a stable bucket under
    Weighted. Under a bandit a sticky user keeps the arm first drawn for them, remembered in a bounded map on
    this replica: a bandit's assignment moves with the evidence, so there is no hash that stays stable.
    """

    def __init__(
        self,
        config: RouterConfig,
        outcomes: Callable[[], Mapping[str, tuple[float, ...]]],
        *,
        seed: int | None = None,
        sticky_capacity: int = 100_000,
    ) -> None:
        self.config = config
        self.versions = [b.version for b in config.backends]
        weights = [b.weight for b in config.backends]
        if sum(weights) <= 0:
            # Every weight zero means the operator has not split traffic yet: send it all to the stable version
            # (or the first backend), rather than refusing traffic.
            stable = self.versions.index(config.stable_version) if config.stable_version in self.versions else 0
            weights = [100 if i == stable else 0 for i in range(len(weights))]
        self.cum = cumulative(weights)
        self._outcomes = outcomes
        self._random = random.Random(seed)
        self._rng = np.random.default_rng(seed)
        # Keyed by a 16-byte digest of the user key, never the key itself: a key is client-chosen and may be as
        # long as a header or a body value, so storing it would let a client fill memory 100,000 keys at a time.
        self._sticky: OrderedDict[bytes, int] = OrderedDict()
        self._sticky_capacity = sticky_capacity
        self.bandit = config.strategy in (RouterStrategy.epsilon_greedy, RouterStrategy.thompson)

    def arms(self) -> Arms:
        """Prior statistics from the config plus this replica's outcomes recorded since it was loaded."""
        priors = self.config.outcome_priors
        local = self._outcomes()
        n = np.zeros(len(self.versions))
        s = np.zeros(len(self.versions))
        ss = np.zeros(len(self.versions))
        m2 = np.zeros(len(self.versions))
        for i, v in enumerate(self.versions):
            p = priors.get(v)
            mine = local.get(v, (0, 0.0, 0.0))
            ln, ls, lss = int(mine[0]), float(mine[1]), float(mine[2])
            n[i] = (p.n if p else 0) + ln
            s[i] = (p.sum if p else 0.0) + ls
            ss[i] = (p.sumsq if p else 0.0) + lss
            prior = _moments(p.n, p.sum, p.sumsq, p.m2) if p else Moments()
            m2[i] = prior.merge(_moments(ln, ls, lss, float(mine[3]) if len(mine) > 3 else None)).m2
        binary = self._binary(n, s, ss)
        if self.config.goal == "minimize":
            # For binary outcomes, minimizing the rate of ones is maximizing the rate of zeros; for continuous
            # ones it is maximizing the negated outcome (the sum of squares does not change sign).
            if binary:
                s = n - s
                ss = s.copy()
            else:
                s = -s
        # M2 does not change when outcomes are negated or 0/1 outcomes flipped.
        return Arms(n, s, ss, binary, m2)

    def _binary(self, n: np.ndarray, s: np.ndarray, ss: np.ndarray) -> bool:
        if self.config.metric_kind is not None:
            return self.config.metric_kind == "binary"
        return is_binary(n, s, ss)

    def _draw(self) -> int:
        if not self.bandit:
            return pick_weighted(self.cum, self._random.random())
        a = self.arms()
        if self.config.strategy == RouterStrategy.epsilon_greedy:
            return epsilon_greedy(self._rng, a.n, a.s, self.config.epsilon)
        return thompson(self._rng, a.n, a.s, a.ss, a.binary, a.m2)

    def choose(self, sticky_key: str | None) -> int:
        if sticky_key is None:
            return self._draw()
        if not self.bandit:
            return pick_bucket(self.cum, sticky_bucket(sticky_key))
        key = hashlib.blake2b(sticky_key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        known = self._sticky.get(key)
        if known is not None:
            self._sticky.move_to_end(key)
            return known
        arm = self._draw()
        self._sticky[key] = arm
        if len(self._sticky) > self._sticky_capacity:
            self._sticky.popitem(last=False)
        return arm
