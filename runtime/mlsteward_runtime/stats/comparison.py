"""The offline comparison of `mlsteward ab`: the fixed-horizon test of the metric, its 95% CI, lift, standardized
effect and P(treatment better), on two arms' sufficient statistics (the tests themselves are in stats.ab)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mlsteward_runtime.stats.ab import (
    ArmStats,
    Goal,
    Metric,
    TestResult,
    lift,
    prob_best,
    standardized_effect,
    two_proportion_ztest,
    welch_ttest,
)


@dataclass(frozen=True)
class Comparison:
    metric: Metric
    control: ArmStats
    treatment: ArmStats
    test: TestResult
    lift: float | None
    effect_size: float | None
    prob_treatment_better: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.test.p_value < self.alpha

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `mlsteward ab` (issue contract); ci95 is for treatment minus control."""
        return {
            "test": self.test.test,
            "control": {"n": self.control.n, "mean": self.control.mean},
            "treatment": {"n": self.treatment.n, "mean": self.treatment.mean},
            "lift": self.lift,
            "p_value": self.test.p_value,
            "ci95": [self.test.ci95[0], self.test.ci95[1]],
            "prob_treatment_better": self.prob_treatment_better,
            "significant": self.significant,
        }


def compare(
    control: ArmStats,
    treatment: ArmStats,
    metric: Metric,
    *,
    alpha: float = 0.05,
    goal: Goal = "maximize",
    rng: np.random.Generator | None = None,
) -> Comparison:
    """Fixed-horizon comparison: the test for the metric, 95% CI, lift, standardized effect and P(better).

    `prob_treatment_better` is P(treatment is better) in the direction of `goal`.
    """
    test = two_proportion_ztest(control, treatment) if metric == "binary" else welch_ttest(control, treatment)
    pb = prob_best([control, treatment], metric, goal=goal, rng=rng)[1]
    return Comparison(metric, control, treatment, test, lift(control, treatment),
                      standardized_effect(control, treatment, metric), float(pb), alpha)
