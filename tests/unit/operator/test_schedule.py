"""When each kind asks to be looked at again without an event (the `schedule` modules): the end of a canary step,
the next health sample only with spec.alerts, the next drift check or cron time, nothing for a steady object."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mlsteward_operator.driftmonitor import schedule as drift_schedule
from mlsteward_operator.experiment import schedule as experiment_schedule
from mlsteward_operator.modeldeployment import schedule as md_schedule
from mlsteward_operator.modelversion import schedule as mv_schedule

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def md(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "ns", "generation": 1},
            "spec": {"version": "iris-2", "rollout": {"strategy": "Canary", "steps": [20, 100],
                                                      "stepInterval": "60s"}, **spec},
            "status": status or {}}


def test_a_steady_deployment_waits_for_events_only():
    assert md_schedule.next_look(md({"servingVersion": "iris-2"}), NOW) == (None, False)
    assert md_schedule.next_look(md({"rollout": {"phase": "Stable", "targetVersion": "iris-2"}}), NOW) \
        == (None, False)


def test_a_canary_step_is_looked_at_when_it_ends_then_every_few_seconds():
    started = NOW - dt.timedelta(seconds=20)
    body = md({"rollout": {"phase": "Progressing", "step": 0, "targetVersion": "iris-2",
                           "stepStartedAt": started.strftime("%Y-%m-%dT%H:%M:%SZ")}})
    assert md_schedule.next_look(body, NOW) == (started + dt.timedelta(seconds=60), True)
    late = NOW + dt.timedelta(seconds=90)
    assert md_schedule.next_look(body, late) == (late + md_schedule.STEP_RECHECK, True)
    warming = md({"rollout": {"phase": "Progressing", "step": 0, "targetVersion": "iris-2"}})
    assert md_schedule.next_look(warming, NOW) == (None, True)


def test_health_is_sampled_only_with_alerts_every_interval():
    assert md_schedule.next_sample(md(), NOW) == (None, False)
    alerts = {"interval": "30s", "rules": [{"rule": "ErrorRate", "metric": "errorRate", "threshold": 0.1}]}
    assert md_schedule.next_sample(md(alerts=alerts), NOW) == (NOW, False)
    last = NOW - dt.timedelta(seconds=10)
    body = md({"health": {"lastSampleTime": last.strftime("%Y-%m-%dT%H:%M:%SZ")}}, alerts=alerts)
    assert md_schedule.next_sample(body, NOW) == (last + dt.timedelta(seconds=30), False)


def dm(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "mlsteward.io/v1alpha1", "kind": "DriftMonitor",
            "metadata": {"name": "d", "namespace": "ns", "generation": 1},
            "spec": {"deployment": "iris", "interval": "5m", **spec},
            "status": status}


def test_a_drift_monitor_is_looked_at_for_its_next_check_or_cron_time():
    last = NOW - dt.timedelta(minutes=2)
    checked = {"observedGeneration": 1, "lastCheck": last.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert drift_schedule.next_look(dm(checked), NOW) == (last + dt.timedelta(minutes=5), False)
    assert drift_schedule.next_look(dm({"observedGeneration": 0, **{"lastCheck": checked["lastCheck"]}}), NOW) \
        == (NOW, False)
    retrain = {"actions": ["Retrain"],
               "retrain": {"template": {"template": {"spec": {"containers": [{"name": "t", "image": "t"}]}}}}}
    when, _ = drift_schedule.next_look(dm(checked, schedule="0 13 * * *", **retrain), NOW)
    assert when == last + dt.timedelta(minutes=5)  # the check comes before 13:00
    soon = {**checked, "nextScheduledRun": (NOW + dt.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert drift_schedule.next_look(dm(soon, schedule="1 12 * * *", **retrain), NOW)[0] == NOW + dt.timedelta(minutes=1)


def test_experiments_and_versions():
    assert experiment_schedule.next_look({"status": {"phase": "Running"}}, NOW) == (
        NOW + experiment_schedule.LOOK_INTERVAL, True)
    assert experiment_schedule.next_look({"status": {"phase": "Pending"}}, NOW) == (None, True)
    assert experiment_schedule.next_look({"status": {"phase": "Concluded"}}, NOW) == (None, False)
    assert mv_schedule.next_look({"status": {"phase": "Validating"}}, NOW) == (None, True)
    assert mv_schedule.next_look({"status": {"phase": "Ready"}}, NOW) == (None, False)
