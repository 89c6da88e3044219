"""Proxying to the backends: prediction requests with fallback, metadata, request ids and per-arm counting.

Request ids are the router's own, never guessable nor chosen by a client (sequential or client-chosen ids would let
anyone label someone else's prediction): every request gets a nonce of 128 random bits (`ids.new_nonce`), sent to
the backend as `x-request-id`. A served prediction (2xx) comes back to the client with the signed id
`<nonce>.<payload>.<mac>` (see `ids`): the version that served it, when, a tag of the token and the prediction
when small, so any replica holding the key can join feedback to it. A response that served no prediction (the
backend's 4xx or 5xx, the router's 502) carries the bare nonce, which is what the backend logged; feedback for it
is refused as an unknown id. A client's own `x-request-id` never replaces the router's: it travels on as
`x-correlation-id` (to the backend and back), so a client can still find its request in the logs.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from mlsteward_runtime.router.asgi import HOP, send_json, send_raw
from mlsteward_runtime.router.backend import Attempt
from mlsteward_runtime.router.cache import CacheMixin, Lookup
from mlsteward_runtime.router.feedback import Served, extract_predictions
from mlsteward_runtime.router.ids import issue, new_nonce, small_predictions
from mlsteward_runtime.router.paths import forward_path
from mlsteward_runtime.router.shadow import ShadowMixin
from mlsteward_runtime.router.state import State

_IDS = frozenset({"x-request-id", "x-correlation-id"})
# Responses up to this size are parsed for predictions small enough to carry in the id (a small prediction's
# response is a few hundred bytes at most; parsing one costs about a microsecond).
_PARSE_MAX_BYTES = 2048


def _correlation(value: str) -> bool:
    # Echoed into logs and response headers: keep it short and printable.
    return 0 < len(value) <= 200 and value.isprintable()


class ProxyMixin(CacheMixin, ShadowMixin):
    def _forward_headers(self, scope: dict[str, Any]) -> tuple[list[tuple[str, str]], str, dict[str, str]]:
        """Client headers to pass on, a new request nonce (the backend's x-request-id), and the headers by name.

        The client's `x-request-id` (else its `x-correlation-id`) is passed on as `x-correlation-id`.
        """
        out: list[tuple[str, str]] = []
        named: dict[str, str] = {}
        strip = self.state.strip
        for k, v in scope["headers"]:
            name = k.decode("latin-1")
            if name in HOP or name in strip:
                continue
            value = v.decode("latin-1")
            named[name] = value
            if name not in _IDS:
                out.append((name, value))
        rid = new_nonce()
        out.append(("x-request-id", rid))
        correlation = named.get("x-request-id") or named.get("x-correlation-id")
        if correlation is not None and _correlation(correlation):
            out.append(("x-correlation-id", correlation))
        return out, rid, named

    def _ready_arm(self, state: State, arm: int) -> int:
        """The assigned arm when its probe saw it ready (or it was not probed yet), else a ready one.

        The stable version first, then the heaviest ready weight. With no backend ready the assigned one is
        used anyway ("panic routing", as Envoy does below its healthy-host threshold): a probe that times out
        under load must not turn into refusing all traffic.
        """
        ready = self.ready
        version = state.versions[arm]
        if ready.get(version, True):
            return arm
        live = [i for i, v in enumerate(state.versions) if ready.get(v, True)]
        if not live:
            self.metrics.panic.labels(version).inc()
            return arm
        to = state.stable if state.stable in live else max(live, key=lambda i: state.config.backends[i].weight)
        self.metrics.rerouted.labels(version, state.versions[to]).inc()
        return to

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

    async def _predict(self, scope: dict[str, Any], body: bytes, send: Any, token: bytes | None) -> None:
        state = self.state
        headers, rid, named = self._forward_headers(scope)
        arm = self._ready_arm(state, state.assigner.choose(self._sticky_key(state, named, body)))
        path = forward_path(scope["path"], scope.get("query_string"))
        lookup = self._cache_lookup(state, arm, path, body, named)
        if lookup is not None and lookup.hit is not None:
            await self._answer_hit(lookup, rid, named, state.urls[arm], token, send)
            return
        target = state.urls[arm] + path
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
                "POST", stable_version, state.urls[state.stable] + path, headers, body, state.timeout
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
                _id_headers(rid, named),
            )
            return
        status = attempt.status or 502
        self._count(attempt.version, status)
        nonce = rid
        if 200 <= status < 300:
            rid = self._signed_id(rid, attempt.version, state.urls[state.versions.index(attempt.version)],
                                  attempt.body, token)
        self._mirror(state, scope, headers, body, attempt.body if 200 <= status < 300 else None)
        # The backend echoes the ids it was sent; the router's own go back, whatever the backend said.
        out = [(k, v) for k, v in attempt.headers or [] if k.lower() not in (b"x-request-id", b"x-correlation-id")]
        out.extend(_id_headers(rid, named))
        out.append((b"x-mlsteward-arm", state.versions[arm].encode("latin-1")))
        if fell_back:
            out.append((b"x-mlsteward-fallback", b"true"))
        if lookup is not None:
            out.append((b"x-cache", lookup.result.encode()))
            self._cache_store(lookup, attempt.version, status, attempt.headers, attempt.body, nonce)
        await send_raw(send, status, attempt.body, out)

    async def _answer_hit(self, lookup: Lookup, nonce: str, named: dict[str, str], url: str, token: bytes | None,
                          send: Any) -> None:
        """A cached prediction, with a fresh signed id so that feedback is attributed as for a miss (see `cache`)."""
        hit = lookup.hit
        assert hit is not None
        body = hit.body_for(nonce)
        self._count(hit.version, hit.status)
        rid = self._signed_id(nonce, hit.version, url, body, token)
        out = [(b"content-type", hit.content_type), (b"x-model-version", hit.model_version), (b"x-cache", b"hit"),
               *_id_headers(rid, named), (b"x-mlsteward-arm", hit.version.encode("latin-1"))]
        await send_raw(send, hit.status, body, out)

    def _signed_id(self, nonce: str, version: str, url: str, body: bytes, token: bytes | None) -> str:
        """The id of a served prediction. Its predictions go into the id when small; otherwise the body is kept in
        the ServedMap (when within feedback_max_body_bytes) so this replica can still score a label."""
        # Only small bodies can hold predictions small enough to carry; larger ones are not parsed on this path.
        predictions = extract_predictions(body) if len(body) <= _PARSE_MAX_BYTES else None
        carried = small_predictions(predictions, version)
        try:
            signed = issue(self.ids.current(), nonce, version, token, carried)
        except ValueError:
            # A version name longer than an id carries (the config allows 253 characters, which may be more
            # bytes): the prediction is served, and feedback for it is refused as an unknown id.
            return nonce
        if not carried and len(body) <= self.settings.feedback_max_body_bytes:
            self.served.put(nonce, Served(version, url, body))
            self.metrics.served_bytes.set(self.served.bytes)
        return signed

    def _count(self, version: str, status: int) -> None:
        child = self._req_children.get((version, status))
        if child is None:
            child = self._req_children[(version, status)] = self.metrics.requests.labels(version, str(status))
        child.inc()

    async def _metadata(self, scope: dict[str, Any], send: Any) -> None:
        state = self.state
        headers, rid, _ = self._forward_headers(scope)
        primary = self._ready_arm(state, state.primary)
        version = state.versions[primary]
        path = forward_path(scope["path"], scope.get("query_string"))
        attempt = await self._call("GET", version, state.urls[primary] + path, headers, b"", state.timeout)
        if attempt.reason is not None:
            await send_json(send, 502, {"error": "bad_gateway", "message": f"backend {version} failed: "
                                         f"{attempt.reason}", "backend": version, "attempts": [attempt.failure()]})
            return
        await send_raw(send, attempt.status or 502, attempt.body, attempt.headers or [])


def _id_headers(rid: str, named: dict[str, str]) -> list[tuple[bytes, bytes]]:
    out = [(b"x-request-id", rid.encode("latin-1"))]
    correlation = named.get("x-request-id") or named.get("x-correlation-id")
    if correlation is not None and _correlation(correlation):
        out.append((b"x-correlation-id", correlation.encode("latin-1")))
    return out
