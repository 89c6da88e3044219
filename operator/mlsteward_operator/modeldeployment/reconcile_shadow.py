"""The shadow part of the ModelDeployment reconcile: whether spec.shadow's version is mirrored, what the router
replicas counted for it (status.shadow), and what its promotion gate asks for.

While the shadow is mirrored, each reconcile (schedule.py looks again every `SHADOW_RECHECK`) reads every router
replica's `GET /v1/router/stats` and sums their shadow counters (shadow.py). A gate that passes becomes a promotion
request with the source `ModelDeployment/<name>/shadow`, applied by `decide.resolve_override` exactly as an
Experiment's (status.override and a Promote decision, reason ShadowPassed, naming the Git change), except that the
rollout follows spec.rollout (a Canary starts from it) rather than switching at once. A gate that fails is one Hold
decision (ShadowFailed) and nothing moves. Once the shadow version is the one wanted it is no longer mirrored.

The statistics need scipy: shadow.py is imported here only for a deployment with spec.shadow, so an operator
without one never loads it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any

from mlsteward_runtime.contracts import RouterStats

from mlsteward_operator import kube
from mlsteward_operator.api.modeldeployment import ModelDeployment
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.api.shadow import ShadowGateResult, ShadowPhase, ShadowStatus
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel import names, pods
from mlsteward_operator.modeldeployment.decide import (
    Request,
    ShadowTarget,
    shadow_failed,
    shadow_kind,
    shadow_request,
    shadow_target,
)
from mlsteward_operator.modeldeployment.rollout.base import DecisionFacts, VersionFacts


@dataclasses.dataclass(frozen=True)
class ShadowLook:
    """What one reconcile saw of spec.shadow and what it asks for."""

    status: ShadowStatus | None = None
    target: ShadowTarget | None = None
    requests: tuple[Request, ...] = ()
    decisions: tuple[DecisionFacts, ...] = ()
    answers: tuple[RouterStats, ...] | None = None
    # What `settle` needs to judge the target again once the override of this reconcile is known.
    facts: VersionFacts | None = None
    model: str | None = None
    predictor_ready: bool = False


def _facts(name: str, mv: ModelVersion | None) -> VersionFacts:
    if mv is None:
        return VersionFacts(name, exists=False)
    return VersionFacts(name, exists=True, model=mv.spec.model, phase=mv.status.phase.value, reason=mv.status.reason)


def _output_kind(mv: ModelVersion | None) -> str | None:
    if mv is None:
        return None
    for signature in (mv.status.signature, mv.spec.signature):
        if signature is not None and signature.output is not None:
            return str(getattr(signature.output.kind, "value", signature.output.kind))
    return None


def _passed(status: ShadowStatus | None, version: str) -> bool:
    return status is not None and status.version == version and status.gate is not None \
        and status.gate.result == ShadowGateResult.passed


async def look(client: kube.Client, md: ModelDeployment, cfg: OperatorConfig, versions: Mapping[str, ModelVersion],
               deployments: Mapping[str, dict[str, Any]], wanted: str, now: dt.datetime) -> ShadowLook:
    """status.shadow and the gate's requests, judged against `wanted` (the version wanted before this reconcile's
    requests apply). Reads the router replicas' stats only while the shadow is mirrored."""
    spec = md.spec.shadow
    if spec is None:
        return ShadowLook()
    ns, name, serving = md.metadata.namespace, md.metadata.name, md.status.serving_version
    version, mv = spec.version, versions.get(spec.version)
    served = versions.get(serving) if serving else None
    model = md.spec.model or md.status.model or (served.spec.model if served is not None else None)
    kind = shadow_kind(_output_kind(mv))
    ready = pods.observe_deployment(deployments.get(names.predictor_name(name, version))).ready
    facts = _facts(version, mv)
    prev = md.status.shadow
    target = shadow_target(version, facts, kind, serving=serving, wanted=wanted, model=model, predictor_ready=ready,
                           promoted=_passed(prev, version))
    answers = None
    if target.mirror:
        answers = tuple((await client.router_stats(ns, names.selector_labels(name, "router"), cfg.router_port)).answers)

    from mlsteward_operator.modeldeployment import shadow as measure  # scipy: see the module docstring

    status, verdict = measure.shadow_status(
        prev, version=version, percent=spec.percent, phase=ShadowPhase(target.phase), message=target.message,
        kind=kind, promote=spec.promote, generation=md.metadata.generation, now=now, answers=answers)
    requests: tuple[Request, ...] = ()
    decisions: tuple[DecisionFacts, ...] = ()
    gate = status.gate
    if gate is not None and serving and spec.promote is not None and target.phase == "Mirroring":
        evidence = verdict or measure.evidence(status, spec.promote)
        if gate.result == ShadowGateResult.passed:
            requests = (shadow_request(name, version, serving, gate.since, gate.message, evidence.numbers,
                                       evidence.thresholds),)
        elif verdict is not None and verdict.result == ShadowGateResult.failed:
            decisions = (shadow_failed(serving, version, verdict.message, verdict.numbers, verdict.thresholds),)
    return ShadowLook(status, target, requests, decisions, answers, facts, model, ready)


def settle(seen: ShadowLook, serving: str | None, wanted: str) -> ShadowLook:
    """`seen` judged again against what this reconcile decided: the version wanted once its requests applied (a
    shadow promoted now is no longer mirrored; its predictor stays, as the rollout's target) and the version
    served by its plan (a first version served now lets the shadow's predictor start at once)."""
    if seen.status is None or seen.target is None or seen.facts is None:
        return seen
    status = seen.status
    target = shadow_target(status.version, seen.facts, seen.target.kind, serving=serving,
                           wanted=wanted, model=seen.model, predictor_ready=seen.predictor_ready,
                           promoted=_passed(status, status.version))
    if target == seen.target:
        return seen
    status = status.model_copy(update={"phase": ShadowPhase(target.phase), "message": target.message})
    return dataclasses.replace(seen, status=status, target=target)
