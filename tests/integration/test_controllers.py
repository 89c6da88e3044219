"""The operator, in-process, against a real API server with the controller manager (garbage collection, Job
controller) but no node.

Without a node no pod runs, so for the validation Job this test plays the kubelet's part: it runs the Job pod's
real command (`mlsteward validate` with the arguments the operator rendered) on this machine and reports the
container's termination through the pod's status subresource, as a kubelet would. Everything else is the real
operator reacting to the real API server.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import wait_for

GV = ("mlsteward.io", "v1alpha1")


def custom(kube: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(kube)


def get(kube: Any, ns: str, plural: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client import ApiException

    try:
        return custom(kube).get_namespaced_custom_object(*GV, ns, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def cond(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    subprocess.run([sys.executable, str(Path(__file__).resolve().parents[2] / "examples/train.py"), "--out",
                    str(out)], check=True, capture_output=True, timeout=300)
    return out


def model_version(name: str, trained: Path, version: str, *, sha256: str | None = None) -> dict[str, Any]:
    models = json.loads((trained / "models.json").read_text())
    return {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name},
        "spec": {
            "model": "breast-cancer", "version": version,
            "artifact": {"uri": str(trained / models[version]["artifact"]), "format": "skops",
                         "sha256": sha256 or models[version]["sha256"]},
            "validation": {"dataset": str(trained / "validation.csv"), "target": "target",
                           "thresholds": ["accuracy >= 0.9"]},
        },
    }


def play_kubelet_for_job(kube: Any, ns: str, job_name: str, tmp: Path) -> dict[str, Any]:
    """Runs the Job's pod command here and reports its termination on the pod, as a kubelet would."""
    from kubernetes import client

    core = client.CoreV1Api(kube)
    pod = wait_for(lambda: (core.list_namespaced_pod(ns, label_selector=f"job-name={job_name}").items or [None])[0],
                   timeout=30, what=f"pod of Job {job_name}")
    container = pod.spec.containers[0]
    result_file = tmp / f"{job_name}.termination"
    args = [str(result_file) if a == container.termination_message_path else a for a in container.args]
    proc = subprocess.run([sys.executable, "-m", "mlsteward_runtime.cli", *args], capture_output=True, text=True,
                          timeout=180)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    terminated = {"exitCode": proc.returncode, "reason": "Completed" if proc.returncode == 0 else "Error",
                  "message": result_file.read_text() if result_file.exists() else "", "startedAt": now,
                  "finishedAt": now}
    core.patch_namespaced_pod_status(pod.metadata.name, ns, {"status": {
        "phase": "Succeeded" if proc.returncode == 0 else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
        "containerStatuses": [{"name": container.name, "image": container.image, "imageID": "", "ready": False,
                               "restartCount": 0, "state": {"terminated": terminated}}],
    }})
    return terminated


def test_modelversion_validates_ready_and_a_wrong_digest_fails(kube, namespace, operator, trained, tmp_path):
    from kubernetes import client

    api = custom(kube)
    api.create_namespaced_custom_object(*GV, namespace, "modelversions", model_version("good", trained, "1.0.0"))
    api.create_namespaced_custom_object(*GV, namespace, "modelversions",
                                        model_version("tampered", trained, "1.0.0", sha256="ab" * 32))
    batch = client.BatchV1Api(kube)
    jobs = {}
    for name in ("good", "tampered"):
        jobs[name] = wait_for(lambda n=name: (batch.list_namespaced_job(
            namespace, label_selector=f"mlsteward.io/modelversion={n}").items or [None])[0],
            timeout=30, what=f"validation Job of {name}")
        assert jobs[name].metadata.owner_references[0].name == name
        wait_for(lambda n=name: (get(kube, namespace, "modelversions", n).get("status") or {}).get("phase")
                 in ("Pending", "Validating"), timeout=30, what=f"{name} Pending or Validating")

    good_term = play_kubelet_for_job(kube, namespace, jobs["good"].metadata.name, tmp_path)
    bad_term = play_kubelet_for_job(kube, namespace, jobs["tampered"].metadata.name, tmp_path)
    assert good_term["exitCode"] == 0 and bad_term["exitCode"] != 0

    good = wait_for(lambda: (o := get(kube, namespace, "modelversions", "good"))["status"].get("phase") == "Ready"
                    and o, timeout=30, what="good ModelVersion Ready")
    assert good["status"]["metrics"]["accuracy"] >= 0.9
    assert cond(good, "Ready")["status"] == "True"
    assert good["status"]["observedGeneration"] == good["metadata"]["generation"]

    bad = wait_for(lambda: (o := get(kube, namespace, "modelversions", "tampered"))["status"].get("phase")
                   == "Failed" and o, timeout=30, what="tampered ModelVersion Failed")
    assert bad["status"]["reason"] == "DigestMismatch"
    assert "ab" * 32 in bad["status"]["message"]
    assert cond(bad, "Degraded")["status"] == "True"

    # One Job per version, however often the timers ran.
    all_jobs = batch.list_namespaced_job(namespace).items
    assert sorted(j.metadata.name for j in all_jobs) == sorted(j.metadata.name for j in jobs.values())
    events = client.CoreV1Api(kube).list_namespaced_event(namespace).items
    reasons = {(e.involved_object.name, e.reason) for e in events}
    assert ("tampered", "DigestMismatch") in reasons and ("good", "ValidationStarted") in reasons


