"""The router replicas of a ModelDeployment, seen from its reconcile: the request-id key they sign with (made once),
which configuration generation the ready replicas report serving, and the view of the configuration just applied.
"""

from __future__ import annotations

import secrets
from typing import Any

from mlsteward_operator import kube
from mlsteward_operator.api.modeldeployment import ModelDeployment
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel import names, pods
from mlsteward_operator.modeldeployment import render


async def ensure_key(client: kube.Client, md: ModelDeployment) -> None:
    """Makes the Secret `<md>-router-key` once: 256 random bits the router replicas sign request ids with, so that
    any replica can attribute feedback for an id another one issued. Never rewritten (that would void the ids
    issued so far); deleted with the ModelDeployment (owner reference)."""
    ns, name = md.metadata.namespace, md.metadata.name
    if await client.get("v1", "Secret", ns, names.router_key_name(name)) is None:
        await client.create(render.router_key(md, secrets.token_urlsafe(32)))


def applied(children: list[dict[str, Any]], seen: pods.RouterView) -> pods.RouterView:
    """The router configuration applied this time, and the replicas known to serve it (none yet when it is new)."""
    config_map = next((c for c in children if c["kind"] == "ConfigMap"
                       and names.ANNOTATION_ROUTER_GENERATION in (c["metadata"].get("annotations") or {})), None)
    generation, table = pods.router_config_map(config_map)
    return pods.RouterView(generation, table, seen.replicas, seen.current if generation == seen.generation else 0)


async def view(client: kube.Client, md: ModelDeployment, cfg: OperatorConfig,
               router_state: pods.WorkloadState) -> tuple[pods.RouterView, list[Any] | None]:
    """Which configuration the ready router replicas serve (and their answers, when they were asked).

    Once every ready replica reported the ConfigMap's generation, later looks trust status.router while the
    generation and the number of ready replicas stay the same: a replica that restarts starts from its ConfigMap as
    the kubelet mounts it at the pod's start (the current one) and then follows it through the API. The replicas are asked again when the
    generation changed, when one was not on it, or when the number of ready replicas changed.
    """
    ns, name = md.metadata.namespace, md.metadata.name
    if not router_state.exists:
        return pods.RouterView(), None
    generation, table = pods.router_config_map(await client.get("v1", "ConfigMap", ns, names.router_name(name)))
    ready = router_state.ready_replicas
    prev = md.status.router
    if generation is None or ready == 0:
        return pods.RouterView(generation, table, ready, 0), None
    if prev is not None and prev.generation == generation and prev.replicas == ready and prev.current >= ready:
        return pods.RouterView(generation, table, ready, ready), None
    report = await client.router_stats(ns, names.selector_labels(name, "router"), cfg.router_port)
    current = sum(1 for r in report.answers if r.generation == generation)
    # A replica that did not answer is not known to be on it: the look is repeated (see schedule.next_look).
    replicas = max(ready, len(report.answers) + len(report.failures))
    return pods.RouterView(generation, table, replicas, current), list(report.answers)
