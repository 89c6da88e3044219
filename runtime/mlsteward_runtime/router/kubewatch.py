"""Watching one named ConfigMap or Secret through the Kubernetes API, with the pod's own credentials.

A mounted ConfigMap reaches a pod only when the kubelet next syncs it (a minute or more); a watch delivers a change
to every replica within a second. This is the minimal list/watch client the router needs, on aiohttp (already in
the process) rather than the kubernetes client package, which would add its import time and memory to a process
that sits on every request and needs only two GET requests:

- LIST `/api/v1/namespaces/<ns>/<kind>?fieldSelector=metadata.name=<name>`: the object (or none) and the list's
  resourceVersion, which exists even when the object does not, so a missing object can be watched for too;
- WATCH the same with `watch=1&resourceVersion=<rv>&allowWatchBookmarks=true&timeoutSeconds=<t>`: one JSON event
  per line (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR).

A Role granting `list` and `watch` on the kind with `resourceNames: [<name>]` authorizes exactly these requests:
RBAC checks a list or watch against resourceNames through the `metadata.name` field selector.

A watch that ends (the server's timeout, a proxy) is resumed from the last resourceVersion seen; 410 Gone (that
version was compacted away) starts over with a list. Any other failure (API unreachable, 401/403, 5xx, a malformed
event) is logged and counted, and retried after an exponential backoff with full jitter, so that replicas do not
reconnect in step; meanwhile the caller keeps what it last received.

The service account token is a projected token that the kubelet rotates: it is re-read (when its file changed)
before every request, and a watch ends after `timeoutSeconds` at the latest, so no request outlives its token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from mlsteward_runtime.router.config import file_signature

log = logging.getLogger("mlsteward.router")

SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# A ConfigMap or Secret is at most 1 MiB of data; a list or an event adds metadata around it (and base64 for a
# Secret), so a bigger line is not one of ours and is refused rather than buffered.
MAX_EVENT_BYTES = 4 * 1024 * 1024


class KubeError(Exception):
    """A list or watch request failed; `reason` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class KubeEndpoint:
    """Where the API server is and how to authenticate to it."""

    base_url: str
    namespace: str
    token_file: Path | None = None
    ca_file: Path | None = None

    @classmethod
    def in_cluster(
        cls,
        api_url: str | None = None,
        namespace: str | None = None,
        serviceaccount_dir: str | os.PathLike[str] = SERVICEACCOUNT_DIR,
        environ: dict[str, str] | None = None,
    ) -> KubeEndpoint:
        """The pod's API endpoint: KUBERNETES_SERVICE_HOST/PORT (or `api_url`), the namespace from POD_NAMESPACE
        (or `namespace`, else the service account's namespace file), the service account's token and CA."""
        env = os.environ if environ is None else environ
        sa = Path(serviceaccount_dir)
        if api_url is None:
            host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
            if not host:
                raise KubeError("config", "KUBERNETES_SERVICE_HOST is not set: not running in a pod (set "
                                          "MLSTEWARD_ROUTER_KUBE_API_URL to use an API server from outside)")
            api_url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        namespace = namespace or env.get("POD_NAMESPACE")
        if not namespace:
            try:
                namespace = (sa / "namespace").read_text().strip()
            except OSError as exc:
                raise KubeError("config", f"POD_NAMESPACE is not set and {sa / 'namespace'} cannot be read: "
                                          f"{exc.strerror or exc}") from None
        ca = sa / "ca.crt"
        return cls(
            base_url=api_url.rstrip("/"),
            namespace=namespace,
            token_file=sa / "token" if (sa / "token").exists() else None,
            ca_file=ca if api_url.startswith("https:") and ca.exists() else None,
        )