def ready_version(kube: Any, ns: str, name: str, model: str, version: str, *, parent: str | None = None,
                  labels: dict[str, str] | None = None) -> None:
    """A ModelVersion that already holds its verdict (validation is covered by the test above), optionally with a
    lineage parent and labels."""
    from mlsteward_operator.modelversion import render
    from mlsteward_operator.api.modelversion import ModelVersion

    body: dict[str, Any] = {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name,
                                                                                  "labels": labels or {}},
        "spec": {"model": model, "version": version,
                 "artifact": {"uri": f"file:///models/{name}.skops", "sha256": "c" * 64, "format": "skops"}}}
    if parent:
        body["spec"]["lineage"] = {"parent": parent}
    created = custom(kube).create_namespaced_custom_object(*GV, ns, "modelversions", body)
    job = render.validation_job_name(ModelVersion.model_validate(created))
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    custom(kube).patch_namespaced_custom_object_status(*GV, ns, "modelversions", name, {"status": {
        "phase": "Ready", "reason": "Validated", "validationJob": job, "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Validated", "message": "",
                        "lastTransitionTime": now}]}})


def children(kube: Any, ns: str, md: str) -> dict[str, list[str]]:
    from kubernetes import client

    sel = f"mlsteward.io/deployment={md}"
    apps, core = client.AppsV1Api(kube), client.CoreV1Api(kube)
    policy = client.PolicyV1Api(kube)
    return {
        "Deployment": sorted(d.metadata.name for d in apps.list_namespaced_deployment(ns, label_selector=sel).items),
        "Service": sorted(s.metadata.name for s in core.list_namespaced_service(ns, label_selector=sel).items),
        "ConfigMap": sorted(c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector=sel).items),
        "PodDisruptionBudget": sorted(p.metadata.name for p in
                                      policy.list_namespaced_pod_disruption_budget(ns, label_selector=sel).items),
    }


def test_modeldeployment_children_status_gitops_and_deletion(kube, namespace):
    from mlsteward_operator.main import OperatorThread

    # The version holds its verdict before the operator starts (it would otherwise race to write Validating).
    ready_version(kube, namespace, "iris-1", "iris", "1.0.0")
    operator = OperatorThread(namespaces=[namespace]).start()
    try:
        children_status_gitops_and_deletion(kube, namespace)
    finally:
        operator.stop()
    assert operator.error is None, f"operator failed: {operator.error!r}"


