"""Reconciles run on the in-memory API server (kube/fake.py), fast: what they leave in the cluster, that a second
run changes nothing, and the fake's own API-server behaviour the reconciles depend on."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel import names
from mlsteward_operator.kube.fake import FakeClient
from mlsteward_operator.modeldeployment.reconcile import reconcile_deployment
from mlsteward_operator.modelversion.reconcile import reconcile_version

GV = "mlsteward.io/v1alpha1"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def version(name: str, phase: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": GV, "kind": "ModelVersion", "metadata": {"name": name, "namespace": "ml"},
                           "spec": {"model": "iris", "version": "1.0.0",
                                    "artifact": {"uri": f"s3://m/{name}.skops", "sha256": "a" * 64}}}
    if phase:
        obj["status"] = {"phase": phase}
    return obj


async def stored(fake: FakeClient, obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` created in the fake, its status written through the status subresource as a controller would."""
    created = await fake.create({k: v for k, v in obj.items() if k != "status"})
    assert created is not None
    if obj.get("status"):
        created = await fake.patch_status(obj["apiVersion"], obj["kind"], "ml", obj["metadata"]["name"],
                                          obj["status"])
    assert created is not None
    return created


async def run_and_patch(fn: Any, fake: FakeClient, kind: str, name: str, cfg: OperatorConfig) -> dict | None:
    """One reconcile as the handlers run it: on the stored object, its returned status patched."""
    body = await fake.get(GV, kind, "ml", name)
    assert body is not None
    new = await fn(body, fake, cfg, now=T0)
    if new is not None:
        await fake.patch_status(GV, kind, "ml", name, new)
    return new


async def test_a_modeldeployment_reconcile_renders_its_children_and_a_second_run_changes_nothing():
    fake, cfg = FakeClient(), OperatorConfig()
    await stored(fake, version("iris-v1", "Ready"))
    md = await stored(fake, {"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris",
                                                                                      "namespace": "ml"},
                             "spec": {"model": "iris", "version": "iris-v1"}})

    first = await run_and_patch(reconcile_deployment, fake, "ModelDeployment", "iris", cfg)
    assert first is not None
    predictor = await fake.get("apps/v1", "Deployment", "ml", names.predictor_name("iris", "iris-v1"))
    router = await fake.get("apps/v1", "Deployment", "ml", names.router_name("iris"))
    service = await fake.get("v1", "Service", "ml", names.service_name("iris"))
    assert predictor is not None and router is not None and service is not None
    assert predictor["metadata"]["ownerReferences"][0]["uid"] == md["metadata"]["uid"]
    status = (await fake.get(GV, "ModelDeployment", "ml", "iris"))["status"]
    # No pod is ready in the fake: the version is not serving yet, and status says what it waits for.
    assert status.get("servingVersion") is None
    assert {c["type"]: c["status"] for c in status["conditions"]}["Progressing"] == "True"

    writes = fake.writes
    assert await run_and_patch(reconcile_deployment, fake, "ModelDeployment", "iris", cfg) is None
    assert fake.writes == writes  # idempotent: the applies changed nothing and no status was written

    await fake.delete(GV, "ModelDeployment", "ml", "iris")
    assert await fake.list("apps/v1", "Deployment", "ml") == []  # owned children go with their parent


async def test_a_modelversion_reconcile_creates_its_validation_job_once():
    fake, cfg = FakeClient(), OperatorConfig()
    await stored(fake, version("iris-v2"))
    await run_and_patch(reconcile_version, fake, "ModelVersion", "iris-v2", cfg)
    await run_and_patch(reconcile_version, fake, "ModelVersion", "iris-v2", cfg)
    jobs = await fake.list("batch/v1", "Job", "ml")
    assert len(jobs) == 1 and jobs[0]["metadata"]["ownerReferences"][0]["kind"] == "ModelVersion"
    assert [e["reason"] for e in fake.events] == ["ValidationStarted"]
    status = (await fake.get(GV, "ModelVersion", "ml", "iris-v2"))["status"]
    assert status["phase"] == "Validating"


