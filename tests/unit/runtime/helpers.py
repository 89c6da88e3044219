"""Helpers shared by the runtime tests: build an app over a loaded model, run a real server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from mlsteward_runtime.app import create_app
from mlsteward_runtime.contracts import RuntimeConfig
from mlsteward_runtime.dataplane import DataPlane
from mlsteward_runtime.settings import ServeSettings

REPO = Path(__file__).resolve().parents[3]


def loaded_app(config: RuntimeConfig):
    """An app whose model is loaded and whose per-process parts are started, as a forked worker's would be."""
    settings = ServeSettings(runtime=config, replica="test-0")
    plane = DataPlane(config, replica="test-0")
    plane.load()
    plane.start_worker()
    return create_app(settings, plane), plane


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`mlsteward serve` in a subprocess on a loopback port; waits for readiness with a deadline."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # No drain before shutdown unless a test asks for one: `stop` would otherwise wait out its seconds.
        full_env = {**os.environ, "MLSTEWARD_DRAIN_S": "0", **(env or {})}
        full_env["PYTHONPATH"] = str(REPO / "runtime") + os.pathsep + full_env.get("PYTHONPATH", "")
        # The logs go to a file, not a pipe: a server logging every rejected request would fill an unread pipe's
        # 64 KiB and block on its next write, which looks exactly like a server that stopped answering.
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlsteward_runtime.cli", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), *args],
            stdout=subprocess.DEVNULL, stderr=self.log, env=full_env,
        )

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.stderr()}")
            try:
                r = httpx.get(f"{self.url}/v2/health/ready", timeout=1.0)
                last = (r.status_code, r.text)
                if r.status_code == 200:
                    return
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"server not ready after {timeout}s; last observed: {last}")

    def stop(self) -> str:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.stderr()