def children_status_gitops_and_deletion(kube, namespace: str) -> None:
    from kubernetes import client

    md = {"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
          "spec": {"version": "iris-1", "replicas": 2}}
    custom(kube).create_namespaced_custom_object(*GV, namespace, "modeldeployments", md)

    expected = {"Deployment": ["iris-iris-1", "iris-router"], "Service": ["iris", "iris-iris-1"],
                "ConfigMap": ["iris-iris-1", "iris-router"], "PodDisruptionBudget": ["iris-iris-1", "iris-router"]}
    got = wait_for(lambda: (c := children(kube, namespace, "iris")) == expected and c, timeout=30,
                   what="the ModelDeployment's children")
    assert got == expected
    apps = client.AppsV1Api(kube)
    predictor = apps.read_namespaced_deployment("iris-iris-1", namespace)
    owner = predictor.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("ModelDeployment", "iris", True)
    assert predictor.spec.replicas == 2
    assert predictor.metadata.labels["app.kubernetes.io/managed-by"] == "mlsteward"
    assert predictor.metadata.labels["mlsteward.io/version"] == "iris-1"
    pod = predictor.spec.template.spec
    assert pod.security_context.run_as_non_root is True
    assert pod.containers[0].security_context.read_only_root_filesystem is True
    assert pod.containers[0].readiness_probe.http_get.path == "/v2/health/ready"
    managers = {m.manager for m in predictor.metadata.managed_fields}
    assert "mlsteward" in managers

    # No node: nothing becomes ready, and status says so with the spec's generation.
    obj = wait_for(lambda: (o := get(kube, namespace, "modeldeployments", "iris")).get("status", {}).get(
        "observedGeneration") == 1 and o, timeout=30, what="status for generation 1")
    assert cond(obj, "Ready")["status"] == "False"
    assert cond(obj, "Progressing")["status"] == "True"
    assert obj["status"]["traffic"] == [{"version": "iris-1", "weight": 100}]

    # A spec.version that does not exist: generation 2 is observed and the deployment waits for the version (a
    # GitOps sync may apply it a moment later; after the grace it is Stalled, test_kstatus_progress.py). Nothing
    # was serving yet (no node, so iris-1 never became ready), so nothing is kept: iris-1 is no longer wanted and
    # its children go. Keeping a serving version in place is the e2e tier's test, where pods become ready.
    custom(kube).patch_namespaced_custom_object(*GV, namespace, "modeldeployments", "iris",
                                                {"spec": {"version": "iris-9"}})
    obj = wait_for(lambda: (o := get(kube, namespace, "modeldeployments", "iris"))["status"].get(
        "observedGeneration") == 2 and cond(o, "Reconciling").get("reason") == "WaitingForVersion" and o,
        timeout=30, what="waiting for a missing version")
    assert "ModelVersion iris-9 does not exist yet" in cond(obj, "Reconciling")["message"]
    assert cond(obj, "Ready")["reason"] == "WaitingForVersion"
    assert cond(obj, "Degraded")["status"] == "False"
    assert obj["status"].get("servingVersion") is None
    empty = {k: [] for k in expected}
    wait_for(lambda: children(kube, namespace, "iris") == empty, timeout=30, what="unwanted iris-1 children pruned")

    # Back to iris-1: the children come back, identical.
    custom(kube).patch_namespaced_custom_object(*GV, namespace, "modeldeployments", "iris",
                                                {"spec": {"version": "iris-1"}})
    wait_for(lambda: children(kube, namespace, "iris") == expected, timeout=30, what="children re-created")

    # GitOps-pure: the operator owns no field of the user's spec.
    for entry in obj["metadata"]["managedFields"]:
        if entry["manager"] in ("mlsteward", "kopf") or entry.get("subresource") == "status":
            assert "f:spec" not in (entry.get("fieldsV1") or {}), entry
    assert obj["spec"]["version"] == "iris-9"

    # Deleting the ModelDeployment removes every child (owner references, garbage collector).
    custom(kube).delete_namespaced_custom_object(*GV, namespace, "modeldeployments", "iris")
    wait_for(lambda: children(kube, namespace, "iris") == empty, timeout=60, what="children garbage-collected")


def test_operator_restart_converges_without_duplicates(kube, namespace, trained):
    from kubernetes import client

    from mlsteward_operator.main import OperatorThread

    ready_version(kube, namespace, "iris-1", "iris", "1.0.0")
    api = custom(kube)
    api.create_namespaced_custom_object(*GV, namespace, "modelversions", model_version("v-restart", trained, "1.0.0"))
    api.create_namespaced_custom_object(*GV, namespace, "modeldeployments", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
        "spec": {"version": "iris-1"}})
    # Stop the operator as soon as it has started acting, then start a fresh one (new memory, same cluster).
    first = OperatorThread(namespaces=[namespace]).start()
    wait_for(lambda: children(kube, namespace, "iris")["Deployment"], timeout=30, what="first children")
    first.stop()
    second = OperatorThread(namespaces=[namespace]).start()
    try:
        time.sleep(8)  # several timer periods of the second operator, to catch any duplicate it would make
        assert children(kube, namespace, "iris")["Deployment"] == ["iris-iris-1", "iris-router"]
        jobs = client.BatchV1Api(kube).list_namespaced_job(namespace).items
        assert [j.metadata.owner_references[0].name for j in jobs] == ["v-restart"]
    finally:
        second.stop()
    assert second.error is None and first.error is None


def test_auth_mounts_the_secret_and_a_network_policy_guards_the_predictors(kube, namespace):
    from kubernetes import client

    from mlsteward_operator.main import OperatorThread

    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    net = client.NetworkingV1Api(kube)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "iris-tokens"},
                                              "stringData": {"tokens": "token-one\ntoken-two\n"}})
    # The operator starts after the version holds its verdict, so its validation never races the status written here.
    ready_version(kube, namespace, "iris-1", "iris", "1.0.0")
    operator = OperatorThread(namespaces=[namespace]).start()
    try:
        _check_auth_children(kube, namespace, core, apps, net)
    finally:
        operator.stop()
    assert operator.error is None, f"operator failed: {operator.error!r}"


