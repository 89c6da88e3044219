"""Test harness of the router: real HTTP on loopback, small predictor backends and routers, each a uvicorn
server in a thread of its own.

The backends mimic the predictor's endpoints (simple, V1, V2, readiness, feedback) with switches to fail,
be slow or be unready, so these tests need nothing but this folder.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mlsteward_runtime.router.app import Router
from mlsteward_runtime.router.server import uvicorn_config
from mlsteward_runtime.router.settings import RouterSettings


class ServerThread:
    """Runs an ASGI app under uvicorn on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app: Any, header_timeout_s: float | None = None, http: Any = None) -> None:
        # proto=IPPROTO_TCP matters: asyncio turns Nagle's algorithm off only on sockets whose proto says TCP,
        # and accepted sockets inherit it. With proto 0 every keep-alive response waits ~40 ms for a delayed ACK.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if header_timeout_s is None:
            config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", loop="asyncio")
        else:
            # A router runs with the server options of `mlsteward route` (header timeout, no proxy-header trust).
            config = uvicorn_config(app, header_timeout_s=header_timeout_s, log_level="warning", loop="asyncio")
            if http is not None:
                config.http = http
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])),
                                       daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


@dataclass
class FakeBackend:
    """A predictor stand-in. Its answer is `label` for every row; the switches change how it behaves."""

    version: str
    label: Any = None
    fail_status: int | None = None
    delay_s: float = 0.0
    ready: bool = True
    received: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)
    served: dict[str, Any] = field(default_factory=dict)
    hits: list[tuple[str, str]] = field(default_factory=list)  # (method, raw path) of every request but probes
    server: ServerThread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def app(self) -> Starlette:
        async def predict(request: Request) -> JSONResponse:
            body = await request.body()
            rid = request.headers.get("x-request-id", "")
            self.received.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail_status is not None:
                return JSONResponse({"error": "failing", "version": self.version}, status_code=self.fail_status)
            try:
                doc = json.loads(body)
            except ValueError:
                return JSONResponse({"error": "invalid_input", "field": "body"}, status_code=422)
            rows = doc.get("instances") or doc.get("inputs") if isinstance(doc, dict) else None
            n = len(rows) if isinstance(rows, list) and rows else 1
            label = self.label if self.label is not None else self.version
            self.served[rid] = label
            headers = {"x-request-id": rid, "x-model-version": self.version}
            if request.url.path.startswith("/v2/"):
                out = {"model_name": request.path_params.get("name"), "model_version": self.version,
                       "outputs": [{"name": "predict", "datatype": "BYTES", "shape": [n], "data": [label] * n}]}
                return JSONResponse(out, headers=headers)
            return JSONResponse({"predictions": [label] * n}, headers=headers)

        async def ready(request: Request) -> JSONResponse:
            return JSONResponse({"ready": self.ready}, status_code=200 if self.ready else 503)

        async def metadata(request: Request) -> JSONResponse:
            return JSONResponse({"name": request.path_params["name"], "versions": [self.version]},
                                headers={"x-model-version": self.version})

        async def feedback(request: Request) -> JSONResponse:
            if request.headers.get("content-type") != "application/json":
                return JSONResponse({"error": "unsupported_media_type", "field": "content-type"}, status_code=415)
            doc = json.loads(await request.body())
            if doc.get("request_id") not in self.served:
                return JSONResponse({"error": "not_found", "field": "request_id"}, status_code=404)
            self.feedback.append(doc)
            return JSONResponse({"recorded": True})

        async def internal(request: Request) -> JSONResponse:
            return JSONResponse({"internal": request.url.path})

        async def http_error(request: Request, exc: Exception) -> JSONResponse:
            # JSON like the predictor's own errors (Starlette's default is plain text).
            code = getattr(exc, "status_code", 500)
            return JSONResponse({"error": "http_error", "message": str(getattr(exc, "detail", ""))}, status_code=code)

        return Starlette(exception_handlers={404: http_error, 405: http_error}, routes=[
            Route("/v1/stats", internal),
            Route("/v1/drift/window", internal),
            Route("/metrics", internal),
            Route("/predict", predict, methods=["POST"]),
            Route("/v1/models/{name}:predict", predict, methods=["POST"]),
            Route("/v2/models/{name}/infer", predict, methods=["POST"]),
            Route("/v2/health/ready", ready),
            Route("/v2/models/{name}", metadata),
            Route("/v1/feedback", feedback, methods=["POST"]),
        ])

    def counted(self) -> Any:
        """The app, recording every request it gets (readiness probes aside) before routing it."""
        app = self.app()

        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] != "/v2/health/ready":
                self.hits.append((scope["method"], scope.get("raw_path", b"").decode("latin-1")))
            await app(scope, receive, send)

        return asgi

    def start(self) -> FakeBackend:
        self.server = ServerThread(self.counted()).start()
        return self


@pytest.fixture
def backends() -> Iterator[Callable[..., FakeBackend]]:
    started: list[FakeBackend] = []

    def make(version: str, **kw: Any) -> FakeBackend:
        b = FakeBackend(version, **kw).start()
        started.append(b)
        return b

    yield make
    for b in started:
        assert b.server is not None
        b.server.stop()


def client(base_url: str) -> httpx.Client:
    """A keep-alive client with Nagle's algorithm off.

    httpx writes a request's headers and body separately; with Nagle on, the body waits for the server's
    delayed ACK of the headers, adding about 40 ms to every request on loopback.
    """
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(base_url=base_url, timeout=10, transport=transport)


def dead_url() -> str:
    """A loopback URL where nothing listens, so connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class RunningRouter:
    router: Router
    server: ServerThread
    config_path: Path
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url

    def write_config(self, config: dict[str, Any]) -> None:
        # Write-then-rename, as a ConfigMap update swaps files atomically; the watcher must never read half a file.
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config))
        tmp.replace(self.config_path)

    def stats(self) -> dict[str, Any]:
        r = self.client.get("/v1/router/stats")
        assert r.status_code == 200, r.text
        return r.json()

    def predict(self, body: Any = None, **kw: Any) -> httpx.Response:
        return self.client.post("/predict", json=body if body is not None else {"instances": [[1.0, 2.0]]}, **kw)


@pytest.fixture
def router_factory(tmp_path: Path) -> Iterator[Callable[..., RunningRouter]]:
    running: list[RunningRouter] = []

    def make(config: dict[str, Any], **settings: Any) -> RunningRouter:
        path = tmp_path / f"router-{len(running)}.json"
        path.write_text(json.dumps(config))
        defaults: dict[str, Any] = {"replica": f"router-{len(running)}", "reload_interval_s": 0.05,
                                    "readiness_interval_s": 0.1, "seed": 7}
        defaults.update(settings)
        router = Router(RouterSettings(**defaults), config_path=path)
        server = ServerThread(router, router.settings.header_timeout_s).start()
        rr = RunningRouter(router, server, path, client(server.url))
        running.append(rr)
        return rr

    yield make
    for rr in running:
        rr.client.close()
        rr.server.stop()


def wait_for(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll `check` until it returns a truthy value; fail with the last value seen when the deadline passes."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; last observed: {last!r}")


def config(*backends: tuple[str, str, int], **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "deployment": "iris",
        "model": "iris",
        "backends": [{"version": v, "url": u, "weight": w} for v, u, w in backends],
    }
    out.update(kw)
    return out


def raw_request(url: str, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request with the request-target sent byte for byte (HTTP clients normalize dot segments)."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"{method} {target} HTTP/1.1", f"host: {host}", "connection: close", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), parsed, payload
