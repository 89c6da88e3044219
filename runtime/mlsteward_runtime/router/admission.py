"""Admission of a request: the token (401, 403), failed-attempt and rate limits (429), raised as ClientError.

No credential is 401; a token not listed is 403; a JWT that fails verification is 401 with
`WWW-Authenticate: Bearer error="invalid_token"` and a body naming the rule it broke (RFC 6750 §3.1).

Failed attempts (no token or a token not accepted) are limited per source address whether or not `rate_limit`
is configured: each failure takes one from the source's bucket (MLSTEWARD_ROUTER_AUTH_FAILURE_BURST, refilled at
MLSTEWARD_ROUTER_AUTH_FAILURE_PER_S), and while it is empty the source gets 429 before its token is looked at, so
nobody can try tokens faster than that.
"""

from __future__ import annotations

import logging
from typing import Any

from mlsteward_runtime.router.access import Refused, client_id, source_address
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
            token_digest, key = self._authenticate(state, scope, source)
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

    def _authenticate(self, state: State, scope: dict[str, Any], source: str) -> tuple[bytes, str]:
        assert state.tokens is not None
        failures = self._auth_failures
        wait = failures.wait(source)
        if wait:
            self._refuse("auth_failures", "source:" + source)
            raise _too_many(wait, f"at most {failures.burst:g} failed authentications, then "
                                  f"{failures.rate:g} per second, per source")
        header = state.tokens.config.header
        credential = state.tokens.credential(scope["headers"])
        if credential is None:
            failures.take(source)
            self._refuse("unauthenticated", None)
            raise ClientError(
                401, "unauthenticated", "this deployment needs a token", field="authorization",
                rule=f"send Authorization: Bearer <token> or {header}: <key>",
                headers=[(b"www-authenticate", b'Bearer realm="mlsteward"')],
            )
        try:
            identity = state.tokens.identify(*credential)
        except Refused as exc:
            failures.take(source)
            if exc.jwt is not None:
                self._refuse("invalid_token", client_id(exc.digest))
                # The description is one of jwks' fixed messages: nothing of the token is echoed.
                challenge = f'Bearer realm="mlsteward", error="invalid_token", error_description="{exc.jwt.message}"'
                raise ClientError(401, "invalid_token", exc.jwt.message, field="authorization", rule=exc.jwt.rule,
                                  headers=[(b"www-authenticate", challenge.encode())]) from None
            self._refuse("forbidden", client_id(exc.digest))
            raise ClientError(
                403, "forbidden", "the token is not accepted", field="authorization",
                rule="a token listed in the deployment's auth Secret"
                + (", or a JWT (Authorization: Bearer) signed by a key of its JWKS" if state.tokens.jwt else ""),
                headers=[(b"www-authenticate", b'Bearer realm="mlsteward", error="invalid_token"')],
            ) from None
        return identity.digest, identity.client

    def _refuse(self, reason: str, client: str | None) -> None:
        self.metrics.refusals.labels(reason).inc()
        # Only the client id (a short hash of the token) or the source address, never the token.
        log.debug("Refused request reason=%s client=%s", reason, client or "-")


def _too_many(wait: int, rule: str) -> ClientError:
    return ClientError(
        429, "rate_limited", f"too many requests; retry in {wait} s", field="rate", rule=rule,
        headers=[(b"retry-after", str(wait).encode())], retry_after=wait,
    )
