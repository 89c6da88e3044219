"""The ModelDeployment reconcile: read the world through kube, decide with decide/status, write children through kube.

It takes the object as kopf hands it (a plain mapping), a `kube.Client` and the operator settings, and returns the
new status (a dict ready for a status patch) or None when nothing changed. It raises only `InvalidSpec` and
`NotReady`; the handlers map them to kopf's errors.

The reconcile is level-based: it observes the children that exist, computes the desired ones from the spec and the
observations, applies them (server-side apply: a no-op when unchanged), and deletes the children that are no longer
wanted. Running it twice in a row changes nothing the second time.

While a Canary or BlueGreen step is in effect, the reconcile also reads every router pod's statistics
(`kube.Client.router_stats`); the plan takes the step's baseline from them or judges the step on them (see
decide.py), and status.rollout keeps what the next reconcile, or a restarted operator, needs to continue.

With spec.shadow, reconcile_shadow.py decides whether its version is mirrored, reads the router replicas' shadow
counters into status.shadow while it is, and turns a passed promotion gate into a request that `resolve_override`
applies like an Experiment's (but through spec.rollout)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from mlsteward_operator import kube
from mlsteward_operator.api.common import ServingRequest, parse_duration
from mlsteward_operator.api.experiment import Experiment
from mlsteward_operator.api.modeldeployment import (
    ModelDeployment,
    ModelDeploymentStatus,
    RolloutStatus,
    ServingOverride,
)
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel import names, pods
from mlsteward_operator.kernel.status import parse_object, status_changed, status_patch
from mlsteward_operator.modeldeployment import progress, reconcile_shadow, render, routers, status
from mlsteward_operator.modeldeployment.decide import (
    Override,
    Request,
    ShadowTarget,
    effective_version,
    experiment_blocker,
    is_shadow_source,
    plan_rollout,
    resolve_override,
    with_experiment,
)
from mlsteward_operator.modeldeployment.rollout import strategy_for
from mlsteward_operator.modeldeployment.rollout.base import (
    Counters,
    Gates,
    Observed,
    Plan,
    RolloutSpec,
    RolloutState,
    VersionFacts,
)

log = logging.getLogger(__name__)

GROUP_VERSION = "mlsteward.io/v1alpha1"

# Kinds a ModelDeployment owns, listed to find children that are no longer wanted.
OWNED_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
)


def _parse(model: type[Any], body: Mapping[str, Any]) -> Any:
    return parse_object(model, body)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _dump(model: Any) -> dict[str, Any]:
    return model.to_k8s()


# --------------------------------------------------------------------------------------------------------------
# ModelVersion
# --------------------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------------------
# ModelDeployment
# --------------------------------------------------------------------------------------------------------------


def _facts(name: str, mv: ModelVersion | None) -> VersionFacts:
    if mv is None:
        return VersionFacts(name, exists=False)
    return VersionFacts(name, exists=True, model=mv.spec.model, phase=mv.status.phase.value,
                        reason=mv.status.reason)


async def _versions(client: kube.Client, ns: str, wanted: set[str]) -> dict[str, ModelVersion]:
    out: dict[str, ModelVersion] = {}
    for name in sorted(wanted):
        obj = await client.get(GROUP_VERSION, "ModelVersion", ns, name)
        if obj is not None:
            out[name] = ModelVersion.model_validate(obj)
    return out


@dataclasses.dataclass(frozen=True)
class _Steering:
    """What steers a ModelDeployment besides its spec: the ServingRequests in the status of Experiments and
    DriftMonitors on it, and the open Experiment whose arms the router splits between (oldest first)."""

    requests: tuple[Request, ...]
    active: Experiment | None

    @property
    def arms(self) -> dict[str, int]:
        return {v.version: v.weight for v in self.active.spec.variants} if self.active is not None else {}

    @property
    def control(self) -> str | None:
        return self.active.spec.variants[0].version if self.active is not None else None


async def reconcile_deployment(body: Mapping[str, Any], client: kube.Client, cfg: OperatorConfig,
                               now: dt.datetime | None = None) -> dict[str, Any] | None:
    """Brings the children of a ModelDeployment in line with its spec and what its versions allow.

    Besides spec.version, two kinds of objects steer what is served, and this reconcile is the only one that acts
    on them: an Experiment on this deployment (its arms are rendered and the router splits traffic between them
    while it runs) and the ServingRequests in the status of Experiments and DriftMonitors (a promotion or a
    rollback, applied once and recorded as status.override and a decision; see plan.resolve_override).
    """
    now = now or _now()
    md: ModelDeployment = _parse(ModelDeployment, body)
    ns, name = md.metadata.namespace, md.metadata.name
    serving_name = md.status.serving_version
    steering = await _steering(client, ns, name)
    arms = steering.arms

    prev_override = override_of(md.status.override)
    s = md.status
    rollout_target = s.rollout.target_version if s.rollout is not None and s.rollout.phase.value == "Progressing" \
        else None
    version_names = {md.spec.version, *(n for n in (serving_name, s.stable_version, s.previous_version) if n),
                     *([prev_override.version] if prev_override else []),
                     *(r.version for r in steering.requests if r.version), *arms,
                     *([md.spec.shadow.version] if md.spec.shadow else [])}
    versions = await _versions(client, ns, version_names)
    deployments = {d["metadata"]["name"]: d for d in await client.list(
        "apps/v1", "Deployment", ns, labels={names.LABEL_DEPLOYMENT: names.label_value(name)})}
    shadow = await reconcile_shadow.look(client, md, cfg, versions, deployments,
                                         effective_version(md.spec.version, prev_override), now)
    ready = {n: mv.status.phase.value == "Ready" for n, mv in versions.items()}
    override, applied = resolve_override(md.spec.version, serving_name, s.stable_version, s.previous_version,
                                         rollout_target, prev_override, steering.requests + shadow.requests, ready,
                                         now)
    wanted = effective_version(md.spec.version, override)
    spec = rollout_spec(md)
    if override is not None and override.holds(md.spec.version) and not is_shadow_source(override.source):
        # A version promoted by an Experiment is warm; a rollback must be quick. A shadow that passed its gate was
        # judged on copies of requests only: it takes over through spec.rollout (a Canary starts from it).
        spec = RolloutSpec(strategy="Immediate")

    involved = {wanted, *([serving_name] if serving_name else []), *arms}
    predictors = {v: pods.observe_deployment(deployments.get(names.predictor_name(name, v))) for v in involved}
    router_obj = deployments.get(names.router_name(name))
    observed, router_view = await _observe(client, md, cfg, spec, wanted, predictors, router_obj, arms,
                                           prefetched=shadow.answers)

    desired = _facts(wanted, versions.get(wanted))
    serving = _facts(serving_name, versions.get(serving_name)) if serving_name else None
    plan = plan_rollout(desired, serving, observed, spec, rollout_state(md.status.rollout), now,
                        model=md.spec.model)
    # A spec.version not applied yet (a GitOps sync applies everything at once) is waited for a while.
    plan = progress.within_grace(plan, md.status.progress, wanted, md.metadata.generation, now)
    shadow = reconcile_shadow.settle(shadow, plan.serving, wanted)
    if applied is not None or shadow.decisions:
        plan = dataclasses.replace(plan, decisions=(*shadow.decisions, *([applied] if applied else []),
                                                    *plan.decisions))
    plan, experiment_on = _with_active_experiment(md, plan, steering, versions, predictors)

    children = desired_children(md, versions, plan, cfg,
                                experiment=steering.active if experiment_on and plan.traffic else None,
                                shadow=shadow.target)
    router_state = pods.observe_deployment(router_obj)
    if any(c["kind"] == "Deployment" and c["metadata"]["name"] == names.router_name(name) for c in children) \
            and (not router_state.exists or router_state.ready_replicas < router_state.replicas):
        # Looked up only while router pods are missing: a pod without the Secret waits in ContainerCreating.
        await routers.ensure_key(client, md)
    for child in children:
        await client.apply(child)
    await _prune(client, ns, name, {names.child_key(c) for c in children})

    clock, stuck = progress.clock(md, plan, wanted, predictors, now)
    new = status.compute_deployment_status(
        md, plan, status.ChildrenState(predictors=predictors, router=pods.observe_deployment(router_obj),
                                       router_config=routers.applied(children, router_view)),
        versions, url=render.deployment_url(md, cfg), now=now, experiment=experiment_on,
        override=_override_status(override), shadow=shadow.status, progress=clock, stuck=stuck,
    )
    return await _record(client, body, md, new)


async def _steering(client: kube.Client, ns: str, name: str) -> _Steering:
    experiments = [e for e in await client.list(GROUP_VERSION, "Experiment", ns)
                   if (e.get("spec") or {}).get("deployment") == name]
    monitors = [m for m in await client.list(GROUP_VERSION, "DriftMonitor", ns)
                if (m.get("spec") or {}).get("deployment") == name]
    return _Steering(serving_requests(experiments, "Experiment") + serving_requests(monitors, "DriftMonitor"),
                     active_experiment(experiments))


async def _observe(client: kube.Client, md: ModelDeployment, cfg: OperatorConfig, spec: RolloutSpec, wanted: str,
                   predictors: Mapping[str, Any], router_obj: dict[str, Any] | None,
                   arms: Mapping[str, int], prefetched: Any = None) -> tuple[Observed, pods.RouterView]:
    """What the rollout plan reads of the children: predictor readiness, what the router replicas serve, and while
    a canary step is in effect the per-version counters of every router replica."""
    ns, name, serving_name = md.metadata.namespace, md.metadata.name, md.status.serving_version
    router_state = pods.observe_deployment(router_obj)
    view, answers = await routers.view(client, md, cfg, router_state)
    table = view.served_table
    router_on = status.full_version(table)
    if arms and serving_name in arms and dict(view.table) == dict(arms) and router_state.available_replicas >= 1:
        # The router replicas serve (or are moving to) the Experiment's split over the served version: for the
        # rollout plan that is the served version, in place. Until every replica reports the split, some still
        # send everything to it, so the deployment is settled meanwhile; a reconcile woken in between must not
        # take the split back (it would flap between the two tables).
        router_on = serving_name
    stats = None
    if strategy_for(spec.strategy).measures_traffic and serving_name not in (None, wanted) and table \
            and len(table) > 1:
        # A canary step is in effect: its baseline is taken, or it is judged, on what the routers counted.
        if answers is None:
            answers = prefetched if prefetched is not None else (await client.router_stats(
                ns, names.selector_labels(name, "router"), cfg.router_port)).answers
        stats = tuple(Counters(r.replica, r.started, v, s.requests, s.errors, dict(s.latency_buckets))
                      for r in answers for v, s in r.versions.items())
    observed = Observed(
        predictor_ready={v: p.ready for v, p in predictors.items()},
        router_on=router_on,
        predictor_full={v: p.ready and p.available_replicas >= p.replicas for v, p in predictors.items()},
        router_table=table,
        router_stats=stats,
    )
    return observed, view


def _with_active_experiment(md: ModelDeployment, plan: Plan, steering: _Steering,
                            versions: Mapping[str, ModelVersion],
                            predictors: Mapping[str, Any]) -> tuple[Plan, str | None]:
    """The plan with the open Experiment's arms once nothing blocks it (the arms warm up first; the router splits
    only once each answers), and the name of the Experiment that runs, if one does."""
    active, control, arms = steering.active, steering.control, steering.arms
    if active is None or control is None:
        return plan, None
    served = versions.get(plan.serving) if plan.serving else None
    model = md.spec.model or (served.spec.model if served is not None else None)
    blocker = experiment_blocker(plan, control, {v: _facts(v, versions.get(v)) for v in arms}, model)
    if blocker is not None:
        log.info("Experiment %s/%s waits: %s", md.metadata.namespace, active.metadata.name, blocker)
        return plan, None
    if all(predictors[v].ready for v in arms):
        return with_experiment(plan, arms, control), active.metadata.name
    return dataclasses.replace(plan, live=tuple(dict.fromkeys([*plan.live, *arms]))), active.metadata.name


async def _record(client: kube.Client, body: Mapping[str, Any], md: ModelDeployment,
                  new: ModelDeploymentStatus) -> dict[str, Any] | None:
    """Posts an Event per new decision and one when the progress deadline passes, and returns the status patch, or
    None when nothing changed."""
    stalled, was = new.condition("Stalled"), md.status.condition("Stalled")
    if stalled is not None and stalled.reason == status.EXCEEDED and (was is None or was.reason != status.EXCEEDED):
        await client.event(body, reason=stalled.reason, type_="Warning", message=stalled.message)
    for decision in status.new_decisions(md.status.decisions, new.decisions):
        await client.event(
            body, reason=decision.reason,
            type_="Warning" if decision.kind.value in ("Hold", "Rollback") else "Normal",
            message=decision.message + (f" (Git: {decision.git_change})" if decision.git_change else ""),
        )
    if not status_changed(md.status, new):
        return None
    # Merge patch: a step's start time or baseline, or an ended override, must not survive into a new value.
    # status.health is the health sampler's (reconcile_health.py): never written here, whatever copy this one read.
    return status_patch(new, md.status, replaced=("rollout", "override", "shadow", "progress"), others=("health",))


def serving_requests(objs: list[dict[str, Any]], kind: str) -> tuple[Request, ...]:
    """The ServingRequests in the status of Experiments or DriftMonitors (`kind`); malformed ones are skipped."""
    out = []
    for obj in objs:
        raw = (obj.get("status") or {}).get("servingRequest")
        if not raw:
            continue
        try:
            r = ServingRequest.model_validate(raw)
        except ValidationError as exc:
            log.warning("Ignoring the servingRequest of %s %s: %s", kind, obj["metadata"]["name"], exc)
            continue
        out.append(Request(f"{kind}/{obj['metadata']['name']}", r.kind.value, r.version, r.from_version,
                           r.time, r.reason, r.message, dict(r.numbers), dict(r.thresholds)))
    return tuple(out)


def active_experiment(objs: list[dict[str, Any]]) -> Experiment | None:
    """The Experiment that steers the traffic: the oldest one neither Concluded nor Stopped (others wait)."""
    open_ = []
    for obj in objs:
        if ((obj.get("status") or {}).get("phase")) in ("Concluded", "Stopped"):
            continue
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            continue
        try:
            open_.append(Experiment.model_validate(obj))
        except ValidationError as exc:
            log.warning("Ignoring Experiment %s: %s", obj["metadata"]["name"], exc)
    open_.sort(key=lambda e: (e.metadata.creation_timestamp or dt.datetime.max.replace(tzinfo=dt.UTC),
                              e.metadata.name))
    return open_[0] if open_ else None


def override_of(o: ServingOverride | None) -> Override | None:
    if o is None:
        return None
    return Override(o.version, o.spec_version, o.kind, o.source, o.time, o.ended_at)


def _override_status(o: Override | None) -> ServingOverride | None:
    if o is None:
        return None
    return ServingOverride(version=o.version, spec_version=o.spec_version, kind=o.kind, source=o.source,
                           time=o.time, ended_at=o.ended_at)




def desired_children(md: ModelDeployment, versions: Mapping[str, ModelVersion], plan: Plan,
                     cfg: OperatorConfig, experiment: Experiment | None = None,
                     shadow: ShadowTarget | None = None) -> list[dict[str, Any]]:
    """The children a plan calls for (pure). Only Ready versions are ever live in a plan.

    The router's fallback (stable) version is the version it routes to, so its configuration depends on the router
    target alone: it is always one the router accepts, and the router rolls once per switch. A canary step's split
    falls back to the stable version instead (`plan.fallback`), which is one of its backends.
    """
    traffic = status.plan_traffic(plan)
    rendered = shadow if shadow is not None and shadow.render and shadow.version not in plan.live else None
    return render.render_deployment(
        md, versions, plan.live, traffic, plan.fallback or plan.router_target, cfg,
        shadow=rendered.version if rendered else None, experiment=experiment,
        shadow_kind=rendered.kind if rendered else None, mirror=bool(rendered and rendered.mirror))


def rollout_spec(md: ModelDeployment) -> RolloutSpec:
    """spec.rollout and spec.rollback as the planner reads them."""
    r, a = md.spec.rollout, md.spec.rollout.analysis
    gates = Gates(a.max_error_rate, a.max_p99_latency_ms, a.min_requests) if a is not None else Gates()
    return RolloutSpec(strategy=r.strategy.value, steps=tuple(r.steps), interval_s=parse_duration(r.step_interval),
                       gates=gates, rollback=md.spec.rollback.on_failed_analysis)


def rollout_state(r: RolloutStatus | None) -> RolloutState:
    """status.rollout as the planner reads it."""
    if r is None:
        return RolloutState()
    target = r.target_version or ""
    return RolloutState(
        phase=r.phase.value, target=r.target_version, step=r.step, step_started_at=r.step_started_at,
        baseline=tuple(Counters(b.replica, b.started, target, b.requests, b.errors, dict(b.latency_buckets))
                       for b in r.baseline or ()),
    )


async def _prune(client: kube.Client, ns: str, md_name: str, wanted: set[tuple[str, str, str]]) -> None:
    """Deletes the children of `md_name` (by label) that the latest render no longer contains."""
    labels = {names.LABEL_DEPLOYMENT: names.label_value(md_name), "app.kubernetes.io/managed-by": "mlsteward"}
    for api_version, kind in OWNED_KINDS:
        for obj in await client.list(api_version, kind, ns, labels=labels):
            key = (api_version, kind, obj["metadata"]["name"])
            if key not in wanted:
                log.info("Deleting %s %s/%s: no longer wanted", kind, ns, key[2])
                await client.delete(api_version, kind, ns, key[2])
