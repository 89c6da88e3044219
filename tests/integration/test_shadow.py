"""spec.shadow against a real API server (tier A: no node). The test plays the kubelet for the router pods (Ready,
one at 127.0.0.1 and one at 127.0.0.2) and the two router replicas themselves: an HTTP server on both addresses
answers `/v1/router/stats` with the generation of the router's ConfigMap and shadow counters the test sets per
replica. Predictors have `replicas: 0`, which a Deployment controller reports as rolled out without a node.

What it shows: status.shadow is the sum of both replicas' counters; a promotion gate that passes starts a canary
(spec.rollout) to the shadow version through status.override with a ShadowPassed decision; one that fails records a
ShadowFailed decision and leaves spec, the served version and the traffic alone.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any

import pytest

from .conftest import wait_for
from .test_controllers import GV, custom, get, ready_version
from .test_rollout import router_config

ADDRESSES = ("127.0.0.1", "127.0.0.2")


class TwoRouterReplicas:
    """Two router replicas on one port, at 127.0.0.1 and 127.0.0.2 (the pods' IPs): each answers with the router
    ConfigMap's current generation and the shadow counters in `shadow[address]`."""

    def __init__(self, kube: Any, ns: str, md: str, version: str) -> None:
        from kubernetes import client

        core = client.CoreV1Api(kube)
        self.shadow: dict[str, dict[str, Any]] = {a: {} for a in ADDRESSES}
        replicas = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                address = self.connection.getsockname()[0]
                cm = core.read_namespaced_config_map(f"{md}-router", ns)
                generation = (cm.metadata.annotations or {}).get("mlsteward.io/router-generation")
                counters = dict(replicas.shadow[address])
                body = json.dumps({
                    "deployment": md, "replica": f"router-{address}", "started": 1.0, "generation": generation,
                    "versions": {}, "shadow": {version: {"version": version, **counters}} if counters else None,
                }).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        first = http.server.ThreadingHTTPServer((ADDRESSES[0], 0), Handler)
        self.port = first.server_address[1]
        self.servers = [first, http.server.ThreadingHTTPServer((ADDRESSES[1], self.port), Handler)]
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def routers_ready(kube: Any, ns: str) -> int:
    """Plays the kubelet for the router pods: Running and Ready, the first at 127.0.0.1, the second at 127.0.0.2.
    Returns how many router pods are Ready."""
    from kubernetes import client

    core = client.CoreV1Api(kube)
    pods = [p for p in core.list_namespaced_pod(
        ns, label_selector="app.kubernetes.io/managed-by=mlsteward,app.kubernetes.io/component=router").items
        if not p.metadata.deletion_timestamp]
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # A pod's IP cannot change once set: a pod keeps its address, a new pod gets one no pod has.
    free = [a for a in ADDRESSES if a not in {p.status.pod_ip for p in pods}]
    for pod in sorted(pods, key=lambda p: p.metadata.name):
        if pod.status.pod_ip or not free:
            continue
        ip = free.pop(0)
        core.patch_namespaced_pod_status(pod.metadata.name, ns, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                           for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]}})
    return min(len(pods), len(ADDRESSES))


class Unmet(dict):
    """What was observed while a wait's condition did not hold yet (shown if the wait times out)."""

    def __bool__(self) -> bool:
        return False


def status_of(kube: Any, ns: str) -> dict[str, Any]:
    return (get(kube, ns, "modeldeployments", "iris") or {}).get("status") or {}


@pytest.fixture()
def shadowed(kube, namespace, monkeypatch):
    """The operator and the played router replicas; ModelDeployment `iris` serves iris-1 and mirrors to iris-2."""
    from mlsteward_operator.main import OperatorThread

    def start(promote: dict[str, Any]) -> TwoRouterReplicas:
        ready_version(kube, namespace, "iris-1", "iris", "1.0.0")
        ready_version(kube, namespace, "iris-2", "iris", "2.0.0")
        replicas = TwoRouterReplicas(kube, namespace, "iris", "iris-2")
        started.append(replicas)
        monkeypatch.setenv("MLSTEWARD_OPERATOR_ROUTER_PORT", str(replicas.port))
        started.append(OperatorThread(namespaces=[namespace]).start())
        custom(kube).create_namespaced_custom_object(*GV, namespace, "modeldeployments", {
            "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
            "spec": {"version": "iris-1", "replicas": 0, "router": {"replicas": 2},
                     "rollout": {"strategy": "Canary", "steps": [20, 60, 100], "stepInterval": "1m"},
                     "shadow": {"version": "iris-2", "percent": 50, "promote": promote}}})

        def mirroring() -> bool:
            routers_ready(kube, namespace)
            s = status_of(kube, namespace)
            return s.get("servingVersion") == "iris-1" and (s.get("shadow") or {}).get("phase") == "Mirroring" \
                or Unmet(s)

        wait_for(mirroring, timeout=60, what="iris-1 served and iris-2 mirrored")
        return replicas

    started: list[Any] = []
    yield start
    for thing in reversed(started):
        if hasattr(thing, "error"):
            thing.stop()
            assert thing.error is None, f"operator failed: {thing.error!r}"
        else:
            thing.close()


