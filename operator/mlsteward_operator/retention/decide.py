"""Which ModelVersions retention keeps and which it deletes: a pure planner (no I/O, no clock).

Policy (OperatorConfig `retention_*`, chart values `retention.*`): keep the last N Ready versions of each model, N
being `keep_last` or the model's entry in `models` (key `model` or `namespace/model`, the namespaced key wins; 0
keeps every version of that model). "Last" is semver precedence of spec.version, newest first (1.10.0 after 1.9.0,
a pre-release before its release, build metadata ignored), ties broken by creation time, then name. Only Ready
versions fill the N places: a new version still under validation does not push a servable one out (it may fail),
and a Failed version newer than the N-th Ready one stays for inspection until N newer Ready versions exist.

Whatever the count, a version is kept while something may still need it:
- Pinned: the label `mlsteward.io/retain: "true"` (labels can change after registration, the spec cannot);
- ModelDeployment: any version a ModelDeployment wants, serves, falls back or rolls back to, rolls out, shadows or
  routes traffic to (spec and status alike: status says what is live even while spec says something else);
- Experiment: any variant of an existing Experiment, in spec or status, and the winner it asks to promote;
- DriftMonitor: the version a retraining started from and the one it registered, and a requested rollback target;
- LineageOf: the spec.lineage parent chain of every version a ModelDeployment references, transitively (how the
  served model came to be stays explainable; the chain of an old unserved version is not kept);
- NotYetValidated: Pending or Validating (a verdict is still to come; it is also the newest arrival).

Versions already being deleted take no part. Everything else beyond the last N is planned for deletion.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import semver

from mlsteward_operator.api import DriftMonitor, Experiment, ModelDeployment, ModelVersion
from mlsteward_operator.api.modelversion import VersionPhase

PIN_LABEL = "mlsteward.io/retain"
_OLDEST = dt.datetime.min.replace(tzinfo=dt.UTC)


class KeepReason(StrEnum):
    last_n = "LastN"
    pinned = "Pinned"
    model_deployment = "ModelDeployment"
    experiment = "Experiment"
    drift_monitor = "DriftMonitor"
    lineage_of = "LineageOf"
    not_yet_validated = "NotYetValidated"


@dataclass(frozen=True, order=True)
class Keep:
    """Why one version is kept: the reason and what it points at, e.g. (ModelDeployment, "iris status.servingVersion")."""

    reason: KeepReason
    source: str = ""

    def __str__(self) -> str:
        return f"{self.reason}({self.source})" if self.source else str(self.reason)


@dataclass(frozen=True)
class Policy:
    """keep_last for every model, overridden per model (`model` or `namespace/model`); 0 keeps everything."""

    keep_last: int = 0
    models: Mapping[str, int] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.keep_last > 0 or any(n > 0 for n in self.models.values())

    def for_model(self, namespace: str, model: str) -> tuple[int, str]:
        """N for one model and where it comes from, in the chart's words."""
        for key in (f"{namespace}/{model}", model):
            if key in self.models:
                return self.models[key], f"retention.models[{key}]"
        return self.keep_last, "retention.keepLast"


@dataclass(frozen=True)
class Doomed:
    """A version planned for deletion, with what identifies this very object (uid, resourceVersion)."""

    name: str
    uid: str | None
    resource_version: str | None
    version: str
    rank: int  # 1 = the model's newest version

    def message(self, plan: ModelPlan) -> str:
        return (f"version {self.version} of model {plan.model} (number {self.rank} by semver) is older than its "
                f"last {plan.keep_last} Ready versions ({plan.source}); it is not pinned ({PIN_LABEL}), not "
                f"referenced by any ModelDeployment, Experiment or DriftMonitor nor in the lineage of a served "
                f"version, and not under validation")


@dataclass(frozen=True)
class ModelPlan:
    """One model of one namespace: N in force, the kept versions with their reasons, and the versions to delete."""

    namespace: str
    model: str
    keep_last: int
    source: str
    kept: Mapping[str, tuple[Keep, ...]]
    delete: tuple[Doomed, ...]


def precedence(mv: ModelVersion) -> tuple[semver.Version, dt.datetime, str]:
    """Sort key, larger is newer: semver precedence of spec.version, then creation time, then name."""
    return (semver.Version.parse(mv.spec.version), mv.metadata.creation_timestamp or _OLDEST, mv.metadata.name)


