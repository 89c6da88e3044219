"""Watch-driven, not polled: an idle ModelDeployment costs the API server nothing, and a change of a child
Deployment's status (its pods becoming unready) wakes its parent at once.

The operator runs in-process against a real API server (tier A: a controller manager, no node). Here the test plays
the kubelet: it marks the managed pods Running and Ready, or takes one out of Ready; and it plays the router
replicas: the router pods are reported at 127.0.0.1, where an HTTP server answers `/v1/router/stats` with the
generation of the router's ConfigMap, as a replica that watches it does. The operator runs as a
ServiceAccount of its own that a FlowSchema of its own matches, so the API server counts its requests
(`apiserver_flowcontrol_dispatched_requests_total`) apart from the controller manager's and the scheduler's, which
keep posting Events about pods that no node runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

from .conftest import wait_for
from .test_controllers import GV, cond, custom, get, ready_version

IDLE_WINDOW_S = 12.0


def operator_identity(kube: Any, ns: str, path: Path) -> str:
    """A kubeconfig at `path` for the operator as a ServiceAccount of its own (cluster-admin), and a FlowSchema that
    matches only it, so that the API server counts the operator's requests apart from the controller manager's,
    the scheduler's and this test's. Returns the FlowSchema's name."""
    from kubernetes import client

    name = f"mlsteward-operator-{ns}"
    client.CoreV1Api(kube).create_namespaced_service_account(ns, {"metadata": {"name": "operator"}})
    client.RbacAuthorizationV1Api(kube).create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": ns}]})
    client.FlowcontrolApiserverV1Api(kube).create_flow_schema({
        "metadata": {"name": name},
        "spec": {"priorityLevelConfiguration": {"name": "workload-high"}, "matchingPrecedence": 100,
                 "distinguisherMethod": {"type": "ByUser"},
                 "rules": [{"subjects": [{"kind": "ServiceAccount",
                                          "serviceAccount": {"name": "operator", "namespace": ns}}],
                            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                               "clusterScope": True, "namespaces": ["*"]}],
                            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}})
    token = client.CoreV1Api(kube).create_namespaced_service_account_token(
        "operator", ns, {"spec": {"expirationSeconds": 3600}}).status.token
    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path.write_text(yaml.safe_dump(config))
    return name


def drop_identity(kube: Any, name: str) -> None:
    from kubernetes import client

    client.FlowcontrolApiserverV1Api(kube).delete_flow_schema(name)
    client.RbacAuthorizationV1Api(kube).delete_cluster_role_binding(name)


def dispatched(kube: Any, flow_schema: str) -> float:
    """Requests the API server dispatched for `flow_schema` (every verb; a WATCH once, when it starts)."""
    raw = kube.call_api(*kube.param_serialize("GET", "/metrics", auth_settings=["BearerToken"]))
    raw.read()
    return sum(float(line.rsplit(" ", 1)[1]) for line in raw.data.decode().splitlines()
               if line.startswith("apiserver_flowcontrol_dispatched_requests_total{")
               and f'flow_schema="{flow_schema}"' in line)


class RouterReplicas:
    """Plays the router replicas: `GET /v1/router/stats` answers with the generation of the ConfigMap
    `<md>-router` as it is now (a replica takes up its ConfigMap at once), on a loopback port."""

    def __init__(self, kube: Any, ns: str, md: str) -> None:
        import http.server
        import json
        import threading

        from kubernetes import client

        core = client.CoreV1Api(kube)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                cm = core.read_namespaced_config_map(f"{md}-router", ns)
                generation = (cm.metadata.annotations or {}).get("mlsteward.io/router-generation")
                body = json.dumps({"deployment": md, "replica": "router-0", "started": 1.0,
                                   "generation": generation, "versions": {}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def set_pods_ready(kube: Any, ns: str, ready: bool, *, component: str | None = None) -> int:
    """Plays the kubelet: marks the managed pods (of one component, if given) Ready or not; returns how many."""
    from kubernetes import client

    core = client.CoreV1Api(kube)
    selector = "app.kubernetes.io/managed-by=mlsteward" + (
        f",app.kubernetes.io/component={component}" if component else "")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    flag = "True" if ready else "False"
    changed = 0
    for pod in core.list_namespaced_pod(ns, label_selector=selector).items:
        # Not a loopback address for predictors: the endpoints controller refuses one, retries and posts Events
        # (the controller manager's requests, not the operator's). Router pods are where `RouterReplicas` answers.
        is_router = (pod.metadata.labels or {}).get("app.kubernetes.io/component") == "router"
        ip = "127.0.0.1" if is_router else "10.88.0.1"
        conds = {c.type: c.status for c in pod.status.conditions or []}
        if conds.get("Ready") == flag or pod.metadata.deletion_timestamp:
            continue
        core.patch_namespaced_pod_status(pod.metadata.name, ns, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
            "conditions": [{"type": t, "status": "True" if t in ("PodScheduled", "Initialized") else flag,
                            "lastTransitionTime": now}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]}})
        changed += 1
    return changed


def md_ready(kube: Any, ns: str) -> str | None:
    return cond(get(kube, ns, "modeldeployments", "iris"), "Ready").get("status")


def test_an_idle_deployment_costs_no_request_and_a_child_status_change_wakes_it(kube, namespace, tmp_path,
                                                                                  monkeypatch):
    from mlsteward_operator.main import OperatorThread

    ready_version(kube, namespace, "iris-1", "iris", "1.0.0")
    flow_schema = operator_identity(kube, namespace, tmp_path / "operator.kubeconfig")
    replicas = RouterReplicas(kube, namespace, "iris")
    monkeypatch.setenv("MLSTEWARD_OPERATOR_ROUTER_PORT", str(replicas.port))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "operator.kubeconfig"))
    operator = OperatorThread(namespaces=[namespace]).start()
    try:
        custom(kube).create_namespaced_custom_object(*GV, namespace, "modeldeployments", {
            "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
            "spec": {"version": "iris-1", "replicas": 1, "rollout": {"strategy": "Immediate"}}})

        def all_ready() -> bool:
            set_pods_ready(kube, namespace, True)
            return md_ready(kube, namespace) == "True"

        wait_for(all_ready, timeout=60, what="the ModelDeployment Ready with its pods")
        time.sleep(3)  # the Events and the last status write of the rollout land

        before = dispatched(kube, flow_schema)
        assert before > 0, "the operator's requests are not counted under its FlowSchema"
        time.sleep(IDLE_WINDOW_S)
        idle = dispatched(kube, flow_schema) - before
        assert idle == 0, f"{idle:.0f} requests in {IDLE_WINDOW_S:g}s from an idle ModelDeployment"

        # A predictor pod leaves Ready: the ReplicaSet and Deployment controllers update the predictor Deployment's
        # status, and that watch event alone must bring the ModelDeployment to Ready=False (no timer runs).
        assert set_pods_ready(kube, namespace, False, component="predictor") == 1
        start = time.monotonic()
        wait_for(lambda: md_ready(kube, namespace) == "False", timeout=30, what="Ready=False after the pod")
        assert time.monotonic() - start < 2.0, "the child Deployment's status change did not wake its parent"
        set_pods_ready(kube, namespace, True, component="predictor")
        wait_for(lambda: md_ready(kube, namespace) == "True", timeout=30, what="Ready again")
    finally:
        operator.stop()
        replicas.close()
        drop_identity(kube, flow_schema)
    assert operator.error is None, f"operator failed: {operator.error!r}"
