"""What Flux's health checks and `kubectl wait`-style tools conclude from every status the operator writes.

Each status is built by the operator's own code: the ModelDeployment reconcile over the in-memory API server
(kube/fake.py, driven as test_flows_on_fake.py does), and each kind's status functions for the others. Then
kstatus's rules (kstatus.py beside this file) give the verdict. What a platform team wants:
- Current: the spec is reached and the object holds it by itself (served, validated, running, judged);
- InProgress: the operator is still moving towards the spec and will get there without a person (pods starting,
  a canary step, a version being validated, traffic or windows to wait for);
- Failed: it will not get there until someone changes the spec (a version that failed or does not exist, a canary
  that failed its analysis, a stopped experiment, a monitor with a bad reference).

A ModelDeployment whose canary was rolled back is Failed, not Current with Degraded: it still serves its stable
version (Ready=True, so clients are fine), but Git asks for a version that will not be served until Git changes,
and a GitOps health check that called that healthy would hide exactly what it exists to catch. A version promoted
by an Experiment is Current: serving it is what the spec (onSuccess: Promote) asked for.

Ready keeps its meaning, "the Service answers with a ready version": while a canary step runs or after a rollback,
Ready=True stands beside Reconciling=True or Stalled=True. Flux's stricter checker, which Flux's controllers run on
their own objects, asks for Ready=False then (FAIL0003, FAIL0004); kstatus itself reads Reconciling and Stalled
before Ready, so its verdict is the one wanted. Those two departures are listed per case below, and no other check
may fail.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kstatus import CURRENT, FAILED, IN_PROGRESS, compute, flux_violations
from test_flows_on_fake import CANARY, STEP, GV, Cluster, serving_v1, version

from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.kernel import pods
from mlsteward_operator.modeldeployment.progress import VERSION_GRACE
from mlsteward_operator.modelversion import status as mvs

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SERVING_DURING_CHANGE = {"FAIL0003"}  # Ready=True (a version serves) while Reconciling=True
SERVING_BUT_STALLED = {"FAIL0004"}  # Ready=True (the stable version serves) while Stalled=True


def verdict(obj: dict[str, Any]) -> tuple[str, str, set[str]]:
    result = compute(obj)
    return result.status, result.reason, flux_violations(obj)


# ---- the port itself -----------------------------------------------------------------------------------------


def test_the_port_follows_kstatus_order_of_rules():
    def obj(conditions: list[dict[str, str]], generation: int = 2, observed: int | None = 2) -> dict[str, Any]:
        status: dict[str, Any] = {"conditions": conditions}
        if observed is not None:
            status["observedGeneration"] = observed
        return {"kind": "X", "metadata": {"generation": generation}, "status": status}

    ready = {"type": "Ready", "status": "True", "reason": "R"}
    assert compute(obj([])).status == CURRENT  # abnormal-true: nothing said is fine
    assert compute(obj([ready], observed=1)).reason == "LatestGenerationNotObserved"
    assert compute(obj([ready], observed=None)).status == CURRENT  # no observedGeneration: not checked
    assert compute(obj([ready, {"type": "Reconciling", "status": "True", "reason": "A"}])).status == IN_PROGRESS
    assert compute(obj([{"type": "Stalled", "status": "True", "reason": "S"},
                        {"type": "Reconciling", "status": "True", "reason": "A"}])).status == FAILED  # list order
    assert compute(obj([{**ready, "status": "False"}])).status == IN_PROGRESS  # never Failed from Ready
    assert compute(obj([{**ready, "status": "Unknown"}])).status == IN_PROGRESS
    assert compute({"metadata": {"deletionTimestamp": "2026-03-01T12:00:00Z"}}).status == "Terminating"
    assert flux_violations(obj([])) == {"FAIL0002"}
    assert flux_violations(obj([ready], generation=1, observed=2)) >= {"FAIL0006"}


# ---- ModelDeployment -----------------------------------------------------------------------------------------


async def deployment(c: Cluster, spec_version: str = "iris-v1", **spec: Any) -> None:
    await c.create({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ml"},
                    "spec": {"model": "iris", "version": spec_version, **spec}})


async def test_a_first_deployment_waits_for_its_pods_then_serves():
    c = Cluster()
    await c.create(version("iris-v1"))
    await deployment(c)
    assert verdict(await c.md())[0] == CURRENT  # not seen by the operator yet: kstatus cannot tell (no status)
    await c.reconcile()  # children applied, no pod ready yet
    md = await c.md()
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"] == 1
    assert verdict(md) == (IN_PROGRESS, "RollingOut", set())
    await c.converge()
    assert verdict(await c.md()) == (CURRENT, "", set())
    # A steady deployment writes nothing more, so no condition time moves.
    writes = c.fake.writes
    await c.reconcile()
    assert c.fake.writes == writes


async def test_a_spec_change_is_in_progress_until_the_operator_has_seen_it():
    c = await serving_v1(CANARY)
    await c.set_spec_version("iris-v2")
    assert verdict(await c.md())[:2] == (IN_PROGRESS, "LatestGenerationNotObserved")
    await c.reconcile()
    md = await c.md()
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"] == 2


async def test_a_canary_step_is_in_progress_and_the_end_of_the_rollout_is_current():
    c = await serving_v1(CANARY)
    await c.set_spec_version("iris-v2")
    c.traffic("iris-v1", 0)
    await c.converge()
    assert verdict(await c.md()) == (IN_PROGRESS, "Analysing", SERVING_DURING_CHANGE)
    for _ in CANARY["steps"]:
        c.traffic("iris-v2", 150)
        c.now += STEP
        await c.converge()
    md = await c.md()
    assert md["status"]["servingVersion"] == "iris-v2"
    assert verdict(md) == (CURRENT, "", set())
    assert {x["type"] for x in md["status"]["conditions"]} == {"Ready", "Progressing", "Degraded", "Alerting"}


async def test_a_rolled_back_canary_is_failed_while_its_stable_version_serves():
    c = await serving_v1(CANARY)
    await c.set_spec_version("iris-v2")
    c.traffic("iris-v1", 0)
    await c.converge()
    c.traffic("iris-v2", 200, errors=20)
    c.now += STEP
    await c.converge()
    md = await c.md()
    conds = {x["type"]: x for x in md["status"]["conditions"]}
    assert md["status"]["rollout"]["phase"] == "RolledBack" and md["status"]["servingVersion"] == "iris-v1"
    assert (conds["Ready"]["status"], conds["Degraded"]["status"]) == ("True", "True")
    assert verdict(md) == (FAILED, "AnalysisFailed", SERVING_BUT_STALLED)
    # It stays Failed, and later reconciles move no condition time.
    stalled_since = conds["Stalled"]["lastTransitionTime"]
    c.now += 3 * STEP
    await c.converge()
    md = await c.md()
    assert verdict(md)[0] == FAILED
    assert {x["type"]: x for x in md["status"]["conditions"]}["Stalled"]["lastTransitionTime"] == stalled_since
    # Git catches up with what serves: Current again, without Stalled.
    await c.set_spec_version("iris-v1")
    await c.converge()
    md = await c.md()
    assert verdict(md) == (CURRENT, "", set())
    assert "Stalled" not in {x["type"] for x in md["status"]["conditions"]}


async def test_a_canary_held_for_a_person_is_failed():
    c = await serving_v1({**CANARY})
    md = await c.md()
    await c.fake.apply({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ml"},
                        "spec": {**md["spec"], "version": "iris-v2", "rollback": {"onFailedAnalysis": False}}})
    c.traffic("iris-v1", 0)
    await c.converge()
    c.traffic("iris-v2", 200, errors=20)
    c.now += STEP
    await c.converge()
    md = await c.md()
    assert md["status"]["rollout"]["phase"] == "Paused"
    assert verdict(md) == (FAILED, "AnalysisFailed", SERVING_BUT_STALLED)


@pytest.mark.parametrize(("phase", "reason"), [("Failed", "VersionFailed"), (None, "VersionNotFound")])
async def test_a_first_deployment_of_a_version_that_cannot_serve_is_failed(phase: str | None, reason: str):
    c = Cluster()
    if phase:
        await c.create({**version("iris-v1"), "status": {"phase": phase, "reason": "DigestMismatch"}})
    await deployment(c)
    await c.converge()
    if phase is None:  # a missing version is waited for first (test_kstatus_progress.py)
        assert verdict(await c.md())[:2] == (IN_PROGRESS, "WaitingForVersion")
        c.now += VERSION_GRACE
        await c.converge()
    md = await c.md()
    assert verdict(md) == (FAILED, reason, set())
    assert {x["type"]: x["status"] for x in md["status"]["conditions"]}["Ready"] == "False"


async def test_a_version_still_validating_is_in_progress_and_serves_once_ready():
    c = Cluster()
    await c.create({**version("iris-v1"), "status": {"phase": "Validating"}})
    await deployment(c)
    await c.converge()
    assert verdict(await c.md()) == (IN_PROGRESS, "VersionNotReady", set())
    await c.fake.patch_status(GV, "ModelVersion", "ml", "iris-v1", {"phase": "Ready"})
    await c.converge()
    assert verdict(await c.md()) == (CURRENT, "", set())


@pytest.mark.parametrize("spec_version", ["iris-missing", "iris-bad"])
async def test_switching_to_a_version_that_cannot_serve_is_failed_while_the_old_one_serves(spec_version: str):
    c = await serving_v1()
    await c.create({**version("iris-bad"), "status": {"phase": "Failed", "reason": "BelowThreshold"}})
    await c.set_spec_version(spec_version)
    await c.converge()
    c.now += VERSION_GRACE  # a missing version is waited for first (test_kstatus_progress.py)
    await c.converge()
    md = await c.md()
    assert md["status"]["servingVersion"] == "iris-v1"
    assert verdict(md)[0] == FAILED and verdict(md)[2] == SERVING_BUT_STALLED


async def test_a_served_version_whose_pods_go_away_is_in_progress():
    c = await serving_v1()
    predictor = next(d for d in await c.fake.list("apps/v1", "Deployment", "ml") if "v1" in d["metadata"]["name"])
    await c.fake.patch_status("apps/v1", "Deployment", "ml", predictor["metadata"]["name"],
                              {"readyReplicas": 0, "availableReplicas": 0})
    await c.reconcile()
    status, _, violations = verdict(await c.md())
    assert (status, violations) == (IN_PROGRESS, set())  # the Deployment's controller may still bring them back


# ---- ModelVersion --------------------------------------------------------------------------------------------


def model_version(status: dict[str, Any] | None = None) -> ModelVersion:
    body = version("iris-v1")
    body["metadata"]["generation"] = 1
    body["status"] = status or {}
    return ModelVersion.model_validate(body)


def as_object(kind: str, generation: int, status: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": "x", "generation": generation}, "status": status.to_k8s()}


READY = '{"phase": "Ready", "reason": "Validated", "message": "validated"}'
FAILED_RESULT = '{"phase": "Failed", "reason": "DigestMismatch", "message": "sha256 differs"}'


@pytest.mark.parametrize(("job", "expected"), [
    (pods.JobState(), (IN_PROGRESS, "Created")),
    (pods.JobState(exists=True, active=True), (IN_PROGRESS, "Validating")),
    (pods.JobState(exists=True, succeeded=True, termination_message=READY), (CURRENT, "")),
    (pods.JobState(exists=True, failed=True, termination_message=FAILED_RESULT), (FAILED, "DigestMismatch")),
    (pods.JobState(exists=True, failed=True, failure_reason="BackoffLimitExceeded"), (FAILED, "JobFailed")),
])
def test_modelversion_phases(job: pods.JobState, expected: tuple[str, str]):
    status = mvs.compute_version_status(model_version(), "job", job, T0)
    assert verdict(as_object("ModelVersion", 1, status)) == (*expected, set())


def test_a_failed_verdict_recorded_before_stalled_existed_becomes_failed():
    old = model_version({"phase": "Failed", "reason": "DigestMismatch", "message": "sha256 differs",
                         "validationJob": "job", "observedGeneration": 1, "conditions": [
                             {"type": "Ready", "status": "False", "reason": "DigestMismatch",
                              "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]})
    assert verdict(as_object("ModelVersion", 1, old.status))[0] == IN_PROGRESS  # what kstatus read before
    status = mvs.compute_version_status(old, "job", pods.JobState(), T0)
    assert verdict(as_object("ModelVersion", 1, status))[:2] == (FAILED, "DigestMismatch")
    # Idempotent: the next look changes nothing.
    again = mvs.compute_version_status(old.model_copy(update={"status": status}), "job", pods.JobState(), T0)
    assert again == status


# ---- ModelDeployment serving on a request ---------------------------------------------------------------------


def request(kind: str, version_: str | None, from_version: str, now: dt.datetime) -> dict[str, Any]:
    return {"kind": kind, "version": version_, "fromVersion": from_version, "time": now.isoformat(),
            "reason": "Test", "message": f"{kind} requested"}


async def test_a_version_promoted_by_an_experiment_is_current():
    c = await serving_v1()
    await c.create({"apiVersion": GV, "kind": "Experiment", "metadata": {"name": "ab", "namespace": "ml"},
                    "spec": {"deployment": "iris", "variants": [
                        {"name": "control", "version": "iris-v1", "weight": 50},
                        {"name": "treatment", "version": "iris-v2", "weight": 50}]},
                    "status": {"phase": "Concluded", "servingRequest": request("Promote", "iris-v2", "iris-v1", T0)}})
    c.now += STEP
    await c.converge()
    md = await c.md()
    assert md["status"]["servingVersion"] == "iris-v2" and md["status"]["override"]["kind"] == "Promote"
    assert verdict(md) == (CURRENT, "", set())


async def test_a_rollback_requested_by_a_drift_monitor_is_failed_until_git_changes():
    c = await serving_v1()
    await c.set_spec_version("iris-v2")
    await c.converge()
    assert (await c.md())["status"]["servingVersion"] == "iris-v2"
    c.now += STEP
    await c.create({"apiVersion": GV, "kind": "DriftMonitor", "metadata": {"name": "iris-drift", "namespace": "ml"},
                    "spec": {"deployment": "iris"},
                    "status": {"servingRequest": request("Rollback", None, "iris-v2", c.now)}})
    c.now += STEP
    await c.converge()
    md = await c.md()
    assert md["status"]["servingVersion"] == "iris-v1" and md["status"]["override"]["kind"] == "Rollback"
    assert verdict(md) == (FAILED, "RolledBack", SERVING_BUT_STALLED)
