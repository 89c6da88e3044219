"""Names, labels and owner references of the objects the operator creates (STYLE §4): derived from the parents'
names, with a hash when a name has to be shortened or cleaned, so the same parent always gets the same children.

Every child carries `app.kubernetes.io/managed-by: mlsteward`, the label of its parent kind
(`mlsteward.io/deployment`, `mlsteward.io/modelversion`, ...) and an owner reference to its parent (controller,
blockOwnerDeletion) so that deleting the parent deletes it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from mlsteward_operator.api.common import API_VERSION, ObjectMeta
from mlsteward_operator.errors import InvalidSpec


MANAGED_BY = "mlsteward"


LABEL_DEPLOYMENT = "mlsteward.io/deployment"


LABEL_VERSION = "mlsteward.io/version"


LABEL_MODEL = "mlsteward.io/model"


LABEL_MODELVERSION = "mlsteward.io/modelversion"


LABEL_COMPONENT = "app.kubernetes.io/component"


ANNOTATION_CONFIG_HASH = "mlsteward.io/config-hash"


ANNOTATION_SPEC_HASH = "mlsteward.io/spec-hash"


MAX_NAME = 63


_NOT_DNS = re.compile(r"[^a-z0-9-]+")


_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


_LABEL_OK = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def short_hash(value: Any, length: int = 8) -> str:
    """First `length` hex digits of the sha256 of `value` (a string, or anything JSON-serializable)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dns_name(*parts: str, max_len: int = MAX_NAME, force_hash: bool = False) -> str:
    """A DNS-1123 label made of `parts` joined by '-'.

    When the joined text had to be cleaned (upper case, dots, ...) or shortened, a hash of the original is appended,
    so two different inputs never map to the same name and the result is stable across releases.
    """
    raw = "-".join(parts)
    clean = _NOT_DNS.sub("-", raw.lower())
    clean = re.sub(r"-{2,}", "-", clean).strip("-") or "x"
    if clean == raw and len(clean) <= max_len and not force_hash:
        return clean
    suffix = short_hash(raw)
    return f"{clean[: max_len - len(suffix) - 1].rstrip('-')}-{suffix}"


def label_value(value: str) -> str:
    """A valid label value for `value` (at most 63 characters of [A-Za-z0-9._-]), hashed when it had to change."""
    if len(value) <= MAX_NAME and _LABEL_OK.match(value):
        return value
    clean = _NOT_LABEL.sub("-", value).strip("-_.")
    suffix = short_hash(value)
    return f"{clean[: MAX_NAME - len(suffix) - 1].rstrip('-_.')}-{suffix}".lstrip("-")


def predictor_name(md_name: str, version: str) -> str:
    """`<md>-<version>`: Deployment, Service, ConfigMap, PDB and HPA of one predictor."""
    # A version literally named "router" must not take the router's name.
    return dns_name(md_name, version, force_hash=version == "router")


def router_name(md_name: str) -> str:
    """`<md>-router`: the router's Deployment, ConfigMap and PDB."""
    return dns_name(md_name, "router")


def router_key_name(md_name: str) -> str:
    """`<md>-router-key`: the Secret holding the key the router replicas sign request ids with."""
    return dns_name(md_name, "router-key")


def service_name(md_name: str) -> str:
    """`<md>`: the stable Service in front of the router (the CRD guarantees `<md>` is a valid Service name)."""
    return md_name


def owner_reference(meta: ObjectMeta, kind: str, api_version: str = API_VERSION) -> dict[str, Any]:
    """An owner reference to the parent: deleting it deletes the child; the child is the parent's to manage."""
    if not meta.uid:
        raise InvalidSpec(f"{kind} {meta.name} has no metadata.uid; read it from the API server before rendering")
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": meta.name,
        "uid": meta.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def deployment_labels(md_name: str, component: str, version: str | None = None) -> dict[str, str]:
    """Labels of every child of a ModelDeployment (and of its pods)."""
    labels = {
        "app.kubernetes.io/name": "mlsteward",
        "app.kubernetes.io/instance": label_value(md_name),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_COMPONENT: component,
        LABEL_DEPLOYMENT: label_value(md_name),
    }
    if version is not None:
        labels[LABEL_VERSION] = label_value(version)
    return labels


def selector_labels(md_name: str, component: str, version: str | None = None) -> dict[str, str]:
    """The immutable subset of the labels that Deployments, Services and PDBs select pods by."""
    labels = {LABEL_DEPLOYMENT: label_value(md_name), LABEL_COMPONENT: component}
    if version is not None:
        labels[LABEL_VERSION] = label_value(version)
    return labels


def _meta(name: str, namespace: str | None, labels: dict[str, str], owner: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels), "ownerReferences": [owner]}
    if namespace:
        meta["namespace"] = namespace
    return meta


def child_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(apiVersion, kind, name) of a rendered child: compare with what exists to find children to delete."""
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


# On the router's ConfigMap: the weight table its configuration carries, e.g. `iris-v1=100`. Once every router
# replica reports serving the ConfigMap's generation, this is what they route by (render writes it, status reads it).
ANNOTATION_TRAFFIC = "mlsteward.io/traffic"

# On the router's ConfigMap: RouterConfig.generation of the configuration it holds (render writes it; the rollout
# waits until every router replica reports serving it).
ANNOTATION_ROUTER_GENERATION = "mlsteward.io/router-generation"
