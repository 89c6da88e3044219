"""Admission of a request: the token (401, 403) and the rate limit (429), raised as ClientError."""

from __future__ import annotations

import logging
from typing import Any

from mlsteward_runtime.router.access import client_id, digest
from mlsteward_runtime.router.asgi import ClientError
from mlsteward_runtime.router.state import RouterCore, State

log = logging.getLogger("mlsteward.router")


class AdmissionMixin(RouterCore):
    def _admit(self, state: State, scope: dict[str, Any]) -> None:
        """Raises the 401, 403 or 429 a request gets; returns when it may go on."""
        key = None
        if state.tokens is not None:
            header = state.tokens.config.header
            token = state.tokens.credential(scope["headers"])
            if token is None:
                self._refuse("unauthenticated", None)
                raise ClientError(
                    401, "unauthenticated", "this deployment needs a token", field="authorization",
                    rule=f"send Authorization: Bearer <token> or {header}: <key>",
                    headers=[(b"www-authenticate", b'Bearer realm="mlsteward"')],
                )
            token_digest = digest(token)
            key = client_id(token_digest)
            if not state.tokens.accepts(token_digest):
                self._refuse("forbidden", key)
                raise ClientError(
                    403, "forbidden", "the token is not accepted", field="authorization",
                    rule="a token listed in the deployment's auth Secret",
                    headers=[(b"www-authenticate", b'Bearer realm="mlsteward", error="invalid_token"')],
                )
        limiter = state.limiter
        if limiter is not None:
            assert state.config.rate_limit is not None
            if key is None or state.config.rate_limit.by == "source":
                client = scope.get("client")
                key = "source:" + (client[0] if client else "unknown")
            wait = limiter.take(key)
            if wait:
                self._refuse("rate_limited", key)
                rl = state.config.rate_limit
                raise ClientError(
                    429, "rate_limited", f"too many requests; retry in {wait} s", field="rate",
                    rule=f"at most {rl.requests_per_second:g} requests per second, bursts of {rl.burst}",
                    headers=[(b"retry-after", str(wait).encode())], retry_after=wait,
                )

    def _refuse(self, reason: str, client: str | None) -> None:
        self.metrics.refusals.labels(reason).inc()
        # Only the client id (a short hash of the token) or the source address, never the token.
        log.debug("Refused request reason=%s client=%s", reason, client or "-")

