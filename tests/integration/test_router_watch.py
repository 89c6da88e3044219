"""The router follows its ConfigMap and its tokens Secret through a real API server, with the narrow Role the
operator renders.

The operator's own builder renders the router's ConfigMap, ServiceAccount, Role and RoleBinding for a
ModelDeployment, and the operator's client applies them (server-side apply, its field manager). A real
`mlsteward route --config-map <md>-router` process then runs as that ServiceAccount: a token from the TokenRequest
API, the API server's CA and the namespace are written where a pod would have them mounted. No node is needed: the
router is a process on this machine, its backends point at Services no one serves (readiness is not what this
test looks at).
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .conftest import wait_for
from .test_controllers import GV, custom

ROOT = Path(__file__).resolve().parents[2]
MD = "iris"
ROUTER = f"{MD}-router"
TOKENS = f"{MD}-tokens"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def router_objects(kube: Any, ns: str, table: dict[str, int]) -> list[dict[str, Any]]:
    """What the operator renders for the router of ModelDeployment `MD` routing by `table` (ConfigMap,
    ServiceAccount, Role, RoleBinding; the Deployment, Service and PodDisruptionBudget are left out: no node)."""
    from mlsteward_operator.api.modeldeployment import ModelDeployment, TrafficEntry
    from mlsteward_operator.config import OperatorConfig
    from mlsteward_operator.modeldeployment.render import render_router

    md = ModelDeployment.model_validate(custom(kube).get_namespaced_custom_object(*GV, ns, "modeldeployments", MD))
    traffic = [TrafficEntry(version=v, weight=w) for v, w in table.items()]
    objects = render_router(md, MD, traffic, next(iter(table)), OperatorConfig())
    return [o for o in objects if o["kind"] in ("ConfigMap", "ServiceAccount", "Role", "RoleBinding")]


def apply(kube: Any, objects: list[dict[str, Any]]) -> None:
    from mlsteward_operator.kube.client import Client

    client = Client(kube)
    for obj in objects:
        asyncio.run(client.apply(obj))


def generation_of(objects: list[dict[str, Any]]) -> str:
    from mlsteward_operator.kernel.names import ANNOTATION_ROUTER_GENERATION

    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    return config_map["metadata"]["annotations"][ANNOTATION_ROUTER_GENERATION]


@pytest.fixture()
def service_account_dir(kube: Any, namespace: str, tmp_path: Path) -> Path:
    """A pod's /var/run/secrets/kubernetes.io/serviceaccount for `<md>-router`: a TokenRequest token, the API
    server's CA (from the kubeconfig) and the namespace."""
    from kubernetes import client

    token = client.CoreV1Api(kube).create_namespaced_service_account_token(
        ROUTER, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    kubeconfig = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    ca = base64.b64decode(kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"])
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_bytes(ca)
    (sa / "namespace").write_text(namespace)
    return sa


@pytest.fixture()
def deployment(kube: Any, namespace: str) -> list[dict[str, Any]]:
    """The ModelDeployment, with its tokens in the Secret `TOKENS` (a real object, so that its children's owner
    reference is valid and the garbage collector leaves them alone), and its router objects, applied; returns the
    objects."""
    from kubernetes import client

    client.CoreV1Api(kube).create_namespaced_secret(namespace, {"metadata": {"name": TOKENS},
                                                                "stringData": {"tokens": "token-a\n"}})
    custom(kube).create_namespaced_custom_object(*GV, namespace, "modeldeployments", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": MD},
        "spec": {"version": "iris-1", "auth": {"secretRef": {"name": TOKENS, "key": "tokens"}}}})
    objects = router_objects(kube, namespace, {"iris-1": 100})
    apply(kube, objects)
    return objects


@pytest.fixture()
def router(kube: Any, deployment: list[dict[str, Any]], service_account_dir: Path,
           tmp_path: Path) -> Iterator[str]:
    """`mlsteward route --config-map <md>-router` as the router's ServiceAccount; yields its base URL."""
    port = _free_port()
    host = kube.configuration.host  # https://127.0.0.1:<port>
    env = {**os.environ, "MLSTEWARD_ROUTER_KUBE_API_URL": host,
           "MLSTEWARD_ROUTER_KUBE_SERVICEACCOUNT_DIR": str(service_account_dir),
           "MLSTEWARD_ROUTER_KUBE_STARTUP_TIMEOUT_S": "10", "MLSTEWARD_ROUTER_REPLICA": "router-0",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), os.environ.get("PYTHONPATH", "")])}
    env.pop("POD_NAMESPACE", None)
    log = tmp_path / "router.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlsteward_runtime.cli", "route", "--config-map", ROUTER,
                                 "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the router exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=20, what="the router's /healthz", interval=0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        print(log.read_text()[-3000:])  # shown with a failure


