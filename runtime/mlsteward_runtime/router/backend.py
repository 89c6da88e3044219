"""One call to a backend, pooled over the router's aiohttp session, and what came of it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

from mlsteward_runtime.router.asgi import HOP
from mlsteward_runtime.router.state import RouterCore


@dataclass(slots=True)
class Attempt:
    version: str
    url: str
    status: int | None = None
    headers: list[tuple[bytes, bytes]] | None = None
    body: bytes = b""
    reason: str | None = None  # set when the attempt failed: connect_error, timeout, http_5xx

    def failure(self) -> dict[str, Any]:
        # The arm, never its URL: a client has no business learning the cluster's internal addresses.
        out: dict[str, Any] = {"version": self.version, "reason": self.reason}
        if self.status is not None:
            out["status"] = self.status
        return out


class BackendMixin(RouterCore):
    async def _call(self, method: str, version: str, url: str, headers: list[tuple[str, str]], body: bytes,
                    timeout: aiohttp.ClientTimeout) -> Attempt:
        assert self.session is not None
        attempt = Attempt(version, url)
        try:
            async with self.session.request(method, url, data=body or None, headers=headers,
                                            timeout=timeout, allow_redirects=False) as resp:
                attempt.body = await resp.read()
                attempt.status = resp.status
                attempt.headers = [
                    (k, v) for k, v in resp.raw_headers if k.decode("latin-1").lower() not in HOP
                ]
        except asyncio.TimeoutError:
            attempt.reason = "timeout"
        except aiohttp.ClientError as exc:
            attempt.reason = "connect_error" if isinstance(exc, aiohttp.ClientConnectionError) else "client_error"
        else:
            if attempt.status >= 500:
                attempt.reason = f"http_{attempt.status}"
        return attempt
