"""What a ModelDeployment should look like right now, decided from observations only (pure, no I/O).

The reconcile layer gathers facts (the ModelVersions involved, whether each predictor Deployment is ready, which
router configuration every router pod runs) and asks `plan_deployment` what to do. Because the plan depends on
observed state and on nothing remembered in memory, an operator restarted in the middle of a switch makes the same
plan again and converges (DESIGN §4, level-based reconciles).

The switch to a new version (strategy Immediate) never drops a request:
1. the new version's predictor is applied next to the serving one; the router still sends it nothing;
2. once the new predictor is ready, the router configuration points at it; the router Deployment rolls its pods
   (a configuration hash on the pod template) with maxUnavailable 0, so old router pods keep serving the old
   version until new ones are ready;
3. once every router pod runs the new configuration, the new version is serving and stable, and the old
   predictor is removed.
A spec.version that is missing, not Ready, or of another model leaves the serving version in place and reports
Degraded (the operator never edits spec: status says what Git should change).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VersionFacts:
    """What the operator knows of one ModelVersion."""

    name: str
    exists: bool
    model: str | None = None
    phase: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Observed:
    """What the cluster shows now."""

    predictor_ready: dict[str, bool] = field(default_factory=dict)
    # The version the router pods all run with (their configuration is fully rolled out), or None.
    router_on: str | None = None


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    live: tuple[str, ...]           # versions whose predictor children must exist
    router_target: str | None       # version the router configuration sends all traffic to
    serving: str | None             # status.servingVersion after this reconcile
    stable: str | None              # status.stableVersion after this reconcile
    degraded: Problem | None = None
    progressing: Problem | None = None


def _why_not(desired: VersionFacts, serving: VersionFacts | None, model: str | None) -> Problem | None:
    if not desired.exists:
        return Problem("VersionNotFound", f"ModelVersion {desired.name} does not exist")
    if desired.phase == "Failed":
        return Problem("VersionFailed", f"ModelVersion {desired.name} failed validation ({desired.reason})")
    if desired.phase != "Ready":
        return Problem("VersionNotReady", f"ModelVersion {desired.name} is {desired.phase or 'Pending'}, not Ready")
    if model and desired.model != model:
        return Problem("ModelMismatch", f"ModelVersion {desired.name} is of model {desired.model}, but spec.model "
                                        f"says {model}")
    if serving is not None and serving.exists and serving.model and desired.model != serving.model:
        return Problem(
            "ModelMismatch",
            f"ModelVersion {desired.name} is of model {desired.model}, but this deployment serves model "
            f"{serving.model}; create a new ModelDeployment for another model",
        )
    return None


def plan_deployment(desired: VersionFacts, serving: VersionFacts | None, observed: Observed, *,
                    model: str | None = None) -> Plan:
    """Decide the live versions, the router target and the status versions for strategy Immediate.

    `serving` is the version status says is serving (None before the first switch completes); `model` is
    spec.model, a guard against serving another model by mistake.
    """
    serving_name = serving.name if serving is not None else None
    problem = _why_not(desired, serving, model)
    if problem is not None:
        if serving_name is None:
            return Plan(live=(), router_target=None, serving=None, stable=None, degraded=problem)
        return Plan(live=(serving_name,), router_target=serving_name, serving=serving_name, stable=serving_name,
                    degraded=problem)

    new = desired.name
    if serving_name in (None, new):
        # First deployment, or nothing to change: one version; it serves once its pods and the router are ready.
        if observed.predictor_ready.get(new) and observed.router_on == new:
            return Plan(live=(new,), router_target=new, serving=new, stable=new)
        return Plan(live=(new,), router_target=new, serving=serving_name, stable=serving_name,
                    progressing=Problem("RollingOut", f"waiting for {new} and the router to be ready"))

    # A switch from serving_name to new.
    if observed.router_on == new:
        return Plan(live=(new,), router_target=new, serving=new, stable=new)
    if not observed.predictor_ready.get(new):
        return Plan(live=(serving_name, new), router_target=serving_name, serving=serving_name,
                    stable=serving_name,
                    progressing=Problem("WarmingUp", f"waiting for {new} to pass its readiness check"))
    return Plan(live=(serving_name, new), router_target=new, serving=serving_name, stable=serving_name,
                progressing=Problem("Switching", f"router moving traffic from {serving_name} to {new}"))
