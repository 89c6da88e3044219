"""Integration tier: a real kube-apiserver + etcd + kube-controller-manager started for the test session.

The control plane is tier A of `hack/cluster.sh` in its own directory and ports, so it never collides with the
local cluster that the e2e tier and the demo use. There are no nodes: pods stay Pending, which is what these
tests want (they check objects, status and garbage collection, not running containers).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
API_PORT = int(os.environ.get("MLSTEWARD_IT_API_PORT", "16443"))
ETCD_PORT = int(os.environ.get("MLSTEWARD_IT_ETCD_PORT", "12379"))


class _Poll:
    """One deadline for polling `predicate`: `done()` is True once it returns a truthy value (kept in `last`); past
    the deadline it fails the test with the last value observed."""

    def __init__(self, predicate: Callable[[], Any], timeout: float, what: str) -> None:
        self.predicate, self.timeout, self.what = predicate, timeout, what
        self.deadline = time.monotonic() + timeout
        self.last: Any = None

    def done(self) -> bool:
        try:
            self.last = self.predicate()
        except Exception as exc:  # the last error is part of the failure message
            self.last = exc
        else:
            if self.last:
                return True
        if time.monotonic() > self.deadline:
            pytest.fail(f"timed out after {self.timeout}s waiting for {self.what}; last observed: {self.last!r}")
        return False


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.25) -> Any:
    """Polls `predicate` until it returns a truthy value; on timeout fails with the last value observed."""
    poll = _Poll(predicate, timeout, what)
    while not poll.done():
        time.sleep(interval)
    return poll.last


async def wait_for_async(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.25) -> Any:
    """`wait_for` that yields to the event loop between polls (a test that serves HTTP from that loop)."""
    poll = _Poll(predicate, timeout, what)
    while not poll.done():
        await asyncio.sleep(interval)
    return poll.last


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Path]:
    """Starts tier A in a temporary directory and yields the admin kubeconfig path."""
    run_dir = Path(tempfile.mkdtemp(prefix="mlsteward-it-"))
    args = ["--tier", "A", "--dir", str(run_dir), "--api-port", str(API_PORT), "--etcd-port", str(ETCD_PORT)]
    up = subprocess.run([str(ROOT / "hack/cluster.sh"), "up", *args], capture_output=True, text=True, timeout=300)
    if up.returncode != 0:
        subprocess.run([str(ROOT / "hack/cluster.sh"), "down", "--dir", str(run_dir)], capture_output=True)
        pytest.fail(f"control plane did not start:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}")
    env = subprocess.run([str(ROOT / "hack/cluster.sh"), "env", "--dir", str(run_dir)], capture_output=True,
                         text=True, check=True).stdout
    kubeconfig = Path(env.strip().split("KUBECONFIG=", 1)[1].strip().strip("'\""))
    try:
        yield kubeconfig
    finally:
        subprocess.run([str(ROOT / "hack/cluster.sh"), "down", "--dir", str(run_dir)], capture_output=True,
                       timeout=120)


@pytest.fixture(scope="session")
def kube(control_plane: Path) -> Iterator[Any]:
    """A configured kubernetes ApiClient, with the CRDs from crds/ installed and Established."""
    from kubernetes import client, config

    os.environ["KUBECONFIG"] = str(control_plane)
    config.load_kube_config(config_file=str(control_plane))
    api = client.ApiClient()
    ext = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted((ROOT / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        names.append(crd["metadata"]["name"])
        try:
            ext.create_custom_resource_definition(crd)
        except client.ApiException as exc:
            if exc.status != 409:
                raise

    def established() -> bool:
        for name in names:
            crd = ext.read_custom_resource_definition(name)
            conds = {c.type: c.status for c in (crd.status.conditions or [])}
            if conds.get("Established") != "True":
                return False
        return True

    wait_for(established, timeout=60, what=f"CRDs {names} Established")
    yield api


@pytest.fixture()
def namespace(kube: Any) -> Iterator[str]:
    from kubernetes import client

    name = f"it-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": name}})
    # The ServiceAccount admission plugin needs the namespace's default ServiceAccount, created by the controller
    # manager; wait for it so Jobs and Deployments are accepted.
    wait_for(lambda: core.list_namespaced_service_account(name).items, timeout=30, what="default ServiceAccount")
    try:
        yield name
    finally:
        core.delete_namespace(name)


@pytest.fixture()
def operator(kube: Any, namespace: str) -> Iterator[Any]:
    """The operator, in-process, watching only the test's namespace."""
    from mlsteward_operator.main import OperatorThread

    thread = OperatorThread(namespaces=[namespace]).start()
    try:
        yield thread
    finally:
        thread.stop()
        assert thread.error is None, f"operator failed: {thread.error!r}"
