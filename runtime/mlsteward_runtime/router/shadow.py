"""Shadow traffic: mirroring a share of the served requests to a candidate and comparing its answers."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from mlsteward_runtime.contracts import ShadowConfig
from mlsteward_runtime.router.backend import BackendMixin
from mlsteward_runtime.router.feedback import extract_predictions, same
from mlsteward_runtime.router.paths import forward_path
from mlsteward_runtime.router.state import State


class ShadowMixin(BackendMixin):
    def _mirror(self, state: State, scope: dict[str, Any], headers: list[tuple[str, str]], body: bytes,
                served_body: bytes | None) -> None:
        shadow = state.shadow
        if shadow is None or self._random.random() * 100.0 >= shadow.percent:
            return
        counters = self.stats.shadow(shadow.version)
        size = len(body) + (len(served_body) if served_body is not None else 0)
        if len(self._mirrors) >= self.settings.shadow_max_inflight \
                or self._mirror_bytes + size > self.settings.shadow_max_inflight_bytes:
            # Past either bound a mirror is dropped, not queued: shadow traffic must never build up behind
            # a slow candidate and take memory or connections from the served traffic.
            counters.dropped += 1
            self.metrics.shadow.labels(shadow.version, "dropped").inc()
            return
        task = asyncio.create_task(self._shadow_call(
            shadow, state.timeout, forward_path(scope["path"], scope.get("query_string")), headers, body, served_body
        ))
        self._mirrors.add(task)
        self._mirror_bytes += size

        def done(t: asyncio.Task[None]) -> None:
            self._mirrors.discard(t)
            self._mirror_bytes -= size

        task.add_done_callback(done)

    async def _shadow_call(self, shadow: ShadowConfig, timeout: aiohttp.ClientTimeout, path: str,
                           headers: list[tuple[str, str]], body: bytes, served_body: bytes | None) -> None:
        counters = self.stats.shadow(shadow.version)
        t0 = time.perf_counter()
        attempt = await self._call("POST", shadow.version, shadow.url.rstrip("/") + path,
                                   headers + [("x-mlsteward-shadow", "true")], body, timeout)
        counters.mirrored += 1
        counters.latency.observe((time.perf_counter() - t0) * 1000.0)
        if attempt.reason is not None or not (200 <= (attempt.status or 0) < 300):
            counters.errors += 1
            self.metrics.shadow.labels(shadow.version, "error").inc()
            return
        self.metrics.shadow.labels(shadow.version, "ok").inc()
        if served_body is None:
            return
        served, mirrored = extract_predictions(served_body), extract_predictions(attempt.body)
        if served is None or mirrored is None:
            return
        counters.compared += 1
        counters.rows_compared += len(served)
        counters.rows_agreed += sum(1 for a, b in zip(served, mirrored) if same(a, b))
        agreed = len(served) == len(mirrored) and same(served, mirrored)
        counters.agreed += agreed
        self.metrics.shadow_agreement.labels(shadow.version, "true" if agreed else "false").inc()
