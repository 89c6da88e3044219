"""The DriftMonitor reconcile: read the world through kube, judge with decide.py, record, then act.

`DriftMonitors.reconcile(body, client, cfg, now)` follows the conventions of every reconcile: it parses the object,
raises only `InvalidSpec` and `NotReady`, and returns the status to patch (or None when nothing changed). The
controller calls it on events and at the deadline `schedule.next_look` computes; a check runs only when one is due
(`drift.check_due`). One `DriftMonitors` belongs to the composition root: it holds the per-monitor locks, the background alert deliveries
and the retraining workflow, so nothing here is module state.

A check: the ModelDeployment's `status.servingVersion`, that ModelVersion's reference profile (spec.reference, else
the one its validation computed; digest checked, cached by sha256), and `GET /v1/drift/window` of every ready
predictor pod of that version. Then `analysis.analyse`, `drift.decide`, `drift.compute_status`, metrics and an Event.

Record before acting. When a check decides to act, the new status (lastAction, servingRequest, retrain with the
Job's deterministic name, which the retraining package derives) is written to the API server first, then the
actions run: an operator that restarts in between finds the action recorded and never runs it twice.

The monitor says "retrain"; the retraining package (retraining/reconcile.py) runs it: while a retraining is active,
every call hands the status to `Retraining.follow`, which creates the Job once under the recorded name, registers
the retrained ModelVersion and does what spec.onRetrained says, one step at a time.

The other retraining triggers (retraining/decide.py) run after the check: spec.schedule on every call (its cron
times are finer than the interval), spec.performance with the check (`GET /v1/stats` of every ready predictor pod
of the served version). A trigger that fires records status.lastAction, status.retrain and its own status field
(lastScheduledRun, performance) first, like a drift action.

Alerts post to the webhook in a background task with bounded retries, so a slow receiver never holds up a reconcile;
a final failure is an Event."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from mlsteward_operator import kube
from mlsteward_operator.api.common import API_VERSION, ConditionType
from mlsteward_operator.api.driftmonitor import (
    Action,
    DriftMonitor,
    DriftMonitorStatus,
)
from mlsteward_operator.api.modeldeployment import ModelDeployment
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.driftmonitor import analysis
from mlsteward_operator.driftmonitor import decide as drift
from mlsteward_operator.kernel import names
from mlsteward_operator.kernel.conditions import second
from mlsteward_operator.kernel.metrics import drift_metrics
from mlsteward_operator.kernel.status import parse_object, status_changed, status_patch
from mlsteward_operator.kernel.tasks import Background, KeyedLocks
from mlsteward_operator.retraining import decide as triggers
from mlsteward_operator.retraining.reconcile import Retraining

log = logging.getLogger(__name__)

# Nested status objects that are replaced whole (conventions.status_patch).
_REPLACED = ("retrain", "servingRequest", "lastAction")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _wire(new: DriftMonitorStatus) -> dict[str, Any]:
    """The status as a merge patch: nested objects replaced whole (see _REPLACED)."""
    return status_patch(new, None, _REPLACED)


class DriftMonitors:
    """The DriftMonitor controller's state, owned by the composition root (see the module docstring)."""

    def __init__(self, retraining: Retraining | None = None) -> None:
        self.retraining = retraining or Retraining()
        # One reconcile at a time per monitor: the timer and a spec change may fire together, and two concurrent
        # checks would both decide on the same status.
        self.locks = KeyedLocks()
        self.deliveries = Background()

    async def reconcile(self, body: Mapping[str, Any], client: kube.Client, cfg: OperatorConfig,
                        now: dt.datetime | None = None) -> dict[str, Any] | None:
        """Checks drift when due, records and runs the actions, and moves an active retraining on by one step."""
        now = second(now or _now())
        dm: DriftMonitor = parse_object(DriftMonitor, body)
        async with self.locks.hold(dm.metadata.uid or f"{dm.metadata.namespace}/{dm.metadata.name}"):
            # The newest status, not the one in the event that woke us: a status written a moment ago by this
            # reconcile may not have reached kopf's copy yet, and deciding on an older one could act twice.
            fresh = await client.get(API_VERSION, "DriftMonitor", dm.metadata.namespace, dm.metadata.name)
            if fresh is None:
                return None
            dm = parse_object(DriftMonitor, fresh)
            new = dm.status
            due = drift.check_due(dm, now)
            if due:
                new = await _check(dm, fresh, client, cfg, now, self.deliveries)
            if dm.spec.schedule is not None or (due and dm.spec.performance is not None):
                new = await _triggers(dm.model_copy(update={"status": new}), fresh, client, cfg, now, check=due)
            if triggers.retrain_active(new):
                new = await self.retraining.follow(dm.model_copy(update={"status": new}), fresh, client, now)
            if not status_changed(dm.status, new):
                return None
            return _wire(new)


