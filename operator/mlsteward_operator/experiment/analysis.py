"""The statistics of an Experiment (pure; DESIGN §5): totals per version in, per-arm results, the comparisons of
control against each treatment, the chi-square across binary arms, P(best) and the sample-ratio check out.

Every test is the runtime's (mlsteward_runtime.stats.ab, scipy underneath): the operator never re-derives one.
This module imports scipy, so the Experiment reconcile imports it only when an Experiment runs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from mlsteward_runtime.stats import ab
from scipy import stats as st

from mlsteward_operator.api.experiment import (
    Experiment,
    ExperimentStatus,
    Goal,
    MetricKind,
    Posterior,
    PosteriorFamily,
    StrategyType,
)
from mlsteward_operator.kernel.conditions import second


SRM_ALPHA = 0.001  # the customary alarm level: a mismatch means broken assignment, not a chance imbalance
TAU_STD = 0.1  # mSPRT mixing scale in standard deviations of the metric (mlsteward_runtime.stats.ab.msprt)
PROB_BEST_DRAWS = 20_000

TEST_Z = "two-proportion-z"
TEST_WELCH = "welch-t"
TEST_CHI2 = "chi-square"
SEQUENTIAL_PREFIX = "msprt "  # status.test of a sequential analysis, e.g. "msprt two-proportion-z"


@dataclass(frozen=True)
class VersionTotals:
    """What the experiment has counted for one version: requests assigned and the outcomes' sufficient statistics."""

    requests: int = 0
    outcomes: ab.ArmStats = ab.ArmStats()

    def __add__(self, other: VersionTotals) -> VersionTotals:
        return VersionTotals(self.requests + other.requests, self.outcomes + other.outcomes)


def _as_totals(value: VersionTotals | ab.ArmStats | None) -> VersionTotals:
    # Bare outcome statistics stand for one request per outcome.
    if value is None:
        return VersionTotals()
    if isinstance(value, ab.ArmStats):
        return VersionTotals(value.n, value)
    return value


_Z95 = float(st.norm.ppf(0.975))


@dataclass(frozen=True)
class ArmResult:
    """One arm: counts, mean, 95% CI of the mean, posterior of the mean, P(best)."""

    name: str
    version: str
    weight: int
    requests: int
    stats: ab.ArmStats
    mean: float | None
    ci95: tuple[float, float] | None
    posterior: Posterior | None
    probability_best: float | None



@dataclass(frozen=True)
class Comparison:
    """A treatment against control; differences are treatment minus control.

    `significant` uses the rule of the design: the always-valid p-value (`sequential_p`, already Bonferroni-adjusted
    for the number of treatments) below alpha, or the fixed-horizon p-value below alpha / treatments.
    """

    treatment: str
    test: str
    statistic: float | None
    p_value: float | None
    difference: float | None
    ci95: tuple[float, float] | None
    lift: float | None
    effect_size: float | None
    sequential_p: float | None
    sequential_ci: tuple[float, float] | None
    better: bool | None  # the treatment is ahead in the direction of the goal
    significant: bool



@dataclass(frozen=True)
class ExperimentAnalysis:
    """Everything `analyse` found; `decide` and `compute_status` read only this and the Experiment."""

    metric: MetricKind
    goal: Goal
    alpha: float
    sequential: bool
    arms: tuple[ArmResult, ...]
    comparisons: tuple[Comparison, ...]
    chi_square: tuple[float, float, int] | None  # (statistic, p, dof): binary metric, more than two arms
    srm: ab.SRMResult | None
    srm_skipped: str | None  # why no SRM check was made
    test: str
    p_value: float | None  # headline: carried always-valid p, or the fixed-horizon p (chi-square for N arms)
    leader: str | None
    probability_best: float | None
    started_at: dt.datetime
    elapsed_s: float

    def arm(self, name: str) -> ArmResult:
        return next(a for a in self.arms if a.name == name)

    def comparison(self, treatment: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.treatment == treatment), None)

    @property
    def min_outcomes(self) -> int:
        return min(a.stats.n for a in self.arms)



