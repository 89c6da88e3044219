"""The router's config, and its auth tokens, from the Kubernetes API (`mlsteward route --config-map <name>`).

The ConfigMap's key `router.json` is watched (see `kubewatch`), so a change reaches every replica within a second
instead of waiting for the kubelet to update a mounted file. The first config delivered by the API takes over
from a `--config` file given too: from then on the file, which lags the API, is no longer read. A ConfigMap that
is deleted, or that lacks the key, leaves the last config in place; an invalid one is rejected like an invalid
file (counted as a reload with result "invalid").

With `auth.secret_name` in the config the Secret's key `auth.secret_key` is watched too and replaces the tokens
file; a deleted Secret, like a deleted tokens file, accepts no token (revoking a Secret must revoke access).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any

from mlsteward_runtime.contracts import AuthConfig
from mlsteward_runtime.router.config import ROUTER_CONFIG_FILE, ConfigError, parse_config
from mlsteward_runtime.router.kubewatch import KubeClient, KubeEndpoint, ObjectWatch

if TYPE_CHECKING:
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
        self._secret: tuple[str, str] | None = None  # (name, key) watched
        self._secret_content: Any = MISSING  # the key's content last received (None: gone)

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

    # ---------------------------------------------------------------------------------------------------- tokens

    def sync_secret(self) -> None:
        """Watches the auth Secret the current config names (and stops watching one it no longer names)."""
        if self.client is None:
            return
        auth = self.router.state.config.auth
        wanted = (auth.secret_name, auth.secret_key) if auth is not None and auth.secret_name else None
        if wanted == self._secret:
            return
        old = self._tasks.pop("secrets", None)
        if old is not None:
            old.cancel()
        self._secret, self._secret_content = wanted, MISSING
        if wanted is not None:
            self._tasks["secrets"] = asyncio.create_task(self._watch("secrets", wanted[0], self._on_secret).run())

    def tokens(self, auth: AuthConfig) -> Any:
        """The Secret's content last received for `auth` (bytes, or None when gone), else `MISSING`."""
        if self._secret is not None and self._secret == (auth.secret_name, auth.secret_key):
            return self._secret_content
        return MISSING

    def _on_secret(self, obj: dict[str, Any] | None) -> None:
        if self._secret is None:
            return
        name, key = self._secret
        content: bytes | None = None
        if obj is not None:
            data = obj.get("data")
            value = data.get(key) if isinstance(data, dict) else None
            if isinstance(value, str):
                try:
                    content = base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    log.warning("Secret name=%s key=%s is not base64; keeping the tokens", name, key)
                    return
        self._secret_content = content
        tokens = self.router.state.tokens
        if tokens is not None and self.router.state.config.auth is not None \
                and self.router.state.config.auth.secret_name == name:
            tokens.load(content, f"secret/{name}:{key}")