# --------------------------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------------------------


async def _observe(dm: DriftMonitor, client: kube.Client, cfg: OperatorConfig,
                   now: dt.datetime) -> tuple[analysis.DriftVerdict, str | None]:
    """The verdict of this check and the version served, reading the deployment, the profile and the windows."""
    ns = dm.metadata.namespace
    md_obj = await client.get(API_VERSION, "ModelDeployment", ns, dm.spec.deployment)
    if md_obj is None:
        return analysis.no_verdict(now, "DeploymentNotFound",
                                f"ModelDeployment {dm.spec.deployment} (spec.deployment) does not exist"), None
    md = ModelDeployment.model_validate(md_obj)
    serving = md.status.serving_version
    if not serving:
        return analysis.no_verdict(now, "NotServing", f"ModelDeployment {dm.spec.deployment} serves no version yet; "
                                "waiting for it to serve"), None
    mv_obj = await client.get(API_VERSION, "ModelVersion", ns, serving)
    if mv_obj is None:
        return analysis.no_verdict(now, "VersionNotFound", f"ModelVersion {serving} does not exist"), serving
    mv = ModelVersion.model_validate(mv_obj)
    ref = mv.spec.reference or mv.status.reference
    if ref is None:
        return analysis.no_verdict(now, "NoReference", f"ModelVersion {serving} has no reference profile (neither "
                                "spec.reference nor one computed by its validation)"), serving
    try:
        profile = await client.fetch_profile(ref.uri, ref.sha256)
    except kube.ProfileError as exc:
        return analysis.no_verdict(now, f"Reference{exc.reason}", exc.message), serving
    report = await client.drift_windows(ns, names.selector_labels(dm.spec.deployment, "predictor", serving),
                                        cfg.predictor_port, timeout_s=cfg.drift_poll_timeout_seconds)
    if report.pods == 0:
        return analysis.no_verdict(now, "NoWindows", f"no ready predictor pod of {serving} in ModelDeployment "
                                f"{dm.spec.deployment}; waiting for pods"), serving
    # A predictor reports its ModelVersion's spec.version (semver); status and the verdict name the ModelVersion.
    windows = [w.model_copy(update={"version": serving}) for w in report.answers if w.version == mv.spec.version]
    verdict = analysis.analyse(dm, profile, windows, now, version=serving)
    if report.failures and verdict.report is None:
        verdict = dataclasses.replace(verdict, message=f"{verdict.message}; {len(report.failures)} of "
                                      f"{report.pods} pod(s) did not answer: {'; '.join(report.failures)[:512]}")
    return verdict, serving


