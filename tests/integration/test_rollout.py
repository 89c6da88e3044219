"""A Canary rollout against a real API server (tier A: no node, so no pod runs).

What this tier can show: a ModelDeployment whose spec.version moves to a new version under strategy Canary gets
both predictors and a router configuration that splits the first step's weights, with the stable version as the
router's fallback, and status.rollout at step 0 of the new version while the old one keeps serving. The step never
begins here: it begins once every router pod runs the split, and no pod runs without a node, so there are no
router statistics and the gates cannot be judged. Judging them (a failed gate rolled back, a good canary
promoted) is the e2e tier's `tests/e2e/test_rollout.py`.

Predictors have `replicas: 0`, which a Deployment controller reports as fully rolled out without a node, so the
new version counts as warm; the served version is set in status as the operator would after an earlier rollout.
"""

from __future__ import annotations

import json

from .conftest import wait_for
from .test_controllers import GV, custom, get, ready_version


def router_config(kube, ns: str, md: str) -> dict | None:
    from kubernetes import client
    from kubernetes.client import ApiException

    try:
        cm = client.CoreV1Api(kube).read_namespaced_config_map(f"{md}-router", ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return json.loads(cm.data["router.json"])


def test_canary_renders_the_first_split_and_rollout_step_zero(kube, namespace):
    from mlsteward_operator.main import OperatorThread

    # Both versions hold their verdict before the operator starts (it would otherwise race to write Validating).
    ready_version(kube, namespace, "iris-1", "iris", "1.0.0")
    ready_version(kube, namespace, "iris-2", "iris", "2.0.0")
    operator = OperatorThread(namespaces=[namespace]).start()
    try:
        run_canary(kube, namespace)
    finally:
        operator.stop()
    assert operator.error is None, f"operator failed: {operator.error!r}"


def run_canary(kube, namespace: str) -> None:
    from kubernetes import client

    api = custom(kube)
    api.create_namespaced_custom_object(*GV, namespace, "modeldeployments", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
        "spec": {"version": "iris-1", "replicas": 0,
                 "rollout": {"strategy": "Canary", "steps": [20, 60, 100], "stepInterval": "10s",
                             "analysis": {"maxErrorRate": 0.01, "maxP99LatencyMs": 250, "minRequests": 5}}}})
    wait_for(lambda: (get(kube, namespace, "modeldeployments", "iris").get("status") or {}).get(
        "observedGeneration") == 1, timeout=30, what="status of generation 1")
    api.patch_namespaced_custom_object_status(*GV, namespace, "modeldeployments", "iris", {
        "status": {"servingVersion": "iris-1", "stableVersion": "iris-1"}})

    api.patch_namespaced_custom_object(*GV, namespace, "modeldeployments", "iris", {"spec": {"version": "iris-2"}})

    def split() -> dict | None:
        config = router_config(kube, namespace, "iris")
        if not config or {b["version"]: b["weight"] for b in config["backends"]} != {"iris-1": 80, "iris-2": 20}:
            return None
        return config

    config = wait_for(split, timeout=30, what="the router configuration of step 0")
    assert config["stable_version"] == "iris-1"
    assert {b["version"]: b["url"] for b in config["backends"]} == {
        "iris-1": f"http://iris-iris-1.{namespace}.svc.cluster.local:8080",
        "iris-2": f"http://iris-iris-2.{namespace}.svc.cluster.local:8080",
    }
    cm = client.CoreV1Api(kube).read_namespaced_config_map("iris-router", namespace)
    assert cm.metadata.annotations["mlsteward.io/traffic"] == "iris-1=80,iris-2=20"
    assert cm.metadata.annotations["mlsteward.io/router-generation"] == config["generation"]
    deployments = sorted(d.metadata.name for d in client.AppsV1Api(kube).list_namespaced_deployment(
        namespace, label_selector="mlsteward.io/deployment=iris").items)
    assert deployments == ["iris-iris-1", "iris-iris-2", "iris-router"]

    # Status is written after the children are applied, so it may lag the ConfigMap by one reconcile.
    obj = wait_for(lambda: (o := get(kube, namespace, "modeldeployments", "iris"))["status"].get(
        "trafficSummary") == "iris-1=80,iris-2=20" and o, timeout=30, what="status of the step 0 split")
    status = obj["status"]
    assert status["observedGeneration"] == 2
    assert status["rollout"] == {"phase": "Progressing", "step": 0, "targetVersion": "iris-2"}
    assert status["trafficSummary"] == "iris-1=80,iris-2=20"
    assert (status["servingVersion"], status["stableVersion"]) == ("iris-1", "iris-1")
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "Stepping")
    assert status.get("decisions", []) == []  # nothing judged, nothing decided
    assert obj["spec"]["version"] == "iris-2"
