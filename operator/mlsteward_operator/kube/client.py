"""The one module that talks to the Kubernetes API server (STYLE §3).

Everything here is generic over a small table of kinds: apply (server-side apply with the field manager
`mlsteward`), get, list by label, delete, status patch and Events. The kubernetes client is synchronous; its calls
run in a worker thread so kopf's event loop never blocks on the network.

Errors are mapped here and nowhere else: 404 becomes `None` (get) or a no-op (delete); any other API failure
raises `ApiError` with the status code and the server's message, which handlers turn into a retry.

It is also the one module that calls the data plane and the outside world: `router_stats` reads
`GET /v1/router/stats` from every router pod of a ModelDeployment, `drift_windows` reads `GET /v1/drift/window`
and `predictor_stats` reads `GET /v1/stats` from every predictor pod of a version (all by pod IP, so that each replica answers for itself rather than the
Service's choice); `fetch_profile` reads a reference profile by URI (digest checked, cached by sha256);
`post_webhook` posts an alert with retries (webhook.py); `secret_value` reads one key of a Secret.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
from kubernetes import client as kclient
from kubernetes import config as kconfig
from kubernetes.client.rest import ApiException
from mlsteward_runtime.contracts import DriftWindow, Profile, RouterStats, RuntimeStats
from pydantic import BaseModel, ValidationError

from mlsteward_operator.kube import webhook

FIELD_MANAGER = "mlsteward"

log = logging.getLogger(__name__)


T = TypeVar("T", bound=BaseModel)

@dataclass(frozen=True)
class PodAnswers(Generic[T]):
    """What the ready pods asked answered (`answers`), one line per ready pod that did not answer or answered
    something else (`failures`; never raised), and how many ready pods were asked (`pods`)."""

    answers: list[T]
    failures: list[str]
    pods: int = 0


class ProfileError(Exception):
    """A reference profile could not be fetched, failed its digest or is not a profile. `reason` is CamelCase:
    FetchFailed, DigestMismatch or InvalidProfile."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _pod_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return status.get("phase") == "Running" and bool(status.get("podIP")) and conditions.get("Ready") == "True" \
        and not (pod.get("metadata") or {}).get("deletionTimestamp")


def _pod_draining(pod: dict[str, Any]) -> bool:
    """Being deleted but still running: its server drains (answers, not ready) until it exits."""
    status = pod.get("status") or {}
    return bool((pod.get("metadata") or {}).get("deletionTimestamp")) and status.get("phase") == "Running" \
        and bool(status.get("podIP"))


@dataclass(frozen=True)
class Kind:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def base(self) -> str:
        group_version = self.api_version
        return f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        parts = [self.base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, k.kind): k
    for k in (
        Kind("v1", "ConfigMap", "configmaps"),
        Kind("v1", "Service", "services"),
        Kind("v1", "Pod", "pods"),
        Kind("v1", "Secret", "secrets"),
        Kind("v1", "ServiceAccount", "serviceaccounts"),
        Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
        Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
        Kind("v1", "Event", "events"),
        Kind("v1", "Namespace", "namespaces", namespaced=False),
        Kind("apps/v1", "Deployment", "deployments"),
        Kind("batch/v1", "Job", "jobs"),
        Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
        Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
        Kind("mlsteward.io/v1alpha1", "ModelVersion", "modelversions"),
        Kind("mlsteward.io/v1alpha1", "ModelDeployment", "modeldeployments"),
        Kind("mlsteward.io/v1alpha1", "Experiment", "experiments"),
        Kind("mlsteward.io/v1alpha1", "DriftMonitor", "driftmonitors"),
    )
}


def kind_of(api_version: str, kind: str) -> Kind:
    try:
        return KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"unknown kind {api_version}/{kind}: add it to k8s.KINDS") from None


