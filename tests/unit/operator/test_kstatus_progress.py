"""The two clocks of a ModelDeployment (modeldeployment/progress.py), read as Flux and `kubectl wait` read them.

- A GitOps sync applies a ModelDeployment and the ModelVersion it names together; the operator may see the
  deployment first. For `VERSION_GRACE` the missing version is a wait (InProgress, WaitingForVersion), then Failed
  (VersionNotFound). A version that exists but failed validation is Failed at once.
- A rollout whose predictor pods never become ready is InProgress only until spec.rollout.progressDeadline passes
  without progress, then Failed (ProgressDeadlineExceeded, one Warning Event); progress restarts the clock.

Statuses come from the operator's own reconcile over the in-memory API server (test_flows_on_fake.Cluster, with its
controlled clock), verdicts from the kstatus port (kstatus.py). The reconcile is woken at each deadline: the
schedule (`schedule.next_look`) is asked when, from the status as written.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kstatus import CURRENT, FAILED, IN_PROGRESS, compute, flux_violations
from test_flows_on_fake import GV, Cluster, serving_v1, version

from mlsteward_operator.api.modeldeployment import ProgressStatus
from mlsteward_operator.kernel import names
from mlsteward_operator.modeldeployment import progress, schedule, status
from mlsteward_operator.modeldeployment.progress import VERSION_GRACE

SECOND = dt.timedelta(seconds=1)
DEADLINE = dt.timedelta(minutes=10)  # spec.rollout.progressDeadline's default


def verdict(obj: dict[str, Any]) -> tuple[str, str]:
    result = compute(obj)
    return result.status, result.reason


def conditions(md: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in md["status"]["conditions"]}


def wake_at(md: dict[str, Any], now: dt.datetime) -> dt.datetime | None:
    return schedule.next_look(md, now)[0]


async def deployment(c: Cluster, **spec: Any) -> None:
    await c.create({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ml"},
                    "spec": {"model": "iris", "version": "iris-v1", **spec}})


# ---- a ModelVersion applied in the same sync -------------------------------------------------------------------


async def test_a_version_not_applied_yet_is_in_progress_within_the_grace_then_failed():
    c = Cluster()
    await deployment(c)
    await c.converge()
    md = await c.md()
    assert verdict(md) == (IN_PROGRESS, "WaitingForVersion")
    assert "ModelVersion iris-v1 does not exist yet" in conditions(md)["Reconciling"]["message"]
    assert flux_violations(md) == set()
    assert conditions(md)["Ready"]["status"] == "False" and "Stalled" not in conditions(md)
    assert wake_at(md, c.now) == c.now + VERSION_GRACE  # the reconcile is woken when the grace ends

    c.now += VERSION_GRACE - SECOND
    await c.converge()
    assert verdict(await c.md()) == (IN_PROGRESS, "WaitingForVersion")
    c.now += SECOND
    await c.converge()
    md = await c.md()
    assert verdict(md) == (FAILED, "VersionNotFound")
    assert flux_violations(md) == set()
    assert wake_at(md, c.now) is None  # nothing more to wait for: an event (the version appearing) wakes it


async def test_a_version_that_arrives_within_the_grace_is_served_without_ever_being_failed():
    c = Cluster()
    await deployment(c)
    await c.converge()
    c.now += VERSION_GRACE / 2
    await c.create(version("iris-v1"))
    await c.converge()
    md = await c.md()
    assert verdict(md) == (CURRENT, "")
    assert "progress" not in md["status"]  # settled: no clock runs
    assert md["status"]["decisions"][-1]["kind"] == "Rollout"


async def test_a_version_that_failed_validation_is_failed_at_once():
    c = await serving_v1()
    await c.create({**version("iris-bad"), "status": {"phase": "Failed", "reason": "BelowThreshold"}})
    await c.set_spec_version("iris-bad")
    await c.converge()
    assert verdict(await c.md()) == (FAILED, "VersionFailed")


async def test_switching_to_a_version_not_applied_yet_holds_nothing_during_the_grace():
    c = await serving_v1()
    decisions = len((await c.md())["status"]["decisions"])
    await c.set_spec_version("iris-v3")
    await c.converge()
    md = await c.md()
    assert verdict(md) == (IN_PROGRESS, "WaitingForVersion")
    assert md["status"]["servingVersion"] == "iris-v1"
    assert md["status"]["rollout"]["phase"] == "Waiting"
    # A wait, not a problem: no Hold decision, no Warning, Degraded stays False (Argo CD reads it).
    assert len(md["status"]["decisions"]) == decisions
    assert not [e for e in c.fake.events if e["type"] == "Warning"]
    assert conditions(md)["Degraded"]["status"] == "False"
    c.now += VERSION_GRACE
    await c.converge()
    md = await c.md()
    assert verdict(md) == (FAILED, "VersionNotFound")
    assert md["status"]["decisions"][-1]["kind"] == "Hold"
    assert conditions(md)["Degraded"]["reason"] == "VersionNotFound"


async def test_a_new_generation_naming_a_missing_version_gets_a_new_grace():
    c = await serving_v1()
    await c.set_spec_version("iris-v3")
    await c.converge()
    c.now += VERSION_GRACE
    await c.converge()
    assert verdict(await c.md())[0] == FAILED
    await c.set_spec_version("iris-v4")  # the next sync names another version, applied with it
    await c.converge()
    md = await c.md()
    assert verdict(md) == (IN_PROGRESS, "WaitingForVersion")
    assert "iris-v4" in conditions(md)["Reconciling"]["message"]
    assert wake_at(md, c.now) == c.now + VERSION_GRACE


# ---- spec.rollout.progressDeadline ----------------------------------------------------------------------------


async def pods_ready(c: Cluster, version_: str, ready: int) -> None:
    """The predictor of `version_` rolled out with `ready` ready pods (the rest never become ready)."""
    d = await c.fake.get("apps/v1", "Deployment", "ml", names.predictor_name("iris", version_))
    assert d is not None
    n = d["spec"].get("replicas", 1)
    await c.fake.patch_status("apps/v1", "Deployment", "ml", d["metadata"]["name"], {
        "observedGeneration": d["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
        "readyReplicas": ready, "availableReplicas": ready})


async def test_pods_that_never_become_ready_are_failed_after_the_progress_deadline():
    c = Cluster()
    await c.create(version("iris-v1"))
    await deployment(c)
    await c.reconcile()  # children applied; the cluster never makes a pod ready
    md = await c.md()
    assert verdict(md) == (IN_PROGRESS, "RollingOut")
    assert wake_at(md, c.now) is not None and wake_at(md, c.now) <= c.now + DEADLINE
    assert md["status"]["progress"]["deadline"] == (c.now + DEADLINE).strftime("%Y-%m-%dT%H:%M:%SZ")

    c.now += DEADLINE - SECOND
    await c.reconcile()
    assert verdict(await c.md()) == (IN_PROGRESS, "RollingOut")
    c.now += SECOND
    await c.reconcile()
    md = await c.md()
    assert verdict(md) == (FAILED, "ProgressDeadlineExceeded")
    assert flux_violations(md) == set()
    conds = conditions(md)
    assert (conds["Progressing"]["status"], conds["Progressing"]["reason"]) == ("False", "ProgressDeadlineExceeded")
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("True", "ProgressDeadlineExceeded")
    assert "no progress since" in conds["Stalled"]["message"]
    warnings = [e for e in c.fake.events if e["reason"] == "ProgressDeadlineExceeded"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    # Later looks change nothing and post no second Event.
    c.now += DEADLINE
    assert await c.reconcile() is None
    assert len([e for e in c.fake.events if e["reason"] == "ProgressDeadlineExceeded"]) == 1
    # Progress after the deadline: the pods come up, and the deployment serves.
    await c.converge()
    assert verdict(await c.md()) == (CURRENT, "")


async def test_a_pod_becoming_ready_restarts_the_clock():
    c = Cluster()
    await c.create(version("iris-v1"))
    await deployment(c, replicas=2)
    await c.reconcile()
    c.now += DEADLINE - SECOND
    await pods_ready(c, "iris-v1", 1)  # one of two pods: progress, though not the end of the rollout
    await c.reconcile()
    md = await c.md()
    assert md["status"]["progress"]["readyReplicas"] == 1
    c.now += DEADLINE - SECOND
    await c.reconcile()
    assert verdict(await c.md())[0] != FAILED
    c.now += SECOND
    await c.reconcile()
    assert verdict(await c.md()) == (FAILED, "ProgressDeadlineExceeded")


async def test_a_new_version_that_never_warms_up_is_failed_while_the_old_one_serves():
    c = await serving_v1()
    await c.fake.apply({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ml"},
                        "spec": {"model": "iris", "version": "iris-v2", "rollout": {"progressDeadline": "1m"}}})
    await c.reconcile()
    md = await c.md()
    assert verdict(md) == (IN_PROGRESS, "WarmingUp")
    assert wake_at(md, c.now) == c.now + dt.timedelta(minutes=1)
    c.now += dt.timedelta(minutes=1)
    await c.reconcile()
    md = await c.md()
    assert verdict(md) == (FAILED, "ProgressDeadlineExceeded")
    assert md["status"]["servingVersion"] == "iris-v1"


@pytest.mark.parametrize("minutes", [15, 45])
async def test_a_canary_step_with_ready_pods_has_no_deadline(minutes: int):
    canary = {"strategy": "Canary", "steps": [10, 100], "stepInterval": "1h",
              "analysis": {"maxErrorRate": 0.01, "minRequests": 100}}
    c = await serving_v1(canary)
    await c.set_spec_version("iris-v2")
    c.traffic("iris-v1", 0)
    await c.converge()
    assert verdict(await c.md()) == (IN_PROGRESS, "Analysing")
    c.now += dt.timedelta(minutes=minutes)  # longer than the progress deadline, within the step
    await c.converge()
    md = await c.md()
    assert verdict(md) == (IN_PROGRESS, "Analysing")
    assert md["status"]["progress"].get("deadline") is None


# ---- the pure clock (progress.py) -----------------------------------------------------------------------------


def test_the_grace_turns_only_a_missing_version_into_a_wait():
    from mlsteward_operator.modeldeployment.rollout.base import Plan, Problem

    t0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    missing = Plan(live=(), router_target=None, serving=None, stable=None,
                   degraded=Problem("VersionNotFound", "ModelVersion v2 does not exist"))
    failed = Plan(live=(), router_target=None, serving=None, stable=None,
                  degraded=Problem("VersionFailed", "ModelVersion v2 failed validation (DigestMismatch)"))
    waiting = progress.within_grace(missing, None, "v2", 1, t0)
    assert waiting.degraded is None and waiting.progressing is not None
    assert waiting.progressing.reason == "WaitingForVersion" and "v2" in waiting.progressing.message
    assert progress.within_grace(failed, None, "v2", 1, t0) == failed  # never served: no grace
    tracked = ProgressStatus(version="v2", generation=1, last_progress_time=t0)
    assert progress.within_grace(missing, tracked, "v2", 1, t0 + VERSION_GRACE) == missing
    # Another generation or version starts a new grace.
    assert progress.within_grace(missing, tracked, "v2", 2, t0 + VERSION_GRACE).degraded is None
    assert progress.within_grace(missing, tracked, "v3", 1, t0 + VERSION_GRACE).degraded is None


def test_the_clock_runs_only_while_a_rollout_waits_for_pods():
    from mlsteward_operator.api.modeldeployment import ModelDeployment
    from mlsteward_operator.kernel.pods import WorkloadState
    from mlsteward_operator.modeldeployment.rollout.base import Plan, Problem

    t0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    md = ModelDeployment.model_validate({"metadata": {"name": "iris", "generation": 3}, "spec": {
        "version": "v2", "rollout": {"progressDeadline": "90s"}}})
    rolling = Plan(live=("v2",), router_target="v2", serving=None, stable=None,
                   progressing=Problem("RollingOut", "waiting for v2 and the router to be ready"))
    settled = Plan(live=("v2",), router_target="v2", serving="v2", stable="v2")
    pending = WorkloadState(exists=True, replicas=2, ready_replicas=1, available_replicas=1, rolled_out=False)
    clock, stuck = progress.clock(md, rolling, "v2", {"v2": pending}, t0)
    assert clock is not None and clock.deadline == t0 + dt.timedelta(seconds=90) and stuck is None
    assert (clock.version, clock.generation, clock.ready_replicas) == ("v2", 3, 1)
    ready = WorkloadState(exists=True, replicas=2, ready_replicas=2, available_replicas=2, rolled_out=True)
    assert progress.clock(md, rolling, "v2", {"v2": ready}, t0)[0].deadline is None  # type: ignore[union-attr]
    assert progress.clock(md, settled, "v2", {"v2": ready}, t0) == (None, None)
    later = md.model_copy(update={"status": md.status.model_copy(update={
        "progress": clock, "rollout": status.rollout_status(None, rolling, "v2", t0)})})
    clock2, stuck = progress.clock(later, rolling, "v2", {"v2": pending}, t0 + dt.timedelta(seconds=90))
    assert clock2 == clock and stuck is not None and stuck.reason == "ProgressDeadlineExceeded"
