"""Pure retraining triggers of a DriftMonitor besides drift: `spec.schedule` and `spec.performance`.

Like driftmonitor/decide.py, nothing here reads a clock, the network or the API server: the reconciles pass
`now`, the predictors' `GET /v1/stats` answers and whether a retraining is active, and gets back a decision as data
and the status fields to record before it acts.

Both triggers share the Retrain action's rules with drift: the cooldown since status.lastAction, at most one active
retraining per monitor, a deterministic Job name (`<monitor>-retrain-<trigger>-<UTC time>`, the time being the cron
time or the first check below the floor, so a restarted operator that decides again derives the same name) and the
loop after the Job (spec.onRetrained). The trigger (`schedule/<monitor>@<time>` or `performance/<monitor>@<time>`)
becomes status.retrain.trigger and the retrained ModelVersion's lineage.trigger.

The schedule. A run is due when a cron time t has passed since the last one handled (status.lastScheduledRun, or
the monitor's creation when it never ran): since < t <= now. After downtime only the latest such t counts, so a week
of missed daily runs is one run. A due run within the cooldown or while a retraining is active is skipped, not
postponed (like a CronJob with concurrencyPolicy Forbid): the model was just retrained. Either way t is recorded.

The performance floor. Each check pools the served version's predictors: the metric (accuracy or mean reward) of each
replica weighed by its feedback count. With fewer than `minSamples` pooled feedback there is no verdict (the run of
breaches neither grows nor breaks); below `floor` extends the run, at or above it ends the run. A retraining starts
when the run reaches `spec.consecutive`, outside the cooldown and with no retraining active; starting one resets the
run, so the next needs `consecutive` new checks below the floor. Within the cooldown the run keeps growing and the
retraining starts when the cooldown ends, if the metric is still below the floor.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from croniter import croniter
from mlsteward_runtime.contracts import RuntimeStats

from mlsteward_operator.api.common import parse_duration
from mlsteward_operator.api.driftmonitor import (
    MAX_RETRAIN_STEPS,
    Action,
    DriftMonitorStatus,
    DriftMonitor,
    LastAction,
    PerformanceMetric,
    PerformanceStatus,
    RetrainPhase,
    RetrainStatus,
    RetrainStep,
)
from mlsteward_operator.kernel.conditions import second
from mlsteward_operator.kernel.pooling import pool_feedback
from mlsteward_operator.kernel.names import dns_name

SCHEDULE = "schedule"
PERFORMANCE = "performance"


@dataclass(frozen=True)
class TriggerDecision:
    """What a trigger decided, as data.

    - `fire`: start a retraining now (then `job_name`, `trigger` and `time` are set).
    - `reason`: ScheduledRun, ScheduledRunSkipped, NotDue (schedule); PerformanceBelowFloor, BelowFloorPending,
      PerformanceAboveFloor, InsufficientFeedback, NoFeedback, PerformanceRetrainSkipped (performance).
    - `time`: the cron time (schedule) or the first check below the floor (performance); it names the Job.
    - `record`: something new to write to status (and to post as an Event).
    """

    kind: str
    fire: bool
    reason: str
    message: str
    time: dt.datetime | None = None
    job_name: str | None = None
    trigger: str | None = None
    record: bool = False


# --------------------------------------------------------------------------------------------------------------
# Shared rules
# --------------------------------------------------------------------------------------------------------------


def retrain_job_name(monitor: str, breach_started: dt.datetime) -> str:
    """`<monitor>-retrain-<UTC time of the breach's first window>`, a valid Job name of at most 63 characters.

    The breach, not the time of the decision, names the Job: a restarted operator that decides again on the same
    breach derives the same name, and applying it finds the Job already there.
    """
    return dns_name(monitor, "retrain", second(breach_started).strftime("%Y%m%d%H%M%S"))


def trigger_job_name(monitor: str, kind: str, time: dt.datetime) -> str:
    """`<monitor>-retrain-<kind>-<UTC time>`: the same trigger at the same time always names the same Job."""
    return dns_name(monitor, "retrain", kind, second(time).strftime("%Y%m%d%H%M%S"))


def trigger_id(monitor: str, kind: str, time: dt.datetime) -> str:
    """`<kind>/<monitor>@<RFC 3339 time>`: status.retrain.trigger and the retrained version's lineage.trigger."""
    return f"{kind}/{monitor}@{_rfc3339(time)}"


def cooldown_until(dm: DriftMonitor) -> dt.datetime | None:
    """When the cooldown after the last action ends (None: no action yet)."""
    last = dm.status.last_action
    if last is None:
        return None
    return second(last.time) + dt.timedelta(seconds=parse_duration(dm.spec.cooldown))


