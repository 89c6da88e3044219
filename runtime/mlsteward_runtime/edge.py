"""The ASGI layer in front of every endpoint: request id, version header, in-flight gauge, metrics and stats."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import orjson

from mlsteward_runtime.dataplane import DataPlane

__all__ = ["Edge", "INTERNAL_ERROR", "PREDICT_ENDPOINTS", "RequestIds"]

log = logging.getLogger("mlsteward.app")

INTERNAL_ERROR = {"error": "internal_error", "message": "internal error; see the server log"}
PREDICT_ENDPOINTS = frozenset({"/predict", "/v1/models/{name}:predict", "/v2/models/{name}/infer",
                               "/v2/models/{name}/versions/{version}/infer"})


class RequestIds:
    """Request ids: the worker's pid in hex, then 128 random bits from the OS (os.urandom, as secrets does).

    The random bytes are read 4 KiB at a time: one getrandom call per 256 ids instead of one per request (a system
    call costs about as much as the rest of the id). A forked child starts with an empty buffer, so two workers
    never hand out the same ids.
    """

    _CHUNK = 4096

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._prefix = f"{os.getpid():x}-"
        self._hex = ""
        self._pos = 0

    def next(self) -> str:
        pos = self._pos
        if pos >= len(self._hex):
            self._hex, pos = os.urandom(self._CHUNK).hex(), 0
        self._pos = pos + 32
        return self._prefix + self._hex[pos:pos + 32]


_IDS = RequestIds()  # one per process: the fork hook is registered once


class Edge:
    """Pure ASGI layer: request id, version header, in-flight gauge, metrics and sliding-window stats.

    Written as raw ASGI rather than BaseHTTPMiddleware because it runs on every request and must stay cheap.
    It also turns an unexpected exception into a JSON 500 that still carries the headers.
    """

    def __init__(self, app: Any, plane: DataPlane) -> None:
        self.app = app
        self.plane = plane
        self.version_b = plane.version.encode()
        self.metrics = plane.metrics
        self.ids = _IDS

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid: str | None = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                if 0 < len(v) <= 128 and v.isascii():
                    text = v.decode()
                    if text.isprintable():
                        rid = text
                break
        extra = [(b"x-model-version", self.version_b)]
        if rid is not None and self.plane.feedback.get(rid) is not None:
            # A client may name its own request (the router passes its id this way), never take over one that was
            # answered already: its feedback would be joined to this prediction. It keeps its value as a
            # correlation id and gets an id of its own.
            extra.append((b"x-correlation-id", rid.encode()))
            rid = None
        if rid is None:
            # 128 random bits: nobody can guess the id of someone else's prediction and label it. The worker's pid
            # in front tells in the logs which worker answered.
            rid = self.ids.next()
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        state["request_id"] = rid
        extra.append((b"x-request-id", rid.encode()))
        status = 500
        started = False

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        gauge = self.metrics.in_flight_v
        gauge.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:  # noqa: BLE001 - last line of defence: answer, log, keep serving
            log.exception("Request failed", extra={"request_id": rid, "version": self.plane.version})
            if not started:
                body = orjson.dumps(INTERNAL_ERROR)
                await send_wrapper({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            gauge.dec()
            dt = time.perf_counter() - t0
            route = scope.get("route")
            endpoint = route.path if route is not None else "unmatched"
            self.metrics.observe_request(endpoint, status, dt)
            if endpoint in PREDICT_ENDPOINTS:
                self.plane.record_request(dt * 1000.0, status)
                self.plane.stages.request_done(dt)
