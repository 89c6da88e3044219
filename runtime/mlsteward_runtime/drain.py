"""Graceful drain of the HTTP servers (`mlsteward serve` and `mlsteward route`) when the pod is told to stop.

Kubernetes sends SIGTERM at the same time as it removes the pod from the Service's endpoints, and kube-proxy (or a
load balancer) learns of it a moment later; pooled keep-alive connections that clients already hold keep reaching
the pod regardless, since endpoint changes only steer new connections. uvicorn on its own stops accepting at once
and closes every idle kept-alive connection, which refuses the connections still routed to the pod and races with
clients that send on a pooled connection just as it closes (they see a reset).

`DrainingServer` puts a drain phase of `drain_s` seconds before uvicorn's shutdown. On the first SIGTERM or SIGINT:

- the server keeps accepting connections and answering requests;
- `on_drain` is called once (the apps use it to answer their readiness endpoint with 503, so the pod leaves the
  endpoints even where the kubelet's probe decides it);
- every response carries `Connection: close`, so each client connection that sends a request is closed by the
  server right after a complete response, which a client never takes for a failure: it opens a new connection,
  and once the endpoints have caught up that goes to another pod. Both of uvicorn's HTTP/1.1 protocols stop
  keep-alive on that header (httptools sees it among the response headers, h11 on its own state machine).

A process may hold the drain open past `drain_s` while `hold()` says so, for at most `max_hold_s` more (the router
does until the operator has read its counters once more). When the drain ends, uvicorn's own shutdown runs: it stops accepting, closes the connections that are idle between
requests (those that sent nothing during the whole drain), lets in-flight requests finish within
`shutdown_timeout_s` (uvicorn's `timeout_graceful_shutdown`; past it their tasks are cancelled), runs the lifespan
shutdown, and the process exits 0. A second signal during the drain ends it early; a further SIGINT skips the
waiting, as in plain uvicorn. With `drain_s` 0 the shutdown starts on the first signal, as before.

The pod's terminationGracePeriodSeconds must exceed drain_s + shutdown_timeout_s (plus any preStop hook's time)
with a margin, or the kubelet kills the process mid-shutdown.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType
from typing import Callable

import uvicorn

log = logging.getLogger("mlsteward.server")

CONNECTION_CLOSE = (b"connection", b"close")


class DrainingServer(uvicorn.Server):
    """A uvicorn Server that drains for `drain_s` seconds on its first SIGTERM/SIGINT (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, *, drain_s: float,
                 on_drain: Callable[[], None] | None = None,
                 hold: Callable[[], bool] | None = None, max_hold_s: float = 0.0) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self.on_drain = on_drain
        # After drain_s, the drain goes on while `hold()` is true, for at most max_hold_s more (the router holds
        # until its counters were read once more, so what it counted is not lost with the pod).
        self.hold = hold
        self.max_hold_s = max_hold_s
        self.draining = False
        self._signals = 0
        self._drain_ends = 0.0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it only sets flags, the next tick (every 0.1 s on the event loop) acts on them. The
        # signal is deliberately not recorded in `_captured_signals`: uvicorn re-raises the recorded ones once it
        # has shut down, which would end a cleanly drained process killed by SIGTERM (status 143) instead of 0.
        self._signals += 1
        if self._signals == 1 and self.drain_s > 0:
            return  # the first signal starts the drain (in `on_tick`)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._signals and not self.draining and self.drain_s > 0:
            self._start_drain()
        if self.draining and not self.should_exit and time.monotonic() >= self._drain_ends:
            if self.hold is not None and time.monotonic() < self._drain_ends + self.max_hold_s and self.hold():
                return await super().on_tick(counter)
            log.info("Drain ended; shutting down", extra={"connections": len(self.server_state.connections)})
            self.should_exit = True
        return await super().on_tick(counter)

    def _start_drain(self) -> None:
        self.draining = True
        self._drain_ends = time.monotonic() + self.drain_s
        # uvicorn puts its default headers (server, date, configured ones) in front of every response's headers and
        # rebuilds them from `encoded_headers` once a second; each request cycle takes the list when it starts.
        self.config.encoded_headers = [*self.config.encoded_headers, CONNECTION_CLOSE]
        self.server_state.default_headers = [*self.server_state.default_headers, CONNECTION_CLOSE]
        # Requests already in flight get the header too when their response has not started: one that outlasts the
        # drain is closed after its response by uvicorn's shutdown, and h11 would not say so in the headers. (A
        # response already under way keeps its connection; the next request on it gets the header.)
        for connection in self.server_state.connections:
            cycle = getattr(connection, "cycle", None)
            if cycle is not None and not cycle.response_started:
                cycle.default_headers = [*cycle.default_headers, CONNECTION_CLOSE]
        log.info("Draining before shutdown", extra={"drain_s": self.drain_s,
                                                    "connections": len(self.server_state.connections)})
        if self.on_drain is not None:
            self.on_drain()

