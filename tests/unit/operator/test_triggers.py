"""The retraining triggers besides drift (retraining/decide.py): cron evaluation in UTC with one catch-up run after downtime,
the schedule and performance decisions, their interplay with the cooldown and an active retraining, and the spec
rules that go with them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from mlsteward_runtime.contracts import Quantiles, RuntimeStats
from pydantic import ValidationError

from mlsteward_operator.retraining import decide as tr
from mlsteward_operator.api.common import ObjectMeta
from mlsteward_operator.api.driftmonitor import (
    Action,
    DriftMonitor,
    DriftMonitorSpec,
    DriftMonitorStatus,
    LastAction,
    PerformanceMetric,
    RetrainPhase,
)

UTC = dt.UTC
CREATED = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
RETRAIN = {"template": {"template": {"spec": {"containers": [{"name": "train", "image": "mlsteward:0.1.0"}]}}}}


def monitor(status: DriftMonitorStatus | None = None, **spec: Any) -> DriftMonitor:
    spec = {"deployment": "iris", "actions": [Action.retrain], "retrain": RETRAIN, "cooldown": "1h"} | spec
    return DriftMonitor(metadata=ObjectMeta(name="iris-drift", namespace="ml", uid="uid-1", generation=1,
                                            creation_timestamp=CREATED),
                        spec=DriftMonitorSpec(**spec), status=status or DriftMonitorStatus())


def at(day: int, hour: int, minute: int = 0, sec: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, sec, tzinfo=UTC)


def with_status(dm: DriftMonitor, **update: Any) -> DriftMonitor:
    return dm.model_copy(update={"status": dm.status.model_copy(update=update)})


# --------------------------------------------------------------------------------------------------------------
# Cron evaluation
# --------------------------------------------------------------------------------------------------------------


def test_due_run_is_the_cron_time_in_the_half_open_interval_since_the_last_run():
    assert tr.due_run("0 3 * * *", at(1, 3), at(2, 2, 59, 59)) is None
    assert tr.due_run("0 3 * * *", at(1, 3), at(2, 3)) == at(2, 3)  # exactly on time counts
    assert tr.due_run("0 3 * * *", at(1, 3), at(2, 3, 0, 30)) == at(2, 3)
    assert tr.due_run("0 3 * * *", at(2, 3), at(2, 3)) is None  # the run at `since` was handled already
    assert tr.due_run("*/15 * * * *", at(1, 12), at(1, 12, 14)) is None
    assert tr.due_run("*/15 * * * *", at(1, 12), at(1, 12, 16)) == at(1, 12, 15)


def test_after_downtime_only_the_latest_missed_time_runs_once():
    # A week of missed daily runs: one run, at the latest missed time; then nothing until the next cron time.
    assert tr.due_run("0 3 * * *", at(1, 3), at(8, 12)) == at(8, 3)
    assert tr.due_run("0 3 * * *", at(8, 3), at(8, 12)) is None
    assert tr.next_run("0 3 * * *", at(8, 12)) == at(9, 3)


def test_cron_is_evaluated_in_utc_whatever_the_timezone_of_the_times():
    cet = dt.timezone(dt.timedelta(hours=1))
    since = dt.datetime(2026, 3, 1, 4, 0, tzinfo=cet)  # 03:00 UTC
    now = dt.datetime(2026, 3, 2, 4, 0, tzinfo=cet)  # 03:00 UTC the next day
    assert tr.due_run("0 3 * * *", since, now) == at(2, 3)
    assert tr.next_run("0 3 * * MON", at(1, 12)) == at(2, 3)  # 2026-03-02 is a Monday


@pytest.mark.parametrize("expr", ["0 3 * * *", "*/15 9-17 * * MON-FRI", "0 0 1,15 * *", "30 2 * JAN,JUL SUN"])
def test_schedule_accepts_standard_five_field_expressions(expr):
    assert monitor(schedule=expr).spec.schedule == expr


@pytest.mark.parametrize("expr", ["0 3 * *", "0 0 3 * * *", "@daily", "61 * * * *", "0 25 * * *", " 0 3 * * *",
                                  "every day"])
def test_schedule_refuses_anything_else_naming_the_field(expr):
    with pytest.raises(ValidationError) as caught:
        monitor(schedule=expr)
    assert "spec.schedule must be a 5-field cron expression" in str(caught.value)


def test_triggers_need_the_retrain_action():
    for trigger in ({"schedule": "0 3 * * *"}, {"performance": {"metric": "reward", "floor": 0.2}}):
        with pytest.raises(ValidationError, match="trigger retraining: add Retrain to spec.actions"):
            monitor(actions=[Action.alert], retrain=None, **trigger)
    with pytest.raises(ValidationError, match="floor of metric accuracy must be between 0 and 1"):
        monitor(performance={"metric": "accuracy", "floor": 85})
    assert monitor(performance={"metric": "reward", "floor": -3}).spec.performance.floor == -3


# --------------------------------------------------------------------------------------------------------------
# The schedule
# --------------------------------------------------------------------------------------------------------------


def test_first_run_counts_from_creation_and_names_its_job_and_trigger_after_the_cron_time():
    dm = monitor(schedule="0 3 * * *")
    assert tr.decide_schedule(dm, at(2, 2, 59), serving="iris-v1").reason == "NotDue"
    d = tr.decide_schedule(dm, at(2, 3, 0, 20), serving="iris-v1")
    assert d.fire and d.reason == "ScheduledRun" and d.time == at(2, 3)
    assert d.job_name == "iris-drift-retrain-schedule-20260302030000"
    assert d.trigger == "schedule/iris-drift@2026-03-02T03:00:00Z"
    # The same decision later in the same minute (a second reconcile, a restart): the same Job name.
    assert tr.decide_schedule(dm, at(2, 3, 0, 50), serving="iris-v1").job_name == d.job_name

    last, retrain = tr.start(dm, d, "iris-v1", at(2, 3, 0, 20))
    assert (last.type, last.job, last.trigger) == (Action.retrain, d.job_name, d.trigger)
    assert (retrain.job, retrain.parent, retrain.trigger, retrain.phase) == (d.job_name, "iris-v1", d.trigger,
                                                                           RetrainPhase.running)
    # Once recorded, not due again until the next cron time.
    done = with_status(dm, last_scheduled_run=d.time, last_action=last, retrain=retrain)
    assert tr.decide_schedule(done, at(2, 12), serving="iris-v1", active_job=None).reason == "NotDue"


def test_catch_up_after_downtime_is_exactly_one_run():
    dm = with_status(monitor(schedule="0 3 * * *"), last_scheduled_run=at(1, 3))
    runs = []
    for now in (at(8, 12), at(8, 12, 0, 5), at(8, 13), at(8, 23, 59)):
        d = tr.decide_schedule(dm, now, serving="iris-v1")
        if d.fire:
            runs.append(d.time)
            last, retrain = tr.start(dm, d, "iris-v1", now)
            dm = with_status(dm, last_scheduled_run=d.time, last_action=last,
                             retrain=retrain.model_copy(update={"phase": RetrainPhase.succeeded}))
    assert runs == [at(8, 3)]


def test_a_due_run_within_the_cooldown_or_during_a_retraining_is_skipped_and_recorded():
    drift_action = LastAction(type=Action.retrain, time=at(2, 2, 30), job="iris-drift-retrain-x")
    dm = with_status(monitor(schedule="0 3 * * *", cooldown="1h"), last_action=drift_action,
                     last_scheduled_run=at(1, 3))
    d = tr.decide_schedule(dm, at(2, 3), serving="iris-v1")
    assert not d.fire and d.reason == "ScheduledRunSkipped" and d.record and d.time == at(2, 3)
    assert "cooldown of 1h" in d.message
    # Skipped, not postponed: once recorded, the end of the cooldown does not bring it back.
    dm = with_status(dm, last_scheduled_run=d.time)
    assert tr.decide_schedule(dm, at(2, 3, 45), serving="iris-v1").reason == "NotDue"
    # The next cron time after the cooldown runs.
    assert tr.decide_schedule(dm, at(3, 3), serving="iris-v1").fire

    busy = tr.decide_schedule(dm, at(3, 3), serving="iris-v1", active_job="iris-drift-retrain-x")
    assert busy.reason == "ScheduledRunSkipped" and "iris-drift-retrain-x is still active" in busy.message
    idle = tr.decide_schedule(dm, at(3, 3), serving=None)
    assert idle.reason == "ScheduledRunSkipped" and "serves no version" in idle.message


# --------------------------------------------------------------------------------------------------------------
# The performance floor
# --------------------------------------------------------------------------------------------------------------


def stats(feedback: int, accuracy: float | None = None, reward: float | None = None) -> RuntimeStats:
    return RuntimeStats(name="iris", version="1.0.0", window_s=600, count=feedback, errors=0, error_rate=0.0,
                        throughput_rps=1.0, latency_ms=Quantiles(), feedback=feedback, accuracy=accuracy,
                        mean_reward=reward)


def test_replicas_are_pooled_by_feedback_count():
    value, n = tr.pool_performance([stats(300, accuracy=0.9), stats(100, accuracy=0.5), stats(0, accuracy=0.1),
                                    stats(50)], PerformanceMetric.accuracy)
    assert n == 400 and value == pytest.approx((0.9 * 300 + 0.5 * 100) / 400)
    assert tr.pool_performance([stats(50, accuracy=0.9)], PerformanceMetric.reward) == (None, 0)
    assert tr.pool_performance([stats(10, reward=2.0), stats(30, reward=1.0)], PerformanceMetric.reward) == (1.25, 40)


def check(dm: DriftMonitor, readings: list[RuntimeStats], now: dt.datetime, **kw: Any
          ) -> tuple[tr.TriggerDecision, DriftMonitor]:
    """One performance check; returns the decision and the monitor with what it recorded."""
    kw.setdefault("serving", "iris-v1")
    d, reading = tr.decide_performance(dm, readings, "iris-v1", now, **kw)
    dm = with_status(dm, performance=reading)
    if d.fire:
        last, retrain = tr.start(dm, d, "iris-v1", now)
        dm = with_status(dm, last_action=last, retrain=retrain)
    return d, dm


def test_floor_breached_for_consecutive_checks_fires_once_named_after_the_first_breach():
    dm = monitor(performance={"metric": "accuracy", "floor": 0.8, "minSamples": 100}, consecutive=3)
    low = [stats(80, accuracy=0.6), stats(80, accuracy=0.7)]
    d, dm = check(dm, low, at(2, 10, 0))
    assert d.reason == "BelowFloorPending" and dm.status.performance.breaches == 1
    assert dm.status.performance.value == pytest.approx(0.65) and dm.status.performance.samples == 160
    # Too little feedback: no verdict, the run neither grows nor breaks.
    d, dm = check(dm, [stats(20, accuracy=0.1)], at(2, 10, 5))
    assert d.reason == "InsufficientFeedback" and dm.status.performance.breaches == 1
    d, dm = check(dm, low, at(2, 10, 10))
    assert d.reason == "BelowFloorPending" and dm.status.performance.breaches == 2
    d, dm = check(dm, low, at(2, 10, 15))
    assert d.fire and d.reason == "PerformanceBelowFloor" and d.time == at(2, 10, 0)
    assert d.job_name == "iris-drift-retrain-performance-20260302100000"
    assert d.trigger == "performance/iris-drift@2026-03-02T10:00:00Z"
    assert dm.status.retrain.trigger == d.trigger and dm.status.last_action.job == d.job_name
    # Acted on: the run starts again, and the retraining now active blocks another one.
    assert dm.status.performance.breaches == 0 and dm.status.performance.breach_started is None
    for minute in (20, 25, 30):
        d, dm = check(dm, low, at(2, 10, minute), active_job=dm.status.retrain.job)
    assert not d.fire and d.reason == "PerformanceRetrainSkipped" and "still active" in d.message
    assert dm.status.performance.breaches == 3


def test_recovering_above_the_floor_ends_the_run():
    dm = monitor(performance={"metric": "reward", "floor": 0.5, "minSamples": 10}, consecutive=2)
    d, dm = check(dm, [stats(50, reward=0.2)], at(2, 10))
    d, dm = check(dm, [stats(50, reward=0.7)], at(2, 10, 5))
    assert d.reason == "PerformanceAboveFloor" and dm.status.performance.breaches == 0
    d, dm = check(dm, [stats(50, reward=0.2)], at(2, 10, 10))
    assert not d.fire and dm.status.performance.breach_started == at(2, 10, 10)
    d, dm = check(dm, [], at(2, 10, 15))
    assert d.reason == "NoFeedback" and dm.status.performance.breaches == 1


def test_breach_within_the_cooldown_waits_for_its_end_then_fires():
    drift_action = LastAction(type=Action.retrain, time=at(2, 9, 30), job="iris-drift-retrain-x")
    dm = with_status(monitor(performance={"metric": "accuracy", "floor": 0.8, "minSamples": 10}, consecutive=1,
                             cooldown="1h"), last_action=drift_action)
    low = [stats(50, accuracy=0.5)]
    d, dm = check(dm, low, at(2, 10))
    assert d.reason == "PerformanceRetrainSkipped" and "within the cooldown of 1h" in d.message
    d, dm = check(dm, low, at(2, 10, 29))
    assert not d.fire and dm.status.performance.breaches == 2
    d, dm = check(dm, low, at(2, 10, 30))
    assert d.fire and d.time == at(2, 10) and dm.status.last_action.time == at(2, 10, 30)
    # The retraining it started is an action: the cooldown now runs from it, for drift and the schedule alike.
    assert tr.cooldown_until(dm) == at(2, 11, 30)
    sched = with_status(dm, retrain=dm.status.retrain.model_copy(update={"phase": RetrainPhase.succeeded}))
    sched = sched.model_copy(update={"spec": sched.spec.model_copy(update={"schedule": "0 11 * * *"})})
    assert tr.decide_schedule(sched, at(2, 11), serving="iris-v1").reason == "ScheduledRunSkipped"


def test_a_new_metric_starts_a_new_run():
    dm = monitor(performance={"metric": "accuracy", "floor": 0.8, "minSamples": 10}, consecutive=2)
    _, dm = check(dm, [stats(50, accuracy=0.5, reward=0.1)], at(2, 10))
    dm = dm.model_copy(update={"spec": dm.spec.model_copy(update={
        "performance": dm.spec.performance.model_copy(update={"metric": PerformanceMetric.reward, "floor": 0.5})})})
    d, dm = check(dm, [stats(50, accuracy=0.5, reward=0.1)], at(2, 10, 5))
    assert not d.fire and dm.status.performance.breaches == 1 and dm.status.performance.metric == "reward"
