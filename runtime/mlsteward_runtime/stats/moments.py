"""Count, mean and sum of squared deviations (n, mean, M2): statistics that merge without losing the variance.

Sums of values and of their squares merge by addition, but the variance taken from them, (sumsq - sum^2/n)/(n-1),
subtracts two nearly equal large numbers: for a metric around 1e9 with a variance of 1, both terms are about
1e18 * n and float64 keeps 16 digits, so the variance comes out as rounding noise (often 0 or negative). Keeping
M2 = sum((x - mean)^2) instead keeps it exact to rounding:

- one value at a time, Welford's update (`add`);
- two parts at a time, Chan, Golub and LeVeque's parallel merge (`merge`): with d = mean_b - mean_a,
  n = n_a + n_b, mean = mean_a + d n_b / n, M2 = M2_a + M2_b + d^2 n_a n_b / n;
- and its inverse (`subtract`): the part b of a total that is not a, which is how the operator turns a router's
  cumulative counters and its last checkpoint into what was counted in between.

Pure Python (math only): the router calls it per outcome and the operator imports it without scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Moments:
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of_values(cls, values: list[float] | tuple[float, ...]) -> Moments:
        out = cls()
        for x in values:
            out = out.add(x)
        return out

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float) -> Moments:
        """From count, sum and sum of squares (statistics recorded before M2 was kept): as exact as those are."""
        if n <= 0:
            return cls()
        mean = total / n
        return cls(n, mean, max(0.0, total_sq - total * mean))

    def add(self, x: float) -> Moments:
        n = self.n + 1
        delta = x - self.mean
        mean = self.mean + delta / n
        return Moments(n, mean, self.m2 + delta * (x - mean))

    def merge(self, other: Moments) -> Moments:
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * other.n / n, self.m2 + other.m2 + delta * delta * self.n * other.n / n)

    def subtract(self, part: Moments) -> Moments:
        """The statistics of the values in self but not in `part` (self = part merged with the result)."""
        if part.n == 0:
            return self
        rest = self.n - part.n
        if rest < 0:
            raise ValueError(f"cannot take {part.n} values out of {self.n}")
        if rest == 0:
            return Moments()
        # mean_b = (n mean - n_a mean_a) / n_b, written so that a large common mean cancels before it is scaled.
        mean = self.mean + (self.mean - part.mean) * part.n / rest
        delta = mean - part.mean
        m2 = self.m2 - part.m2 - delta * delta * part.n * rest / self.n
        return Moments(rest, mean, max(0.0, m2))

    @property
    def var(self) -> float:
        """Sample variance (ddof=1); NaN below two values."""
        return self.m2 / (self.n - 1) if self.n >= 2 else math.nan

    @property
    def sum(self) -> float:
        return self.n * self.mean

    @property
    def sumsq(self) -> float:
        return self.m2 + self.n * self.mean * self.mean


class Welford:
    """The mutable accumulator of the router's hot path (no allocation per value).

    It also keeps the plain sum and sum of squares: exact for the 0/1 outcomes of a binary metric (where a
    derived n * mean would carry rounding and fail an exact "sum == sum of squares" check), and exported for the
    readers that predate M2.
    """

    __slots__ = ("n", "mean", "m2", "total", "total_sq")

    def __init__(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.total = 0.0
        self.total_sq = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        self.total += x
        self.total_sq += x * x

    def moments(self) -> Moments:
        return Moments(self.n, self.mean, self.m2)