def _check_auth_children(kube: Any, namespace: str, core: Any, apps: Any, net: Any) -> None:
    from kubernetes import client

    md = {"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
          "spec": {"version": "iris-1", "auth": {"secretRef": {"name": "iris-tokens", "key": "tokens"},
                                                 "rateLimit": {"requestsPerSecond": 20, "burst": 40}}}}
    custom(kube).create_namespaced_custom_object(*GV, namespace, "modeldeployments", md)

    def router_volumes() -> dict[str, Any] | None:
        try:
            d = apps.read_namespaced_deployment("iris-router", namespace)
        except client.ApiException:
            return None
        return {v.name: v for v in d.spec.template.spec.volumes}

    volumes = wait_for(lambda: (v := router_volumes()) and "auth" in v and v, timeout=60,
                       what="the router with the auth volume")
    secret = volumes["auth"].secret
    assert secret.secret_name == "iris-tokens" and [(i.key, i.path) for i in secret.items] == [("tokens", "tokens")]
    router = apps.read_namespaced_deployment("iris-router", namespace)
    container = router.spec.template.spec.containers[0]
    mount = next(m for m in container.volume_mounts if m.name == "auth")
    # Tokens never in the environment (the router's env holds its pod name, namespace and key file path only).
    assert mount.read_only is True and mount.sub_path is None
    assert container.env_from is None and all(e.value_from is None or e.value_from.secret_key_ref is None
                                              for e in container.env)
    config = json.loads(core.read_namespaced_config_map("iris-router", namespace).data["router.json"])
    assert config["auth"] == {"tokens_file": f"{mount.mount_path}/tokens", "header": "x-api-key",
                              "secret_name": "iris-tokens", "secret_key": "tokens"}
    assert config["rate_limit"] == {"requests_per_second": 20.0, "burst": 40, "by": "token"}
    generation_with_auth = config["generation"]
    # The router may watch that one Secret (a rotation applies within seconds) and its own ConfigMap.
    role = client.RbacAuthorizationV1Api(kube).read_namespaced_role("iris-router", namespace)
    assert [(r.resources, r.resource_names) for r in role.rules] == [(["configmaps"], ["iris-router"]),
                                                                    (["secrets"], ["iris-tokens"])]

    policy = wait_for(lambda: (net.list_namespaced_network_policy(
        namespace, label_selector="mlsteward.io/deployment=iris").items or [None])[0], timeout=60,
        what="the NetworkPolicy")
    assert policy.metadata.name == "iris-predictors"
    assert policy.metadata.owner_references[0].name == "iris"
    predictor = apps.read_namespaced_deployment("iris-iris-1", namespace)
    selected = policy.spec.pod_selector.match_labels
    assert selected == {"mlsteward.io/deployment": "iris", "app.kubernetes.io/component": "predictor"}
    assert all(predictor.spec.template.metadata.labels[k] == v for k, v in selected.items())
    [rule] = policy.spec.ingress
    assert [(p.protocol, p.port) for p in rule.ports] == [("TCP", 8080)]
    assert rule._from[0].pod_selector.match_labels == router.spec.selector.match_labels
    assert rule._from[0].namespace_selector is None
    assert rule._from[1].pod_selector.match_labels["app.kubernetes.io/component"] == "operator"

    # Auth removed: the router loses the volume (its pods roll) and its config the auth (a new generation).
    custom(kube).patch_namespaced_custom_object(*GV, namespace, "modeldeployments", "iris", {"spec": {"auth": None}})
    volumes = wait_for(lambda: (v := router_volumes()) is not None and "auth" not in v and v, timeout=60,
                       what="the router without the auth volume")
    config = json.loads(core.read_namespaced_config_map("iris-router", namespace).data["router.json"])
    assert "auth" not in config and "rate_limit" not in config
    assert config["generation"] != generation_with_auth
    router = apps.read_namespaced_deployment("iris-router", namespace)
    assert all(m.name != "auth" for m in router.spec.template.spec.containers[0].volume_mounts)

    # Nothing left to serve: the NetworkPolicy is pruned with the other children, and comes back with them.
    def policies() -> list[str]:
        return [p.metadata.name for p in net.list_namespaced_network_policy(
            namespace, label_selector="mlsteward.io/deployment=iris").items]

    custom(kube).patch_namespaced_custom_object(*GV, namespace, "modeldeployments", "iris",
                                                {"spec": {"version": "iris-9"}})
    wait_for(lambda: policies() == [], timeout=60, what="the NetworkPolicy pruned")
    custom(kube).patch_namespaced_custom_object(*GV, namespace, "modeldeployments", "iris",
                                                {"spec": {"version": "iris-1"}})
    wait_for(lambda: policies() == ["iris-predictors"], timeout=60, what="the NetworkPolicy back")