class KubeClient:
    """GET requests to the API server with the current bearer token, on a session of its own."""

    def __init__(self, endpoint: KubeEndpoint) -> None:
        self.endpoint = endpoint
        self._token_sig: tuple[int, int, int] | None = None
        self._token: str | None = None
        ssl_context: ssl.SSLContext | bool = True
        if endpoint.ca_file is not None:
            ssl_context = ssl.create_default_context(cafile=str(endpoint.ca_file))
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context, limit=8))

    async def close(self) -> None:
        await self.session.close()

    def token(self) -> str | None:
        """The service account token, re-read whenever its file changed (the kubelet rotates it)."""
        path = self.endpoint.token_file
        if path is None:
            return None
        sig = file_signature(path)
        if sig is not None and sig != self._token_sig:
            try:
                self._token = path.read_text().strip() or None
                self._token_sig = sig
            except OSError as exc:
                log.warning("Cannot read service account token path=%s: %s; using the previous one", path,
                            exc.strerror or exc)
        return self._token

    def url(self, kind: str) -> str:
        return f"{self.endpoint.base_url}/api/v1/namespaces/{quote(self.endpoint.namespace, safe='')}/{kind}"

    def get(self, kind: str, params: dict[str, str], timeout: aiohttp.ClientTimeout) -> Any:
        token = self.token()
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.session.get(self.url(kind), params=params, headers=headers, timeout=timeout)


def _status_error(status: int, body: bytes) -> KubeError:
    try:
        message = str(orjson.loads(body).get("message", ""))[:300]
    except (orjson.JSONDecodeError, AttributeError):
        message = ""
    return KubeError(f"http_{status}", f"HTTP {status}{': ' + message if message else ''}")


def _resource_version(obj: Any) -> str | None:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return rv if isinstance(rv, str) and rv else None


