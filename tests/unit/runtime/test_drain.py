"""Graceful drain of `mlsteward route` and `mlsteward serve`: SIGTERM under steady load from pooled keep-alive
connections fails no request.

Each test runs the real command in a subprocess on a loopback port and a client of pooled keep-alive connections
(aiohttp, several loops posting at once), then sends SIGTERM as the kubelet does. The client plays the part of a
Service whose endpoints lag: it keeps sending for PROPAGATION_S after the readiness endpoint first answers 503
(kube-proxy learning that the pod left), which is less than the drain. Meanwhile one request is in flight across
the whole drain: its body is still arriving when the drain ends and must still be answered.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import uvicorn

from .helpers import REPO, ServerProcess, free_port

DRAIN_S = 3.0
SHUTDOWN_TIMEOUT_S = 5.0
LOOPS = 8
PROPAGATION_S = 1.0
WORKER_SKEW_S = 0.5
EXIT_MARGIN_S = 3.0
ROW = [5.1, 3.5, 1.4, 0.2]
BODY = json.dumps({"instances": [ROW]}).encode()


@dataclass
class Outcome:
    sent: float
    received: float = 0.0
    status: int | None = None
    connection: str | None = None
    error: str | None = None


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    sigterm_at: float = 0.0
    unready_at: float | None = None
    unready: tuple[int, Any] | None = None
    slow_head: bytes = b""
    slow_alive_before_end: bool = False
    idle_closed: tuple[float, bytes | str] | None = None
    exit_code: int | None = None
    exited_after_s: float | None = None


async def _slow_request(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Open a connection and send a request whose body stops halfway: it is in flight until the rest is sent."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (f"POST /predict HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(BODY)}\r\n\r\n").encode()
    writer.write(head + BODY[: len(BODY) // 2])
    await writer.drain()
    return reader, writer, BODY[len(BODY) // 2:]


async def _idle_connection(url: str, path: str) -> asyncio.Task[tuple[float, bytes | str]]:
    """A kept-alive connection that makes one request, then sends nothing: the task ends with (when, what) the
    server closed it with (b"" for a clean close)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                  if k.strip().lower() == b"content-length")
    await reader.readexactly(length)

    async def closed() -> tuple[float, bytes | str]:
        try:
            data: bytes | str = await reader.read()
        except OSError as exc:
            data = repr(exc)
        writer.close()
        return time.monotonic(), data

    return asyncio.create_task(closed())


async def _drive(proc: subprocess.Popen[bytes], url: str, ready_path: str) -> Run:
    run = Run()
    stop_at: float | None = None
    connector = aiohttp.TCPConnector(limit=LOOPS)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def loop() -> None:
            while stop_at is None or time.monotonic() < stop_at:
                outcome = Outcome(time.monotonic())
                try:
                    async with session.post(url + "/predict", data=BODY,
                                            headers={"content-type": "application/json"}) as r:
                        await r.read()
                        outcome.status, outcome.connection = r.status, r.headers.get("Connection")
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    outcome.error = repr(exc)
                outcome.received = time.monotonic()
                run.outcomes.append(outcome)

        tasks = [asyncio.create_task(loop()) for _ in range(LOOPS)]
        deadline = time.monotonic() + 10
        while len(run.outcomes) < 20 * LOOPS and time.monotonic() < deadline:  # steady load on pooled connections
            await asyncio.sleep(0.05)
        reader, writer, rest = await _slow_request(url)
        idle = await _idle_connection(url, ready_path)
        proc.send_signal(signal.SIGTERM)
        run.sigterm_at = time.monotonic()

        # The kubelet's probe: a new connection each time, until the pod answers 503 (or is gone).
        probe = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True),
                                      timeout=aiohttp.ClientTimeout(total=2))
        async with probe:
            while run.unready is None and time.monotonic() < run.sigterm_at + DRAIN_S + EXIT_MARGIN_S:
                try:
                    async with probe.get(url + ready_path) as r:
                        if r.status == 503:
                            run.unready_at = time.monotonic()
                            run.unready = (r.status, await r.json(content_type=None))
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    if proc.poll() is not None:
                        break
                await asyncio.sleep(0.05)
        # The endpoints catch up PROPAGATION_S later: from then on no request reaches this pod.
        stop_at = (run.unready_at or time.monotonic()) + PROPAGATION_S
        await asyncio.gather(*tasks)

        # The slow request's body completes only after the drain has ended, while uvicorn waits for it.
        await asyncio.sleep(max(0.0, run.sigterm_at + DRAIN_S + 0.5 - time.monotonic()))
        run.slow_alive_before_end = proc.poll() is None
        writer.write(rest)
        await writer.drain()
        try:
            run.slow_head = await asyncio.wait_for(reader.read(), timeout=SHUTDOWN_TIMEOUT_S)  # to the server's EOF
        except (OSError, asyncio.TimeoutError) as exc:
            run.slow_head = repr(exc).encode()
        writer.close()
        run.idle_closed = await asyncio.wait_for(idle, timeout=SHUTDOWN_TIMEOUT_S)
    try:
        run.exit_code = await asyncio.to_thread(proc.wait, DRAIN_S + SHUTDOWN_TIMEOUT_S + EXIT_MARGIN_S)
        run.exited_after_s = time.monotonic() - run.sigterm_at
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return run


