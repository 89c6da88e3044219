"""Proxying to the backends: prediction requests with fallback, metadata, request ids and per-arm counting."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from mlsteward_runtime.router.asgi import HOP, path_qs, send_json, send_raw
from mlsteward_runtime.router.backend import Attempt
from mlsteward_runtime.router.feedback import Served
from mlsteward_runtime.router.shadow import ShadowMixin
from mlsteward_runtime.router.state import State


class ProxyMixin(ShadowMixin):
    def _forward_headers(self, scope: dict[str, Any]) -> tuple[list[tuple[str, str]], str, dict[str, str]]:
        """Client headers to pass on, the request id (the client's or a new one), and the headers by name."""
        out: list[tuple[str, str]] = []
        named: dict[str, str] = {}
        rid = None
        strip = self.state.strip
        for k, v in scope["headers"]:
            name = k.decode("latin-1")
            if name in HOP or name in strip:
                continue
            value = v.decode("latin-1")
            named[name] = value
            if name == "x-request-id":
                if not value or len(value) > 200:
                    # An empty or absurd id cannot be joined to feedback; replace it rather than refuse it.
                    continue
                rid = value
            out.append((name, value))
        if rid is None:
            rid = uuid.uuid4().hex
            out.append(("x-request-id", rid))
        return out, rid, named

    def _record(self, attempt: Attempt, started: float) -> None:
        ms = (time.perf_counter() - started) * 1000.0
        arm = self.stats.arm(attempt.version)
        arm.requests += 1
        arm.latency.observe(ms)
        child = self._lat_children.get(attempt.version)
        if child is None:
            child = self._lat_children[attempt.version] = self.metrics.latency.labels(attempt.version)
        child.observe(ms / 1000.0)
        if attempt.reason is not None:
            arm.errors += 1
            self.metrics.backend_errors.labels(attempt.version, attempt.reason).inc()

    def _sticky_key(self, state: State, named: dict[str, str], body: bytes) -> str | None:
        if state.sticky_header is not None:
            value = named.get(state.sticky_header)
            if value:
                return value
        if state.sticky_body_key is not None and body:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                return None  # the backend answers the malformed body with its own 4xx
            if isinstance(doc, dict):
                value = doc.get(state.sticky_body_key)
                if value is not None and not isinstance(value, (dict, list)):
                    return str(value)
        return None

    async def _predict(self, scope: dict[str, Any], body: bytes, send: Any) -> None:
        state = self.state
        headers, rid, named = self._forward_headers(scope)
        arm = state.assigner.choose(self._sticky_key(state, named, body))
        target = state.urls[arm] + path_qs(scope)
        t0 = time.perf_counter()
        attempt = await self._call("POST", state.versions[arm], target, headers, body, state.timeout)
        self._record(attempt, t0)
        failures: list[Attempt] = []
        fell_back = False
        if attempt.reason is not None and state.config.fallback and state.stable is not None \
                and state.stable != arm:
            failures.append(attempt)
            self.stats.arm(attempt.version).fallbacks += 1
            stable_version = state.versions[state.stable]
            self.metrics.fallbacks.labels(attempt.version, stable_version).inc()
            t0 = time.perf_counter()
            attempt = await self._call(
                "POST", stable_version, state.urls[state.stable] + path_qs(scope), headers, body, state.timeout
            )
            self._record(attempt, t0)
            fell_back = True
        if attempt.reason is not None:
            failures.append(attempt)
            self._count(attempt.version, 502)
            self._mirror(state, scope, headers, body, None)
            await send_json(
                send, 502,
                {
                    "error": "bad_gateway",
                    "message": "; ".join(f"backend {a.version} failed: {a.reason}" for a in failures),
                    "backend": attempt.version,
                    "attempts": [a.failure() for a in failures],
                    "request_id": rid,
                },
                [(b"x-request-id", rid.encode("latin-1"))],
            )
            return
        status = attempt.status or 502
        self._count(attempt.version, status)
        if 200 <= status < 300:
            keep = attempt.body if len(attempt.body) <= self.settings.feedback_max_body_bytes else None
            self.served.put(rid, Served(attempt.version, state.urls[state.versions.index(attempt.version)], keep))
        self._mirror(state, scope, headers, body, attempt.body if 200 <= status < 300 else None)
        out = attempt.headers or []
        if not any(k.lower() == b"x-request-id" for k, _ in out):
            out.append((b"x-request-id", rid.encode("latin-1")))
        out.append((b"x-mlsteward-arm", state.versions[arm].encode("latin-1")))
        if fell_back:
            out.append((b"x-mlsteward-fallback", b"true"))
        await send_raw(send, status, attempt.body, out)

    def _count(self, version: str, status: int) -> None:
        child = self._req_children.get((version, status))
        if child is None:
            child = self._req_children[(version, status)] = self.metrics.requests.labels(version, str(status))
        child.inc()

    async def _metadata(self, scope: dict[str, Any], send: Any) -> None:
        state = self.state
        headers, rid, _ = self._forward_headers(scope)
        version = state.versions[state.primary]
        attempt = await self._call("GET", version, state.urls[state.primary] + path_qs(scope), headers, b"",
                                   state.timeout)
        if attempt.reason is not None:
            await send_json(send, 502, {"error": "bad_gateway", "message": f"backend {version} failed: "
                                         f"{attempt.reason}", "backend": version, "attempts": [attempt.failure()]})
            return
        await send_raw(send, attempt.status or 502, attempt.body, attempt.headers or [])

