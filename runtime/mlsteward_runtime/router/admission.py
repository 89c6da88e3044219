"""Admission of a request: the token (401, 403), failed-attempt and rate limits (429), raised as ClientError.

Failed attempts (no token or a token not accepted) are limited per source address whether or not `rate_limit`
is configured: each failure takes one from the source's bucket (MLSTEWARD_ROUTER_AUTH_FAILURE_BURST, refilled at
MLSTEWARD_ROUTER_AUTH_FAILURE_PER_S), and while it is empty the source gets 429 before its token is looked at, so
nobody can try tokens faster than that.
"""

from __future__ import annotations

import logging
from typing import Any

from mlsteward_runtime.router.access import client_id, digest, source_address
from mlsteward_runtime.router.asgi import ClientError
from mlsteward_runtime.router.state import RouterCore, State

log = logging.getLogger("mlsteward.router")


class AdmissionMixin(RouterCore):
    def _admit(self, state: State, scope: dict[str, Any]) -> bytes | None:
        """Raises the 401, 403 or 429 a request gets; returns the digest of its token (None without auth)."""
        key = None
        token_digest = None
        source = source_address(scope, self._trusted)
        if state.tokens is not None:
            token_digest = self._authenticate(state, scope, source)
            key = client_id(token_digest)
        limiter = state.limiter
        if limiter is not None:
            assert state.config.rate_limit is not None
            if key is None or state.config.rate_limit.by == "source":
                key = "source:" + source
            wait = limiter.take(key)
            if wait:
                self._refuse("rate_limited", key)
                rl = state.config.rate_limit
                raise _too_many(wait, f"at most {rl.requests_per_second:g} requests per second, "
                                      f"bursts of {rl.burst}")
        return token_digest

    def _authenticate(self, state: State, scope: dict[str, Any], source: str) -> bytes:
        assert state.tokens is not None
        failures = self._auth_failures
        wait = failures.wait(source)
        if wait:
            self._refuse("auth_failures", "source:" + source)
            raise _too_many(wait, f"at most {failures.burst:g} failed authentications, then "
                                  f"{failures.rate:g} per second, per source")
        header = state.tokens.config.header
        token = state.tokens.credential(scope["headers"])
        if token is None:
            failures.take(source)
            self._refuse("unauthenticated", None)
            raise ClientError(
                401, "unauthenticated", "this deployment needs a token", field="authorization",
                rule=f"send Authorization: Bearer <token> or {header}: <key>",
                headers=[(b"www-authenticate", b'Bearer realm="mlsteward"')],
            )
        token_digest = digest(token)
        if not state.tokens.accepts(token_digest):
            failures.take(source)
            self._refuse("forbidden", client_id(token_digest))
            raise ClientError(
                403, "forbidden", "the token is not accepted", field="authorization",
                rule="a token listed in the deployment's auth Secret",
                headers=[(b"www-authenticate", b'Bearer realm="mlsteward", error="invalid_token"')],
            )
        return token_digest

    def _refuse(self, reason: str, client: str | None) -> None:
        self.metrics.refusals.labels(reason).inc()
        # Only the client id (a short hash of the token) or the source address, never the token.
        log.debug("Refused request reason=%s client=%s", reason, client or "-")


def _too_many(wait: int, rule: str) -> ClientError:
    return ClientError(
        429, "rate_limited", f"too many requests; retry in {wait} s", field="rate", rule=rule,
        headers=[(b"retry-after", str(wait).encode())], retry_after=wait,
    )
