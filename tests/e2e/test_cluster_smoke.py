"""Smoke test of the cluster itself: a node is Ready, a pod runs and logs, a ClusterIP Service reaches it.

Cluster-agnostic: it uses the current kubeconfig and `kubectl` on PATH (override with KUBECTL). The test image is
MLSTEWARD_SMOKE_IMAGE (default: the busybox image `hack/cluster.sh up` imports); any busybox image with `httpd` and
`nc` works, e.g. on kind after `kind load`. The check from the host runs only when the node's address belongs to
this machine (the local cluster), since elsewhere the host cannot route to Service IPs.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import kubectl, wait_for

IMAGE = os.environ.get("MLSTEWARD_SMOKE_IMAGE", "mlsteward.local/busybox:1.35")
MARKER = f"smoke-{uuid.uuid4().hex[:8]}"
HTTP_GET = 'printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 3 {host} {port}'


def get(kind: str, name: str, ns: str | None = None) -> dict[str, Any]:
    args = ["get", kind, name, "-o", "json"] + (["-n", ns] if ns else [])
    return json.loads(kubectl(*args))


def condition(obj: dict[str, Any], type_: str) -> str | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == type_:
            return c.get("status")
    return None


def pod_manifest(name: str, ns: str, command: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels or {}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": name,
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", command],
                "ports": [{"containerPort": 8080}],
            }],
        },
    }


@pytest.fixture(scope="module")
def smoke_ns() -> Iterator[str]:
    ns = f"smoke-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", ns)
    try:
        yield ns
    finally:
        kubectl("delete", "namespace", ns, "--wait=true", "--timeout=90s", check=False, timeout=120)


@pytest.fixture(scope="module")
def web(smoke_ns: str) -> dict[str, Any]:
    """An HTTP server pod behind a ClusterIP Service, plus a client pod to call it from; returns the Service."""
    serve = (f"mkdir -p /tmp/www && echo {MARKER} > /tmp/www/index.html && echo serving {MARKER} "
             "&& exec httpd -f -v -p 8080 -h /tmp/www")
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": smoke_ns},
        "spec": {"type": "ClusterIP", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    docs = [pod_manifest("web", smoke_ns, serve, {"app": "web"}), service,
            pod_manifest("client", smoke_ns, "exec sleep 3600")]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}))
    for pod in ("web", "client"):
        wait_for(lambda pod=pod: _ready(pod, smoke_ns), timeout=90, what=f"pod {pod} Ready")
    wait_for(lambda: _endpoints(smoke_ns), timeout=30, what="endpoints of Service web")
    return get("service", "web", smoke_ns)


def _ready(pod: str, ns: str) -> bool:
    """True when the pod is Ready; otherwise raises with its phase and container states (the last observed state)."""
    obj = get("pod", pod, ns)
    if condition(obj, "Ready") == "True":
        return True
    status = obj.get("status", {})
    states = [c.get("state") for c in status.get("containerStatuses") or []]
    raise AssertionError(f"pod {pod}: phase={status.get('phase')} containers={states} "
                         f"conditions={status.get('conditions')}")


def _endpoints(ns: str) -> list[str]:
    slices = json.loads(kubectl("get", "endpointslices", "-n", ns, "-l", "kubernetes.io/service-name=web",
                                "-o", "json"))
    return [a for s in slices["items"] for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") for a in e.get("addresses", [])]


def test_a_node_is_ready() -> None:
    def ready_nodes() -> list[str]:
        nodes = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
        return [n["metadata"]["name"] for n in nodes if condition(n, "Ready") == "True"]

    assert wait_for(ready_nodes, timeout=60, what="a Ready node")


def test_pod_runs_and_its_logs_are_readable(web: dict[str, Any], smoke_ns: str) -> None:
    logs = wait_for(lambda: (out := kubectl("logs", "web", "-n", smoke_ns)) and MARKER in out and out,
                    timeout=30, what="the web pod's log line")
    assert f"serving {MARKER}" in logs


@pytest.mark.parametrize("target", ["cluster-ip", "dns-name"])
def test_service_reaches_the_pod_from_another_pod(web: dict[str, Any], smoke_ns: str, target: str) -> None:
    host = web["spec"]["clusterIP"] if target == "cluster-ip" else f"web.{smoke_ns}.svc"
    cmd = HTTP_GET.format(host=host, port=80)

    def fetch() -> str:
        out = kubectl("exec", "client", "-n", smoke_ns, "--", "sh", "-c", cmd, check=False, timeout=20)
        return out if MARKER in out else ""

    body = wait_for(fetch, timeout=45, what=f"HTTP through Service web ({host}) from pod client", interval=2)
    assert "200 OK" in body


def test_service_reaches_the_pod_from_the_host(web: dict[str, Any]) -> None:
    node = json.loads(kubectl("get", "nodes", "-o", "json"))["items"][0]
    addresses = [a["address"] for a in node["status"].get("addresses", []) if a["type"] == "InternalIP"]
    if not any(_is_local(a) for a in addresses):
        pytest.skip(f"the node ({addresses}) is not this machine, so Service IPs are not routable from here")
    ip = web["spec"]["clusterIP"]

    def fetch() -> str:
        with socket.create_connection((ip, 80), timeout=3) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            chunks = []
            while chunk := s.recv(4096):
                chunks.append(chunk)
        body = b"".join(chunks).decode(errors="replace")
        return body if MARKER in body else ""

    body = wait_for(fetch, timeout=45, what=f"HTTP through Service web ({ip}:80) from the host", interval=2)
    assert "200 OK" in body


def _is_local(address: str) -> bool:
    """True if `address` belongs to this machine (binding to it succeeds; nothing is sent)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False
