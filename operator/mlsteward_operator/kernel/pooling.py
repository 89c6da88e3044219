"""Pooling of the predictors' `GET /v1/stats` answers (pure): one figure over the ready replicas of a version.

Shared by the DriftMonitor's performance floor (triggers.py) and the ModelDeployment's health samples (health.py),
so that both read the same number from the same answers. A replica's rolling metric stands for its own window, so
replicas are weighed by what the metric counts: accuracy and mean reward by feedback, the median latency by requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mlsteward_runtime.contracts import RuntimeStats


def weighted_mean(pairs: Iterable[tuple[float | None, int]]) -> tuple[float | None, int]:
    """The mean of the values weighed by their counts, and the total count behind it.

    A value that is None or NaN, or whose count is not positive, adds nothing."""
    total, weight = 0.0, 0
    for value, count in pairs:
        if value is None or count <= 0 or value != value:
            continue
        total += value * count
        weight += count
    return (total / weight if weight else None), weight


def pool_feedback(stats: Sequence[RuntimeStats], *, reward: bool = False) -> tuple[float | None, int]:
    """Accuracy (or, with `reward`, mean reward) over the replicas, each weighed by its feedback count, and the
    pooled feedback behind it. A replica without the metric (no labelled feedback, no reward) adds nothing."""
    return weighted_mean(((s.mean_reward if reward else s.accuracy), s.feedback) for s in stats)