def _blocked(dm: DriftMonitor, now: dt.datetime, active_job: str | None, serving: str | None) -> str | None:
    """Why a retraining may not start now (nothing served to retrain, one active, or the cooldown), or None."""
    if not serving:
        return f"ModelDeployment {dm.spec.deployment} serves no version to retrain"
    if active_job is not None:
        return f"retraining Job {active_job} is still active (at most one per monitor)"
    until = cooldown_until(dm)
    if until is not None and second(now) < until:
        last = dm.status.last_action
        assert last is not None
        return (f"the last action ({last.type.value} at {_rfc3339(last.time)}) is within the cooldown of "
                f"{dm.spec.cooldown}, until {_rfc3339(until)}")
    return None


def start(dm: DriftMonitor, decision: TriggerDecision, parent: str | None, now: dt.datetime
          ) -> tuple[LastAction, RetrainStatus]:
    """status.lastAction and status.retrain of a fired trigger, recorded before the Job is created."""
    assert decision.fire and decision.job_name is not None and decision.trigger is not None
    now = second(now)
    last = LastAction(type=Action.retrain, time=now, message=decision.message[:4096], job=decision.job_name,
                      trigger=decision.trigger)
    retrain = RetrainStatus(job=decision.job_name, parent=parent, trigger=decision.trigger,
                            phase=RetrainPhase.running, started_at=now)
    return last, retrain


# --------------------------------------------------------------------------------------------------------------
# The schedule
# --------------------------------------------------------------------------------------------------------------