def references(deployments: Iterable[ModelDeployment], experiments: Iterable[Experiment],
               monitors: Iterable[DriftMonitor]) -> dict[str, list[Keep]]:
    """ModelVersion names referenced by the namespace's objects, each with who references it and through what."""
    refs: dict[str, list[Keep]] = {}

    def add(name: str | None, reason: KeepReason, source: str) -> None:
        if name:
            refs.setdefault(name, []).append(Keep(reason, source))

    md_reason = KeepReason.model_deployment
    for md in deployments:
        n, s = md.metadata.name, md.status
        add(md.spec.version, md_reason, f"{n} spec.version")
        add(md.spec.shadow.version if md.spec.shadow else None, md_reason, f"{n} spec.shadow.version")
        add(s.serving_version, md_reason, f"{n} status.servingVersion")
        add(s.stable_version, md_reason, f"{n} status.stableVersion")
        add(s.previous_version, md_reason, f"{n} status.previousVersion")
        add(s.override.version if s.override else None, md_reason, f"{n} status.override.version")
        add(s.rollout.target_version if s.rollout else None, md_reason, f"{n} status.rollout.targetVersion")
        for entry in s.traffic:
            add(entry.version, md_reason, f"{n} status.traffic")
    for exp in experiments:
        n = exp.metadata.name
        for variant in exp.spec.variants:
            add(variant.version, KeepReason.experiment, f"{n} variant {variant.name}")
        for arm in exp.status.variants:
            add(arm.version, KeepReason.experiment, f"{n} status variant {arm.name}")
        request = exp.status.serving_request
        add(request.version if request else None, KeepReason.experiment, f"{n} status.servingRequest")
    for dm in monitors:
        n, retrain, request = dm.metadata.name, dm.status.retrain, dm.status.serving_request
        add(retrain.parent if retrain else None, KeepReason.drift_monitor, f"{n} status.retrain.parent")
        add(retrain.model_version if retrain else None, KeepReason.drift_monitor,
            f"{n} status.retrain.modelVersion")
        add(request.version if request else None, KeepReason.drift_monitor, f"{n} status.servingRequest")
    return refs


def lineage(versions: Mapping[str, ModelVersion], roots: Iterable[str]) -> dict[str, list[Keep]]:
    """The spec.lineage parent chain of every root, transitively (cycles and missing parents end a chain)."""
    out: dict[str, list[Keep]] = {}
    for root in sorted(set(roots)):
        seen = {root}
        current = versions.get(root)
        while current is not None and current.spec.lineage and current.spec.lineage.parent:
            parent = current.spec.lineage.parent
            if parent in seen:
                break
            seen.add(parent)
            out.setdefault(parent, []).append(Keep(KeepReason.lineage_of, root))
            current = versions.get(parent)
    return out


def plan(namespace: str, versions: Sequence[ModelVersion], deployments: Sequence[ModelDeployment],
         experiments: Sequence[Experiment], monitors: Sequence[DriftMonitor], policy: Policy) -> list[ModelPlan]:
    """A plan per model of the namespace that retention applies to (N > 0), sorted by model name."""
    live = [mv for mv in versions if mv.metadata.deletion_timestamp is None]
    by_name = {mv.metadata.name: mv for mv in live}
    refs = references(deployments, experiments, monitors)
    served_roots = [name for name, keeps in refs.items()
                    if any(k.reason is KeepReason.model_deployment for k in keeps)]
    for name, keeps in lineage(by_name, served_roots).items():
        refs.setdefault(name, []).extend(keeps)

    models: dict[str, list[ModelVersion]] = {}
    for mv in live:
        models.setdefault(mv.spec.model, []).append(mv)
    plans = []
    for model in sorted(models):
        keep_last, source = policy.for_model(namespace, model)
        if keep_last <= 0:
            continue
        ordered = sorted(models[model], key=precedence, reverse=True)
        kept: dict[str, tuple[Keep, ...]] = {}
        doomed = []
        ready = 0  # Ready versions seen so far, newest first
        for rank, mv in enumerate(ordered, start=1):
            why = list(refs.get(mv.metadata.name, ()))
            phase = mv.status.phase
            if phase in (VersionPhase.pending, VersionPhase.validating):
                why.append(Keep(KeepReason.not_yet_validated, str(phase)))
            elif ready < keep_last:
                # Within the window of the last N Ready versions; a Failed one there stays for inspection.
                ready += phase is VersionPhase.ready
                why.append(Keep(KeepReason.last_n, f"Ready {ready} of {keep_last}" if phase is VersionPhase.ready
                                else f"{phase}, newer than the last {keep_last} Ready"))
            if mv.metadata.labels.get(PIN_LABEL) == "true":
                why.append(Keep(KeepReason.pinned, PIN_LABEL))
            if why:
                kept[mv.metadata.name] = tuple(sorted(set(why)))
            else:
                doomed.append(Doomed(mv.metadata.name, mv.metadata.uid, mv.metadata.resource_version,
                                     mv.spec.version, rank))
        plans.append(ModelPlan(namespace, model, keep_last, source, kept, tuple(doomed)))
    return plans
