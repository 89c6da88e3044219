"""The Experiment controller: poll the routers, merge, analyse, decide, write status (DESIGN §3.4).

The split itself is the ModelDeployment's: its reconcile renders a predictor per arm and the router configuration
(strategy, sticky key, weights, and each arm's merged outcomes as the bandits' priors) while the Experiment is the
oldest open one on it and the deployment is settled with the control version served (reconcile.py). This
reconcile waits for that (phase Pending, with the reason), then on every look:

1. reads `/v1/router/stats` from every ready router pod (`kube.Client.router_stats`);
2. adds what each router process counted since the last look to the running totals in status
   (`decide.merge_router_stats`: restart-safe for routers and for the operator);
3. analyses and decides (`analysis.analyse`, `decide.decide`) and writes the whole status once;
4. on a conclusive winner with `onSuccess: Promote`, puts a ServingRequest in the same status write. The
   ModelDeployment's reconcile applies it (status.override and a Promote decision); nothing writes a spec.

The outcome compared is the feedback joined by the router for metrics `reward` and `accuracy`, each request's
error (0/1) for `error-rate` and each request's latency in ms for `latency`.

Everything a look needs is in status, so an operator restarted between looks continues with the same totals, and a
look repeated after a failed status write counts nothing twice (the checkpoints).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from mlsteward_runtime.contracts import RouterStats, VersionStats

from mlsteward_operator import kube
from mlsteward_operator.kernel import names, pods
from mlsteward_operator.api.common import MAX_MESSAGE, ConditionType, ServingRequest, ServingRequestKind
from mlsteward_operator.api.experiment import Experiment, ExperimentPhase, ExperimentStatus, MetricName
from mlsteward_operator.api.modeldeployment import ModelDeployment
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel.conditions import grace_end, second, set_condition, set_kstatus, stamp
from mlsteward_operator.kernel.status import parse_object, status_changed

log = logging.getLogger(__name__)

GROUP_VERSION = "mlsteward.io/v1alpha1"
FINAL = (ExperimentPhase.concluded, ExperimentPhase.stopped)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def metric_view(report: RouterStats, metric: MetricName) -> RouterStats:
    """The router's counters with the outcome the metric compares in the outcome fields.

    reward and accuracy: the feedback outcomes as recorded. error-rate: one 0/1 outcome per request (1 = error).
    latency: one outcome per request, its latency in ms (sum and sum of squares from the router).
    """
    if metric in (MetricName.reward, MetricName.accuracy):
        return report
    versions: dict[str, VersionStats] = {}
    for name, vs in report.versions.items():
        if metric == MetricName.error_rate:
            n, total, total_sq = vs.requests, float(vs.errors), float(vs.errors)
            # 0/1 outcomes: M2 = e (1 - e/n) exactly.
            mean, m2 = (total / n, total - total * total / n) if n else (None, None)
        else:
            n, total, total_sq = vs.requests, vs.latency_sum_ms, vs.latency_sumsq_ms
            mean, m2 = vs.latency_mean_ms, vs.latency_m2_ms
        versions[name] = vs.model_copy(update={"outcomes": n, "outcome_sum": total, "outcome_sumsq": total_sq,
                                               "outcome_mean": mean, "outcome_m2": m2})
    return report.model_copy(update={"versions": versions})


def _pending(exp: Experiment, reason: str, message: str, now: dt.datetime, *,
             stalled: bool = False) -> ExperimentStatus:
    prev, generation = exp.status, exp.metadata.generation
    message = message[:MAX_MESSAGE]
    conds = set_condition(list(prev.conditions), ConditionType.ready, False, reason, message,
                          generation=generation, now=now)
    conds = set_condition(conds, ConditionType.progressing, True, reason, message, generation=generation, now=now)
    conds = set_condition(conds, ConditionType.degraded, False, "AsExpected", "nothing is wrong with the experiment",
                          generation=generation, now=now)
    # A missing ModelDeployment past its grace is a bad reference (Stalled); every other wait ends by itself.
    bad = (reason, message) if stalled else None
    conds = set_kstatus(conds, reconciling=None if bad else (reason, message), stalled=bad,
                        generation=generation, now=now)
    return prev.model_copy(update={"phase": ExperimentPhase.pending, "observed_generation": generation,
                                   "conditions": conds})


def _final(exp: Experiment, now: dt.datetime) -> dict[str, Any] | None:
    """A Concluded or Stopped experiment keeps its results; observedGeneration (root and conditions) follows the
    spec, and a Stopped one is Stalled (also one stopped before that condition existed). None when unchanged."""
    prev, generation = exp.status, exp.metadata.generation
    conds = [c.model_copy(update={"observed_generation": generation}) for c in prev.conditions]
    ready = prev.condition(ConditionType.ready)
    stalled = None
    if prev.phase == ExperimentPhase.stopped:
        stalled = (ready.reason, ready.message) if ready else ("Stopped", "the experiment stopped")
    conds = set_kstatus(conds, reconciling=None, stalled=stalled, generation=generation, now=now)
    if prev.observed_generation == generation and conds == prev.conditions:
        return None
    new = prev.model_copy(update={"observed_generation": generation, "conditions": conds}).to_k8s()
    return {"observedGeneration": generation, "conditions": new["conditions"]}


def missing_deployment(exp: Experiment, now: dt.datetime) -> ExperimentStatus:
    """Pending on a spec.deployment that does not exist: a wait (Reconciling) for REFERENCE_GRACE after the
    Experiment's creation, since a GitOps sync may apply the ModelDeployment with it, then Stalled. The operator
    sees the ModelDeployment appear (a watch event wakes this reconcile), and schedule.py wakes it when the grace
    ends."""
    md_name = exp.spec.deployment
    until = grace_end(exp.metadata.creation_timestamp, now)
    if until is None:
        return _pending(exp, "DeploymentNotFound", f"ModelDeployment {md_name} does not exist", now, stalled=True)
    return _pending(exp, "DeploymentNotFound", f"ModelDeployment {md_name} does not exist yet; waiting for it until "
                    f"{stamp(until)} (it may be applied in the same sync), then Stalled", now)


def _why_waiting(exp: Experiment, md: ModelDeployment) -> tuple[str, str]:
    name, control = exp.spec.deployment, exp.spec.variants[0].version
    if md.status.experiment and md.status.experiment != exp.metadata.name:
        return "DeploymentBusy", f"ModelDeployment {name} runs Experiment {md.status.experiment}; this one waits"
    if md.status.serving_version != control:
        return ("ControlNotServed", f"the control version {control} is not what ModelDeployment {name} serves "
                f"({md.status.serving_version or 'nothing yet'}); the control must be the served version")
    return ("WaitingForDeployment", f"waiting for ModelDeployment {name} to split the traffic (its rollout must be "
            "settled and every arm's ModelVersion Ready)")


async def reconcile_experiment(body: Mapping[str, Any], client: kube.Client, cfg: OperatorConfig,
                               now: dt.datetime | None = None) -> dict[str, Any] | None:
    """One look at an Experiment (module docstring). Returns the status to write, or None when unchanged."""
    now = now or _now()
    exp: Experiment = parse_object(Experiment, body)
    prev = exp.status
    if prev.phase in FINAL:
        return _final(exp, now)
    ns, md_name = exp.metadata.namespace, exp.spec.deployment
    arms = {v.version: v.name for v in exp.spec.variants}
    weights = {v.version: v.weight for v in exp.spec.variants}

    md_obj = await client.get(GROUP_VERSION, "ModelDeployment", ns, md_name)
    if md_obj is None:
        return await _write(body, exp, missing_deployment(exp, now), client)
    md = ModelDeployment.model_validate(md_obj)
    started = prev.phase == ExperimentPhase.running and prev.started_at is not None
    if not started:
        if md.status.experiment != exp.metadata.name:
            new = _pending(exp, *_why_waiting(exp, md), now)
            return await _write(body, exp, new, client)
        router = md.status.router
        served = pods.parse_traffic(router.traffic or "") if router is not None else {}
        if served != weights or router is None or router.replicas == 0 or router.current < router.replicas:
            new = _pending(exp, "WarmingUp", f"ModelDeployment {md_name} is starting the arms' predictors and "
                           "moving the router to the split", now)
            return await _write(body, exp, new, client)

    # Imported on the first running Experiment rather than with the operator: the analysis needs scipy, which is
    # slow to import, and an operator with no Experiment never pays for it.
    from mlsteward_operator.experiment import decide
    from mlsteward_operator.experiment.analysis import analyse

    # Running: the split took effect at startedAt; router processes older than that count from their first read.
    since = (prev.started_at or second(now)).timestamp()
    report = await client.router_stats(ns, names.selector_labels(md_name, "router"), cfg.router_port)
    reports = [metric_view(r, exp.spec.metric.name) for r in report.answers]
    totals, checkpoints = decide.merge_router_stats(prev, reports, arms=arms, since=since)
    analysis = analyse(exp, totals, now)
    decision = decide.decide(exp, analysis, now)
    new = decide.compute_status(exp, analysis, decision, now, checkpoints=checkpoints)
    if report.failures and decision.phase == ExperimentPhase.running:
        log.info("Experiment %s/%s: %d router replica(s) did not answer; their counts wait for the next look",
                 ns, exp.metadata.name, len(report.failures))
    if decision.promotion is not None and new.serving_request is None:
        d = decision.promotion.decision
        new = new.model_copy(update={"serving_request": ServingRequest(
            kind=ServingRequestKind.promote, version=decision.promotion.version,
            from_version=md.status.serving_version or exp.spec.variants[0].version, time=d.time,
            reason=d.reason, message=d.message[:4096], numbers=dict(d.numbers), thresholds=dict(d.thresholds),
        )})
    return await _write(body, exp, new, client, decision_message=decision.message)


async def _write(body: Mapping[str, Any], exp: Experiment, new: ExperimentStatus, client: kube.Client, *,
                 decision_message: str | None = None) -> dict[str, Any] | None:
    """Events for a change of phase, and the status to patch (None when nothing changed)."""
    old_phase, new_phase = exp.status.phase, new.phase
    if new_phase != old_phase and new_phase is not None:
        ready = new.condition(ConditionType.ready)
        reason = {ExperimentPhase.running: "ExperimentStarted"}.get(new_phase, ready.reason if ready else "")
        message = decision_message or (ready.message if ready else "")
        if new_phase == ExperimentPhase.running:
            split = ", ".join(f"{v.name} ({v.version}) {v.weight}%" for v in exp.spec.variants)
            message = f"traffic split between {split}"
        await client.event(dict(body), reason=reason or new_phase.value, message=message,
                           type_="Warning" if new_phase == ExperimentPhase.stopped else "Normal")
    if not status_changed(exp.status, new):
        return None
    out = new.to_k8s()
    out.setdefault("checkpoints", [])
    return out
