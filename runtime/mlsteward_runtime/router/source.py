"""The router's config, and its auth tokens, from the Kubernetes API (`mlsteward route --config-map <name>`).

The ConfigMap's key `router.json` is watched (see `kubewatch`), so a change reaches every replica within a second
instead of waiting for the kubelet to update a mounted file. The first config delivered by the API takes over
from a `--config` file given too: from then on the file, which lags the API, is no longer read. A ConfigMap that
is deleted, or that lacks the key, leaves the last config in place; an invalid one is rejected like an invalid
file (counted as a reload with result "invalid").

With `auth.secret_name` in the config the Secret's key `auth.secret_key` is watched too and replaces the tokens
file; a deleted Secret, like a deleted tokens file, accepts no token (revoking a Secret must revoke access). With
`auth.jwt.secret_name` the JWKS Secret's key `auth.jwt.secret_key` is watched the same way and replaces the JWKS file
(a deleted one accepts no JWT); one Secret may hold both keys, and is then watched once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
from typing import TYPE_CHECKING, Any

from mlsteward_runtime.router.config import ROUTER_CONFIG_FILE, ConfigError, parse_config
from mlsteward_runtime.router.kubewatch import KubeClient, KubeEndpoint, ObjectWatch

if TYPE_CHECKING:
    from mlsteward_runtime.router.access import TokenFile
    from mlsteward_runtime.router.app import Router

log = logging.getLogger("mlsteward.router")

MISSING = object()  # no content received yet


class ApiSource:
    """Feeds a Router from its ConfigMap (and auth Secret) through the API; `start` and `stop` in its lifespan."""

    def __init__(self, router: Router, endpoint: KubeEndpoint, config_map: str, key: str = ROUTER_CONFIG_FILE) -> None:
        self.router = router
        self.endpoint = endpoint
        self.config_map = config_map
        self.key = key
        self.delivered = False  # the API delivered the ConfigMap: the file is no longer read
        self.client: KubeClient | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # The Secrets watched (tokens, JWKS), each with its data as last received: MISSING before the first, None
        # once it is gone.
        self._secrets: dict[str, Any] = {}

    # ------------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self.client = KubeClient(self.endpoint)
        self._tasks["configmaps"] = asyncio.create_task(self._watch("configmaps", self.config_map,
                                                                    self._on_config_map).run())
        self.sync_secret()

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._secrets.clear()
        if self.client is not None:
            await self.client.close()
            self.client = None

    def _watch(self, kind: str, name: str, on_change: Any) -> ObjectWatch:
        assert self.client is not None
        metrics, settings = self.router.metrics, self.router.settings
        return ObjectWatch(
            self.client, kind, name, on_change,
            watch_timeout_s=settings.kube_watch_timeout_s,
            backoff_max_s=settings.kube_backoff_max_s,
            on_error=lambda reason: metrics.kube_errors.labels(kind, reason).inc(),
            on_synced=lambda synced: metrics.kube_synced.labels(kind).set(1 if synced else 0),
        )

    # ---------------------------------------------------------------------------------------------------- config

    def _on_config_map(self, obj: dict[str, Any] | None) -> None:
        router = self.router
        where = f"configmap/{self.config_map}"
        if obj is None:
            log.warning("ConfigMap name=%s namespace=%s is missing; keeping the config served (generation=%s)",
                        self.config_map, self.endpoint.namespace, router.state.config.generation)
            return
        data = obj.get("data")
        text = data.get(self.key) if isinstance(data, dict) else None
        if not isinstance(text, str):
            log.warning("ConfigMap name=%s namespace=%s has no key %s; keeping the config served", self.config_map,
                        self.endpoint.namespace, self.key)
            return
        self.delivered = True
        try:
            config = parse_config(text, f"{where}:{self.key}")
        except ConfigError as exc:
            router.metrics.reloads.labels("invalid").inc()
            log.error("Rejected router config, keeping the previous one: %s", exc)
            return
        if config == router.state.config and router.config_source == "configmap":
            return  # a re-list after 410 Gone, or a change of the ConfigMap's metadata only
        router.apply(config, source="configmap")

    # ----------------------------------------------------------------------------------------- tokens, JWKS

    def _wanted(self) -> set[str]:
        auth = self.router.state.config.auth
        if auth is None:
            return set()
        names = {auth.secret_name} if auth.secret_name else set()
        if auth.jwt is not None and auth.jwt.secret_name:
            names.add(auth.jwt.secret_name)
        return names

    def sync_secret(self) -> None:
        """Watches the Secrets the current config names (tokens, JWKS; one watch for a Secret holding both) and
        stops watching those it no longer names."""
        if self.client is None:
            return
        wanted = self._wanted()
        for name in [n for n in self._secrets if n not in wanted]:
            self._tasks.pop(f"secrets/{name}").cancel()
            self._secrets.pop(name)
        for name in sorted(wanted - set(self._secrets)):
            self._secrets[name] = MISSING
            self._tasks[f"secrets/{name}"] = asyncio.create_task(
                self._watch("secrets", name, functools.partial(self._on_secret, name)).run())

    def content(self, name: str, key: str) -> Any:
        """The key of Secret `name` as last received: bytes, None when the Secret or key is gone, `MISSING` when
        nothing was received yet (or the value is not base64, which keeps what is in use)."""
        data = self._secrets.get(name, MISSING)
        if data is MISSING:
            return MISSING
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, str):
            return None
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            log.warning("Secret name=%s key=%s is not base64; keeping what is in use", name, key)
            return MISSING

    def feed(self, tokens: TokenFile, only_new: bool = True) -> None:
        """Hands `tokens` (and its JWT verifier) what their Secrets last held; with `only_new`, only to those that
        have not been fed from a Secret yet (a TokenFile just built for a new config)."""
        auth = tokens.config
        if auth.secret_name and not (only_new and tokens.source is not None):
            content = self.content(auth.secret_name, auth.secret_key)
            if content is not MISSING:
                tokens.load(content, f"secret/{auth.secret_name}:{auth.secret_key}")
        verifier, jwt = tokens.jwt, auth.jwt
        if verifier is not None and jwt is not None and jwt.secret_name \
                and not (only_new and verifier.source is not None):
            content = self.content(jwt.secret_name, jwt.secret_key)
            if content is not MISSING:
                verifier.load(content, f"secret/{jwt.secret_name}:{jwt.secret_key}")

    def _on_secret(self, name: str, obj: dict[str, Any] | None) -> None:
        if name not in self._secrets:
            return  # a watch being cancelled
        data = obj.get("data") if obj is not None else None
        self._secrets[name] = data if isinstance(data, dict) else ({} if obj is not None else None)
        tokens = self.router.state.tokens
        if tokens is None:
            return
        auth = tokens.config
        if auth.secret_name == name:
            content = self.content(name, auth.secret_key)
            if content is not MISSING:
                tokens.load(content, f"secret/{name}:{auth.secret_key}")
        if tokens.jwt is not None and auth.jwt is not None and auth.jwt.secret_name == name:
            content = self.content(name, auth.jwt.secret_key)
            if content is not MISSING:
                tokens.jwt.load(content, f"secret/{name}:{auth.jwt.secret_key}")