def _check(run: Run, stderr: str) -> None:
    failed = [o for o in run.outcomes if o.error is not None or o.status != 200]
    assert not failed, f"{len(failed)} of {len(run.outcomes)} requests failed, first: {failed[:3]}\n{stderr[-3000:]}"
    assert run.unready is not None and run.unready_at is not None, f"readiness never answered 503\n{stderr[-3000:]}"
    before = [o for o in run.outcomes if o.received < run.sigterm_at]
    # With several workers each starts its drain on its own next tick, soon after the first one's.
    during = [o for o in run.outcomes if o.sent >= run.unready_at + WORKER_SKEW_S]
    # Before the signal the connections are kept alive (pooled); once draining, every response closes its own.
    assert before and all(o.connection is None or o.connection.lower() != "close" for o in before), len(before)
    assert len(during) >= LOOPS, f"only {len(during)} requests were sent during the drain"
    assert all((o.connection or "").lower() == "close" for o in during), \
        [o.connection for o in during if (o.connection or "").lower() != "close"][:5]
    # The clients stop sending before the drain ends.
    assert run.unready_at - run.sigterm_at < DRAIN_S - PROPAGATION_S - 0.5, run.unready_at - run.sigterm_at
    # The request in flight across the drain was waited for and answered, and its connection closed after it.
    assert run.slow_alive_before_end, f"the server exited before the request in flight completed\n{stderr[-3000:]}"
    status_line, _, rest = run.slow_head.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 200"), run.slow_head[:500]
    assert b"connection: close" in rest.lower().partition(b"\r\n\r\n")[0]
    # The connection idle through the whole drain was closed cleanly when it ended, not before.
    assert run.idle_closed is not None and run.idle_closed[1] == b"", run.idle_closed
    assert run.idle_closed[0] - run.sigterm_at >= DRAIN_S - 0.05, run.idle_closed[0] - run.sigterm_at
    assert run.exit_code == 0, f"exit code {run.exit_code}\n{stderr[-3000:]}"
    assert run.exited_after_s is not None and run.exited_after_s < DRAIN_S + EXIT_MARGIN_S, run.exited_after_s


