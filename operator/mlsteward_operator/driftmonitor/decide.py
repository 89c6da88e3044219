"""Pure analysis of a DriftMonitor (DESIGN §2, §3.5, §5): windows in, a verdict, a decision and a whole status out.

Three steps, each deterministic (times are passed in as `now`, nothing here reads a clock, the network or the API
server), so the controller can run them every `interval` and a restarted operator computes the same thing:

1. `analyse(dm, reference, windows, now)` (analysis.py) pools the predictor replicas' input windows, weighing each replica by the
   rows it saw (`pool_windows`), refuses to judge fewer than `spec.window.minSamples` rows, tests every selected
   feature against the reference profile with `drift_report` and returns the report in the shape of
   `status.lastReport`.
2. `decide(dm, verdict, now)` applies `consecutive` and `cooldown` to the breach streak read from status (level-based)
   and returns the actions to take as data, with the numbers behind them and the name of the retraining Job.
3. `compute_status(dm, verdict, decision, now)` returns the whole status to write.

Then the actions as data (actions.py, re-exported here), for the controller (reconcile.py) to execute after it
has recorded them in status:
`rollback_request` (status.servingRequest for the ModelDeployment) and `alert_payload` (the webhook's JSON). A
Retrain action is recorded as status.retrain under the Job name the retraining package derives, which then runs the
Job and the steps after it (retraining/).

The decision rule. A window is in breach when at least one feature drifts, and a feature drifts only when it has
at least `window.minSamples` values, an effect past its threshold (PSI, normalized Wasserstein or the KS statistic
for numbers; Jensen-Shannon or PSI for categories) and a p-value below `thresholds.pValue` after Holm's correction
across the tested features. Holm bounds the chance that a window without any shift is in breach by `pValue`; the
effect thresholds keep large windows from breaching on shifts too small to matter. An action runs when the latest
window is in breach, at least `consecutive` windows in a row have been in breach since the last action, and the last
action is at least `cooldown` old. Windows with too few rows give no verdict: they neither extend nor break a streak.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlsteward_operator.api.common import ConditionType, parse_duration
from mlsteward_operator.api.driftmonitor import (
    MAX_HISTORY,
    Action,
    DriftMonitor,
    DriftMonitorStatus,
    HistoryEntry,
    LastAction,
)
from mlsteward_operator.driftmonitor.analysis import DriftVerdict
from mlsteward_operator.kernel.conditions import grace_end, second, set_condition, set_kstatus, stamp
# The retraining workflow names (and runs) the Job; the monitor only says when to retrain and why.
from mlsteward_operator.retraining.decide import retrain_job_name

# How strongly an action outranks another when status.lastAction can hold only one of them.
_ACTION_RANK = {Action.alert: 0, Action.rollback: 1, Action.retrain: 2}


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftDecision:
    """What to do after a check, as data (the controller executes it).

    - `actions`: the actions to run now (empty unless `act`), in spec order.
    - `reason`: DriftConfirmed (act), CoolingDown (confirmed, suppressed by the cooldown), BreachPending (in breach,
      fewer than `consecutive` windows), NoDrift, ActionRecorded (see `job_name`), or the verdict's reason when
      there was no verdict.
    - `streak`: windows in breach in a row, including this one (status.consecutiveBreaches).
    - `since_action`: of those, the windows after the last action (what `consecutive` is compared with).
    - `breach_started`: time of the first window of the streak since the last action; it names the breach.
    - `job_name`: the retraining Job for this breach (Retrain only): the same breach always gives the same name.
      With reason ActionRecorded (this check was already acted on and recorded in status.lastAction), it is the
      recorded Job, which the controller applies again (a no-op when it exists) instead of acting twice.
    - `trigger`: `driftmonitor/<name>@<breach start>`, the lineage of a retrained ModelVersion.
    """

    act: bool
    reason: str
    message: str
    actions: tuple[Action, ...] = ()
    streak: int = 0
    since_action: int = 0
    consecutive: int = 1
    window_size: int = 0
    drifted_features: tuple[str, ...] = ()
    breach_started: dt.datetime | None = None
    cooldown_until: dt.datetime | None = None
    job_name: str | None = None
    trigger: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------
# 2. Decision
# --------------------------------------------------------------------------------------------------------------


def _history_with(status: DriftMonitorStatus, verdict: DriftVerdict) -> tuple[list[HistoryEntry], bool]:
    """status.history with this check appended (bounded), and whether it was already there.

    A check already recorded (same time) replaces its entry instead of adding one, so running the same check twice
    counts it once.
    """
    history = list(status.history)
    if verdict.report is None:
        return history, False
    entry = HistoryEntry(
        time=verdict.time, window_size=verdict.window_size,
        drifted_features=len(verdict.drifted_features), drifted=verdict.drifted,
    )
    repeated = bool(history) and history[-1].time == entry.time
    if repeated:
        history[-1] = entry
    else:
        history.append(entry)
    return history[-MAX_HISTORY:], repeated


def _trailing(entries: Sequence[HistoryEntry]) -> int:
    n = 0
    for e in reversed(entries):
        if not e.drifted:
            break
        n += 1
    return n


def streak_of(status: DriftMonitorStatus, verdict: DriftVerdict) -> tuple[int, list[HistoryEntry]]:
    """Windows in breach in a row, this check included, and the history that goes with it.

    Read from the history (level-based); status.consecutiveBreaches carries the count on when the streak is longer
    than the bounded history.
    """
    history, repeated = _history_with(status, verdict)
    if verdict.report is None:
        return status.consecutive_breaches, history
    run = _trailing(history)
    if run == len(history) == MAX_HISTORY and verdict.drifted:
        # The streak began before the oldest entry kept; the stored count knows how long it is.
        carried = status.consecutive_breaches + (0 if repeated else 1)
        run = max(run, carried)
    return run, history


def decide(dm: DriftMonitor, verdict: DriftVerdict, now: dt.datetime) -> DriftDecision:
    """Whether to act on this check, which actions, and why (see the module docstring for the rule)."""
    spec, prev = dm.spec, dm.status
    now = second(now)
    consecutive = spec.consecutive
    streak, history = streak_of(prev, verdict)
    last = prev.last_action
    cooldown = dt.timedelta(seconds=parse_duration(spec.cooldown))
    cooldown_until = second(last.time) + cooldown if last is not None else None

    if verdict.report is None:
        return DriftDecision(
            act=False, reason=verdict.reason, message=f"no verdict: {verdict.message}", streak=streak,
            consecutive=consecutive, window_size=verdict.window_size, cooldown_until=cooldown_until,
        )

    repeated = bool(prev.history) and prev.history[-1].time == verdict.time
    if repeated and last is not None and second(last.time) >= verdict.time:
        # This very check was already acted on and recorded (the same check run again, e.g. after a restart that
        # followed the status write): nothing new to do, but the controller should make sure the Job exists.
        return DriftDecision(
            act=False, reason="ActionRecorded", message=last.message, streak=streak, consecutive=consecutive,
            window_size=verdict.window_size, drifted_features=verdict.drifted_features,
            cooldown_until=cooldown_until, job_name=last.job,
            evidence=_evidence(dm, verdict, streak, 0),
        )

    since_action, breach_started = _since_action(history, last, streak)
    common: dict[str, Any] = dict(
        streak=streak, since_action=since_action, consecutive=consecutive, window_size=verdict.window_size,
        drifted_features=verdict.drifted_features, breach_started=breach_started, cooldown_until=cooldown_until,
        evidence=_evidence(dm, verdict, streak, since_action),
    )
    features = ", ".join(verdict.drifted_features)

    if not verdict.drifted:
        return DriftDecision(act=False, reason="NoDrift", message=verdict.message, **common)
    if since_action < consecutive:
        return DriftDecision(
            act=False, reason="BreachPending",
            message=f"{since_action} of {consecutive} windows in breach ({features}); no action yet", **common,
        )
    if cooldown_until is not None and now < cooldown_until:
        assert last is not None
        return DriftDecision(
            act=False, reason="CoolingDown",
            message=f"drift confirmed over {since_action} windows ({features}), but the last action "
            f"({last.type.value} at {_rfc3339(last.time)}) is within the cooldown of {spec.cooldown}; "
            f"next action possible at {_rfc3339(cooldown_until)}",
            **common,
        )

    assert breach_started is not None
    return _confirmed(dm, verdict, since_action, breach_started, common)


def _since_action(history: Sequence[HistoryEntry], last: LastAction | None,
                  streak: int) -> tuple[int, dt.datetime | None]:
    """The breaches that count towards the next action (those after the last one), and when the first began."""
    run = history[len(history) - _trailing(history):]
    after = [e for e in run if last is None or e.time > second(last.time)]
    if len(after) == len(run):
        since_action = streak  # no action, or one older than the whole streak (which may outrun the history)
    else:
        since_action = len(after)
    return since_action, (after[0].time if after else None)


def _confirmed(dm: DriftMonitor, verdict: DriftVerdict, since_action: int, breach_started: dt.datetime,
               common: dict[str, Any]) -> DriftDecision:
    """Drift confirmed past the cooldown: spec.actions run, the breach named by when it began."""
    name, consecutive = dm.metadata.name, dm.spec.consecutive
    actions = tuple(dm.spec.actions)
    trigger = f"driftmonitor/{name}@{_rfc3339(breach_started)}"
    job = retrain_job_name(name, breach_started) if Action.retrain in actions else None
    what = ", ".join(a.value for a in actions) or "nothing (spec.actions is empty)"
    message = (
        f"drift confirmed over {since_action} consecutive windows (threshold {consecutive}) in "
        f"{', '.join(verdict.drifted_features)}; {verdict.message}; actions: {what}"
        + (f"; retraining Job {job}" if job else "")
    )
    return DriftDecision(
        act=bool(actions), reason="DriftConfirmed", message=message, actions=actions, job_name=job,
        trigger=trigger, **common,
    )


def _evidence(dm: DriftMonitor, verdict: DriftVerdict, streak: int, since_action: int) -> dict[str, Any]:
    """The numbers behind a decision, for the Event, the webhook and the retraining Job's environment."""
    t = dm.spec.thresholds
    report = verdict.report
    return {
        "monitor": dm.metadata.name,
        "deployment": dm.spec.deployment,
        "version": report.version if report else None,
        "time": _rfc3339(verdict.time),
        "windowSize": verdict.window_size,
        "streak": streak,
        "sinceLastAction": since_action,
        "consecutive": dm.spec.consecutive,
        "cooldown": dm.spec.cooldown,
        "thresholds": {"pValue": t.p_value, "ks": t.ks, "wasserstein": t.wasserstein, "psi": t.psi,
                       "jensenShannon": t.jensen_shannon, "minSamples": dm.spec.window.min_samples},
        "features": {
            f.name: {"method": f.method, "statistic": f.statistic, "pValue": f.p_value, "psi": f.effect_size,
                     "drifted": f.drifted, "reason": verdict.feature_reasons.get(f.name, "")}
            for f in (report.features if report else ())
        },
    }


