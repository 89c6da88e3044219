"""Strategy Immediate (pure): the new version's predictor next to the serving one, then the router moved to it in
one switch that drops no request (modeldeployment/decide.py's docstring has the steps)."""

from __future__ import annotations

import datetime as dt

from mlsteward_operator.modeldeployment.rollout.base import (
    Observed,
    Plan,
    Problem,
    RolloutSpec,
    RolloutState,
    Strategy,
    VersionFacts,
)


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


class Immediate(Strategy):
    name = "Immediate"

    def plan(self, stable: str, new: str, observed: Observed, spec: RolloutSpec, prev: RolloutState,
             now: dt.datetime) -> Plan:
        return plan_deployment(VersionFacts(new, exists=True, phase="Ready"), VersionFacts(stable, exists=True),
                               observed)