async def _check(dm: DriftMonitor, body: dict[str, Any], client: kube.Client, cfg: OperatorConfig,
                 now: dt.datetime, deliveries: Background) -> DriftMonitorStatus:
    ns, name = dm.metadata.namespace or "", dm.metadata.name
    verdict, serving = await _observe(dm, client, cfg, now)
    decision = drift.decide(dm, verdict, now)
    if decision.act and Action.retrain in decision.actions and triggers.retrain_active(dm.status):
        # At most one retraining per monitor: the one running keeps going and this breach starts none.
        assert dm.status.retrain is not None
        others = tuple(a for a in decision.actions if a != Action.retrain)
        decision = dataclasses.replace(
            decision, actions=others, act=bool(others), job_name=None,
            message=f"{decision.message}; no second retraining while Job {dm.status.retrain.job} is active")
    new = drift.compute_status(dm, verdict, decision, now).model_copy(update={
        "last_check": now, "serving_request": dm.status.serving_request, "retrain": dm.status.retrain,
        "last_scheduled_run": dm.status.last_scheduled_run, "next_scheduled_run": dm.status.next_scheduled_run,
        "performance": dm.status.performance})

    metrics = drift_metrics()
    metrics.checks.labels(ns, name, verdict.reason).inc()
    if verdict.report is not None:
        metrics.record(ns, name, ((f.name, f.method, f.statistic, f.p_value, f.effect_size, f.drifted)
                                  for f in verdict.report.features), verdict.window_size, decision.streak)

    if decision.act:
        if Action.rollback in decision.actions and serving:
            new = new.model_copy(update={"serving_request": drift.rollback_request(dm, verdict, decision, serving,
                                                                                   now)})
        if Action.retrain in decision.actions:
            new = new.model_copy(update={"retrain": drift.start_retrain(decision, serving, now)})
        # Recorded before acting (see the module docstring).
        if await client.patch_status(API_VERSION, "DriftMonitor", ns, name, _wire(new)) is None:
            return dm.status

    await _verdict_event(dm, body, client, verdict, decision)
    if decision.act:
        await _act(dm, body, client, cfg, verdict, decision, new, deliveries)
    return new


async def _verdict_event(dm: DriftMonitor, body: dict[str, Any], client: kube.Client, verdict: analysis.DriftVerdict,
                         decision: drift.DriftDecision) -> None:
    """One Event per verdict; a check without a verdict posts one only when its reason is new."""
    if verdict.report is None:
        ready = dm.status.condition(ConditionType.ready)
        if ready is not None and ready.reason == verdict.reason:
            return
        await _event(client, body, verdict.reason, verdict.message, warning=False)
        return
    text = verdict.message if decision.reason in ("NoDrift", "DriftConfirmed") else \
        f"{verdict.message}; {decision.message}"
    await _event(client, body, verdict.reason, text, warning=verdict.drifted)


async def _act(dm: DriftMonitor, body: dict[str, Any], client: kube.Client, cfg: OperatorConfig,
               verdict: analysis.DriftVerdict, decision: drift.DriftDecision, new: DriftMonitorStatus,
               deliveries: Background) -> None:
    ns, name = dm.metadata.namespace or "", dm.metadata.name
    await _event(client, body, "DriftConfirmed", decision.message, warning=True)
    for action in decision.actions:
        drift_metrics().actions.labels(ns, name, action.value).inc()
    if Action.alert in decision.actions:
        if dm.spec.notify is not None:
            deliveries.start(_deliver(dm, body, client, cfg, drift.alert_payload(dm, verdict, decision)),
                             name=f"mlsteward-alert-{dm.metadata.name}")
        else:
            await _event(client, body, "AlertRecorded", "Alert: no spec.notify webhook; this Event is the alert",
                         warning=True)
    if Action.rollback in decision.actions:
        req = new.serving_request
        if req is not None:
            await _event(client, body, "RollbackRequested", f"Asked ModelDeployment {dm.spec.deployment} to stop serving "
                         f"{req.from_version} and serve its previous stable version (status.servingRequest)",
                         warning=True)
        else:
            await _event(client, body, "RollbackSkipped", "Rollback: the ModelDeployment serves no version", warning=True)
    if Action.retrain in decision.actions and new.retrain is not None:
        await _event(client, body, "RetrainDecided", f"Retraining {new.retrain.parent or 'the model'} in Job "
                     f"{new.retrain.job} ({new.retrain.trigger})", warning=False)