# --------------------------------------------------------------------------------------------------------------
# 3. Status
# --------------------------------------------------------------------------------------------------------------


def compute_status(
    dm: DriftMonitor, verdict: DriftVerdict, decision: DriftDecision, now: dt.datetime
) -> DriftMonitorStatus:
    """The whole status after this check: report, bounded history, streak, last action and conditions.

    A check without a verdict keeps the last report, history and driftDetected (they describe the last window that
    could be judged) and says why in the conditions. An action is recorded with its time and, for Retrain, the Job
    name, so that the controller can record it before creating the Job and a restart finds the Job to apply.
    """
    prev = dm.status
    generation = dm.metadata.generation
    now = second(now)
    _, history = streak_of(prev, verdict)

    last_action = prev.last_action
    if decision.act and decision.actions:
        strongest = max(decision.actions, key=lambda a: _ACTION_RANK[a])
        last_action = LastAction(type=strongest, time=now, message=decision.message[:4096], job=decision.job_name)

    conds = list(prev.conditions)
    if verdict.report is not None:
        ready = (True, "Checked", f"checked {verdict.window_size} rows from {len(verdict.replicas)} replica(s) at "
                 f"{_rfc3339(verdict.time)}")
    else:
        ready = (False, verdict.reason, verdict.message)
    conds = set_condition(conds, ConditionType.ready, *ready, generation=generation, now=now)

    acted_now = (last_action is not None and verdict.report is not None
                 and second(last_action.time) >= verdict.time)
    if decision.reason == "BreachPending":
        progressing = (True, "BreachPending", decision.message)
    elif acted_now:
        assert last_action is not None
        progressing = (True, "ActionTriggered", last_action.message)
    else:
        progressing = (False, "Watching", f"checking every {dm.spec.interval}")
    conds = set_condition(conds, ConditionType.progressing, *progressing, generation=generation, now=now)

    if verdict.reason == "UnknownFeatures":
        degraded = (True, "UnknownFeatures", verdict.message)
    elif verdict.report is not None and decision.streak >= dm.spec.consecutive and verdict.drifted:
        degraded = (True, "DriftConfirmed", decision.message)
    elif verdict.report is None:
        degraded = _kept_degraded(prev, verdict)
    else:
        degraded = (False, "NoConfirmedDrift", decision.message)
    conds = set_condition(conds, ConditionType.degraded, *degraded, generation=generation, now=now)
    conds = set_kstatus(conds, **_kstatus(ready, grace_end(dm.metadata.creation_timestamp, now)),
                        generation=generation, now=now)

    return DriftMonitorStatus(
        observed_generation=generation,
        conditions=conds,
        last_report=verdict.report if verdict.report is not None else prev.last_report,
        history=history,
        drift_detected=verdict.drifted if verdict.report is not None else prev.drift_detected,
        consecutive_breaches=decision.streak,
        last_action=last_action,
    )