def test_status_sums_both_replicas_and_a_passed_gate_starts_a_canary_to_the_shadow(kube, namespace, shadowed):
    replicas = shadowed({"minRequests": 100, "minAgreement": 0.9})
    config = router_config(kube, namespace, "iris")
    assert config["shadow"]["version"] == "iris-2" and config["shadow"]["percent"] == 50

    replicas.shadow["127.0.0.1"] = {"mirrored": 30, "errors": 1, "dropped": 2, "compared": 29, "agreed": 29,
                                    "latency_buckets": {"10": 30, "+Inf": 30}}
    replicas.shadow["127.0.0.2"] = {"mirrored": 40, "errors": 0, "dropped": 0, "compared": 40, "agreed": 39,
                                    "latency_buckets": {"10": 40, "+Inf": 40}}
    s = wait_for(lambda: (x := status_of(kube, namespace).get("shadow") or {}).get("requests") == 70 and x,
                 timeout=30, what="status.shadow summed over both replicas")
    assert (s["replicas"], s["errors"], s["dropped"], s["compared"]) == (2, 1, 2, 69)
    assert s["agreement"] == round(68 / 69, 6) and s["agreementLow"] < s["agreement"] < s["agreementHigh"]
    assert s["gate"]["result"] == "Pending" and "69 of 100 compared requests" in s["gate"]["message"]

    replicas.shadow["127.0.0.1"] = {"mirrored": 300, "compared": 300, "agreed": 299}
    replicas.shadow["127.0.0.2"] = {"mirrored": 200, "compared": 200, "agreed": 200}
    status = wait_for(lambda: (x := status_of(kube, namespace)).get("override") and x, timeout=30,
                      what="the shadow promoted through status.override")
    assert status["override"]["version"] == "iris-2"
    assert status["override"]["source"] == "ModelDeployment/iris/shadow"
    assert status["shadow"]["gate"]["result"] == "Passed" and status["shadow"]["phase"] == "Promoted"
    [decision] = [d for d in status["decisions"] if d["reason"] == "ShadowPassed"]
    assert (decision["kind"], decision["from"], decision["to"]) == ("Promote", "iris-1", "iris-2")
    assert decision["numbers"]["compared"] == 500 and decision["thresholds"]["minAgreement"] == 0.9
    assert "set spec.version: iris-2" in decision["gitChange"]

    def canary() -> dict[str, Any] | None:
        routers_ready(kube, namespace)
        c = router_config(kube, namespace, "iris")
        return c if c and {b["version"]: b["weight"] for b in c["backends"]} == {"iris-1": 80, "iris-2": 20} \
            else None

    config = wait_for(canary, timeout=30, what="the router at the canary's first step")
    assert "shadow" not in config
    status = wait_for(lambda: (x := status_of(kube, namespace)).get("rollout", {}).get("targetVersion") == "iris-2"
                      and x, timeout=30, what="status.rollout towards iris-2")
    assert status["rollout"]["phase"] == "Progressing" and status["servingVersion"] == "iris-1"
    assert get(kube, namespace, "modeldeployments", "iris")["spec"]["version"] == "iris-1"


def test_a_failed_gate_records_one_hold_and_moves_nothing(kube, namespace, shadowed):
    from kubernetes import client

    replicas = shadowed({"minRequests": 100, "minAgreement": 0.9})
    replicas.shadow["127.0.0.1"] = {"mirrored": 300, "compared": 300, "agreed": 200}
    replicas.shadow["127.0.0.2"] = {"mirrored": 100, "compared": 100, "agreed": 70}
    s = wait_for(lambda: (x := status_of(kube, namespace).get("shadow") or {}).get("gate", {}).get(
        "result") == "Failed" and x or Unmet(x), timeout=30, what="the gate Failed")
    assert s["requests"] == 400 and s["agreement"] == round(270 / 400, 6) and s["agreementHigh"] < 0.9
    replicas.shadow["127.0.0.2"] = {"mirrored": 120, "compared": 120, "agreed": 84}
    wait_for(lambda: (status_of(kube, namespace).get("shadow") or {}).get("requests") == 420, timeout=30,
             what="a later look at the replicas")
    status = status_of(kube, namespace)
    [hold] = [d for d in status["decisions"] if d["reason"] == "ShadowFailed"]
    assert hold["kind"] == "Hold" and hold["from"] == hold["to"] == "iris-1"
    assert hold["numbers"]["agreementHigh"] < 0.9 and hold["thresholds"]["minAgreement"] == 0.9
    assert "override" not in status and status["servingVersion"] == "iris-1"
    assert status["trafficSummary"] == "iris-1=100"
    assert get(kube, namespace, "modeldeployments", "iris")["spec"]["version"] == "iris-1"
    assert router_config(kube, namespace, "iris")["shadow"]["version"] == "iris-2"
    events = client.CoreV1Api(kube).list_namespaced_event(namespace).items
    assert [e.reason for e in events if e.involved_object.name == "iris"].count("ShadowFailed") == 1
