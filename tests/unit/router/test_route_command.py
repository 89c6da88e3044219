"""`mlsteward route` as a user runs it: a real process on a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fake_kube import FakeKubeApi
from router_harness import client, config, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def route(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mlsteward_runtime.cli", "route", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
    )


def test_route_serves_and_reports_its_replica(backends, tmp_path: Path):
    a = backends("v1")
    cfg = tmp_path / "router.json"
    cfg.write_text(json.dumps(config(("v1", a.url, 100))))
    port = free_port()
    proc = route("--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                 env={"MLSTEWARD_ROUTER_REPLICA": "router-abc"})
    try:
        with client(f"http://127.0.0.1:{port}") as c:
            def up() -> bool:
                try:
                    return c.get("/healthz").status_code == 200
                except Exception:  # noqa: BLE001 - not listening yet
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    return False

            wait_for(up, timeout=20, what="router listening")
            r = c.post("/predict", json={"instances": [[1]]})
            assert r.status_code == 200 and r.headers["x-model-version"] == "v1"
            stats = c.get("/v1/router/stats").json()
            assert stats["replica"] == "router-abc" and stats["versions"]["v1"]["requests"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read"),
        ('{"deployment": "d", "model": "m", "backends": []}', "backends"),
        ("not json", "Invalid JSON"),
    ],
)
def test_route_refuses_a_bad_config_with_exit_2(tmp_path: Path, content: str | None, message: str):
    cfg = tmp_path / "router.json"
    if content is not None:
        cfg.write_text(content)
    proc = route("--config", str(cfg), "--port", str(free_port()))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and message in err.decode(), err.decode()


def _kube_env(api: FakeKubeApi, tmp_path: Path, **extra: str) -> dict[str, str]:
    sa = tmp_path / "serviceaccount"
    sa.mkdir(exist_ok=True)
    (sa / "token").write_text("token-1")
    return {"MLSTEWARD_ROUTER_KUBE_API_URL": api.url, "MLSTEWARD_ROUTER_KUBE_SERVICEACCOUNT_DIR": str(sa),
            "POD_NAMESPACE": api.namespace, **extra}


def test_route_starts_from_a_config_map_and_follows_it(backends, tmp_path: Path):
    a, b = backends("v1"), backends("v2")
    api = FakeKubeApi().start()
    api.put("configmaps", "iris-router", {"router.json": json.dumps(config(("v1", a.url, 100), generation="g1"))})
    port = free_port()
    proc = route("--config-map", "iris-router", "--host", "127.0.0.1", "--port", str(port),
                 env=_kube_env(api, tmp_path))
    try:
        with client(f"http://127.0.0.1:{port}") as c:
            def up() -> bool:
                try:
                    return c.get("/healthz").status_code == 200
                except Exception:  # noqa: BLE001 - not listening yet
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    return False

            wait_for(up, timeout=20, what="router listening")
            assert c.get("/v1/router/stats").json()["generation"] == "g1"
            assert c.post("/predict", json={"instances": [[1]]}).headers["x-model-version"] == "v1"
            api.put("configmaps", "iris-router",
                    {"router.json": json.dumps(config(("v2", b.url, 100), generation="g2"))})
            wait_for(lambda: c.get("/v1/router/stats").json()["generation"] == "g2", what="g2 served")
            assert c.post("/predict", json={"instances": [[1]]}).headers["x-model-version"] == "v2"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        api.stop()


@pytest.mark.parametrize(
    "args, prepare, message",
    [
        ((), None, "give --config FILE, --config-map NAME or both"),
        (("--config-map", "absent"), "up", "ConfigMap absent in namespace ml does not exist"),
        (("--config-map", "iris-router"), "invalid", "configmap/iris-router:router.json: backends"),
        (("--config-map", "iris-router"), "down", "cannot read ConfigMap iris-router"),
    ],
)
def test_route_refuses_a_config_map_it_cannot_serve_with_exit_2(tmp_path: Path, args: tuple[str, ...],
                                                                prepare: str | None, message: str):
    api = FakeKubeApi()
    if prepare in ("up", "invalid"):
        api.start()
        api.put("configmaps", "iris-router", {"router.json": '{"deployment": "d", "model": "m", "backends": []}'})
    proc = route(*args, "--port", str(free_port()),
                 env=_kube_env(api, tmp_path, MLSTEWARD_ROUTER_KUBE_STARTUP_TIMEOUT_S="1",
                               MLSTEWARD_ROUTER_KUBE_BACKOFF_MAX_S="0.2"))
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        api.stop()
    assert proc.returncode == 2 and message in err.decode(), err.decode()