# No verdict for a reason only a change of spec (or of a referenced object) fixes.
_STALLED = ("UnknownFeatures", "DeploymentNotFound", "VersionNotFound")
# Of which a reference to an object a GitOps sync may apply with the monitor: waited for a while (REFERENCE_GRACE).
MISSING = ("DeploymentNotFound", "VersionNotFound")


def _kstatus(ready: tuple[bool, str, str], grace: dt.datetime | None) -> dict[str, tuple[str, str] | None]:
    """Reconciling and Stalled (kstatus, docs/gitops.md): a check with a verdict is the steady state (Current); a
    bad reference or feature list is Stalled; waiting for traffic, windows or a served version is Reconciling, and
    so is a missing reference until `grace` (the end of REFERENCE_GRACE after the monitor's creation, or None)."""
    if ready[0]:
        return {"reconciling": None, "stalled": None}
    if ready[1] in MISSING and grace is not None:
        return {"reconciling": (ready[1], f"{ready[2]} yet; waiting for it until {stamp(grace)} (it may be applied "
                                          "in the same sync), then Stalled"), "stalled": None}
    if ready[1] in _STALLED:
        return {"reconciling": None, "stalled": (ready[1], ready[2])}
    return {"reconciling": (ready[1], ready[2]), "stalled": None}


def _kept_degraded(prev: DriftMonitorStatus, verdict: DriftVerdict) -> tuple[bool, str, str]:
    # Without a verdict nothing new is known about drift: keep what the last judged window said.
    old = prev.condition(ConditionType.degraded)
    if old is not None and old.status == "True" and old.reason == "DriftConfirmed":
        return True, old.reason, old.message
    return False, "NoConfirmedDrift", f"no verdict: {verdict.message}"


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _rfc3339(t: dt.datetime) -> str:
    return second(t).strftime("%Y-%m-%dT%H:%M:%SZ")


# The actions as data live in actions.py; the controller reads them here, with the decision they follow.
from mlsteward_operator.driftmonitor.actions import (  # noqa: E402
    alert_payload,
    check_due,
    report_numbers,
    rollback_request,
    start_retrain,
)

__all__ = ["DriftDecision", "alert_payload", "check_due", "compute_status", "decide", "report_numbers",
           "rollback_request", "start_retrain", "streak_of"]
