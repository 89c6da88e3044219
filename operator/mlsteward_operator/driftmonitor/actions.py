"""A DriftMonitor's actions as data (pure): whether a check is due, the numbers behind a decision, the Rollback's
ServingRequest, the alert webhook's body and the status.retrain a Retrain starts with. The controller
(reconcile.py) executes them after it has recorded the decision in status (see decide.py)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from mlsteward_operator.api.common import ServingRequest, ServingRequestKind, parse_duration
from mlsteward_operator.api.driftmonitor import DriftMonitor, RetrainPhase, RetrainStatus
from mlsteward_operator.driftmonitor.analysis import DriftVerdict
from mlsteward_operator.kernel.conditions import second

if TYPE_CHECKING:  # decide.py re-exports these functions: it is imported first
    from mlsteward_operator.driftmonitor.decide import DriftDecision


def check_due(dm: DriftMonitor, now: dt.datetime) -> bool:
    """Whether a check is due: never checked, the spec changed since the last one, the last check waits for a
    reference not applied yet (decide.MISSING, within its grace: every wake-up looks again, the referenced object's
    creation among them), or `spec.interval` has passed since the last check (with or without a verdict). The
    operator's timer fires more often than that."""
    st = dm.status
    if st.observed_generation is None or st.observed_generation != dm.metadata.generation:
        return True
    if waiting_for_reference(dm):
        return True
    times = [second(t) for t in (st.last_check, st.last_report.time if st.last_report else None) if t is not None]
    if not times:
        return True
    return second(now) >= max(times) + dt.timedelta(seconds=parse_duration(dm.spec.interval))


def waiting_for_reference(dm: DriftMonitor) -> bool:
    """The last check found spec.deployment or its served ModelVersion missing, within the grace (Reconciling)."""
    reconciling = dm.status.condition("Reconciling")
    return reconciling is not None and reconciling.reason in ("DeploymentNotFound", "VersionNotFound")


def report_numbers(dm: DriftMonitor, verdict: DriftVerdict, decision: DriftDecision) -> tuple[dict[str, float],
                                                                                            dict[str, float]]:
    """(numbers, thresholds) of a decision, flat, for a ServingRequest and the ModelDeployment's decision log."""
    numbers: dict[str, float] = {
        "windowSize": float(verdict.window_size),
        "consecutiveBreaches": float(decision.streak),
        "driftedFeatures": float(len(verdict.drifted_features)),
    }
    for f in verdict.report.features if verdict.report else ():
        if f.drifted:
            if f.statistic is not None:
                numbers[f"{f.name}.{f.method}"] = f.statistic
            if f.p_value is not None:
                numbers[f"{f.name}.pValue"] = f.p_value
            if f.effect_size is not None:
                numbers[f"{f.name}.psi"] = f.effect_size
    t = dm.spec.thresholds
    thresholds = {"pValue": t.p_value, "ks": t.ks, "wasserstein": t.wasserstein, "psi": t.psi,
                  "jensenShannon": t.jensen_shannon, "consecutive": float(dm.spec.consecutive),
                  "minSamples": float(dm.spec.window.min_samples)}
    return numbers, thresholds


def rollback_request(dm: DriftMonitor, verdict: DriftVerdict, decision: DriftDecision, serving: str,
                     now: dt.datetime) -> ServingRequest:
    """status.servingRequest of the Rollback action: back to the ModelDeployment's previous stable version, and
    only while `serving` (served when drift was confirmed) is still served."""
    numbers, thresholds = report_numbers(dm, verdict, decision)
    return ServingRequest(
        kind=ServingRequestKind.rollback, version=None, from_version=serving, time=second(now),
        reason="DriftDetected", message=decision.message[:4096], numbers=numbers, thresholds=thresholds,
    )


def alert_payload(dm: DriftMonitor, verdict: DriftVerdict, decision: DriftDecision) -> dict[str, Any]:
    """The webhook body: Slack-compatible (`text`) plus the structured facts a receiver can route on."""
    ns = dm.metadata.namespace or ""
    text = (f"Drift confirmed by DriftMonitor {ns}/{dm.metadata.name} on ModelDeployment {dm.spec.deployment}"
            f"{' (version ' + verdict.report.version + ')' if verdict.report and verdict.report.version else ''}: "
            f"{', '.join(decision.drifted_features)} drifted over {decision.since_action} consecutive windows. "
            f"Actions: {', '.join(a.value for a in decision.actions)}.")
    return {
        "text": text,
        "namespace": ns,
        "monitor": dm.metadata.name,
        "deployment": dm.spec.deployment,
        "version": verdict.report.version if verdict.report else None,
        "reason": decision.reason,
        "actions": [a.value for a in decision.actions],
        "driftedFeatures": list(decision.drifted_features),
        "message": decision.message,
        "evidence": dict(decision.evidence),
    }


def start_retrain(decision: DriftDecision, parent: str | None, now: dt.datetime) -> RetrainStatus:
    """status.retrain of a Retrain action, recorded before the Job is created (the Job name is the breach's)."""
    assert decision.job_name is not None and decision.trigger is not None
    return RetrainStatus(job=decision.job_name, parent=parent, trigger=decision.trigger,
                         phase=RetrainPhase.running, started_at=second(now))