def served(url: str) -> dict[str, Any]:
    resp = httpx.get(f"{url}/v1/router/stats", timeout=1)
    resp.raise_for_status()
    return resp.json()


def test_the_router_starts_from_its_config_map_and_serves_a_new_generation_within_2s(
        kube, namespace, deployment, router):
    first = generation_of(deployment)
    stats = served(router)
    assert stats["generation"] == first
    assert set(stats["versions"]) == {"iris-1"}

    # The operator's next weight table: a new generation in the ConfigMap, applied as the operator applies it.
    update = router_objects(kube, namespace, {"iris-1": 90, "iris-2": 10})
    second = generation_of(update)
    assert second != first
    apply(kube, [o for o in update if o["kind"] == "ConfigMap"])
    deadline = time.monotonic() + 2.0
    while (stats := served(router))["generation"] != second:
        assert time.monotonic() < deadline, f"2 s after the write the router still serves {stats['generation']}, " \
            f"not {second}"
        time.sleep(0.02)
    assert set(stats["versions"]) == {"iris-1", "iris-2"}


def test_the_router_role_reads_its_own_config_map_and_nothing_else(kube, namespace, deployment,
                                                                    service_account_dir):
    from kubernetes import client

    client.CoreV1Api(kube).create_namespaced_config_map(namespace, {"metadata": {"name": "other"},
                                                                    "data": {"k": "v"}})
    token = (service_account_dir / "token").read_text()
    base = f"{kube.configuration.host}/api/v1/namespaces/{namespace}"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(service_account_dir / "ca.crt")), timeout=10,
                      headers={"Authorization": f"Bearer {token}"}) as http:
        def status(path: str, **params: str) -> int:
            return http.get(f"{base}/{path}", params=params).status_code

        # What the router sends: a list and a watch narrowed to its ConfigMap by the field selector.
        assert status("configmaps", fieldSelector=f"metadata.name={ROUTER}") == 200
        with http.stream("GET", f"{base}/configmaps", params={
                "watch": "1", "fieldSelector": f"metadata.name={ROUTER}", "timeoutSeconds": "1"}) as resp:
            assert resp.status_code == 200
            first = next(resp.iter_lines())
        assert '"type":"ADDED"' in first and f'"name":"{ROUTER}"' in first
        assert status(f"configmaps/{ROUTER}") == 200

        # Its tokens Secret, the same way.
        assert status("secrets", fieldSelector=f"metadata.name={TOKENS}") == 200
        assert status("secrets", fieldSelector=f"metadata.name={TOKENS}", watch="1", timeoutSeconds="1") == 200

        # Nothing wider: every ConfigMap, another one by name or by selector, a watch of all, any other Secret.
        assert status("configmaps") == 403
        assert status("configmaps/other") == 403
        assert status("configmaps", fieldSelector="metadata.name=other") == 403
        assert status("configmaps", watch="1", timeoutSeconds="1") == 403
        assert status("secrets") == 403
        assert status("secrets/other") == 403
        assert status("secrets", fieldSelector="metadata.name=other") == 403


def test_the_router_enforces_a_rotated_tokens_secret_within_2s(kube, namespace, router):
    from kubernetes import client

    accepted = 422  # past the token check, an empty feedback body is refused

    def status(token: str) -> int:
        # Feedback checks the token before it reads the body, and never reaches a backend (none is running).
        return httpx.post(f"{router}/v1/feedback", headers={"Authorization": f"Bearer {token}"}, json={},
                          timeout=5).status_code

    # The router starts with the Secret's tokens from the API (no tokens file is mounted here).
    wait_for(lambda: status("token-a") == accepted, timeout=10, what="token-a accepted", interval=0.05)
    assert status("token-b") == 403

    client.CoreV1Api(kube).patch_namespaced_secret(TOKENS, namespace, {"stringData": {"tokens": "token-b\n"}})
    deadline = time.monotonic() + 2.0
    while (seen := (status("token-a"), status("token-b"))) != (403, accepted):
        assert time.monotonic() < deadline, f"2 s after the rotation token-a and token-b get {seen}"
        time.sleep(0.02)