def due_run(expr: str, since: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    """The latest cron time t of `expr` (UTC) with since < t <= now, or None: however many were missed, one."""
    since, now = _utc(since), _utc(now)
    first = croniter(expr, since).get_next(dt.datetime)
    if first > now:
        return None
    # get_prev is strictly before its start: start a second later so that a cron time equal to `now` counts.
    latest = croniter(expr, now + dt.timedelta(seconds=1)).get_prev(dt.datetime)
    return second(max(first, latest))


def next_run(expr: str, after: dt.datetime) -> dt.datetime:
    """The first cron time of `expr` (UTC) strictly after `after`."""
    return second(croniter(expr, _utc(after)).get_next(dt.datetime))


def schedule_since(dm: DriftMonitor, now: dt.datetime) -> dt.datetime:
    """Where the schedule counts from: the last cron time handled, else the monitor's creation, else `now` (an
    object without a creation time, which the API server always sets)."""
    st = dm.status
    if st.last_scheduled_run is not None:
        return second(st.last_scheduled_run)
    if dm.metadata.creation_timestamp is not None:
        return second(dm.metadata.creation_timestamp)
    return second(now)


def decide_schedule(dm: DriftMonitor, now: dt.datetime, *, serving: str | None,
                    active_job: str | None = None) -> TriggerDecision:
    """Whether spec.schedule has a run due now, and whether it runs or is skipped (see the module docstring).

    `serving` is the version the ModelDeployment serves (the parent of the retraining); `active_job` the retraining
    Job still active, if any."""
    expr = dm.spec.schedule
    assert expr is not None
    name = dm.metadata.name
    due = due_run(expr, schedule_since(dm, now), now)
    if due is None:
        return TriggerDecision(SCHEDULE, fire=False, reason="NotDue",
                               message=f"next scheduled run at {_rfc3339(next_run(expr, now))}")
    blocked = _blocked(dm, now, active_job, serving)
    if blocked is not None:
        return TriggerDecision(SCHEDULE, fire=False, reason="ScheduledRunSkipped", time=due, record=True,
                               message=f"skipped the scheduled retraining of {_rfc3339(due)} ({expr}): {blocked}")
    job = trigger_job_name(name, SCHEDULE, due)
    return TriggerDecision(SCHEDULE, fire=True, reason="ScheduledRun", time=due, record=True, job_name=job,
                           trigger=trigger_id(name, SCHEDULE, due),
                           message=f"scheduled retraining of {_rfc3339(due)} ({expr}); retraining Job {job}")


# --------------------------------------------------------------------------------------------------------------
# The performance floor
# --------------------------------------------------------------------------------------------------------------


def pool_performance(stats: Sequence[RuntimeStats], metric: PerformanceMetric) -> tuple[float | None, int]:
    """The metric over the replicas, each weighed by its feedback count, and the pooled feedback behind it
    (pooling.pool_feedback)."""
    return pool_feedback(stats, reward=metric == PerformanceMetric.reward)


def decide_performance(dm: DriftMonitor, stats: Sequence[RuntimeStats], version: str | None, now: dt.datetime,
                       *, serving: str | None = None, active_job: str | None = None
                       ) -> tuple[TriggerDecision, PerformanceStatus]:
    """One check of spec.performance: the decision and status.performance to record (see the module docstring)."""
    spec = dm.spec.performance
    assert spec is not None
    now = second(now)
    name = dm.metadata.name
    prev = dm.status.performance
    if prev is not None and prev.metric != spec.metric:
        prev = None  # the metric changed: a run below the old floor says nothing about the new one
    breaches = prev.breaches if prev is not None else 0
    started = prev.breach_started if prev is not None else None
    value, samples = pool_performance(stats, spec.metric)
    metric = spec.metric.value
    shown = f"{value:.4g}" if value is not None else "none"
    reading = f"{metric} {shown} over {samples} feedback from {len(stats)} replica(s) of {version or 'the served version'}"
    consecutive = dm.spec.consecutive

    if value is None or samples < spec.min_samples:
        reason = "NoFeedback" if value is None else "InsufficientFeedback"
        message = f"{reading}, fewer than performance.minSamples {spec.min_samples}; no verdict"
        decision = TriggerDecision(PERFORMANCE, fire=False, reason=reason, message=message)
    elif value >= spec.floor:
        breaches, started = 0, None
        message = f"{reading}, at or above the floor {spec.floor:g}"
        decision = TriggerDecision(PERFORMANCE, fire=False, reason="PerformanceAboveFloor", message=message)
    else:
        breaches += 1
        started = started or now
        message = (f"{reading}, below the floor {spec.floor:g} for {breaches} check(s) in a row "
                   f"(threshold {consecutive})")
        if breaches < consecutive:
            decision = TriggerDecision(PERFORMANCE, fire=False, reason="BelowFloorPending", message=message,
                                       record=True)
        elif (blocked := _blocked(dm, now, active_job, serving or version)) is not None:
            decision = TriggerDecision(PERFORMANCE, fire=False, reason="PerformanceRetrainSkipped", record=True,
                                       message=f"{message}; no retraining now: {blocked}")
        else:
            job = trigger_job_name(name, PERFORMANCE, started)
            decision = TriggerDecision(PERFORMANCE, fire=True, reason="PerformanceBelowFloor", time=started,
                                       record=True, job_name=job, trigger=trigger_id(name, PERFORMANCE, started),
                                       message=f"{message}; retraining Job {job}")
            breaches, started = 0, None  # acted on: the next retraining needs `consecutive` new breaches
    status = PerformanceStatus(metric=spec.metric, time=now, version=version, value=value, samples=samples,
                               floor=spec.floor, breaches=breaches, breach_started=started,
                               message=decision.message[:4096])
    return decision, status


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _rfc3339(t: dt.datetime) -> str:
    return second(t).strftime("%Y-%m-%dT%H:%M:%SZ")


# Metrics where lower is better; every other metric `mlsteward validate` reports (accuracy, f1_macro, roc_auc, r2)
# is better higher.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "mse", "log_loss", "error_rate", "brier"})



def retrain_active(status: DriftMonitorStatus) -> bool:
    r = status.retrain
    return r is not None and r.phase in (RetrainPhase.running, RetrainPhase.validating)



def add_step(r: RetrainStatus, step: str, message: str, now: dt.datetime, **update: Any) -> RetrainStatus:
    """`r` with one more step (bounded, oldest dropped) and the given fields updated."""
    steps = [*r.steps, RetrainStep(time=second(now), step=step, message=message[:4096])][-MAX_RETRAIN_STEPS:]
    return r.model_copy(update={"steps": steps, **update})



def compare_metrics(new: Mapping[str, float], champion: Mapping[str, float]) -> tuple[bool, str]:
    """Whether `new` beats `champion` on the validated metrics both have: at least as good on every one and
    strictly better on at least one (lower is better for errors such as rmse and mae). No shared metric: no."""
    shared = sorted(set(new) & set(champion))
    if not shared:
        return False, "no validated metric in common with the champion"
    worse, better = [], []
    for m in shared:
        a, b = float(new[m]), float(champion[m])
        lower = m in LOWER_IS_BETTER
        if (a > b) if lower else (a < b):
            worse.append(f"{m} {a:.4g} vs {b:.4g}")
        elif a != b:
            better.append(f"{m} {a:.4g} vs {b:.4g}")
    if worse:
        return False, "worse on " + ", ".join(worse)
    if not better:
        return False, "equal on every shared metric (" + ", ".join(shared) + ")"
    return True, "better on " + ", ".join(better)
