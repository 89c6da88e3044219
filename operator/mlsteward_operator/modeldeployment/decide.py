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

Strategies Canary and BlueGreen (rollout/canary.py, rollout/bluegreen.py) move traffic in steps and judge each step
on the router's statistics of the new version. BlueGreen is a canary with the single step 100 whose new version
must first be warm on every replica; its analysis, when set, is judged after the switch while the old version stays warm, so a
failure goes back at once. A rollout stands on what status.rollout remembers (target, step, when the step began,
each router replica's counters at that moment) and on observations, never on memory, so an operator restarted in
the middle of a step finishes the same step at the same time:
1. warm-up: the new predictor is applied; the router keeps sending everything to the stable version;
2. step i: the router configuration splits `100 - w_i` / `w_i`, with the stable version as fallback. The step
   begins when every router pod runs that split (`stepStartedAt`; the counters of each router replica are then
   recorded as the baseline);
3. once `stepInterval` has passed, the gates are judged on what the router replicas counted since the baseline,
   summed over replicas (a replica that restarted since, or that is new, counts from zero): error rate <=
   maxErrorRate, p99 (from the summed latency histogram) <= maxP99LatencyMs, requests >= minRequests.
   Too few requests extend the step, up to `MAX_STEP_INTERVALS` intervals in all; a canary still short of
   traffic then fails (NotEnoughTraffic): a version that could not be measured is not promoted. Router statistics
   that cannot be read at all hold the step the same way and then fail (AnalysisUnavailable);
4. pass: the next step, or after the last one the switch of strategy Immediate (the new version serves and is
   stable, the old one is retired once every router pod runs the new configuration);
5. fail, with spec.rollback.onFailedAnalysis (default): rollback. The router goes back to the stable version, the
   new predictor is removed once every router pod runs that configuration, status.rollout says RolledBack with
   the failed version, which is not tried again until spec.version changes (whatever the strategy says by
   then). With onFailedAnalysis off, the step is held as it is (Paused) for a person to decide.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from mlsteward_operator.modeldeployment.rollout.base import (
    DecisionFacts,
    Observed,
    Plan,
    RolloutSpec,
    RolloutState,
    VersionFacts,
    _rolled_back,
    _whole,
)
from mlsteward_operator.modeldeployment.rollout import strategy_for
from mlsteward_operator.modeldeployment.rollout.immediate import _why_not, plan_deployment


def plan_rollout(desired: VersionFacts, serving: VersionFacts | None, observed: Observed, spec: RolloutSpec,
                 prev: RolloutState, now: dt.datetime, *, model: str | None = None) -> Plan:
    """Decide a reconcile of any strategy (see the module docstring for Canary and BlueGreen).

    `prev` is status.rollout as read; `now` the time of this reconcile. Immediate, a first deployment (nothing to
    compare with) and a spec.version that cannot be served are `plan_deployment`'s.
    """
    serving_name = serving.name if serving is not None else None
    if prev.phase == "RolledBack" and prev.target == desired.name and serving_name not in (None, desired.name):
        return _rolled_back(serving_name, desired.name, observed, prev)
    if serving_name in (None, desired.name) or _why_not(desired, serving, model) is not None:
        return plan_deployment(desired, serving, observed, model=model)
    assert serving_name is not None
    return strategy_for(spec.strategy).plan(serving_name, desired.name, observed, spec, prev, now)


# --------------------------------------------------------------------------------------------------------------
# Serving requests (promotion by an Experiment, rollback by a DriftMonitor) and Experiment splits
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A ServingRequest read from an Experiment's or a DriftMonitor's status (api.common.ServingRequest)."""

    source: str  # e.g. Experiment/iris-ab
    kind: str  # Promote | Rollback
    version: str | None
    from_version: str
    time: dt.datetime
    reason: str
    message: str = ""
    numbers: Mapping[str, float] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Override:
    """status.override: `version` is served instead of spec.version while spec.version is `spec_version`."""

    version: str
    spec_version: str
    kind: str
    source: str
    time: dt.datetime
    ended_at: dt.datetime | None = None

    def holds(self, spec_version: str) -> bool:
        return self.ended_at is None and self.spec_version == spec_version


def resolve_override(spec_version: str, serving: str | None, stable: str | None, previous: str | None,
                     rollout_target: str | None, current: Override | None, requests: tuple[Request, ...],
                     ready: Mapping[str, bool], now: dt.datetime) -> tuple[Override | None, DecisionFacts | None]:
    """The override after this reconcile, and the decision when a request was applied now (pure).

    - An override ends (kept, with `ended_at`, as the record of the last request applied) once spec.version is no
      longer the one it was applied under: Git has moved on, and spec.version is what is wanted again.
    - A request applies once (only requests newer than the last one applied), and only while its `from_version`
      is still the served version: a stale request never moves traffic.
    - Promote serves `version`. Rollback serves the stable version while a rollout to `rollout_target` is under
      way (the canary is abandoned), else the previous stable version. A target that is not Ready, or no target
      at all, leaves things as they are and the request waits (a later reconcile may apply it).
    """
    if current is not None and current.ended_at is None and current.spec_version != spec_version:
        current = Override(current.version, current.spec_version, current.kind, current.source, current.time,
                           ended_at=_whole(now))
    last_time = current.time if current is not None else None
    for req in sorted(requests, key=lambda r: (r.time, r.source)):
        if last_time is not None and req.time <= last_time:
            continue
        if serving is None or req.from_version != serving:
            continue
        leaving = serving
        if req.kind == "Promote":
            target = req.version
        elif rollout_target not in (None, serving):
            target, leaving = stable, rollout_target  # abandon the canary: the stable version alone
        else:
            target = previous if stable == serving else stable
        if target is None or target == leaving or not ready.get(target):
            continue
        override = Override(target, spec_version, req.kind, req.source, req.time)
        where = f"{req.source}: " if req.source else ""
        decision = DecisionFacts(req.kind, leaving, target, req.reason,
                                 f"{where}{req.message or req.reason}; serving {target} instead of {leaving}",
                                 dict(req.numbers), dict(req.thresholds), git_version=target)
        return override, decision
    return current, None


def effective_version(spec_version: str, override: Override | None) -> str:
    """The version the plan works towards: an override's while it holds, else spec.version."""
    return override.version if override is not None and override.holds(spec_version) else spec_version


def experiment_blocker(plan: Plan, control: str, versions: Mapping[str, VersionFacts], model: str | None) -> str | None:
    """Why an Experiment's split cannot run on top of `plan` now, or None when it can.

    It runs only on a settled deployment (no rollout, nothing degraded), whose served version is the control's,
    with every variant's ModelVersion Ready and of the served model.
    """
    if plan.serving is None:
        return "the ModelDeployment serves nothing yet"
    if plan.progressing is not None or plan.degraded is not None or plan.rollout is not None:
        problem = plan.progressing or plan.degraded
        return f"the ModelDeployment is not settled ({problem.reason if problem else 'rollout under way'})"
    if control != plan.serving:
        return f"the control version {control} is not the served version {plan.serving}"
    for name, facts in versions.items():
        if not facts.exists:
            return f"ModelVersion {name} does not exist"
        if facts.phase != "Ready":
            return f"ModelVersion {name} is {facts.phase or 'Pending'}, not Ready"
        if model and facts.model != model:
            return f"ModelVersion {name} is of model {facts.model}, not {model}"
    return None


def with_experiment(plan: Plan, arms: Mapping[str, int], control: str) -> Plan:
    """`plan` with the Experiment's split: a predictor per arm, the arms' weight table, the control as fallback."""
    live = tuple(dict.fromkeys([*plan.live, *arms]))
    return Plan(live=live, router_target=plan.router_target, serving=plan.serving, stable=plan.stable,
                traffic=dict(arms), fallback=control, rollout=plan.rollout, decisions=plan.decisions)


# --------------------------------------------------------------------------------------------------------------
# Shadow (spec.shadow): whether its version is mirrored, and its promotion as a serving request
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShadowTarget:
    """What to do with spec.shadow's version now: render its predictor, have the router mirror to it (once that
    predictor is ready), and status.shadow's phase and message."""

    version: str
    phase: str  # api ShadowPhase values: Waiting, Mirroring, Promoted
    message: str
    kind: str | None = None  # classification | regression (its signature's output), None: unknown
    render: bool = False
    mirror: bool = False


def shadow_kind(output_kind: str | None) -> str | None:
    """The router's comparison kind for a signature output kind: regression, or classification (class or
    probability); None when the version declares none (the router then compares as classification)."""
    if output_kind is None:
        return None
    return "regression" if output_kind == "regression" else "classification"


def shadow_target(version: str, facts: VersionFacts, kind: str | None, *, serving: str | None, wanted: str,
                  model: str | None, predictor_ready: bool, promoted: bool) -> ShadowTarget:
    """Whether spec.shadow's `version` is mirrored (pure). It is when its ModelVersion exists, is Ready, is of the
    served model and is neither the served version nor the wanted one, and once its predictor is ready; its
    predictor is rendered from the moment the rest holds. `promoted`: its promotion gate passed."""
    if version in (serving, wanted):
        if promoted:
            return ShadowTarget(version, "Promoted", f"{version} passed the promotion gate and is the version wanted "
                                "now; it is no longer mirrored", kind)
        return ShadowTarget(version, "Waiting", f"{version} is the version served or rolled out: nothing to compare "
                            "it with", kind)
    if serving is None:
        return ShadowTarget(version, "Waiting", "nothing is served yet", kind)
    if not facts.exists:
        return ShadowTarget(version, "Waiting", f"ModelVersion {version} does not exist", kind)
    if facts.phase != "Ready":
        return ShadowTarget(version, "Waiting", f"ModelVersion {version} is {facts.phase or 'Pending'}, not Ready",
                            kind)
    if model and facts.model != model:
        return ShadowTarget(version, "Waiting", f"ModelVersion {version} is of model {facts.model}, not {model}",
                            kind)
    if not predictor_ready:
        return ShadowTarget(version, "Waiting", f"the predictor of {version} is starting", kind, render=True)
    return ShadowTarget(version, "Mirroring", f"mirroring requests to {version}", kind, render=True, mirror=True)


def shadow_source(deployment: str) -> str:
    """The source of a shadow's promotion request (status.override.source, the decision's message)."""
    return f"ModelDeployment/{deployment}/shadow"


def is_shadow_source(source: str) -> bool:
    return source.startswith("ModelDeployment/") and source.endswith("/shadow")


def shadow_request(deployment: str, version: str, serving: str, since: dt.datetime, message: str,
                   numbers: Mapping[str, float], thresholds: Mapping[str, float]) -> Request:
    """A passed shadow gate as a promotion request, applied through `resolve_override` like an Experiment's."""
    return Request(shadow_source(deployment), "Promote", version, serving, since, "ShadowPassed",
                   f"the shadow version passed its promotion gate: {message}", dict(numbers), dict(thresholds))


def shadow_failed(serving: str, version: str, message: str, numbers: Mapping[str, float],
                  thresholds: Mapping[str, float]) -> DecisionFacts:
    """A failed shadow gate as a Hold decision: nothing moves, and the numbers say why."""
    return DecisionFacts("Hold", serving, serving, "ShadowFailed",
                         f"the shadow version {version} failed its promotion gate: {message}; {serving} keeps serving",
                         dict(numbers), dict(thresholds))