async def _deliver(dm: DriftMonitor, body: dict[str, Any], client: kube.Client, cfg: OperatorConfig,
                   payload: dict[str, Any]) -> None:
    assert dm.spec.notify is not None
    ref = dm.spec.notify.webhook_secret_ref
    failure = await client.post_webhook_in_secret(dm.metadata.namespace or "", ref.name, ref.key, payload,
                                                  attempts=cfg.webhook_attempts, backoff_s=cfg.webhook_backoff_seconds)
    if failure is None:
        await _event(client, body, "AlertSent", f"Posted the drift alert to the webhook in Secret {ref.name}", warning=False)
    else:
        await _event(client, body, "AlertNotSent", failure, warning=True)


# --------------------------------------------------------------------------------------------------------------
# The schedule and the performance floor
# --------------------------------------------------------------------------------------------------------------


async def _served(dm: DriftMonitor, client: kube.Client) -> tuple[str | None, str | None]:
    """The ModelVersion the ModelDeployment serves and its spec.version (what its predictors report), or None."""
    ns = dm.metadata.namespace
    md_obj = await client.get(API_VERSION, "ModelDeployment", ns, dm.spec.deployment)
    serving = ModelDeployment.model_validate(md_obj).status.serving_version if md_obj else None
    if not serving:
        return None, None
    mv_obj = await client.get(API_VERSION, "ModelVersion", ns, serving)
    return serving, ModelVersion.model_validate(mv_obj).spec.version if mv_obj else None


async def _triggers(dm: DriftMonitor, body: dict[str, Any], client: kube.Client, cfg: OperatorConfig,
                    now: dt.datetime, *, check: bool) -> DriftMonitorStatus:
    """spec.schedule (every call) and spec.performance (when `check`): record, then start at most one retraining."""
    spec, st = dm.spec, dm.status
    ns, name = dm.metadata.namespace or "", dm.metadata.name
    active = st.retrain.job if triggers.retrain_active(st) and st.retrain is not None else None
    schedule_due = spec.schedule is not None and \
        triggers.due_run(spec.schedule, triggers.schedule_since(dm, now), now) is not None
    serving, semver = await _served(dm, client) if schedule_due or (check and spec.performance) else (None, None)
    update: dict[str, Any] = {}
    decided: list[triggers.TriggerDecision] = []
    fired: triggers.TriggerDecision | None = None

    if spec.schedule is not None:
        d = triggers.decide_schedule(dm, now, active_job=active, serving=serving)
        update["next_scheduled_run"] = triggers.next_run(spec.schedule, now)
        if d.record:
            update["last_scheduled_run"] = d.time
            decided.append(d)
        fired = d if d.fire else None
    if check and spec.performance is not None:
        stats: list[Any] = []
        if serving:
            report = await client.predictor_stats(ns, names.selector_labels(spec.deployment, "predictor", serving),
                                                  cfg.predictor_port, timeout_s=cfg.drift_poll_timeout_seconds)
            stats = [s for s in report.answers if semver is None or s.version == semver]
        d, reading = triggers.decide_performance(dm, stats, serving, now, serving=serving,
                                                 active_job=fired.job_name if fired else active)
        update["performance"] = reading
        if d.record:
            decided.append(d)
        if d.fire:
            fired = d

    new = st.model_copy(update=update)
    if fired is not None:
        last, retrain = triggers.start(dm, fired, serving, now)
        new = new.model_copy(update={"last_action": last, "retrain": retrain})
        # Recorded before acting (see the module docstring).
        if await client.patch_status(API_VERSION, "DriftMonitor", ns, name, _wire(new)) is None:
            return st
    for d in decided:
        await _event(client, body, d.reason, d.message, warning=d.reason == "PerformanceBelowFloor"
                     or d.reason == "BelowFloorPending")
    if fired is not None and new.retrain is not None:
        drift_metrics().actions.labels(ns, name, Action.retrain.value).inc()
        await _event(client, body, "RetrainDecided", f"Retraining {new.retrain.parent or 'the model'} in Job "
                     f"{new.retrain.job} ({new.retrain.trigger})", warning=False)
    return new


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------

async def _event(client: kube.Client, body: Mapping[str, Any], reason: str, message: str, *, warning: bool) -> None:
    await client.event(dict(body), reason=reason, message=message, type_="Warning" if warning else "Normal")