def experiment_seed(exp: Experiment) -> int:
    """A seed derived from the Experiment's uid (or namespace/name), so P(best) is the same for the same inputs."""
    key = exp.metadata.uid or f"{exp.metadata.namespace or ''}/{exp.metadata.name}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")



def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)



def _interval(ci: tuple[float, float] | None) -> tuple[float, float] | None:
    if ci is None or not all(math.isfinite(x) for x in ci):
        return None
    return float(ci[0]), float(ci[1])



def _mean_ci(arm: ab.ArmStats, metric: ab.Metric) -> tuple[float, float] | None:
    """95% CI of an arm's mean: Wilson for a proportion, Student's t otherwise (as ab.mean_ci).

    The Wilson interval is the closed form that `scipy.stats.binomtest(...).proportion_ci(method="wilson")` returns;
    binomtest would also compute an exact p-value that nobody reads, which costs milliseconds at every look.
    """
    if metric != "binary":
        return _interval(ab.mean_ci(arm, metric))
    if arm.n == 0:
        return None
    n, p, z2 = arm.n, arm.sum / arm.n, _Z95 * _Z95
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = _Z95 / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)



def _posterior(arm: ab.ArmStats, kind: MetricKind) -> Posterior | None:
    if kind == MetricKind.binary:
        return Posterior(family=PosteriorFamily.beta, alpha=1 + arm.sum, beta=1 + arm.n - arm.sum)
    if arm.n < 2:
        return None
    return Posterior(family=PosteriorFamily.normal, mean=arm.mean, sd=math.sqrt(arm.var / arm.n))



def _previous_sequential_p(status: ExperimentStatus) -> float:
    if status.p_value is not None and (status.test or "").startswith(SEQUENTIAL_PREFIX):
        return status.p_value
    return 1.0



def _sample_ratio(exp: Experiment, counts: list[VersionTotals]) -> tuple[ab.SRMResult | None, str | None]:
    """(the sample-ratio mismatch check, None) or (None, why it is skipped)."""
    spec = exp.spec
    if spec.strategy.type != StrategyType.weighted:
        return None, f"strategy {spec.strategy.type.value} moves the split on purpose"
    if spec.sticky is not None:
        return None, "sticky assignment splits users, not requests, so request counts need not follow the weights"
    if sum(c.requests for c in counts) == 0:
        return None, "no requests yet"
    return ab.sample_ratio_mismatch([c.requests for c in counts], [v.weight for v in spec.variants],
                                    alpha=SRM_ALPHA), None


def _overall_test(exp: Experiment, comparisons: tuple[Comparison, ...],
                  chi_square: tuple[float, float, int] | None) -> tuple[str, float | None]:
    """The experiment's test and p-value: the always-valid one (never above the previous look's) when sequential,
    else the chi-square over all arms of a binary metric, else the smallest Bonferroni-corrected comparison."""
    base = TEST_Z if exp.spec.metric.kind == MetricKind.binary else TEST_WELCH
    if exp.spec.stopping.sequential:
        current = [c.sequential_p for c in comparisons if c.sequential_p is not None]
        return SEQUENTIAL_PREFIX + base, min([_previous_sequential_p(exp.status), *current])
    if chi_square is not None:
        return TEST_CHI2, chi_square[1]
    k = len(comparisons)
    ps = [min(1.0, c.p_value * k) for c in comparisons if c.p_value is not None]
    return base, (min(ps) if ps else None)



