"""An in-memory copy of the objects the watches see (controller-runtime's informer cache, in small).

The watch handlers put every event's object here; the reconciles read their own object from here instead of a
GET. A status the operator wrote is put here too (`put` of the API server's answer), so that the next reconcile
decides on it even before the watch event of that write arrives; an older copy never replaces a newer one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

Key = tuple[str, str]


def key_of(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _rv(obj: Mapping[str, Any] | None) -> int | None:
    raw = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def newer(a: Mapping[str, Any], b: Mapping[str, Any] | None) -> bool:
    """Whether `a` is at least as new as `b`. resourceVersions are etcd revisions (integers that only grow) on
    every API server this operator supports; should one not be an integer, the latest seen wins."""
    ra, rb = _rv(a), _rv(b)
    return b is None or ra is None or rb is None or ra >= rb


class Store:
    """The newest copy of each object of one kind, by (namespace, name)."""

    def __init__(self) -> None:
        self._objs: dict[Key, dict[str, Any]] = {}

    def put(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Keeps `obj` unless a newer copy is held; returns the copy held before (None when it was new)."""
        key = key_of(obj)
        old = self._objs.get(key)
        if newer(obj, old):
            self._objs[key] = dict(obj)
        return old

    def delete(self, key: Key) -> dict[str, Any] | None:
        return self._objs.pop(key, None)

    def get(self, key: Key) -> dict[str, Any] | None:
        return self._objs.get(key)

    def in_namespace(self, namespace: str) -> Iterator[dict[str, Any]]:
        return (o for (ns, _), o in list(self._objs.items()) if ns == namespace)

    def __len__(self) -> int:
        return len(self._objs)
