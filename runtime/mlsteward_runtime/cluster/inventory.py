"""The mlsteward objects a read-only tool is given (`kubectl get -o yaml` output, or the kubernetes client's
custom-object answers), grouped by kind and name: the input side of `mlsteward card` and `mlsteward report`.

Pure: plain dicts in, no I/O.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["GROUP", "KINDS", "CardError", "Inventory", "dig", "flatten", "fnum", "meta_of", "name_of", "parse_time"]

GROUP = "mlsteward.io"
KINDS = ("ModelVersion", "ModelDeployment", "Experiment", "DriftMonitor")


class CardError(ValueError):
    """The card cannot be made from what was given (no such ModelVersion, an ambiguous name)."""


def flatten(docs: Iterable[Any]) -> list[dict[str, Any]]:
    """The mlsteward objects among `docs`: plain objects and the items of `List` kinds (`kubectl get a,b -o yaml`).

    Other kinds are left out (a file may hold Services and Secrets too); so are objects of other API groups that
    happen to share a kind name.
    """
    out: list[dict[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        if doc.get("kind") == "List" or (str(doc.get("kind", "")).endswith("List") and "items" in doc):
            out.extend(flatten(doc.get("items") or []))
            continue
        api = str(doc.get("apiVersion", ""))
        if doc.get("kind") in KINDS and api.split("/", 1)[0] == GROUP:
            out.append(doc)
    return out


def meta_of(obj: dict[str, Any]) -> dict[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, dict) else {}


def name_of(obj: dict[str, Any]) -> str:
    return str(meta_of(obj).get("name", ""))


def dig(obj: Any, *keys: str) -> Any:
    """obj[k1][k2]... or None when any level is missing or not a mapping."""
    for k in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(k)
    return obj


@dataclass
class Inventory:
    """The objects of one namespace, by kind and name."""

    namespace: str | None
    by_kind: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {k: {} for k in KINDS})

    @classmethod
    def of(cls, objects: Iterable[dict[str, Any]], model_version: str, namespace: str | None = None) -> Inventory:
        """Group `objects` for the card of `model_version`.

        With `namespace`, only objects of that namespace (or with none, as in hand-written files) count. Without
        it, the ModelVersion's own namespace is used; a name found in several namespaces is an error.
        """
        objs = [o for o in flatten(objects)]
        if namespace is None:
            spaces = sorted({str(meta_of(o).get("namespace") or "") for o in objs
                             if o.get("kind") == "ModelVersion" and name_of(o) == model_version})
            named = [s for s in spaces if s]
            if len(named) > 1:
                raise CardError(f"ModelVersion {model_version} exists in several namespaces ({', '.join(named)}): "
                                "choose one with -n")
            namespace = named[0] if named else None
        inv = cls(namespace=namespace)
        for o in objs:
            ns = meta_of(o).get("namespace")
            if namespace is not None and ns and ns != namespace:
                continue
            inv.by_kind[o["kind"]][name_of(o)] = o
        return inv

    def get(self, kind: str, name: str | None) -> dict[str, Any] | None:
        return self.by_kind[kind].get(name) if name else None

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [self.by_kind[kind][n] for n in sorted(self.by_kind[kind])]


def parse_time(value: Any) -> dt.datetime | None:
    """A timestamp as the API server writes it (RFC 3339 string) or as YAML loads it (datetime); UTC-aware."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        t = value
    else:
        try:
            t = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def fnum(x: Any) -> float | None:
    """A finite number of an object's field as a float; None for anything else (booleans, strings, NaN, missing)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)