async def test_the_fake_keeps_the_api_servers_rules():
    fake = FakeClient()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ml", "labels": {"a": "1"}},
          "data": {"k": "v"}}
    first = await fake.apply(cm)
    assert first["metadata"]["resourceVersion"] and await fake.create(cm) is None  # the name is taken
    again = await fake.apply(cm)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]  # nothing changed
    changed = await fake.apply({**cm, "data": {"k": "w"}})
    assert changed["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    assert [o["metadata"]["name"] for o in await fake.list("v1", "ConfigMap", "ml", labels={"a": "1"})] == ["c"]
    assert await fake.list("v1", "ConfigMap", "ml", labels={"a": "2"}) == []
    # A delete guarded by what was read refuses a newer object, as the API server's preconditions do.
    assert not await fake.delete("v1", "ConfigMap", "ml", "c", resource_version=first["metadata"]["resourceVersion"])
    assert await fake.delete("v1", "ConfigMap", "ml", "c", uid=changed["metadata"]["uid"],
                             resource_version=changed["metadata"]["resourceVersion"])
    assert await fake.get("v1", "ConfigMap", "ml", "c") is None and not await fake.delete("v1", "ConfigMap", "ml", "c")
    # A status patch is a merge patch: null removes a key, nested objects merge.
    await fake.create({"apiVersion": GV, "kind": "Experiment", "metadata": {"name": "e", "namespace": "ml"}})
    await fake.patch_status(GV, "Experiment", "ml", "e", {"phase": "Running", "winner": {"name": "a", "p": 1}})
    out = await fake.patch_status(GV, "Experiment", "ml", "e", {"winner": {"p": None}, "phase": None})
    assert out is not None and out["status"] == {"winner": {"name": "a"}}
    assert await fake.patch_status(GV, "Experiment", "ml", "gone", {"phase": "x"}) is None


async def test_a_recorded_retraining_is_run_by_the_retraining_package_once_then_registered():
    """status.retrain recorded by a Retrain decision: the Job is created once under that name, and its result
    becomes a ModelVersion with lineage (the monitor has no deployment, so its own check has no verdict)."""
    from mlsteward_runtime.contracts import ArtifactRef, TrainResult

    from mlsteward_operator.driftmonitor.reconcile import DriftMonitors

    fake, cfg, drift = FakeClient(), OperatorConfig(), DriftMonitors()
    await stored(fake, version("iris-v1", "Ready"))
    template = {"backoffLimit": 0, "template": {"spec": {"containers": [{"name": "train", "image": "m:1"}]}}}
    await stored(fake, {"apiVersion": GV, "kind": "DriftMonitor", "metadata": {"name": "iris-drift",
                                                                               "namespace": "ml"},
                        "spec": {"deployment": "iris", "actions": ["Retrain"], "retrain": {"template": template}},
                        "status": {"retrain": {"job": "iris-drift-retrain-20260301120000", "parent": "iris-v1",
                                               "trigger": "driftmonitor/iris-drift@2026-03-01T12:00:00Z",
                                               "phase": "Running", "startedAt": "2026-03-01T12:00:00Z"}}})

    await run_and_patch(drift.reconcile, fake, "DriftMonitor", "iris-drift", cfg)
    await run_and_patch(drift.reconcile, fake, "DriftMonitor", "iris-drift", cfg)
    jobs = await fake.list("batch/v1", "Job", "ml")
    assert [j["metadata"]["name"] for j in jobs] == ["iris-drift-retrain-20260301120000"]
    assert [e["reason"] for e in fake.events].count("JobCreated") == 1

    # The Job succeeds; its pod's termination message holds the TrainResult.
    result = TrainResult(phase="Succeeded", reason="Trained", message="ok", metrics={"accuracy": 0.93},
                         artifact=ArtifactRef(uri="s3://m/iris-r.skops", sha256="c" * 64))
    await fake.patch_status("batch/v1", "Job", "ml", jobs[0]["metadata"]["name"],
                            {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
    await fake.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "train-x", "namespace": "ml", "labels": {"job-name": jobs[0]["metadata"]["name"]}}})
    await fake.patch_status("v1", "Pod", "ml", "train-x", {"containerStatuses": [
        {"name": "train", "state": {"terminated": {"exitCode": 0, "message": result.model_dump_json()}}}]})
    await run_and_patch(drift.reconcile, fake, "DriftMonitor", "iris-drift", cfg)

    retrain = (await fake.get(GV, "DriftMonitor", "ml", "iris-drift"))["status"]["retrain"]
    assert retrain["phase"] == "Validating" and [s["step"] for s in retrain["steps"]] == [
        "JobCreated", "JobSucceeded", "VersionRegistered"]
    registered = await fake.get(GV, "ModelVersion", "ml", retrain["modelVersion"])
    assert registered is not None and registered["spec"]["lineage"]["parent"] == "iris-v1"
    assert len(drift.locks) == 0  # no lock left behind once the reconciles are done
