"""End-to-end tier: the current kubeconfig's cluster, real pods, the chart installed from charts/mlsteward.

Cluster-agnostic: nothing here assumes the local cluster. The image is named by MLSTEWARD_IMAGE (default: the
tag `make image` wrote to _out/image-tag); it must already be present on the nodes (pods use IfNotPresent).
Artifacts are served to the pods by an in-cluster HTTP server (the mlsteward image running python's http.server),
filled with `kubectl cp`, so ModelVersions use http:// URIs that resolve on any cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OPERATOR_NS = "mlsteward-system"
KUBECTL = os.environ.get("KUBECTL", "kubectl")


def image() -> str:
    if os.environ.get("MLSTEWARD_IMAGE"):
        return os.environ["MLSTEWARD_IMAGE"]
    tag_file = ROOT / "_out" / "image-tag"
    if not tag_file.exists():
        pytest.fail("no image: set MLSTEWARD_IMAGE or run `make image` (writes _out/image-tag)")
    return tag_file.read_text().strip()


def kubectl(*args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
    proc = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def kget(kind: str, name: str, ns: str) -> dict[str, Any] | None:
    proc = subprocess.run([KUBECTL, "get", kind, name, "-n", ns, "-o", "json"], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def apply(obj: dict[str, Any] | list[dict[str, Any]], ns: str | None = None) -> None:
    """kubectl apply; objects without a namespace go to `ns`."""
    docs = obj if isinstance(obj, list) else [obj]
    for doc in docs:
        if ns and not doc["metadata"].get("namespace"):
            doc["metadata"]["namespace"] = ns
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 1.0) -> Any:
    """Polls until `predicate` is truthy; on timeout fails with the last value it returned."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = predicate()
        except (AssertionError, subprocess.SubprocessError, ValueError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last observed: {last!r}")
        time.sleep(interval)


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c
    return None


@pytest.fixture(scope="session")
def operator_installed() -> Iterator[str]:
    """Installs (or upgrades) the chart and waits for the operator pod; uninstalls at the end."""
    if not shutil.which("helm"):
        pytest.fail("helm is not on PATH (make bins builds it; `make e2e` puts it on PATH)")
    repo, _, tag = image().rpartition(":")
    # helm installs a chart's CRDs only on first install, never on upgrade: apply them as the upgrade notes say,
    # so a cluster that ran an older chart gets the current schema.
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    subprocess.run(
        ["helm", "upgrade", "--install", "mlsteward", str(ROOT / "charts/mlsteward"), "-n", OPERATOR_NS,
         "--create-namespace", "--set", f"image.repository={repo}", "--set", f"image.tag={tag}",
         "--set", "logLevel=DEBUG", "--wait", "--timeout", "180s"],
        check=True, capture_output=True, text=True, timeout=240,
    )
    yield OPERATOR_NS
    subprocess.run(["helm", "uninstall", "mlsteward", "-n", OPERATOR_NS, "--wait"], capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    subprocess.run([sys.executable, str(ROOT / "examples/train.py"), "--out", str(out)], check=True,
                   capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="module")
def artifact_server(namespace: str, trained: Path) -> str:
    """An in-cluster HTTP server holding the trained artifacts and CSVs; returns its base URL."""
    labels = {"app": "artifacts"}
    apply([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "artifacts", "namespace": namespace},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {"containers": [{
                 "name": "http", "image": image(), "imagePullPolicy": "IfNotPresent",
                 "command": ["python3", "-m", "http.server", "8000", "--directory", "/data"],
                 "ports": [{"containerPort": 8000}],
                 "readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1},
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                 "volumes": [{"name": "data", "emptyDir": {}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "artifacts", "namespace": namespace},
         "spec": {"selector": labels, "ports": [{"port": 8000, "targetPort": 8000}]}},
    ])
    kubectl("rollout", "status", "deployment/artifacts", "-n", namespace, "--timeout=120s", timeout=150)
    pod = kubectl("get", "pods", "-n", namespace, "-l", "app=artifacts", "-o", "jsonpath={.items[0].metadata.name}")
    for f in sorted(trained.iterdir()):
        kubectl("cp", str(f), f"{namespace}/{pod}:/data/{f.name}", timeout=120)
    return f"http://artifacts.{namespace}.svc.cluster.local:8000"
