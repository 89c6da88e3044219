"""A DriftMonitor's check, analysed (pure): the predictor replicas' input windows pooled and tested against the
reference profile with the runtime's drift rule (mlsteward_runtime.stats.drift, the rule `mlsteward drift` applies,
KS threshold included), returned as a verdict in the shape of status.lastReport.

scipy is imported inside `analyse`, on the first check, so importing the operator does not load it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlsteward_runtime.contracts import DriftWindow, FeatureType, Profile

from mlsteward_operator.api.driftmonitor import DriftMonitor, FeatureResult, Report
from mlsteward_operator.kernel.conditions import second

if TYPE_CHECKING:
    from mlsteward_runtime.stats.drift import DriftReport, DriftThresholds


# Multiple-testing correction across features. Holm controls the family-wise error, which is what bounds the rate
# of windows in breach when nothing shifted; the spec has no field to choose Benjamini-Hochberg.
CORRECTION = "holm"


@dataclass(frozen=True)
class DriftVerdict:
    """The outcome of one check.

    `report` is None when the check could not judge (then `reason` and `message` say why: NoWindows,
    InsufficientSamples, UnknownFeatures); otherwise it is what status.lastReport shows and `reason` is
    DriftDetected or NoDrift. `feature_reasons` explains each feature's verdict (the report has no field for it).
    """

    time: dt.datetime
    reason: str
    message: str
    report: Report | None = None
    window_size: int = 0
    replicas: tuple[str, ...] = ()
    feature_reasons: Mapping[str, str] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        return self.report is not None and self.report.drifted

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.report.features if f.drifted) if self.report is not None else ()


def thresholds_of(dm: DriftMonitor) -> DriftThresholds:
    """spec.thresholds and spec.window.minSamples as the runtime's DriftThresholds: the decision rule, KS included,
    is the runtime's (the one `mlsteward drift` applies), never re-implemented here."""
    from mlsteward_runtime.stats.drift import DriftThresholds

    t = dm.spec.thresholds
    return DriftThresholds(
        alpha=t.p_value,
        correction=CORRECTION,
        min_samples=dm.spec.window.min_samples,
        psi=t.psi,
        wasserstein=t.wasserstein,
        jensen_shannon=t.jensen_shannon,
        ks=t.ks,
    )


def pool_seed(dm: DriftMonitor, now: dt.datetime) -> int:
    """Seed of the subsample drawn when pooling: fixed by the monitor and the check time, so a re-run agrees."""
    key = f"{dm.metadata.uid or dm.metadata.name}@{second(now).isoformat()}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def analyse(
    dm: DriftMonitor,
    reference: Profile,
    windows: Sequence[DriftWindow],
    now: dt.datetime,
    *,
    version: str | None = None,
) -> DriftVerdict:
    """Test the pooled `windows` of the predictor replicas against `reference`.

    `version` (the served ModelVersion, whose profile `reference` is) drops windows of other versions, e.g. pods of
    an old version still draining; without it, windows of every version are pooled and the report names the version
    when they agree. Features are spec.features, or every feature of the reference; a selected feature that no
    replica reports is judged to have too few samples.
    """
    from mlsteward_runtime.stats.pooling import pool_windows

    time = second(now)
    used = [w for w in windows if version is None or w.version == version]
    replicas = tuple(sorted({w.replica for w in used}))
    if version is None:
        versions = {w.version for w in used}
        version = versions.pop() if len(versions) == 1 else None

    selected = list(dm.spec.features) or list(reference.features)
    unknown = [n for n in selected if n not in reference.features]
    if unknown:
        return DriftVerdict(
            time=time, reason="UnknownFeatures", replicas=replicas,
            message=f"spec.features names {', '.join(unknown)}, which the reference profile of "
            f"{version or 'the served version'} does not have (it has: {', '.join(reference.features)})",
        )
    if not used:
        return DriftVerdict(
            time=time, reason="NoWindows", replicas=replicas,
            message=f"no predictor replica{' of ' + version if version else ''} reported an input window",
        )

    pooled = pool_windows(used, dm.spec.window.max_samples, seed=pool_seed(dm, now))
    current = {n: pooled.get(n, []) for n in selected}
    size = max((len(v) for v in current.values()), default=0)
    minimum = dm.spec.window.min_samples
    if size < minimum:
        return DriftVerdict(
            time=time, reason="InsufficientSamples", window_size=size, replicas=replicas,
            message=f"{size} pooled rows from {len(used)} replica(s), fewer than window.minSamples {minimum}; "
            f"no verdict until more inputs arrive",
        )

    return _judged(dm, reference, current, selected, size, version=version, replicas=replicas, time=time)


def _judged(dm: DriftMonitor, reference: Profile, current: dict[str, list[Any]], selected: list[str], size: int, *,
            version: str | None, replicas: tuple[str, ...], time: dt.datetime) -> DriftVerdict:
    """The verdict on a pooled window large enough to judge: every selected feature tested against `reference`."""
    # Imported here rather than at the top: scipy is slow to import and only this step needs it.
    from mlsteward_runtime.stats.drift import drift_report

    types: dict[str, FeatureType] = {n: reference.features[n].type for n in selected}
    report = drift_report(reference, current, thresholds=thresholds_of(dm), features=selected, types=types)
    results, reasons = _results(report)
    drifted = [r.name for r in results if r.drifted]
    out = Report(time=time, window_size=size, version=version, features=results, drifted=bool(drifted))
    if drifted:
        message = (f"{len(drifted)} of {len(results)} features drifted over {size} rows: "
                   + "; ".join(_describe(r) for r in results if r.drifted))
    else:
        message = f"no drift in {len(results)} features over {size} rows"
    return DriftVerdict(
        time=time, reason="DriftDetected" if drifted else "NoDrift", message=message, report=out,
        window_size=size, replicas=replicas, feature_reasons=reasons,
    )


def _results(report: DriftReport) -> tuple[list[FeatureResult], dict[str, str]]:
    results: list[FeatureResult] = []
    reasons: dict[str, str] = {}
    for name, f in report.features.items():
        drifted, reason = f.drift, f.reason
        results.append(FeatureResult(
            name=name,
            method="ks" if f.kind == "numeric" else "chi-square",
            statistic=_finite(f.statistic),
            p_value=_finite(f.p_adjusted),
            effect_size=_finite(f.effect_size),
            drifted=drifted,
        ))
        reasons[name] = reason
    return results, reasons


def _describe(r: FeatureResult) -> str:
    parts = [f"{r.name} ({r.method}"]
    if r.statistic is not None:
        parts.append(f" {r.statistic:.3g}")
    if r.p_value is not None:
        parts.append(f", p={r.p_value:.2g}")
    if r.effect_size is not None:
        parts.append(f", PSI {r.effect_size:.3g}")
    return "".join(parts) + ")"


def _finite(x: float | None) -> float | None:
    return None if x is None or x != x or x in (float("inf"), float("-inf")) else float(x)


def no_verdict(now: dt.datetime, reason: str, message: str) -> DriftVerdict:
    """A check that could not judge for a reason outside the windows (no deployment, no served version, no
    reference profile): the status keeps the last report and says why in Ready."""
    return DriftVerdict(time=second(now), reason=reason, message=message)
