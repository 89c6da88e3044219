"""Experiment analysis on sufficient statistics (n, sum, sum of squares, M2), so router replicas merge exactly.

Every function takes `ArmStats`; `ArmStats.from_version_stats` reads the router's `VersionStats` and `a + b` merges
two replicas. Differences are always treatment minus control.

Fixed-horizon tests
- Binary metric, two arms: two-proportion z-test with the pooled proportion under H0,
  z = (p_t - p_c) / sqrt(p (1 - p) (1/n_t + 1/n_c)), p = (s_t + s_c) / (n_t + n_c), two-sided p = 2 Phi(-|z|)
  (statsmodels' `proportions_ztest`). 95% CI of p_t - p_c: Wald, unpooled,
  (p_t - p_c) +- z_0.975 sqrt(p_t (1 - p_t) / n_t + p_c (1 - p_c) / n_c).
- Binary metric, N arms: chi-square test of homogeneity on the N x 2 table [successes, failures]
  (`scipy.stats.chi2_contingency`, no continuity correction, so two arms give exactly z^2).
- Continuous metric: Welch's t-test from the summary statistics (`scipy.stats.ttest_ind_from_stats`,
  equal_var=False, the same numbers as `ttest_ind(..., equal_var=False)` on the raw values); the CI is
  (m_t - m_c) +- t_{0.975, df} sqrt(v_t / n_t + v_c / n_c) with Welch-Satterthwaite df.
- Effect sizes: the absolute difference, the relative lift (m_t - m_c) / |m_c|, and a standardized effect
  (Cohen's h = 2 asin sqrt(p_t) - 2 asin sqrt(p_c) for proportions; Cohen's d with the pooled sd otherwise).

Bayesian P(best): binary arms get Beta(1 + s, 1 + n - s) posteriors (uniform prior); continuous arms get the
flat-prior normal approximation N(mean, var / n). P(best) is estimated by Monte Carlo from a seeded generator
(deterministic for a given seed); for two continuous arms it is exact, Phi((m_t - m_c) / sqrt(v_t/n_t + v_c/n_c)).

Sample-ratio mismatch: chi-square goodness of fit of the observed arm counts against the configured weights
(`scipy.stats.chisquare`); the customary alarm level is p < 0.001, because SRM means the assignment is broken and
every other number is suspect.

Sequential testing: the mixture sequential probability ratio test (mSPRT) of Johari, Pekelis and Walsh, "Always
Valid Inference" (Operations Research, 2022), for the normal approximation of the difference theta = m_t - m_c.
With estimate d, its variance V = s2 (1/n_t + 1/n_c) (pooled proportion variance under H0 for binary metrics,
v_t/n_t + v_c/n_c for continuous ones) and a N(0, tau^2) mixing distribution over theta,
    Lambda = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2))),
and the always-valid p-value is p_k = min(p_{k-1}, 1 / Lambda_k). Rejecting when p_k < alpha keeps the chance of
ever rejecting a true null at most alpha however often one looks. The caller keeps p_{k-1} (Experiment status) and
passes it back in. tau is set on the standardized scale, tau = `tau_std` * s, so one default fits any metric; the
always-valid CI inverts the same test: d +- sqrt(V (V + tau^2) / tau^2 * (2 ln(1/alpha) + ln((V + tau^2) / V))).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats as st

from mlsteward_runtime.contracts import VersionStats
from mlsteward_runtime.stats.moments import Moments

Metric = Literal["binary", "continuous"]
Goal = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class ArmStats:
    """Sufficient statistics of one arm's outcomes: count, sum, sum of squares and, when known, M2.

    M2 (the sum of squared deviations from the mean, `mlsteward_runtime.stats.moments`) is what the variance is
    taken from: sumsq - sum^2/n cancels catastrophically for a metric with a large mean. Statistics recorded
    before M2 was kept (m2 None) fall back to the sums. Adding two arms merges M2 with Chan's formula and
    subtracting one (a router's counters minus its checkpoint) inverts it.
    """

    n: int = 0
    sum: float = 0.0
    sumsq: float = 0.0
    # Not compared: it is the same information as the sums, only kept more precisely, so two readings of the same
    # outcomes are equal whether or not one of them carries it.
    m2: float | None = field(default=None, compare=False)

    @classmethod
    def from_values(cls, values: Iterable[float]) -> ArmStats:
        x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
        m2 = float(np.sum((x - x.mean()) ** 2)) if x.size else 0.0
        return cls(n=int(x.size), sum=float(x.sum()), sumsq=float(np.dot(x, x)), m2=m2)

    @classmethod
    def from_moments(cls, m: Moments) -> ArmStats:
        return cls(m.n, m.sum, m.sumsq, m.m2)

    @classmethod
    def from_version_stats(cls, vs: VersionStats) -> ArmStats:
        m2 = vs.outcome_m2 if vs.outcome_mean is not None else None
        return cls(n=vs.outcomes, sum=vs.outcome_sum, sumsq=vs.outcome_sumsq, m2=m2)

    @classmethod
    def of(cls, obj: Any) -> ArmStats:
        """From a VersionStats, or anything with `n`, `sum` and `sumsq` (and optionally `m2`)."""
        if isinstance(obj, ArmStats):
            return obj
        if isinstance(obj, VersionStats):
            return cls.from_version_stats(obj)
        if isinstance(obj, dict):
            m2 = obj.get("m2")
            return cls(n=int(obj["n"]), sum=float(obj["sum"]), sumsq=float(obj["sumsq"]),
                       m2=None if m2 is None else float(m2))
        m2 = getattr(obj, "m2", None)
        return cls(n=int(obj.n), sum=float(obj.sum), sumsq=float(obj.sumsq), m2=None if m2 is None else float(m2))

    def moments(self) -> Moments:
        if self.n <= 0:
            return Moments()
        if self.m2 is None:
            return Moments.from_sums(self.n, self.sum, self.sumsq)
        return Moments(self.n, self.sum / self.n, self.m2)

    def __add__(self, other: ArmStats) -> ArmStats:
        m2 = self.moments().merge(other.moments()).m2
        return ArmStats(self.n + other.n, self.sum + other.sum, self.sumsq + other.sumsq, m2)

    def __sub__(self, other: ArmStats) -> ArmStats:
        """What self counted beyond `other` (a later reading of the same counters minus an earlier one)."""
        m2 = self.moments().subtract(other.moments()).m2
        return ArmStats(self.n - other.n, self.sum - other.sum, self.sumsq - other.sumsq, m2)

    @property
    def mean(self) -> float:
        return self.sum / self.n if self.n else math.nan

    @property
    def var(self) -> float:
        """Sample variance (ddof=1), from M2 when known, clipped at 0 against rounding; NaN below two."""
        if self.n < 2:
            return math.nan
        m2 = self.m2 if self.m2 is not None else self.sumsq - self.sum * self.sum / self.n
        return max(0.0, m2 / (self.n - 1))

    def check_binary(self) -> None:
        if not (0 <= self.sum <= self.n) or abs(self.sum - self.sumsq) > 1e-6 * max(1.0, self.sum):
            raise ValueError(f"not binary outcomes: n={self.n}, sum={self.sum}, sumsq={self.sumsq}")


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    p_value: float
    difference: float
    ci95: tuple[float, float]
    df: float | None = None


@dataclass(frozen=True)
class SRMResult:
    statistic: float
    p_value: float
    mismatch: bool
    expected: tuple[float, ...]


@dataclass(frozen=True)
class SequentialResult:
    likelihood_ratio: float
    p_value: float
    ci: tuple[float, float]
    difference: float
    significant: bool


def _z(conf: float) -> float:
    return float(st.norm.ppf(0.5 + conf / 2))


# ----------------------------------------------------------------------------------------------------------------
# Fixed-horizon tests
# ----------------------------------------------------------------------------------------------------------------


def two_proportion_ztest(control: ArmStats, treatment: ArmStats, *, confidence: float = 0.95) -> TestResult:
    """Two-sided pooled z-test of p_t = p_c and the Wald CI of p_t - p_c (module docstring)."""
    for a in (control, treatment):
        a.check_binary()
        if a.n == 0:
            raise ValueError("both arms need at least one outcome")
    pc, pt = control.mean, treatment.mean
    diff = pt - pc
    pooled = (control.sum + treatment.sum) / (control.n + treatment.n)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / control.n + 1 / treatment.n))
    if se0 == 0:
        z, p = 0.0, 1.0  # every outcome identical on both arms: no evidence of a difference
    else:
        z = diff / se0
        p = float(2 * st.norm.sf(abs(z)))
    se = math.sqrt(pt * (1 - pt) / treatment.n + pc * (1 - pc) / control.n)
    h = _z(confidence) * se
    return TestResult("two_proportion_z", float(z), p, diff, (diff - h, diff + h))


def chi2_proportions(arms: Sequence[ArmStats]) -> tuple[float, float, int]:
    """Chi-square test of equal success rates across N arms on the N x 2 table; returns (chi2, p, dof)."""
    for a in arms:
        a.check_binary()
    table = np.array([[a.sum, a.n - a.sum] for a in arms], dtype=float)
    table = table[table.sum(axis=1) > 0]
    if table.shape[0] < 2 or np.any(table.sum(axis=0) == 0):
        return 0.0, 1.0, max(0, table.shape[0] - 1)
    res = st.chi2_contingency(table, correction=False)
    return float(res.statistic), float(res.pvalue), int(res.dof)


def welch_ttest(control: ArmStats, treatment: ArmStats, *, confidence: float = 0.95) -> TestResult:
    """Welch's t-test of m_t = m_c and the Welch CI of m_t - m_c (module docstring)."""
    if control.n < 2 or treatment.n < 2:
        raise ValueError("both arms need at least two outcomes for Welch's t-test")
    vc, vt = control.var, treatment.var
    diff = treatment.mean - control.mean
    se2 = vt / treatment.n + vc / control.n
    if se2 == 0:
        return TestResult("welch_t", 0.0, 1.0 if diff == 0 else 0.0, diff, (diff, diff), None)
    res = st.ttest_ind_from_stats(treatment.mean, math.sqrt(vt), treatment.n, control.mean, math.sqrt(vc),
                                  control.n, equal_var=False)
    df = se2**2 / ((vt / treatment.n) ** 2 / (treatment.n - 1) + (vc / control.n) ** 2 / (control.n - 1))
    h = float(st.t.ppf(0.5 + confidence / 2, df)) * math.sqrt(se2)
    return TestResult("welch_t", float(res.statistic), float(res.pvalue), diff, (diff - h, diff + h), float(df))


def lift(control: ArmStats, treatment: ArmStats) -> float | None:
    """Relative lift (m_t - m_c) / |m_c|; None when the control mean is 0 or unknown."""
    mc = control.mean
    if not mc or math.isnan(mc):
        return None
    return (treatment.mean - mc) / abs(mc)


def standardized_effect(control: ArmStats, treatment: ArmStats, metric: Metric) -> float | None:
    """Cohen's h (binary) or Cohen's d with the pooled standard deviation (continuous)."""
    if metric == "binary":
        if not control.n or not treatment.n:
            return None
        return 2 * math.asin(math.sqrt(treatment.mean)) - 2 * math.asin(math.sqrt(control.mean))
    if control.n < 2 or treatment.n < 2:
        return None
    pooled = ((control.n - 1) * control.var + (treatment.n - 1) * treatment.var) / (control.n + treatment.n - 2)
    return (treatment.mean - control.mean) / math.sqrt(pooled) if pooled > 0 else None


def mean_ci(arm: ArmStats, metric: Metric, *, confidence: float = 0.95) -> tuple[float, float] | None:
    """Per-arm CI of the mean: Wilson for a proportion (`scipy.stats.binomtest`), Student's t otherwise."""
    if metric == "binary":
        if arm.n == 0:
            return None
        ci = st.binomtest(int(round(arm.sum)), arm.n).proportion_ci(confidence, method="wilson")
        return float(ci.low), float(ci.high)
    if arm.n < 2:
        return None
    lo, hi = st.t.interval(confidence, arm.n - 1, loc=arm.mean, scale=math.sqrt(arm.var / arm.n))
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------------------------
# Bayesian
# ----------------------------------------------------------------------------------------------------------------


def posterior_draws(arms: Sequence[ArmStats], metric: Metric, draws: int, rng: np.random.Generator) -> np.ndarray:
    """Posterior draws of each arm's mean, shape (draws, arms): Beta(1+s, 1+n-s) or N(mean, var/n).

    A continuous arm with fewer than two outcomes has no variance estimate; it borrows the pooled variance of the
    other arms (or 1.0) and a mean of the overall mean, so it neither wins nor loses by default.
    """
    if metric == "binary":
        return np.column_stack([rng.beta(1 + a.sum, 1 + a.n - a.sum, size=draws) for a in arms])
    known = [a for a in arms if a.n >= 2]
    total = sum(known, ArmStats())
    fallback_var = total.var if total.n >= 2 and total.var > 0 else 1.0
    fallback_mean = total.mean if total.n else 0.0
    cols = []
    for a in arms:
        if a.n >= 2:
            cols.append(rng.normal(a.mean, math.sqrt(a.var / a.n), size=draws))
        else:
            cols.append(rng.normal(fallback_mean, math.sqrt(fallback_var), size=draws))
    return np.column_stack(cols)


def prob_best(
    arms: Sequence[ArmStats],
    metric: Metric,
    *,
    goal: Goal = "maximize",
    draws: int = 20_000,
    rng: np.random.Generator | None = None,
) -> list[float]:
    """P(each arm has the best mean) under the posteriors above, by Monte Carlo (seed 0 unless `rng` is given)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    if metric == "continuous" and len(arms) == 2 and all(a.n >= 2 for a in arms):
        c, t = arms
        se = math.sqrt(c.var / c.n + t.var / t.n)
        d = (t.mean - c.mean) if goal == "maximize" else (c.mean - t.mean)
        p_t = (0.5 if d == 0 else float(d > 0)) if se == 0 else float(st.norm.cdf(d / se))
        return [1 - p_t, p_t]
    samples = posterior_draws(arms, metric, draws, rng)
    best = np.argmax(samples if goal == "maximize" else -samples, axis=1)
    return (np.bincount(best, minlength=len(arms)) / draws).tolist()


# ----------------------------------------------------------------------------------------------------------------
# Sample-ratio mismatch
# ----------------------------------------------------------------------------------------------------------------


def sample_ratio_mismatch(counts: Sequence[int], weights: Sequence[float], *, alpha: float = 0.001) -> SRMResult:
    """Chi-square goodness of fit of arm counts against configured weights; `mismatch` when p < alpha.

    Arms with weight 0 are left out unless they received traffic, which is a mismatch by itself (p = 0).
    """
    c = np.asarray(counts, dtype=float)
    w = np.asarray(weights, dtype=float)
    if c.shape != w.shape or c.size < 1 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("counts and weights need the same length, non-negative weights and a positive total")
    total = c.sum()
    expected = total * w / w.sum()
    if np.any((w == 0) & (c > 0)):
        return SRMResult(math.inf, 0.0, True, tuple(expected.tolist()))
    live = w > 0
    if total == 0 or live.sum() < 2:
        return SRMResult(0.0, 1.0, False, tuple(expected.tolist()))
    res = st.chisquare(c[live], expected[live])
    p = float(res.pvalue)
    return SRMResult(float(res.statistic), p, p < alpha, tuple(expected.tolist()))


# ----------------------------------------------------------------------------------------------------------------
# Sequential (always valid)
# ----------------------------------------------------------------------------------------------------------------


def msprt(
    control: ArmStats,
    treatment: ArmStats,
    metric: Metric,
    *,
    alpha: float = 0.05,
    tau_std: float = 0.1,
    previous_p: float = 1.0,
) -> SequentialResult:
    """Mixture SPRT for treatment minus control with an always-valid p-value (module docstring).

    `previous_p` is the always-valid p-value of the previous look (1.0 at the start); the result's p-value is
    never larger, so once significant an experiment stays significant.
    """
    if control.n == 0 or treatment.n == 0 or (metric == "continuous" and (control.n < 2 or treatment.n < 2)):
        return SequentialResult(1.0, min(1.0, previous_p), (-math.inf, math.inf), math.nan, previous_p < alpha)
    d = treatment.mean - control.mean
    inv_n = 1 / control.n + 1 / treatment.n
    if metric == "binary":
        pooled = (control.sum + treatment.sum) / (control.n + treatment.n)
        s2 = pooled * (1 - pooled)
        v = s2 * inv_n
    else:
        v = treatment.var / treatment.n + control.var / control.n
        s2 = v / inv_n
    if v <= 0:
        return SequentialResult(1.0, min(1.0, previous_p), (d, d), d, previous_p < alpha)
    tau2 = (tau_std**2) * s2
    log_lr = 0.5 * math.log(v / (v + tau2)) + d * d * tau2 / (2 * v * (v + tau2))
    p = min(previous_p, 1.0, math.exp(-log_lr))
    half = math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))
    lr = math.exp(min(log_lr, 700.0))
    return SequentialResult(lr, p, (d - half, d + half), d, p < alpha)