def test_serve_with_two_workers_drains_on_sigterm_without_failing_a_request(artifacts):
    path, digest = artifacts["lr.skops"]
    srv = ServerProcess(["--model", str(path), "--name", "iris", "--sha256", digest, "--workers", "2"],
                        env={"MLSTEWARD_DRAIN_S": str(DRAIN_S),
                             "MLSTEWARD_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S)})
    try:
        srv.wait_ready()
        run = asyncio.run(_drive(srv.proc, srv.url, "/v2/health/ready"))
    finally:
        stderr = srv.stop()
    _check(run, stderr)
    assert run.unready is not None and run.unready[1]["reason"] == "Draining"


# -- the router, in front of a trivial backend ---------------------------------------------------------------------


async def _backend(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A predictor stand-in: ready, and one prediction for any request."""
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]
            await send({"type": kind + ".complete"})
            if kind == "lifespan.shutdown":
                return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    body = b'{"ready": true}' if scope["path"].endswith("/ready") else b'{"predictions": [0]}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"x-model-version", b"v1"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _BackendThread:
    def __init__(self) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(_backend, host="127.0.0.1", port=self.port, log_level="warning",
                                                    loop="asyncio", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "backend did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_router_drains_on_sigterm_without_failing_a_request(tmp_path: Path):
    with _BackendThread() as backend:
        cfg = tmp_path / "router.json"
        cfg.write_text(json.dumps({"deployment": "iris", "model": "iris",
                                   "backends": [{"version": "v1", "url": backend, "weight": 100}]}))
        port = free_port()
        env = {**os.environ, "MLSTEWARD_ROUTER_DRAIN_S": str(DRAIN_S),
               "MLSTEWARD_ROUTER_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
               "MLSTEWARD_ROUTER_READINESS_INTERVAL_S": "0.2",
               "PYTHONPATH": str(REPO / "runtime") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen([sys.executable, "-m", "mlsteward_runtime.cli", "route", "--config", str(cfg),
                                 "--host", "127.0.0.1", "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=log, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(proc, url + "/readyz")
            run = asyncio.run(_drive(proc, url, "/readyz"))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.seek(0)
            stderr = log.read().decode(errors="replace")
    _check(run, stderr)
    assert run.unready is not None and run.unready[1]["draining"] is True


def _start_router(tmp_path: Path, backend: str, **env_extra: str) -> tuple[subprocess.Popen[bytes], str]:
    cfg = tmp_path / "router.json"
    cfg.write_text(json.dumps({"deployment": "iris", "model": "iris", "experiment": "ab",
                               "backends": [{"version": "v1", "url": backend, "weight": 100}]}))
    port = free_port()
    env = {**os.environ, "MLSTEWARD_ROUTER_READINESS_INTERVAL_S": "0.2", **env_extra,
           "PYTHONPATH": str(REPO / "runtime") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "mlsteward_runtime.cli", "route", "--config", str(cfg),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(proc, url + "/readyz")
    return proc, url


def _one_outcome(url: str) -> None:
    with httpx.Client(base_url=url, timeout=5) as client:
        answer = client.post("/predict", json={"instances": [[1.0]]})
        assert answer.status_code == 200, answer.text
        fb = client.post("/v1/feedback", json={"request_id": answer.headers["x-request-id"], "reward": 1.0})
        assert fb.status_code == 200, fb.text


def _exit_time(proc: subprocess.Popen[bytes], limit: float) -> float:
    """Seconds from now until the process exits (it must, within `limit`), asserting exit status 0."""
    t0 = time.monotonic()
    assert proc.wait(timeout=limit) == 0
    return time.monotonic() - t0


def test_a_draining_router_holds_its_unread_outcomes_until_its_stats_are_read(tmp_path: Path):
    """An outcome recorded since the last read of /v1/router/stats keeps the router draining past drain_s until
    the stats are read (the operator reads draining router pods); without anything unread it exits after drain_s,
    and the hold is bounded by flush_timeout_s."""
    env = {"MLSTEWARD_ROUTER_DRAIN_S": "0.5", "MLSTEWARD_ROUTER_FLUSH_TIMEOUT_S": "30",
           "MLSTEWARD_ROUTER_SHUTDOWN_TIMEOUT_S": "2"}
    with _BackendThread() as backend:
        # Nothing unread: the drain ends after drain_s.
        proc, url = _start_router(tmp_path, backend, **env)
        try:
            _one_outcome(url)
            assert httpx.get(url + "/v1/router/stats", timeout=5).json()["versions"]["v1"]["outcomes"] == 1
            proc.send_signal(signal.SIGTERM)
            assert _exit_time(proc, 10) < 5
        finally:
            if proc.poll() is None:
                proc.kill()
        # An outcome nobody has read: still running well past drain_s, gone soon after its stats are read.
        proc, url = _start_router(tmp_path, backend, **env)
        try:
            _one_outcome(url)
            proc.send_signal(signal.SIGTERM)
            time.sleep(3)
            assert proc.poll() is None, "the router exited with an outcome nobody had read"
            stats = httpx.get(url + "/v1/router/stats", timeout=5).json()
            assert stats["versions"]["v1"]["outcomes"] == 1
            assert _exit_time(proc, 10) < 5
        finally:
            if proc.poll() is None:
                proc.kill()
        # Bounded: nobody reads, the router exits once flush_timeout_s has passed.
        proc, url = _start_router(tmp_path, backend, **{**env, "MLSTEWARD_ROUTER_FLUSH_TIMEOUT_S": "2"})
        try:
            _one_outcome(url)
            proc.send_signal(signal.SIGTERM)
            took = _exit_time(proc, 15)
            assert 1.5 < took < 8
        finally:
            if proc.poll() is None:
                proc.kill()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 20.0) -> None:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"router exited {proc.returncode}"
        try:
            with socket.create_connection((host, int(port)), timeout=1) as s:
                s.sendall(f"GET /readyz HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n".encode())
                last = s.recv(4096)
                if last.startswith(b"HTTP/1.1 200"):
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"router not ready after {timeout}s; last observed: {last!r}")


# -- both of uvicorn's HTTP/1.1 protocols, in process ----------------------------------------------------------------


class _ThreadedServer:
    """A DrainingServer in a thread, with the Popen methods `_drive` uses; the "signal" calls its handler."""

    def __init__(self, http: str) -> None:
        from mlsteward_runtime.drain import DrainingServer

        self.draining = False

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await _backend(scope, receive, send)
                return
            if scope["path"] == "/ready" and self.draining:
                await send({"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"16")]})
                await send({"type": "http.response.body", "body": b'{"ready": false}'})
                return
            await _backend(scope, receive, send)

        def on_drain() -> None:
            self.draining = True

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, http=http, loop="asyncio", lifespan="on",
                                log_level="warning", timeout_graceful_shutdown=int(SHUTDOWN_TIMEOUT_S))
        self.server = DrainingServer(config, drain_s=DRAIN_S, on_drain=on_drain)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.01)

    def send_signal(self, sig: int) -> None:
        self.server.handle_exit(sig, None)

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else 0

    def wait(self, timeout: float) -> int:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise subprocess.TimeoutExpired("server thread", timeout)
        return 0

    def kill(self) -> None:
        self.server.force_exit = self.server.should_exit = True


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_drain_works_with_both_http_protocols(http: str):
    server = _ThreadedServer(http)
    try:
        run = asyncio.run(_drive(server, f"http://127.0.0.1:{server.port}", "/ready"))  # type: ignore[arg-type]
    finally:
        server.kill()
        server.thread.join(timeout=10)
    _check(run, "")