class ObjectWatch:
    """Keeps `on_change` told of one object: called with the object (a dict) when it is listed, added or modified,
    and with None when it is missing or deleted. `run` loops until cancelled."""

    def __init__(
        self,
        client: KubeClient,
        kind: str,
        name: str,
        on_change: Callable[[dict[str, Any] | None], None],
        *,
        watch_timeout_s: float = 300.0,
        backoff_max_s: float = 30.0,
        on_error: Callable[[str], None] | None = None,
        on_synced: Callable[[bool], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.client, self.kind, self.name = client, kind, name
        self.on_change = on_change
        self.watch_timeout_s = watch_timeout_s
        self.backoff_max_s = backoff_max_s
        self.on_error = on_error or (lambda reason: None)
        self.on_synced = on_synced or (lambda synced: None)
        self._rng = rng or random.Random()
        self.resource_version: str | None = None
        self.lists = 0  # how many times the object was listed (the first time, and after each 410)

    @property
    def selector(self) -> str:
        return f"metadata.name={self.name}"

    def backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max, 0.5 * 2^failures)], at least 50 ms."""
        return max(0.05, self._rng.uniform(0, min(self.backoff_max_s, 0.5 * 2 ** min(failures, 16))))

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self.list_once()
                started = time.monotonic()
                delivered = await self.watch_once()
                failures = 0
                if not delivered and time.monotonic() - started < 1.0:
                    # A stream that ended at once with nothing in it: a proxy cutting watches short, or a server
                    # shutting down. Do not hammer it. (One that ran its course quietly is watched again at once:
                    # a change made meanwhile must not wait for a pause.)
                    await asyncio.sleep(self.backoff(1))
            except asyncio.CancelledError:
                self.on_synced(False)
                raise
            except KubeError as exc:
                failures += 1
                self._failed(exc.reason, str(exc), failures)
            except (aiohttp.ClientError, OSError) as exc:
                failures += 1
                self._failed("unreachable", f"{type(exc).__name__}: {exc}", failures)
            except asyncio.TimeoutError:
                failures += 1
                self._failed("timeout", "no answer in time", failures)
            except Exception:  # noqa: BLE001 - a defect must not end the watch for the life of the process
                failures += 1
                log.exception("Failed to handle %s name=%s", self.kind, self.name)
                self._failed("internal", "see the traceback above", failures)
            else:
                continue
            await asyncio.sleep(self.backoff(failures))

    def _failed(self, reason: str, message: str, failures: int) -> None:
        self.on_synced(False)
        self.on_error(reason)
        log.warning("Failed to watch %s name=%s namespace=%s reason=%s failures=%d: %s; keeping what was last "
                    "received", self.kind, self.name, self.client.endpoint.namespace, reason, failures, message)

    async def list_once(self) -> None:
        """Lists the object and tells `on_change`; sets the resourceVersion to watch from."""
        timeout = aiohttp.ClientTimeout(total=30, connect=10)
        async with self.client.get(self.kind, {"fieldSelector": self.selector}, timeout) as resp:
            body = await _read_bounded(resp)
            if resp.status != 200:
                raise _status_error(resp.status, body)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise KubeError("invalid", "the list is not JSON") from None
        rv = _resource_version(doc)
        items = doc.get("items") if isinstance(doc, dict) else None
        if rv is None or not isinstance(items, list):
            raise KubeError("invalid", "the list has no metadata.resourceVersion or items")
        self.lists += 1
        obj = next((i for i in items if isinstance(i, dict) and i.get("metadata", {}).get("name") == self.name), None)
        self.resource_version = rv
        self.on_change(obj)

    async def watch_once(self) -> bool:
        """Follows one watch stream until it ends; False when it ended without any event. On 410 Gone the
        resourceVersion is cleared so that the next round lists again."""
        assert self.resource_version is not None
        params = {
            "watch": "1",
            "fieldSelector": self.selector,
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, int(self.watch_timeout_s * self._rng.uniform(0.8, 1.0)))),
        }
        # No total deadline: the server ends the stream after timeoutSeconds, and bookmarks keep it from being idle
        # for long. A stream silent well past that is dead.
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=self.watch_timeout_s + 30)
        events = 0
        async with self.client.get(self.kind, params, timeout) as resp:
            if resp.status == 410:
                return self._gone()
            if resp.status != 200:
                raise _status_error(resp.status, await _read_bounded(resp))
            self.on_synced(True)
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                if len(buffer) > MAX_EVENT_BYTES:
                    raise KubeError("too_large", f"an event is over {MAX_EVENT_BYTES} bytes")
                for line in lines:
                    if line.strip():
                        events += 1
                        if not self._event(line):
                            return self._gone()
        return events > 0

    def _gone(self) -> bool:
        self.on_error("gone")
        log.info("Watch of %s name=%s expired (410 Gone); listing it again", self.kind, self.name)
        self.resource_version = None
        return True

    def _event(self, line: bytes) -> bool:
        """Applies one event; False for 410 Gone."""
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise KubeError("invalid", "a watch event is not JSON") from None
        kind = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if kind == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            if code == 410:
                return False
            message = str(obj.get("message", "")) if isinstance(obj, dict) else ""
            raise KubeError(f"http_{code}" if isinstance(code, int) else "invalid", f"watch error: {message[:300]}")
        rv = _resource_version(obj)
        if kind not in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK") or rv is None:
            raise KubeError("invalid", f"unexpected watch event type={kind!r}")
        self.resource_version = rv
        if kind == "BOOKMARK":
            return True
        if obj.get("metadata", {}).get("name") != self.name:
            return True  # not ours (a server ignoring the field selector)
        self.on_change(None if kind == "DELETED" else obj)
        return True


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    body = b""
    async for chunk in resp.content.iter_any():
        body += chunk
        if len(body) > MAX_EVENT_BYTES:
            raise KubeError("too_large", f"the answer is over {MAX_EVENT_BYTES} bytes")
    return body


async def first_object(
    endpoint: KubeEndpoint, kind: str, name: str, deadline_s: float, backoff_max_s: float = 5.0
) -> dict[str, Any] | None:
    """The object as listed now, retrying failed requests until `deadline_s` (then the last KubeError)."""
    client = KubeClient(endpoint)
    found: list[dict[str, Any] | None] = []
    watch = ObjectWatch(client, kind, name, found.append, backoff_max_s=backoff_max_s)
    end = time.monotonic() + deadline_s
    failures = 0
    try:
        while True:
            try:
                await watch.list_once()
                return found[-1]
            except KubeError as exc:
                error = exc
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                error = KubeError("unreachable", f"{type(exc).__name__}: {exc}")
            failures += 1
            wait = watch.backoff(failures)
            if time.monotonic() + wait > end:
                raise error
            log.warning("Failed to read %s name=%s: %s; retrying", kind, name, error)
            await asyncio.sleep(wait)
    finally:
        await client.close()
