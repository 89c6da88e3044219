"""The router: a bare ASGI application in front of the predictor backends of one ModelDeployment.

It is a plain ASGI callable rather than a FastAPI app because it sits on every request: routing a handful of
paths by hand costs a few microseconds where a framework's routing, request objects and middleware cost tens.
Backends are called through one pooled aiohttp session (kept-alive connections); measured against httpx on
loopback, aiohttp made 4x the requests per second at concurrency 1 and over 10x at 8 and 64, where httpx's
connection pool became the bottleneck.

Endpoints (an explicit allow-list, see `paths`; anything else is 404, a wrong method 405 with Allow):
- prediction paths (POST /predict, /v1/models/{name}:predict, /v2/models/{name}[/versions/{v}]/infer) go to one
  backend chosen by the strategy, among those whose readiness probe passed (see `proxy`); with `fallback` on, a
  connect error, timeout or 5xx is retried once on the stable version; when every attempt fails the answer is
  502 with a JSON body naming the arm (never its URL). A backend's 4xx is the client's: passed through, never
  retried, never counted as the arm's error.
- GET /v2, /v2/health/live|ready, /v2/models/{name}[/ready], /v1/models/{name} (metadata, health) go to the
  primary backend (the stable version, else the heaviest weight) and are not counted in the arms' statistics.
  The predictor's internal endpoints (/v1/stats, /v1/drift/window, its /metrics) are not reachable.
- POST /v1/feedback joins a label or reward to the arm that served the request id and forwards it there.
- GET /openapi.json (this API, every status documented; see `openapi`), /v1/router/stats (RouterStats, with the
  `generation` of the config served), /healthz (the process is live), /readyz (the config is loaded and at
  least one backend answered its last readiness probe, so a router with nothing to send traffic to leaves the
  Service endpoints rather than answering 502; 503 with `draining` while the process drains before shutdown),
  /metrics (Prometheus).

With `auth` in the config every other path needs a token (`Authorization: Bearer <t>` or the API key header):
401 without one, 403 with one not in the tokens file (see `access`), 401 with a bearer JWT that fails verification
against the JWKS of `auth.jwt` (see `jwks`), and failed attempts are limited per source (see `admission`). With `rate_limit`, a client past its bucket gets 429 with Retry-After. Health, readiness,
metrics, stats and /openapi.json stay open: kubelet probes, Prometheus and the operator's stats poll carry no
token. The credential headers are not forwarded to the backends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlsteward_runtime.contracts import RateLimitConfig, RouterConfig
from mlsteward_runtime.router import openapi
from mlsteward_runtime.router.access import RateLimiter, TokenFile, parse_networks
from mlsteward_runtime.router.admission import AdmissionMixin
from mlsteward_runtime.router.asgi import JSON, ClientError, read_body, send_json, send_raw
from mlsteward_runtime.router.config import ConfigError, file_signature, load_config
from mlsteward_runtime.router.feedback import ServedMap
from mlsteward_runtime.router.feedback_endpoint import FeedbackMixin
from mlsteward_runtime.router.kubewatch import KubeEndpoint
from mlsteward_runtime.router.metrics import RouterMetrics
from mlsteward_runtime.router.paths import OPEN, Kind, classify
from mlsteward_runtime.router.settings import RouterSettings
from mlsteward_runtime.router.source import ApiSource
from mlsteward_runtime.router.state import State
from mlsteward_runtime.router.stats import StatsStore
from mlsteward_runtime.router.strategies import Assigner

log = logging.getLogger("mlsteward.router")


class Router(FeedbackMixin, AdmissionMixin):
    """The ASGI application. Build it with a config file path (watched) or a RouterConfig (fixed), and with
    `kube` and `config_map`, a ConfigMap watched through the API that takes over from either (see `source`)."""

    def __init__(
        self,
        settings: RouterSettings | None = None,
        *,
        config_path: str | Path | None = None,
        config: RouterConfig | None = None,
        kube: KubeEndpoint | None = None,
        config_map: str | None = None,
    ) -> None:
        if (config_path is None) == (config is None):
            raise ValueError("give exactly one of config_path and config")
        if (kube is None) != (config_map is None):
            raise ValueError("give kube and config_map together")
        self.settings = settings or RouterSettings()
        self.config_path = Path(config_path) if config_path is not None else None
        self._signature = file_signature(self.config_path) if self.config_path else None
        if config is None:
            assert self.config_path is not None
            config = load_config(self.config_path)
        self.stats = StatsStore(config.deployment, self.settings.replica, time.time(), self.settings.latency_window)
        self.metrics = RouterMetrics()
        self.served = ServedMap(self.settings.feedback_capacity, self.settings.served_max_bytes,
                                self.metrics.served_evictions.inc)
        self._feedback_memory()
        self._auth_failures = RateLimiter(
            RateLimitConfig(requests_per_second=self.settings.auth_failure_per_s,
                            burst=self.settings.auth_failure_burst),
            self.settings.rate_limit_max_keys,
        )
        self._trusted = parse_networks(self.settings.trusted_proxies)
        self._openapi = orjson.dumps(openapi.document(self.settings.reward_min, self.settings.reward_max))
        self._random = random.Random(self.settings.seed)
        self.api = ApiSource(self, kube, config_map) if kube is not None and config_map is not None else None
        self.config_source = "file" if self.config_path is not None else "inline"
        self.state = self._build(config, None)
        self._loaded(config)
        self.ready: dict[str, bool] = {}
        # Set when the process starts draining before shutdown (`drain`): /readyz answers 503 from then on.
        self.draining = False
        # Monotonic times of the last outcome recorded and of the last /v1/router/stats answered (see `unread`).
        self.outcome_at = 0.0
        self.stats_read_at = 0.0
        self.session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._mirrors: set[asyncio.Task[None]] = set()
        self._mirror_bytes = 0
        self._req_children: dict[tuple[str, int], Any] = {}
        self._lat_children: dict[str, Any] = {}

    # ---------------------------------------------------------------------------------------------------- config

    def _build(self, config: RouterConfig, previous: State | None) -> State:
        versions = [b.version for b in config.backends]
        urls = [b.url.rstrip("/") for b in config.backends]
        stable = versions.index(config.stable_version) if config.stable_version in versions else None
        primary = stable if stable is not None else max(range(len(versions)), key=lambda i: config.backends[i].weight)
        sticky = config.sticky
        for v in versions:
            self.stats.arm(v)
        self.stats.shadow_version = config.shadow.version if config.shadow else None
        # The tokens and the buckets survive a reload that leaves their settings alone.
        tokens = None
        if config.auth is not None:
            same = previous is not None and previous.tokens is not None and previous.tokens.config == config.auth
            tokens = previous.tokens if same and previous is not None else TokenFile(
                config.auth, lambda result: self.metrics.jwks_loads.labels(result).inc())
            if self.api is not None:
                self.api.feed(tokens)
        limiter = None
        if config.rate_limit is not None:
            same = previous is not None and previous.limiter is not None \
                and previous.config.rate_limit == config.rate_limit
            limiter = previous.limiter if same and previous is not None else RateLimiter(
                config.rate_limit, self.settings.rate_limit_max_keys)
        return State(
            config=config,
            assigner=Assigner(
                config, self.stats.outcomes_since, seed=self.settings.seed,
                sticky_capacity=self.settings.sticky_capacity,
            ),
            versions=versions,
            urls=urls,
            stable=stable,
            primary=primary,
            sticky_header=sticky.header.lower() if sticky and sticky.header else None,
            sticky_body_key=sticky.body_key if sticky else None,
            shadow=config.shadow if config.shadow and config.shadow.percent > 0 else None,
            timeout=aiohttp.ClientTimeout(total=config.timeout_s),
            tokens=tokens,
            limiter=limiter,
            strip=frozenset({"authorization", config.auth.header.lower()}) if config.auth else frozenset(),
        )

    def apply(self, config: RouterConfig, source: str | None = None) -> None:
        """Swap in a new config. Counters are kept; the bandits restart from the new priors when those changed.

        `source` (file, configmap) says where it came from, for the log, the metrics and the stats."""
        if config.outcome_priors != self.state.config.outcome_priors:
            # The operator's new priors already include this replica's outcomes up to its last poll.
            self.stats.reset_since()
        self.state = self._build(config, self.state)
        self.stats.deployment = config.deployment
        if source is not None:
            self.config_source = source
        self._loaded(config)
        self.metrics.reloads.labels("ok").inc()
        log.info(
            "Reloaded router config source=%s generation=%s deployment=%s strategy=%s backends=%s",
            self.config_source, config.generation, config.deployment, config.strategy.value,
            ",".join(f"{b.version}:{b.weight}" for b in config.backends),
        )
        if self.api is not None:
            self.api.sync_secret()

    def _loaded(self, config: RouterConfig) -> None:
        """Records which config is served, for GET /v1/router/stats and the metrics."""
        self.stats.generation = config.generation
        self.stats.config_loaded_at = time.time()
        self.metrics.config_info.clear()
        self.metrics.config_info.labels(config.generation or "", self.config_source).set(1)
        self.metrics.config_loaded.set(self.stats.config_loaded_at)

    def reload_if_changed(self) -> bool:
        assert self.config_path is not None
        if self.api is not None and self.api.delivered:
            return False  # the file lags the ConfigMap the API already delivered
        sig = file_signature(self.config_path)
        if sig is None or sig == self._signature:
            return False
        self._signature = sig
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            self.metrics.reloads.labels("invalid").inc()
            log.error("Rejected router config, keeping the previous one: %s", exc)
            return False
        self.apply(config, "file")
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                if self.config_path is not None:
                    self.reload_if_changed()
                if self.state.tokens is not None:
                    self.state.tokens.refresh()
            except Exception:  # noqa: BLE001 - the watcher must survive anything a bad file does
                log.exception("Failed to reload the router config")

    async def _probe(self) -> None:
        timeout = aiohttp.ClientTimeout(total=min(2.0, self.settings.readiness_interval_s))
        while True:
            state = self.state
            results = await asyncio.gather(
                *(self._probe_one(u, timeout) for u in state.urls), return_exceptions=True
            )
            ready = {v: r is True for v, r in zip(state.versions, results)}
            for v, ok in ready.items():
                self.metrics.backend_ready.labels(v).set(1 if ok else 0)
            self.ready = ready
            await asyncio.sleep(self.settings.readiness_interval_s)

    async def _probe_one(self, url: str, timeout: aiohttp.ClientTimeout) -> bool:
        assert self.session is not None
        async with self.session.get(url + "/v2/health/ready", timeout=timeout) as resp:
            await resp.read()
            return resp.status == 200

    # ------------------------------------------------------------------------------------------------- lifecycle

    async def startup(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=self.settings.pool_limit, ttl_dns_cache=30),
            auto_decompress=False,
            # Without these aiohttp would ask backends for gzip (and hand compressed bytes to a client that did
            # not ask) and add a User-Agent the client did not send.
            skip_auto_headers=("Accept-Encoding", "User-Agent"),
        )
        # With the API as a source a config may bring auth (and a tokens file to poll) at any time.
        if self.config_path is not None or self.state.tokens is not None or self.api is not None:
            self._tasks.append(asyncio.create_task(self._watch()))
        self._tasks.append(asyncio.create_task(self._probe()))
        if self.api is not None:
            await self.api.start()

    async def shutdown(self) -> None:
        if self.api is not None:
            await self.api.stop()
        for t in self._tasks + list(self._mirrors):
            t.cancel()
        await asyncio.gather(*self._tasks, *self._mirrors, return_exceptions=True)
        self._tasks.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None

    # ---------------------------------------------------------------------------------------------------- ASGI

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            try:
                await self._http(scope, receive, send)
            except ClientError as exc:
                await send_json(send, exc.status, exc.body, exc.headers)
            except Exception:
                # A defect, never a client's fault: log it with the traceback and answer JSON like every other
                # error. (Should the response have started already, the server closes the connection instead.)
                log.exception("Failed to handle %s %s", scope.get("method"), scope.get("path"))
                await send_json(send, 500, {"error": "internal_error", "message": "the router failed; see its log"})
            return
        if kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = classify(scope["method"], scope["path"])
        token = None
        if kind not in OPEN:
            state = self.state
            if state.tokens is not None or state.limiter is not None:
                token = self._admit(state, scope)
        if kind is Kind.predict:
            await self._predict(scope, await read_body(scope, receive, self.settings.max_body_bytes), send, token)
        elif kind is Kind.feedback:
            await self._feedback(scope, await read_body(scope, receive, self.settings.max_body_bytes), send, token)
        elif kind is Kind.metadata:
            await self._metadata(scope, send)
        elif kind is Kind.healthz:
            await send_json(send, 200, {"status": "live"})
        elif kind is Kind.readyz:
            ready = any(self.ready.values()) and not self.draining
            body = {"ready": ready, "deployment": self.state.config.deployment, "backends": self.ready}
            if self.draining:
                body["draining"] = True
            await send_json(send, 200 if ready else 503, body)
        elif kind is Kind.stats:
            read_at = time.monotonic()
            await send_raw(send, 200, self.stats.export().model_dump_json().encode(), JSON)
            self.stats_read_at = read_at
        elif kind is Kind.openapi:
            await send_raw(send, 200, self._openapi, JSON)
        else:
            await send_raw(
                send, 200, generate_latest(self.metrics.registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())]
            )


    def unread(self) -> bool:
        """Whether an outcome was recorded after /v1/router/stats was last read: the drain waits for one more read
        (bounded by flush_timeout_s), so an Experiment loses no outcome when a router pod goes away."""
        return self.outcome_at > self.stats_read_at


def create_app(
    config_path: str | Path | None,
    settings: RouterSettings | None = None,
    *,
    config: RouterConfig | None = None,
    kube: KubeEndpoint | None = None,
    config_map: str | None = None,
) -> Router:
    """The router for `mlsteward route`: loads the config file (ConfigError when invalid) and watches it, or starts
    from `config` (read from the ConfigMap); with `config_map`, watches the ConfigMap through the API."""
    router = Router(settings, config_path=config_path, config=config if config_path is None else None, kube=kube,
                    config_map=config_map)
    if config_path is None and router.api is not None:
        router.api.delivered = True
        router.config_source = "configmap"
        router._loaded(router.state.config)
    return router
