"""A ModelDeployment's status (STYLE §5, §6): observed facts in, a whole status out, written once per reconcile.

- Observations: kernel/pods.py's `observe_deployment` and `RouterView` turn raw API objects (plain dicts) and the
  router replicas' answers into the few facts the status functions need (`full_version` reads a served table), so
  those functions never parse Kubernetes objects themselves.
- `compute_deployment_status` turns a rollout plan (see `decide.plan_deployment`) plus the observed children into
  status: servingVersion, stableVersion, traffic, rollout, url, conditions and the bounded decision log, whose
  entries carry the one-line spec change that would bring Git in line with what is served.

Times are passed in (`now`), never read here, so every function is deterministic.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from mlsteward_operator.api.common import MAX_DECISIONS, MAX_MESSAGE, Condition, ConditionType
from mlsteward_operator.api.modeldeployment import (
    Decision,
    DecisionKind,
    HealthStatus,
    ModelDeployment,
    ModelDeploymentStatus,
    ProgressStatus,
    ReplicaBaseline,
    RolloutPhase,
    RolloutStatus,
    RouterStatus,
    ServingOverride,
    TrafficEntry,
)
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.api.shadow import ShadowStatus
from mlsteward_operator.kernel.conditions import second, set_condition, set_kstatus
from mlsteward_operator.kernel.pods import RouterView, WorkloadState

# Reasons of the two clocks of progress.py: a missing spec.version within its grace period (a wait), and a rollout
# whose pods made no progress until spec.rollout.progressDeadline (Stalled).
WAITING = "WaitingForVersion"
EXCEEDED = "ProgressDeadlineExceeded"


# --------------------------------------------------------------------------------------------------------------
# Conditions, decisions, change detection
# --------------------------------------------------------------------------------------------------------------


def append_decision(
    decisions: Sequence[Decision], decision: Decision, *, limit: int = MAX_DECISIONS
) -> list[Decision]:
    """`decisions` plus `decision`, oldest dropped past `limit`.

    A decision equal to the last one in kind, from, to and reason is not appended again: reconciles are
    level-based and see the same situation many times, but it was decided once.
    """
    if decisions:
        last = decisions[-1]
        def key(d: Decision) -> tuple[Any, ...]:
            # The step tells apart the successive steps of one canary, which pass with the same reason.
            return d.kind, d.from_, d.to, d.reason, d.numbers.get("step")

        if key(last) == key(decision):
            return list(decisions)
    return [*decisions, decision][-limit:]


def new_decisions(old: Sequence[Decision], new: Sequence[Decision]) -> list[Decision]:
    """Decisions in `new` that `old` does not have (to emit one Event each)."""
    def key(d: Decision) -> str:
        return json.dumps(d.to_k8s(), sort_keys=True)

    seen = {key(d) for d in old}
    return [d for d in new if key(d) not in seen]


# --------------------------------------------------------------------------------------------------------------
# Observations of children
# --------------------------------------------------------------------------------------------------------------


def full_version(table: Mapping[str, int] | None) -> str | None:
    """The version that takes all traffic in a served weight table (`{"v1": 100}`), or None: no table (the router
    replicas are not all on their configuration yet, or there is no router) or a split."""
    full = [v for v, w in (table or {}).items() if w == 100]
    return full[0] if len(full) == 1 else None


# --------------------------------------------------------------------------------------------------------------
# ModelVersion
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# ModelDeployment
# --------------------------------------------------------------------------------------------------------------


class Problem(Protocol):
    reason: str
    message: str


class RolloutPlan(Protocol):
    """What `plan.plan_deployment` and `plan.plan_rollout` return (the fields this module reads; a rollout plan
    may also carry `traffic` (a split table), `rollout` (status.rollout to write: phase, step, target,
    step_started_at, baseline of replica counters) and `decisions` (facts with kind, from_, to, reason, message,
    numbers, thresholds, git_version)."""

    live: tuple[str, ...]
    router_target: str | None
    serving: str | None
    stable: str | None
    degraded: Problem | None
    progressing: Problem | None


@dataclass(frozen=True)
class ChildrenState:
    """The observed children of a ModelDeployment."""

    predictors: Mapping[str, WorkloadState]  # ModelVersion name -> its predictor Deployment
    router: WorkloadState = WorkloadState()
    # The configuration applied this time (generation, table) and how many ready router replicas serve it.
    router_config: RouterView = RouterView()


def plan_traffic(plan: RolloutPlan) -> list[TrafficEntry]:
    """The router's weight table for a plan: all traffic to its router target (strategy Immediate)."""
    weights = getattr(plan, "traffic", None)  # a canary plan may carry a split table
    if weights:
        return [TrafficEntry(version=v, weight=w) for v, w in dict(weights).items()]
    return [TrafficEntry(version=plan.router_target, weight=100)] if plan.router_target else []


def git_change(md: ModelDeployment, version: str) -> str:
    """The one-line spec change that makes Git say what is served."""
    where = f"{md.metadata.namespace}/{md.metadata.name}" if md.metadata.namespace else md.metadata.name
    return f"set spec.version: {version} in ModelDeployment {where}"


def compute_deployment_status(
    md: ModelDeployment,
    plan: RolloutPlan,
    children: ChildrenState,
    versions: Mapping[str, ModelVersion],
    *,
    url: str,
    now: dt.datetime,
    experiment: str | None = None,
    override: ServingOverride | None = None,
    shadow: ShadowStatus | None = None,
    progress: ProgressStatus | None = None,
    stuck: Problem | None = None,
) -> ModelDeploymentStatus:
    """The whole status of `md` after this reconcile.

    - `plan`: the rollout decision for this reconcile (serving, stable, router target, problems).
    - `children`: readiness of the predictor Deployments and of the router.
    - `versions`: the ModelVersions involved, by name (for the model name and messages).
    - `url`: the Service's URL (render.deployment_url), shown once something can be served.
    - `experiment`: the Experiment whose arms are rendered, if any; `override`: status.override after this
      reconcile (a version served instead of spec.version while it holds); `shadow`: status.shadow after this
      reconcile (reconcile_shadow.py), None without spec.shadow; `progress`: status.progress after this reconcile
      and `stuck`: the ProgressDeadlineExceeded problem once its deadline passed (progress.py).
    A spec.version that cannot be served while another version serves is recorded as a Hold decision whose
    gitChange puts the served version back in Git; each completed switch is recorded as a Rollout decision.
    """
    prev = md.status
    generation = md.metadata.generation
    overridden = override is not None and override.ended_at is None and override.spec_version == md.spec.version
    wanted = override.version if overridden and override is not None else md.spec.version
    traffic = plan_traffic(plan)
    serving = plan.serving
    model = md.spec.model or prev.model or _model_of(versions, serving or plan.router_target)
    conds = _conditions(md, plan, children, url=url, now=now, wanted=wanted,
                        override=override if overridden else None, stuck=stuck)
    return ModelDeploymentStatus(
        observed_generation=generation,
        conditions=conds,
        model=model,
        serving_version=serving,
        stable_version=plan.stable,
        traffic=traffic,
        traffic_summary=",".join(f"{t.version}={t.weight}" for t in traffic) or None,
        rollout=rollout_status(prev.rollout, plan, wanted, now),
        url=url if traffic else None,
        previous_version=(prev.stable_version if plan.stable != prev.stable_version and prev.stable_version
                          else prev.previous_version),
        override=override,
        experiment=experiment,
        router=_router_status(children) if traffic else None,
        decisions=_decisions(md, plan, wanted, now),
        # Written by the health sampler only (reconcile_health.py); carried so that the status here is whole, and
        # left out of this reconcile's patch (reconcile.py).
        health=prev.health,
        shadow=shadow,
        progress=progress,
    )


def _router_status(children: ChildrenState) -> RouterStatus:
    view = children.router_config
    return RouterStatus(generation=view.generation,
                        traffic=",".join(f"{v}={w}" for v, w in view.table.items()) or None,
                        replicas=view.replicas, current=view.current)


def _decisions(md: ModelDeployment, plan: RolloutPlan, wanted: str, now: dt.datetime) -> list[Decision]:
    """The decision log after this reconcile: the plan's own decisions, a completed switch, a Hold."""
    prev, serving = md.status, plan.serving
    decisions = list(prev.decisions)
    for facts in getattr(plan, "decisions", ()):
        decisions = append_decision(decisions, Decision(
            time=second(now), kind=DecisionKind(facts.kind), from_=facts.from_, to=facts.to, reason=facts.reason,
            message=facts.message, numbers=dict(facts.numbers), thresholds=dict(facts.thresholds),
            git_change=git_change(md, facts.git_version) if facts.git_version else None,
        ))
    planned = getattr(plan, "rollout", None)
    if serving and prev.serving_version != serving:
        decisions = append_decision(decisions, Decision(
            time=second(now), kind=DecisionKind.rollout, from_=prev.serving_version, to=serving,
            reason="RolloutComplete",
            message=f"{serving} serves all traffic"
            + (f" (was {prev.serving_version})" if prev.serving_version else ""),
        ))
    held_by_rollout = planned is not None and planned.phase in (RolloutPhase.rolled_back, RolloutPhase.paused)
    if plan.degraded is not None and serving and serving != wanted and not held_by_rollout:
        # (A rolled back or paused canary recorded its own decision, with the numbers.)
        decisions = append_decision(decisions, Decision(
            time=second(now), kind=DecisionKind.hold, from_=serving, to=serving, reason=plan.degraded.reason,
            message=f"{plan.degraded.message}; {serving} keeps serving",
            git_change=git_change(md, serving),
        ))
    return decisions


def _ready(plan: RolloutPlan, children: ChildrenState, url: str, wanted: str) -> tuple[bool, str, str]:
    """The Ready condition: the served version's predictor and the router have a ready pod."""
    serving = plan.serving
    predictor = children.predictors.get(serving) if serving else None
    if predictor and predictor.ready and children.router.ready:
        return True, "Serving", f"{serving} serves at {url}"
    problem = plan.degraded or (plan.progressing if _waiting(plan) else None)
    if problem is not None and not serving:
        return False, problem.reason, problem.message
    if not serving:
        return False, "NotServing", f"waiting for {plan.router_target or wanted} to become ready"
    if not (predictor and predictor.ready):
        return False, "PredictorNotReady", f"the predictor of {serving} has no ready pod"
    return False, "RouterNotReady", "the router has no ready pod"


def _waiting(plan: RolloutPlan) -> bool:
    """The plan waits for a spec.version still missing, within its grace period (progress.py)."""
    return plan.progressing is not None and plan.progressing.reason == WAITING


def _conditions(md: ModelDeployment, plan: RolloutPlan, children: ChildrenState, *, url: str, now: dt.datetime,
                wanted: str, override: ServingOverride | None, stuck: Problem | None = None) -> list[Condition]:
    """Ready, Progressing, Degraded and Alerting after this reconcile (`override`: one that holds; `stuck`: a rollout
    past its progress deadline, which reads as a Deployment's does: Progressing=False, Degraded=True)."""
    serving, generation = plan.serving, md.metadata.generation
    conds = list(md.status.conditions)
    ready = _ready(plan, children, url, wanted)
    conds = set_condition(conds, ConditionType.ready, *ready, generation=generation, now=now)
    if stuck is not None:
        progressing = (False, stuck.reason, stuck.message)
    elif plan.progressing is not None:
        progressing = (True, plan.progressing.reason, plan.progressing.message)
    else:
        progressing = (False, "Stable", f"{serving} is the stable version" if serving else "nothing to roll out")
    conds = set_condition(conds, ConditionType.progressing, *progressing, generation=generation, now=now)
    if plan.degraded is not None:
        degraded = (True, plan.degraded.reason, plan.degraded.message)
    elif stuck is not None:
        degraded = (True, stuck.reason, stuck.message)
    elif override is not None:
        # Served on a request, not on spec: say so, and how Git catches up (DESIGN §4).
        rolled_back = override.kind == "Rollback"
        degraded = (rolled_back, "RolledBack" if rolled_back else "Promoted",
                    f"{override.version} is served instead of spec.version {md.spec.version} ({override.kind} by "
                    f"{override.source}); {git_change(md, override.version)}")
    else:
        degraded = (False, "AsExpected", f"spec.version {wanted} is the version being served or rolled out")
    conds = set_condition(conds, ConditionType.degraded, *degraded, generation=generation, now=now)
    conds = set_kstatus(conds, **_kstatus(plan, ready, override, md.spec.version, stuck), generation=generation,
                        now=now)
    return set_condition(conds, ConditionType.alerting, *alerting_condition(md.status.health),
                         generation=generation, now=now)


# A spec.version still being validated: the deployment gets there by itself once the version is Ready.
_WAITS = ("VersionNotReady",)


def _kstatus(plan: RolloutPlan, ready: tuple[bool, str, str], override: ServingOverride | None,
             spec_version: str, stuck: Problem | None = None) -> dict[str, tuple[str, str] | None]:
    """Reconciling and Stalled (kstatus, docs/gitops.md) for this plan.

    Stalled: spec.version will not be served without a change of spec: it does not exist (past its grace period),
    failed validation, is of another model, failed its canary analysis (rolled back, or held with onFailedAnalysis
    off), or a rollback request holds the stable version in its place; or the rollout's pods made no progress until
    spec.rollout.progressDeadline. Reconciling: anything else still moving (a rollout step, pods or a validation to
    wait for, a version not applied yet, traffic going back), including a Ready=False that pods may still fix."""
    if stuck is not None:
        return {"reconciling": None, "stalled": (stuck.reason, stuck.message[:MAX_MESSAGE])}
    if plan.progressing is not None:
        return {"reconciling": (plan.progressing.reason, plan.progressing.message), "stalled": None}
    problem = plan.degraded
    if problem is not None and problem.reason not in _WAITS:
        why = f"{problem.message}; spec.version {spec_version} will not be served until the spec changes"
        return {"reconciling": None, "stalled": (problem.reason, why[:MAX_MESSAGE])}
    if override is not None and override.kind == "Rollback":
        return {"reconciling": None,
                "stalled": ("RolledBack", f"{override.version} serves instead of spec.version {spec_version} "
                                          f"after a rollback by {override.source}, until the spec changes")}
    if problem is not None:
        return {"reconciling": (problem.reason, problem.message), "stalled": None}
    if not ready[0]:
        return {"reconciling": (ready[1], ready[2]), "stalled": None}
    return {"reconciling": None, "stalled": None}


def rollout_status(prev: RolloutStatus | None, plan: RolloutPlan, wanted: str, now: dt.datetime) -> RolloutStatus:
    """status.rollout: the plan's when it has one, else the phase the plan is in, since when it is."""
    planned = getattr(plan, "rollout", None)
    if planned is not None:
        return RolloutStatus(
            phase=RolloutPhase(planned.phase), step=planned.step, target_version=planned.target,
            step_started_at=planned.step_started_at,
            baseline=[ReplicaBaseline(replica=c.replica, started=c.started, requests=c.requests, errors=c.errors,
                                      latency_buckets=dict(c.latency_buckets)) for c in planned.baseline] or None,
        )
    if plan.degraded is not None or _waiting(plan):
        phase = RolloutPhase.waiting
    elif plan.progressing is not None:
        phase = RolloutPhase.progressing
    else:
        phase = RolloutPhase.stable
    target = None if phase == RolloutPhase.stable else wanted
    started = second(now)
    if prev is not None and prev.phase == phase and prev.target_version == target:
        started = prev.step_started_at or started
    return RolloutStatus(phase=phase, target_version=target, step_started_at=started)


def alerting_condition(health: HealthStatus | None) -> tuple[bool, str, str]:
    """The Alerting condition from status.health.alerts: True with the first alert's reason and every firing alert
    in the message, else False/NoAlerts."""
    alerts = health.alerts if health is not None else []
    if not alerts:
        return False, "NoAlerts", "no metric alert fires"
    listed = "; ".join(f"{a.rule.value} on {a.metric}: {a.message}" for a in alerts)
    return True, alerts[0].reason, f"{len(alerts)} alert(s) firing: {listed}"[:4096]


def _model_of(versions: Mapping[str, ModelVersion], name: str | None) -> str | None:
    mv = versions.get(name) if name else None
    return mv.spec.model if mv is not None else None