def analyse(
    exp: Experiment, totals: Mapping[str, VersionTotals | ab.ArmStats], now: dt.datetime
) -> ExperimentAnalysis:
    """The statistics of the experiment on merged `totals` by version (see `merge_router_stats`).

    Requests (for the sample-ratio check) come from VersionTotals; bare ArmStats count one request per outcome.
    The always-valid p-value of the previous look is read from `exp.status` (p_value, when its test was sequential).
    """
    spec, prev = exp.spec, exp.status
    kind, goal = spec.metric.kind, spec.metric.goal
    metric: ab.Metric = "binary" if kind == MetricKind.binary else "continuous"
    alpha = 1 - spec.stopping.confidence
    sequential = spec.stopping.sequential
    started_at = prev.started_at or second(now)
    if started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=dt.UTC)
    elapsed = max(0.0, (second(now) - started_at).total_seconds())

    counts = [_as_totals(totals.get(v.version)) for v in spec.variants]
    stats = [c.outcomes for c in counts]
    total_n = sum(s.n for s in stats)
    pbest: list[float] | None = None
    if total_n > 0:
        rng = np.random.default_rng(experiment_seed(exp))
        pbest = ab.prob_best(stats, metric, goal=goal.value, draws=PROB_BEST_DRAWS, rng=rng)

    arms = tuple(
        ArmResult(
            name=v.name, version=v.version, weight=v.weight, requests=c.requests, stats=c.outcomes,
            mean=_finite(c.outcomes.mean) if c.outcomes.n else None,
            ci95=_mean_ci(c.outcomes, metric),
            posterior=_posterior(c.outcomes, kind),
            probability_best=float(pbest[i]) if pbest is not None else None,
        )
        for i, (v, c) in enumerate(zip(spec.variants, counts))
    )

    control = arms[0]
    k = len(arms) - 1
    comparisons = tuple(_compare(control, t, metric, goal, alpha, k, sequential) for t in arms[1:])

    chi_square = None
    if kind == MetricKind.binary and len(arms) > 2 and total_n > 0:
        chi_square = ab.chi2_proportions(stats)

    srm, srm_skipped = _sample_ratio(exp, counts)
    test, p_value = _overall_test(exp, comparisons, chi_square)

    leader, leader_p = None, None
    if pbest is not None:
        i = int(np.argmax(pbest))
        leader, leader_p = arms[i].name, float(pbest[i])

    return ExperimentAnalysis(
        metric=kind, goal=goal, alpha=alpha, sequential=sequential, arms=arms, comparisons=comparisons,
        chi_square=chi_square, srm=srm, srm_skipped=srm_skipped, test=test, p_value=_finite(p_value),
        leader=leader, probability_best=leader_p, started_at=started_at, elapsed_s=elapsed,
    )



def _compare(
    control: ArmResult, treatment: ArmResult, metric: ab.Metric, goal: Goal, alpha: float, k: int, sequential: bool
) -> Comparison:
    c, t = control.stats, treatment.stats
    enough = (c.n >= 1 and t.n >= 1) if metric == "binary" else (c.n >= 2 and t.n >= 2)
    if not enough:
        return Comparison(treatment.name, TEST_Z if metric == "binary" else TEST_WELCH, None, None, None, None,
                          None, None, None, None, None, False)
    res = ab.two_proportion_ztest(c, t) if metric == "binary" else ab.welch_ttest(c, t)
    diff = res.difference
    better = None if diff == 0 else (diff > 0) == (goal == Goal.maximize)
    seq_p, seq_ci = None, None
    if sequential:
        # The current look's always-valid p-value for this treatment, Bonferroni-adjusted for k treatments; the
        # family's running minimum is carried in status.p_value.
        s = ab.msprt(c, t, metric, alpha=alpha / k, tau_std=TAU_STD)
        seq_p, seq_ci = min(1.0, s.p_value * k), _interval(s.ci)
        significant = seq_p < alpha and seq_ci is not None and (seq_ci[0] > 0 or seq_ci[1] < 0)
    else:
        significant = res.p_value * k < alpha
    return Comparison(
        treatment=treatment.name, test=res.test.replace("_", "-"), statistic=_finite(res.statistic),
        p_value=_finite(res.p_value), difference=_finite(diff), ci95=_interval(res.ci95),
        lift=_finite(ab.lift(c, t)), effect_size=_finite(ab.standardized_effect(c, t, metric)),
        sequential_p=seq_p, sequential_ci=seq_ci, better=better, significant=bool(significant and better is not None),
    )
