"""The HTTP server under the router: uvicorn with a header read timeout and without its proxy-header trust.

uvicorn closes an idle keep-alive connection, but it has no deadline for a request's headers: a client that opens
connections and sends a byte now and then (slowloris) holds each one open for ever. `header_timeout` adds one to
uvicorn's own protocol classes (h11 and httptools): a connection gets `header_timeout_s` from when it opens, or
from the first bytes of its next request, to complete the headers, and is closed otherwise. The keep-alive timeout
still governs idle time between requests.

uvicorn's proxy headers are switched off: by default it believes X-Forwarded-For from 127.0.0.1, which a sidecar
or a port-forward makes anyone. The router reads that header itself, from configured proxies only
(`access.source_address`).

`server` wraps the config in a `drain.DrainingServer`: on SIGTERM the router keeps serving for `drain_s` with
/readyz answering 503 and `Connection: close` on every response, then shuts down (see `drain`).
"""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import uvicorn

from mlsteward_runtime.drain import DrainingServer


def header_timeout(base: type[asyncio.Protocol], seconds: float) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol `base` that closes connections slow to send their headers."""

    class HeaderTimeout(base):  # type: ignore[valid-type, misc]
        _header_timer: asyncio.TimerHandle | None = None
        _header_cycle: Any = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            cycle = self.cycle
            if cycle is not None and cycle is not self._header_cycle:
                # A new request's headers are complete: its body and response have their own limits.
                self._header_cycle = cycle
                self._disarm_header_timer()
            elif self._header_timer is None and (cycle is None or cycle.response_complete):
                self._arm_header_timer()  # the first bytes of the next request on a kept-alive connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def _disarm_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            # Disarmed as soon as a request's headers complete, so firing means they did not in time.
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    HeaderTimeout.__name__ = HeaderTimeout.__qualname__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeout


def http_protocol(header_timeout_s: float) -> type[asyncio.Protocol]:
    """httptools when installed (faster), else h11, either with the header timeout."""
    if importlib.util.find_spec("httptools") is not None:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return header_timeout(HttpToolsProtocol, header_timeout_s)
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return header_timeout(H11Protocol, header_timeout_s)


def uvicorn_config(app: Any, *, header_timeout_s: float, **options: Any) -> uvicorn.Config:
    """The uvicorn Config of a router: `options` are passed on (host, port, loop, log_level...)."""
    defaults: dict[str, Any] = {
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "timeout_keep_alive": 30,
    }
    defaults.update(options)
    return uvicorn.Config(app, http=http_protocol(header_timeout_s), **defaults)


def server(app: Any, config: uvicorn.Config, *, drain_s: float, flush_timeout_s: float = 0.0) -> DrainingServer:
    """The uvicorn server of a router `app`: draining sets `app.draining`, which turns /readyz to 503; the drain
    then lasts, for at most `flush_timeout_s` more, until `app.unread()` is false (see Router.unread)."""

    def on_drain() -> None:
        app.draining = True

    return DrainingServer(config, drain_s=drain_s, on_drain=on_drain, hold=getattr(app, "unread", None),
                          max_hold_s=flush_timeout_s)
