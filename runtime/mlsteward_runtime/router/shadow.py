"""Shadow traffic: mirroring a share of the served requests to a candidate and comparing its answers.

A mirror runs as a task of its own after the served answer is known; the client's response never waits for it,
and past `shadow_max_inflight` (or its byte bound) a mirror is dropped and counted, never queued. Each answered
mirror is compared with the served answer (agreement; for a regression shadow, |served - shadow| per row) and, when
the served request got a signed id, its predictions are kept (`pairs.ShadowAnswers`) so that a label sent to
POST /v1/feedback scores both answers: a labelled pair.

Pairs are made only at the replica that mirrored the request: feedback sent to another replica (which shares the
id key and accepts it) finds no shadow answer there and makes no pair. Each replica reports its own pairs in
/v1/router/stats; the operator sums them over the replicas.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from mlsteward_runtime.contracts import ShadowConfig
from mlsteward_runtime.router import pairs
from mlsteward_runtime.router.backend import BackendMixin
from mlsteward_runtime.router.feedback import extract_predictions, same
from mlsteward_runtime.router.paths import forward_path
from mlsteward_runtime.router.state import State


def _nonce(headers: list[tuple[str, str]]) -> str | None:
    """The request's nonce: the x-request-id the router set (the client's own never passes, see `proxy`)."""
    for k, v in reversed(headers):
        if k == "x-request-id":
            return v
    return None


class ShadowMixin(BackendMixin):
    shadow_answers: pairs.ShadowAnswers

    def _shadow_memory(self) -> None:
        """The shadow answers kept for labelled pairs (called at startup)."""
        s = self.settings
        self.shadow_answers = pairs.ShadowAnswers(
            s.shadow_answers_capacity, s.shadow_answers_max_bytes, s.feedback_window_s, s.feedback_max_body_bytes,
            self.metrics.shadow_answers_evictions.inc,
        )
        # Read when scraped, so the mirror path pays nothing for them.
        answers = self.shadow_answers
        self.metrics.shadow_answers.set_function(lambda: len(answers))
        self.metrics.shadow_answers_bytes.set_function(lambda: answers.bytes)

    def _mirror(self, state: State, scope: dict[str, Any], headers: list[tuple[str, str]], body: bytes,
                served_body: bytes | None) -> None:
        shadow = state.shadow
        if shadow is None or self._random.random() * 100.0 >= shadow.percent:
            return
        counters = self.stats.shadow(shadow.version)
        counters.kind = shadow.kind
        # Only a served prediction (2xx) gets an id that feedback can name, so only its mirror is kept for pairs.
        nonce = _nonce(headers) if served_body is not None else None
        size = len(body) + (len(served_body) if served_body is not None else 0)
        if len(self._mirrors) >= self.settings.shadow_max_inflight \
                or self._mirror_bytes + size > self.settings.shadow_max_inflight_bytes:
            # Past either bound a mirror is dropped, not queued: shadow traffic must never build up behind
            # a slow candidate and take memory or connections from the served traffic.
            counters.dropped += 1
            self.metrics.shadow.labels(shadow.version, "dropped").inc()
            if nonce is not None:
                self.shadow_answers.mirrored(nonce, shadow.version, shadow.kind, time.monotonic(), pairs.DROPPED)
            return
        if nonce is not None:
            self.shadow_answers.mirrored(nonce, shadow.version, shadow.kind, time.monotonic())
        task = asyncio.create_task(self._shadow_call(
            shadow, nonce, state.timeout, forward_path(scope["path"], scope.get("query_string")), headers, body,
            served_body,
        ))
        self._mirrors.add(task)
        self._mirror_bytes += size

        def done(t: asyncio.Task[None]) -> None:
            self._mirrors.discard(t)
            self._mirror_bytes -= size

        task.add_done_callback(done)

    async def _shadow_call(self, shadow: ShadowConfig, nonce: str | None, timeout: aiohttp.ClientTimeout, path: str,
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
            self._answered(nonce, pairs.ERROR, None)
            return
        self.metrics.shadow.labels(shadow.version, "ok").inc()
        mirrored = extract_predictions(attempt.body)
        self._answered(nonce, pairs.UNREADABLE if mirrored is None else pairs.ANSWERED, mirrored)
        if served_body is None:
            return
        served = extract_predictions(served_body)
        if served is None or mirrored is None:
            return
        counters.compared += 1
        counters.rows_compared += len(served)
        counters.rows_agreed += sum(1 for a, b in zip(served, mirrored) if same(a, b))
        agreed = len(served) == len(mirrored) and same(served, mirrored)
        counters.agreed += agreed
        self.metrics.shadow_agreement.labels(shadow.version, "true" if agreed else "false").inc()
        if shadow.kind == "regression":
            for a, b in zip(served, mirrored):
                x, y = pairs.number(a), pairs.number(b)
                if x is not None and y is not None:
                    counters.add_diff(abs(x - y))

    def _answered(self, nonce: str | None, state: str, predictions: list[Any] | None) -> None:
        if nonce is not None:
            self.shadow_answers.answered(nonce, state, predictions, time.monotonic())

    def _pair(self, nonce: str, label: Any, has_label: bool, served: list[Any] | None) -> None:
        """Scores the label against the served and the shadow's answer to the request `nonce`, when this replica
        mirrored it and the shadow answered; otherwise counts why no pair was made. Called once per counted
        feedback; the shadow answer is taken out, so a request is paired at most once."""
        entry = self.shadow_answers.take(nonce)
        if entry is None:
            shadow = self.state.shadow
            if shadow is not None:
                self.metrics.shadow_unpaired.labels(shadow.version, "unknown").inc()
            return
        reason = "reward" if not has_label else None if entry.state == pairs.ANSWERED else entry.state
        if reason is not None:
            self.metrics.shadow_unpaired.labels(entry.version, reason).inc()
            return
        if entry.body is None or served is None:
            return  # neither happens: an answered entry has a body, and a label is scored only against predictions
        mirrored = orjson.loads(entry.body)
        counters = self.stats.shadow(entry.version)
        if entry.kind == "regression":
            if not counters.add_error_pair(pairs.error_diffs(label, served, mirrored)):
                self.metrics.shadow_unpaired.labels(entry.version, "not_comparable").inc()
                return
            result = "regression"
        else:
            result = pairs.paired_cell(label, served, mirrored)
            counters.add_pair(result)
        self.metrics.shadow_pairs.labels(entry.version, result).inc()