class ApiError(Exception):
    """An API call failed for a reason other than 'not found'."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def _api_error(exc: ApiException) -> ApiError:
    message = exc.body or ""
    try:
        message = json.loads(exc.body).get("message", message)
    except (TypeError, ValueError):
        pass
    return ApiError(exc.status or 0, exc.reason or "", str(message))


def load_config() -> None:
    """In-cluster config when running in a pod, else the current kubeconfig.

    The kubeconfig path is read from KUBECONFIG now, not at import: the kubernetes client computes its default
    path when it is imported, which would ignore a KUBECONFIG set later by an embedding program or a test.
    """
    try:
        kconfig.load_incluster_config()
    except kconfig.ConfigException:
        path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
        kconfig.load_kube_config(config_file=path)


class Client:
    """A thin asynchronous facade over the generic REST calls the controllers need."""

    # Reference profiles by sha256: a profile is immutable for its digest, and every check of every monitor of a
    # version needs the same one. Bounded, oldest dropped first.
    PROFILE_CACHE_SIZE = 64

    def __init__(self, api_client: kclient.ApiClient | None = None) -> None:
        self._api = api_client or kclient.ApiClient()
        self._profiles: dict[str, Profile] = {}

    def _request(self, method: str, path: str, *, body: Any = None, query: list[tuple[str, Any]] | None = None,
                 content_type: str = "application/json", accept: str = "application/json") -> bytes:
        # The REST client serializes a dict body as JSON for JSON and structured YAML content types alike (JSON is
        # valid YAML), which covers server-side apply (application/apply-patch+yaml) and merge patches.
        method, url, headers, _, _ = self._api.param_serialize(
            method, path, query_params=query or [], header_params={"Accept": accept, "Content-Type": content_type},
            auth_settings=["BearerToken"],
        )
        try:
            resp = self._api.call_api(method, url, header_params=headers, body=body, _request_timeout=60)
        except ApiException as exc:
            raise _api_error(exc) from None
        resp.read()
        if not 200 <= resp.status <= 299:
            text = (resp.data or b"").decode("utf-8", "replace")
            try:
                message = json.loads(text).get("message", text)
            except ValueError:
                message = text
            raise ApiError(resp.status, resp.reason or "", str(message))
        return resp.data or b""

    def _call(self, method: str, path: str, *, body: Any = None, query: list[tuple[str, Any]] | None = None,
              content_type: str = "application/json") -> Any:
        raw = self._request(method, path, body=body, query=query, content_type=content_type)
        return json.loads(raw) if raw else {}

    async def _acall(self, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self._call, *args, **kwargs)

    async def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply `obj` (which must carry apiVersion, kind, metadata.name and .namespace)."""
        k = kind_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        path = k.path(meta.get("namespace"), meta["name"])
        query = [("fieldManager", FIELD_MANAGER), ("force", "true" if force else "false")]
        return await self._acall("PATCH", path, body=obj, query=query, content_type="application/apply-patch+yaml")

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return await self._acall("GET", kind_of(api_version, kind).path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(self, api_version: str, kind: str, namespace: str | None, *,
                   labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        query = []
        if labels:
            query.append(("labelSelector", ",".join(f"{k}={v}" for k, v in sorted(labels.items()))))
        data = await self._acall("GET", kind_of(api_version, kind).path(namespace), query=query)
        return list(data.get("items") or [])

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *,
                     uid: str | None = None, resource_version: str | None = None) -> bool:
        """Delete with foreground-free background propagation; returns False when it was already gone.

        With `uid` and/or `resource_version`, delete only that very object as it was read (DeleteOptions
        preconditions): a recreated object of the same name or one changed since is not deleted, and False is
        returned (the API server answers 409 Conflict)."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        if preconditions:
            body["preconditions"] = preconditions
        try:
            await self._acall("DELETE", kind_of(api_version, kind).path(namespace, name), body=body)
        except ApiError as exc:
            if exc.status == 404 or (exc.status == 409 and preconditions):
                return False
            raise
        return True

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create `obj`; returns None when an object of that name already exists (409)."""
        k = kind_of(obj["apiVersion"], obj["kind"])
        try:
            return await self._acall("POST", k.path(obj["metadata"].get("namespace")), body=obj)
        except ApiError as exc:
            if exc.status == 409:
                return None
            raise

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: dict[str, Any]) -> dict[str, Any] | None:
        """Merge-patch the status subresource; returns None when the object is gone."""
        path = kind_of(api_version, kind).path(namespace, name, "status")
        try:
            return await self._acall("PATCH", path, body={"status": status},
                                     content_type="application/merge-patch+json")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def pod_log(self, namespace: str, name: str, *, tail_lines: int = 50) -> str:
        path = kind_of("v1", "Pod").path(namespace, name, "log")
        raw = await asyncio.to_thread(self._request, "GET", path, query=[("tailLines", tail_lines)],
                                      accept="text/plain")
        return raw.decode("utf-8", "replace")

    async def _ask_pods(self, namespace: str, labels: dict[str, str], port: int, path: str, model: type[T],
                        timeout_s: float, *, terminating: bool = False) -> PodAnswers[T]:
        """`GET http://<podIP>:<port><path>` from every ready pod matching `labels` (with `terminating`, also from
        the pods that are shutting down but still run), concurrently, each within `timeout_s`, parsed as `model`.
        A pod that does not answer, or answers something else, is logged and listed in `failures`; listing the pods
        may raise ApiError like any API call."""
        pods = [p for p in await self.list("v1", "Pod", namespace, labels=labels)
                if _pod_ready(p) or (terminating and _pod_draining(p))]
        if not pods:
            return PodAnswers([], [], 0)

        async def one(session: aiohttp.ClientSession, pod: dict[str, Any]) -> T | str:
            name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
            host = f"[{ip}]" if ":" in ip else ip
            try:
                async with session.get(f"http://{host}:{port}{path}") as resp:
                    if resp.status != 200:
                        return f"{name}: HTTP {resp.status}"
                    return model.model_validate_json(await resp.read())
            except (aiohttp.ClientError, asyncio.TimeoutError, ValidationError) as exc:
                return f"{name}: {type(exc).__name__}: {exc}".rstrip(": ")

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            answers = await asyncio.gather(*(one(session, p) for p in pods))
        good = [a for a in answers if isinstance(a, model)]
        failures = [a for a in answers if isinstance(a, str)]
        for failure in failures:
            log.warning("Failed to read %s namespace=%s pod=%s", path, namespace, failure)
        return PodAnswers(good, failures, len(pods))

    async def router_stats(self, namespace: str, labels: dict[str, str], port: int, *,
                           timeout_s: float = 2.0) -> PodAnswers[RouterStats]:
        """`GET /v1/router/stats` from every ready router pod matching `labels`, and from those draining: a router
        told to stop keeps its counters until they were read once more, so nothing it counted is lost."""
        return await self._ask_pods(namespace, labels, port, "/v1/router/stats", RouterStats, timeout_s,
                                    terminating=True)

    async def drift_windows(self, namespace: str, labels: dict[str, str], port: int, *,
                            timeout_s: float = 5.0) -> PodAnswers[DriftWindow]:
        """`GET /v1/drift/window` from every ready predictor pod matching `labels` (see `_ask_pods`)."""
        return await self._ask_pods(namespace, labels, port, "/v1/drift/window", DriftWindow, timeout_s)

    async def predictor_stats(self, namespace: str, labels: dict[str, str], port: int, *,
                              timeout_s: float = 5.0) -> PodAnswers[RuntimeStats]:
        """`GET /v1/stats` from every ready predictor pod matching `labels` (see `_ask_pods`)."""
        return await self._ask_pods(namespace, labels, port, "/v1/stats", RuntimeStats, timeout_s)

    async def fetch_profile(self, uri: str, sha256: str | None) -> Profile:
        """The reference profile at `uri` (a path, file://, http(s)://, s3://), its digest checked against
        `sha256` when given, before it is parsed. Cached by sha256 (a profile without a digest is fetched every
        time: nothing says it did not change). Raises ProfileError."""
        if sha256 and sha256 in self._profiles:
            return self._profiles[sha256]
        from mlsteward_runtime.artifacts import fetch_artifact, sha256_bytes
        from mlsteward_runtime.errors import ModelLoadError

        try:
            data = await asyncio.to_thread(fetch_artifact, uri)
        except ModelLoadError as exc:
            raise ProfileError("FetchFailed", exc.message) from None
        actual = sha256_bytes(data)
        if sha256 and actual != sha256:
            raise ProfileError("DigestMismatch", f"reference profile {uri} has sha256 {actual}, expected {sha256}")
        try:
            profile = Profile.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ProfileError("InvalidProfile", f"{uri} is not a reference profile: {where}: {first.get('msg')}") \
                from None
        if sha256:
            self._profiles[sha256] = profile
            while len(self._profiles) > self.PROFILE_CACHE_SIZE:
                self._profiles.pop(next(iter(self._profiles)))
        return profile

    async def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded; None when the Secret or the key does not exist."""
        secret = await self.get("v1", "Secret", namespace, name)
        raw = ((secret or {}).get("data") or {}).get(key)
        if raw is None:
            return None
        return base64.b64decode(raw).decode("utf-8").strip()

    async def post_webhook_in_secret(self, namespace: str, name: str, key: str, payload: dict[str, Any], *,
                                     attempts: int = 5, backoff_s: float = 1.0) -> str | None:
        """`post_webhook` to the URL held by key `key` of Secret `name` (a `notify.webhookSecretRef`). Returns None
        once posted, else why not, in words (never raises)."""
        where = f"webhook in Secret {namespace}/{name} key {key}"
        try:
            url = await self.secret_value(namespace, name, key)
        except ApiError as exc:
            # The API server's answer names the Secret, never its data.
            return f"{where}: could not read the Secret: {exc.status} {exc.reason}"
        except (UnicodeDecodeError, ValueError):
            return f"{where}: the value is not base64-encoded UTF-8 text"
        if not url:
            return f"Secret {namespace}/{name} has no key {key} (notify.webhookSecretRef)"
        failure = await self.post_webhook(url, payload, attempts=attempts, backoff_s=backoff_s)
        return None if failure is None else f"{where} failed: {failure}"

    async def post_webhook(self, url: str, payload: dict[str, Any], *, attempts: int = 5,
                           backoff_s: float = 1.0, timeout_s: float = 10.0) -> str | None:
        """POST `payload` as JSON to `url` with retries; None on a 2xx, else the failure in words (webhook.py)."""
        return await webhook.post_webhook(url, payload, attempts=attempts, backoff_s=backoff_s, timeout_s=timeout_s)

    async def event(self, involved: dict[str, Any], *, reason: str, message: str, type_: str = "Normal") -> None:
        """Record a core/v1 Event about `involved` (a full object). Failures are logged, never raised:
        an Event is a courtesy and must not fail a reconcile."""
        meta = involved["metadata"]
        now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"], "kind": involved["kind"], "name": meta["name"],
                "namespace": meta["namespace"], "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "mlsteward"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._acall("POST", kind_of("v1", "Event").path(meta["namespace"]), body=ev)
        except ApiError as exc:
            log.warning("Failed to record event reason=%s object=%s/%s: %s", reason, meta["namespace"],
                        meta["name"], exc)
