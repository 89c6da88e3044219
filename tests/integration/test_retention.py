"""ModelVersion retention against a real API server: exactly the unprotected versions are deleted (by the
operator's startup pass and by the pass a newly Ready version triggers), each with an Event and a count; a second
pass deletes nothing; dry run deletes nothing and says what it would; a version referenced between the plan and the
deletion survives; deletions carry preconditions on the object read."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from .conftest import wait_for
from .test_controllers import GV, custom, get, ready_version

PIN = "mlsteward.io/retain"
# What a keepLast of 3 must delete from the registry below, and why nothing else goes:
# 2.0.0, 1.11.0, 1.10.0 are the last three by semver (1.10.0 > 1.9.0 though created before it); iris-1-1-0 is
# served and iris-1-0-0 is its lineage parent; iris-1-2-0 is an Experiment arm; iris-1-3-0 is pinned; iris-0-1-0 is
# not validated yet; iris-1-4-0 is only the parent of the unserved iris-1-10-0; the fraud model has its own N, 0.
DOOMED = {"iris-1-4-0", "iris-1-9-0"}
IRIS = {"iris-0-1-0", "iris-1-0-0", "iris-1-1-0", "iris-1-2-0", "iris-1-3-0", "iris-1-4-0", "iris-1-9-0",
        "iris-1-10-0", "iris-1-11-0", "iris-2-0-0"}
FRAUD = {f"fraud-1-{i}-0" for i in range(4)}


def registry(kube: Any, ns: str) -> None:
    ready_version(kube, ns, "iris-1-0-0", "iris", "1.0.0")
    ready_version(kube, ns, "iris-1-1-0", "iris", "1.1.0", parent="iris-1-0-0")
    ready_version(kube, ns, "iris-1-2-0", "iris", "1.2.0")
    ready_version(kube, ns, "iris-1-3-0", "iris", "1.3.0", labels={PIN: "true"})
    ready_version(kube, ns, "iris-1-4-0", "iris", "1.4.0")
    ready_version(kube, ns, "iris-1-10-0", "iris", "1.10.0", parent="iris-1-4-0")
    ready_version(kube, ns, "iris-1-9-0", "iris", "1.9.0")
    ready_version(kube, ns, "iris-1-11-0", "iris", "1.11.0")
    ready_version(kube, ns, "iris-2-0-0", "iris", "2.0.0")
    for name in sorted(FRAUD):
        ready_version(kube, ns, name, "fraud", name.removeprefix("fraud-").replace("-", "."))
    api = custom(kube)
    api.create_namespaced_custom_object(*GV, ns, "modelversions", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "iris-0-1-0"},
        "spec": {"model": "iris", "version": "0.1.0",
                 "artifact": {"uri": "file:///models/iris-0-1-0.skops", "sha256": "c" * 64}}})
    api.create_namespaced_custom_object(*GV, ns, "modeldeployments", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
        "spec": {"version": "iris-1-1-0", "replicas": 0}})
    api.create_namespaced_custom_object(*GV, ns, "experiments", experiment("iris-ab", "iris-1-2-0"))


def experiment(name: str, treatment: str) -> dict[str, Any]:
    return {"apiVersion": "mlsteward.io/v1alpha1", "kind": "Experiment", "metadata": {"name": name},
            "spec": {"deployment": "iris", "variants": [{"name": "control", "version": "iris-1-1-0", "weight": 50},
                                                        {"name": "treatment", "version": treatment, "weight": 50}]}}


def policy(ns: str) -> dict[str, str]:
    # fraud: 1 everywhere, but 0 (keep all) in this namespace: the namespaced key wins.
    return {"MLSTEWARD_OPERATOR_RETENTION_KEEP_LAST": "3",
            "MLSTEWARD_OPERATOR_RETENTION_MODELS": json.dumps({"fraud": 1, f"{ns}/fraud": 0})}


def versions(kube: Any, ns: str) -> set[str]:
    return {o["metadata"]["name"] for o in custom(kube).list_namespaced_custom_object(*GV, ns, "modelversions")["items"]}


def events(kube: Any, ns: str, reason: str) -> dict[str, list[str]]:
    from kubernetes import client

    out: dict[str, list[str]] = {}
    for e in client.CoreV1Api(kube).list_namespaced_event(ns, field_selector=f"reason={reason}").items:
        out.setdefault(e.involved_object.name, []).append(e.message)
    return out


def deletions(ns: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("mlsteward_retention_deletions_total", {"namespace": ns, "model": "iris"}) or 0


def validated_by_its_job(kube: Any, ns: str, name: str) -> None:
    """The operator validates a new version; here the Job's pod reports a Ready verdict, as a kubelet would."""
    from kubernetes import client
    from mlsteward_runtime.contracts import ValidationResult

    core = client.CoreV1Api(kube)
    job = wait_for(lambda: (get(kube, ns, "modelversions", name).get("status") or {}).get("validationJob"),
                   timeout=30, what=f"validation Job of {name}")
    pod = wait_for(lambda: (core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items or [None])[0],
                   timeout=30, what=f"pod of Job {job}")
    verdict = ValidationResult(phase="Ready", reason="Validated", message="validated").model_dump_json()
    core.patch_namespaced_pod_status(pod.metadata.name, ns, {"status": {
        "phase": "Succeeded", "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
        "containerStatuses": [{"name": pod.spec.containers[0].name, "image": pod.spec.containers[0].image,
                               "imageID": "", "ready": False, "restartCount": 0, "state": {"terminated": {
                                   "exitCode": 0, "reason": "Completed", "message": verdict,
                                   "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}}}],
    }})


def test_operator_deletes_exactly_the_unprotected_versions_and_again_when_a_version_arrives(
        kube, namespace, monkeypatch):
    from mlsteward_operator.kube import client as k8s
    from mlsteward_operator.config import OperatorConfig
    from mlsteward_operator.main import OperatorThread
    from mlsteward_operator.retention.reconcile import Retention

    registry(kube, namespace)
    for key, value in policy(namespace).items():
        monkeypatch.setenv(key, value)
    # A long interval: the first pass runs at startup, any later one only because a new version turned Ready.
    monkeypatch.setenv("MLSTEWARD_OPERATOR_RETENTION_INTERVAL_SECONDS", "3600")
    before = deletions(namespace)
    operator = OperatorThread(namespaces=[namespace]).start()
    try:
        wait_for(lambda: versions(kube, namespace) == (IRIS | FRAUD) - DOOMED, timeout=30,
                 what=f"exactly {sorted(DOOMED)} deleted")
        deleted = wait_for(lambda: (e := events(kube, namespace, "RetentionDeleted")) and set(e) == DOOMED and e,
                           timeout=10, what="an Event RetentionDeleted on each deleted version")
        assert all(len(messages) == 1 for messages in deleted.values())
        assert "version 1.9.0 of model iris (number 4 by semver) is older than its last 3 Ready versions " \
            "(retention.keepLast)" in deleted["iris-1-9-0"][0]
        # 1.4.0's rank counts the versions present when it was deleted: 5 in the pass that also deleted 1.9.0, 4 in a
        # later one (the delete carries a resourceVersion precondition, and kopf annotating the ModelVersion between
        # the look and the delete defers it to the next pass).
        rank_1_4 = re.search(r"version 1\.4\.0 of model iris \(number (\d) by semver\) is older than its last 3 Ready "
                             r"versions \(retention\.keepLast\)", deleted["iris-1-4-0"][0])
        assert rank_1_4 is not None and rank_1_4.group(1) in ("4", "5"), deleted["iris-1-4-0"][0]
        assert deletions(namespace) - before == 2

        # A newer version arrives: once it is Ready, 1.10.0 falls out of the last three (and its lineage parent
        # was already gone: the lineage of an unserved version is not kept).
        api = custom(kube)
        api.create_namespaced_custom_object(*GV, namespace, "modelversions", {
            "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "iris-2-1-0"},
            "spec": {"model": "iris", "version": "2.1.0",
                     "artifact": {"uri": "file:///models/iris-2-1-0.skops", "sha256": "c" * 64}}})
        # Under validation it takes no place among the last three (it may still fail): a pass now deletes nothing.
        wait_for(lambda: (get(kube, namespace, "modelversions", "iris-2-1-0").get("status") or {}).get("phase")
                 == "Validating", timeout=30, what="iris-2-1-0 Validating")
        assert asyncio.run(Retention(k8s.Client(), OperatorConfig(), namespaces=[namespace]).run()) == []
        validated_by_its_job(kube, namespace, "iris-2-1-0")
        wait_for(lambda: get(kube, namespace, "modelversions", "iris-1-10-0") is None, timeout=30,
                 what="iris-1-10-0 deleted after iris-2-1-0 turned Ready")
        assert versions(kube, namespace) == (IRIS | FRAUD | {"iris-2-1-0"}) - DOOMED - {"iris-1-10-0"}
        assert get(kube, namespace, "modelversions", "iris-2-1-0")["status"]["phase"] == "Ready"
        assert set(wait_for(lambda: (e := events(kube, namespace, "RetentionDeleted")) and len(e) == 3 and e,
                            timeout=10, what="three RetentionDeleted Events")) == DOOMED | {"iris-1-10-0"}
        assert deletions(namespace) - before == 3
    finally:
        operator.stop()
    assert operator.error is None, f"operator failed: {operator.error!r}"

    # Another pass finds nothing more to delete.
    left = versions(kube, namespace)
    assert asyncio.run(Retention(k8s.Client(), OperatorConfig(), namespaces=[namespace]).run()) == []
    assert versions(kube, namespace) == left
    assert len(events(kube, namespace, "RetentionDeleted")) == 3


def test_dry_run_deletes_nothing_and_says_once_what_it_would(kube, namespace, monkeypatch):
    from mlsteward_operator.kube import client as k8s
    from mlsteward_operator.config import OperatorConfig
    from mlsteward_operator.retention.reconcile import Retention

    registry(kube, namespace)
    for key, value in policy(namespace).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLSTEWARD_OPERATOR_RETENTION_DRY_RUN", "true")
    before = deletions(namespace)
    retention = Retention(k8s.Client(), OperatorConfig(), namespaces=[namespace])
    outcomes = asyncio.run(retention.run())
    assert {o.name for o in outcomes} == DOOMED and not any(o.deleted for o in outcomes)
    assert versions(kube, namespace) == IRIS | FRAUD
    would = wait_for(lambda: (e := events(kube, namespace, "RetentionWouldDelete")) and set(e) == DOOMED and e,
                     timeout=10, what="RetentionWouldDelete Events")
    assert all(m[0].startswith("Retention would delete (dry run): version ") for m in would.values())
    # A later pass of the same operator decides the same and records nothing new.
    assert asyncio.run(retention.run()) == []
    assert {k: len(v) for k, v in events(kube, namespace, "RetentionWouldDelete").items()} == dict.fromkeys(DOOMED, 1)
    assert versions(kube, namespace) == IRIS | FRAUD and deletions(namespace) == before
    assert events(kube, namespace, "RetentionDeleted") == {}


def test_a_version_referenced_after_the_plan_is_not_deleted(kube, namespace, monkeypatch):
    from mlsteward_operator.kube import client as k8s
    from mlsteward_operator.config import OperatorConfig
    from mlsteward_operator.retention.reconcile import Retention

    registry(kube, namespace)
    for key, value in policy(namespace).items():
        monkeypatch.setenv(key, value)

    class UserActsMeanwhile(Retention):
        """Between the first look and the one right before deleting, someone starts an Experiment on 1.9.0."""

        looks = 0

        async def _observe(self, ns: str) -> Any:
            seen = await super()._observe(ns)
            self.looks += 1
            if self.looks == 1:
                custom(kube).create_namespaced_custom_object(*GV, ns, "experiments", experiment("late", "iris-1-9-0"))
            return seen

    outcomes = asyncio.run(UserActsMeanwhile(k8s.Client(), OperatorConfig(), namespaces=[namespace]).run())
    assert [(o.name, o.deleted) for o in outcomes] == [("iris-1-4-0", True)]
    assert versions(kube, namespace) == (IRIS | FRAUD) - {"iris-1-4-0"}


def test_delete_preconditions_spare_a_recreated_or_changed_version(kube, namespace):
    from mlsteward_operator.kube import client as k8s

    ready_version(kube, namespace, "iris-1", "iris", "1.0.0")
    old = get(kube, namespace, "modelversions", "iris-1")
    client = k8s.Client()
    api_version = "mlsteward.io/v1alpha1"

    # Pinned after it was read: its resourceVersion moved, so the deletion is refused.
    custom(kube).patch_namespaced_custom_object(*GV, namespace, "modelversions", "iris-1",
                                                {"metadata": {"labels": {PIN: "true"}}})
    assert asyncio.run(client.delete(api_version, "ModelVersion", namespace, "iris-1", uid=old["metadata"]["uid"],
                                     resource_version=old["metadata"]["resourceVersion"])) is False
    assert get(kube, namespace, "modelversions", "iris-1") is not None

    # Deleted and created again under the same name: the old uid does not match the new object.
    custom(kube).delete_namespaced_custom_object(*GV, namespace, "modelversions", "iris-1")
    wait_for(lambda: get(kube, namespace, "modelversions", "iris-1") is None, timeout=10, what="iris-1 gone")
    ready_version(kube, namespace, "iris-1", "iris", "1.0.0")
    assert asyncio.run(client.delete(api_version, "ModelVersion", namespace, "iris-1",
                                     uid=old["metadata"]["uid"])) is False
    new = get(kube, namespace, "modelversions", "iris-1")
    assert new is not None and new["metadata"]["uid"] != old["metadata"]["uid"]
    # With the current object's identity it goes; a second attempt finds it gone.
    assert asyncio.run(client.delete(api_version, "ModelVersion", namespace, "iris-1", uid=new["metadata"]["uid"],
                                     resource_version=new["metadata"]["resourceVersion"])) is True
    assert asyncio.run(client.delete(api_version, "ModelVersion", namespace, "iris-1",
                                     uid=new["metadata"]["uid"])) is False
