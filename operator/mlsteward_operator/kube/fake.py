"""An in-memory API server for the unit tests: it behaves like the real one for what the operator uses.

Objects get a uid, a resourceVersion that every write moves, a generation that moves when the spec changes, and a
creationTimestamp. Server-side apply creates or replaces the fields it names (status is never touched by it);
create refuses an existing name; list selects by labels; a status patch is a JSON merge patch (RFC 7386, null
removes a key); delete honours the uid and resourceVersion preconditions and, like the garbage collector, removes
the objects owned by what it deleted. Events, webhook posts and the pods' answers are recorded or given in memory.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import uuid
from collections.abc import Mapping
from typing import Any

from mlsteward_operator.kube.client import ApiError, PodAnswers, ProfileError

Key = tuple[str, str, str, str]  # apiVersion, kind, namespace ("" when cluster-scoped), name


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class FakeClient:
    """A `kube.Client` over a dict (see the module docstring)."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.events: list[dict[str, str]] = []
        self.webhooks: list[tuple[str, str, str, dict[str, Any]]] = []
        self.writes = 0  # every create, apply, status patch and delete that changed something
        # What the pods answer, by path ("/v1/router/stats", "/v1/drift/window", "/v1/stats"): PodAnswers, or a
        # function of this client returning them.
        self.pod_answers: dict[str, Any] = {}
        self.profiles: dict[str, Any] = {}
        self._versions = itertools.count(1)

    # -- the API server ------------------------------------------------------------------------------------------

    @staticmethod
    def _key(api_version: str, kind: str, namespace: str | None, name: str) -> Key:
        return api_version, kind, namespace or "", name

    def _stamp(self, obj: dict[str, Any], *, new: bool, spec_changed: bool) -> None:
        meta = obj["metadata"]
        if new:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            meta["generation"] = 1
        elif spec_changed:
            meta["generation"] = int(meta.get("generation", 1)) + 1
        meta["resourceVersion"] = str(next(self._versions))
        self.writes += 1

    async def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        meta = obj["metadata"]
        key = self._key(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        old = self.objects.get(key)
        body = copy.deepcopy({k: v for k, v in obj.items() if k != "status"})
        if old is None:
            self._stamp(body, new=True, spec_changed=True)
            self.objects[key] = body
            return copy.deepcopy(body)
        merged = {**old, **{k: v for k, v in body.items() if k != "metadata"}}
        merged["metadata"] = {**old["metadata"], **body["metadata"],
                              **{k: old["metadata"][k] for k in ("uid", "creationTimestamp", "generation",
                                                                 "resourceVersion") if k in old["metadata"]}}
        if merged != old:  # an apply that changes nothing is no write, as on the API server
            self._stamp(merged, new=False, spec_changed=merged.get("spec") != old.get("spec"))
            self.objects[key] = merged
        return copy.deepcopy(self.objects[key])

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        obj = self.objects.get(self._key(api_version, kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def list(self, api_version: str, kind: str, namespace: str | None, *,
                   labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        out = []
        for (av, k, ns, _), obj in sorted(self.objects.items()):
            have = obj["metadata"].get("labels") or {}
            if (av, k) == (api_version, kind) and (namespace is None or ns == namespace) \
                    and all(have.get(lk) == lv for lk, lv in (labels or {}).items()):
                out.append(copy.deepcopy(obj))
        return out

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *,
                     uid: str | None = None, resource_version: str | None = None) -> bool:
        key = self._key(api_version, kind, namespace, name)
        obj = self.objects.get(key)
        if obj is None:
            return False
        meta = obj["metadata"]
        if (uid and meta.get("uid") != uid) or (resource_version and meta.get("resourceVersion") != resource_version):
            return False  # the API server answers 409 Conflict; the real client returns False
        del self.objects[key]
        self.writes += 1
        for other_key, other in list(self.objects.items()):  # the garbage collector, at once
            if any(ref.get("uid") == meta.get("uid") for ref in other["metadata"].get("ownerReferences") or ()):
                await self.delete(*other_key[:3], other_key[3])
        return True

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        meta = obj["metadata"]
        if "name" not in meta:
            raise ApiError(422, "Invalid", "metadata.name: Required value (generateName is not supported here)")
        key = self._key(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        if key in self.objects:
            return None
        body = copy.deepcopy(obj)
        self._stamp(body, new=True, spec_changed=True)
        self.objects[key] = body
        return copy.deepcopy(body)

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: dict[str, Any]) -> dict[str, Any] | None:
        key = self._key(api_version, kind, namespace, name)
        obj = self.objects.get(key)
        if obj is None:
            return None
        new = merge_patch(obj.get("status") or {}, status)
        if new != obj.get("status"):
            obj["status"] = new
            self._stamp(obj, new=False, spec_changed=False)
        return copy.deepcopy(obj)

    async def event(self, involved: dict[str, Any], *, reason: str, message: str, type_: str = "Normal") -> None:
        self.events.append({"kind": involved["kind"], "name": involved["metadata"]["name"], "reason": reason,
                            "message": message[:1024], "type": type_})

    # -- the pods and the outside world --------------------------------------------------------------------------

    def _answers(self, path: str) -> PodAnswers[Any]:
        answers = self.pod_answers.get(path, PodAnswers([], [], 0))
        # A test may play the pods with a function of the objects (e.g. router replicas that follow their ConfigMap).
        return answers(self) if callable(answers) else answers

    async def router_stats(self, namespace: str, labels: dict[str, str], port: int, *,
                           timeout_s: float = 2.0) -> PodAnswers[Any]:
        return self._answers("/v1/router/stats")

    async def drift_windows(self, namespace: str, labels: dict[str, str], port: int, *,
                            timeout_s: float = 5.0) -> PodAnswers[Any]:
        return self._answers("/v1/drift/window")

    async def predictor_stats(self, namespace: str, labels: dict[str, str], port: int, *,
                              timeout_s: float = 5.0) -> PodAnswers[Any]:
        return self._answers("/v1/stats")

    async def fetch_profile(self, uri: str, sha256: str | None) -> Any:
        if uri not in self.profiles:
            raise ProfileError("FetchFailed", f"no profile at {uri}")
        return self.profiles[uri]

    async def post_webhook_in_secret(self, namespace: str, name: str, key: str, payload: dict[str, Any], *,
                                     attempts: int = 5, backoff_s: float = 1.0) -> str | None:
        self.webhooks.append((namespace, name, key, payload))
        return None
