"""Pure builders of the objects the operator applies (STYLE §2): typed objects and settings in, plain dicts out.

No I/O, no globals, no kopf. Same inputs, same output, byte for byte: names are derived from the parents' names
(with a hash when a name has to be shortened or cleaned), and a hash of each pod's configuration sits on its pod
template so that a configuration change rolls the pods.

For a ModelDeployment `<md>` (see `render_deployment`):
- per live version `<v>`: ConfigMap, Deployment and Service `<md>-<v>` (the predictor, `mlsteward serve`), a
  PodDisruptionBudget and, with autoscaling, a HorizontalPodAutoscaler of the same name;
- the router: ConfigMap, ServiceAccount, Role, RoleBinding, Deployment and PodDisruptionBudget `<md>-router`
  (`mlsteward route`, which watches its ConfigMap through the API) and the Service `<md>` in front of it, the
  stable entry point of the deployment; with `spec.auth.secretRef` the Secret's key is mounted read-only into the
  router pods as the tokens file, with `spec.auth.jwt` the JWKS Secret's key as the JWKS file (the Role lets the
  router get, list and watch exactly these Secrets), and the Secret `<md>-router-key` (the request-id signing key)
  always is;
- the NetworkPolicy `<md>-predictors` (unless the settings turn it off): only this deployment's router pods and the
  operator reach the predictor pods.

Every child carries the labels `app.kubernetes.io/managed-by: mlsteward`, `mlsteward.io/deployment` and, for
predictors, `mlsteward.io/version`, and an owner reference to its parent (kernel/names.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mlsteward_runtime.contracts import ArtifactRef, RuntimeConfig

from mlsteward_operator.api.experiment import Experiment
from mlsteward_operator.api.modeldeployment import Autoscaling, ModelDeployment, TrafficEntry
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.errors import NotReady
from mlsteward_operator.kernel.names import (
    ANNOTATION_CONFIG_HASH,
    ANNOTATION_ROUTER_GENERATION,
    ANNOTATION_TRAFFIC,
    LABEL_MODEL,
    _meta,
    deployment_labels,
    dns_name,
    label_value,
    owner_reference,
    predictor_name,
    router_key_name,
    router_name,
    selector_labels,
    service_name,
    short_hash,
)
from mlsteward_operator.kernel.pods import CONFIG_DIR, _pod_spec, _resources
from mlsteward_operator.modeldeployment.routing import (
    auth_secrets,
    auth_volume,
    router_config,
    router_resources,
    service_url,
)

# A serving pod told to stop drains itself (mlsteward_runtime.drain): it keeps accepting for drain_s while the
# endpoints and kube-proxy's rules drop it (kubernetes/kubernetes#43576), answers with `Connection: close` so pooled
# client connections move elsewhere, and only then stops accepting. No preStop hook is needed. The grace period
# covers the drain (5 s), a router's wait for its counters to be read (flush_timeout_s, 20 s) and the longest
# request in flight (shutdown_timeout_s, 15 s).
TERMINATION_GRACE_S = 45

# The router's request-id signing key: Secret `<md>-router-key`, key `key`, mounted here.
ROUTER_KEY = "key"
ROUTER_KEY_DIR = "/etc/mlsteward-router-key"

RUNTIME_CONFIG_FILE = "config.json"
ROUTER_CONFIG_FILE = "router.json"


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, indent=2) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Pod building blocks
# --------------------------------------------------------------------------------------------------------------


def _http_probe(path: str, **extra: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, **extra}


# --------------------------------------------------------------------------------------------------------------
# ModelDeployment children
# --------------------------------------------------------------------------------------------------------------


def runtime_config(mv: ModelVersion) -> RuntimeConfig:
    """What `mlsteward serve` needs to serve `mv`: the artifact and digest, and the signature and golden input the
    validation recorded (so that readiness replays the same golden inference)."""
    spec, status = mv.spec, mv.status
    return RuntimeConfig(
        name=spec.model,
        version=spec.version,
        artifact=ArtifactRef(uri=spec.artifact.uri, sha256=spec.artifact.sha256, format=spec.artifact.format),
        allow_version_skew=spec.framework.allow_version_skew,
        signature=status.signature or spec.signature,
        golden=status.golden,
    )


def deployment_url(md: ModelDeployment, cfg: OperatorConfig) -> str:
    """In-cluster URL of the Service `<md>` (status.url)."""
    return service_url(service_name(md.metadata.name), md.metadata.namespace, cfg)


def traffic_summary(traffic: Sequence[TrafficEntry]) -> str:
    """`v1=90,v2=10`: the weight table on one line (status.trafficSummary and the router's pod annotation)."""
    return ",".join(f"{t.version}={t.weight}" for t in traffic)


def render_predictor(md: ModelDeployment, mv: ModelVersion, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """ConfigMap, Deployment, Service, PodDisruptionBudget (and HPA) serving `mv` for `md`."""
    md_name, ns, version = md.metadata.name, md.metadata.namespace, mv.metadata.name
    name = predictor_name(md_name, version)
    owner = owner_reference(md.metadata, "ModelDeployment")
    labels = {**deployment_labels(md_name, "predictor", version), LABEL_MODEL: label_value(mv.spec.model)}
    selector = selector_labels(md_name, "predictor", version)
    config_data = {RUNTIME_CONFIG_FILE: _json(runtime_config(mv).model_dump(mode="json", exclude_none=True))}

    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, ns, labels, owner),
                  "data": config_data}
    pod_spec = _pod_spec(cfg, _predictor_container(md, cfg), config_map=name)
    pod_spec["topologySpreadConstraints"] = spread(selector)
    pod_spec["terminationGracePeriodSeconds"] = TERMINATION_GRACE_S
    deploy_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "revisionHistoryLimit": 3,
        # A new pod must pass its golden inference before an old one goes away.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {
            "metadata": {"labels": labels, "annotations": {ANNOTATION_CONFIG_HASH: short_hash(config_data, 16)}},
            "spec": pod_spec,
        },
    }
    if md.spec.autoscaling is None:
        # With autoscaling the HPA owns replicas; setting them here would fight it on every apply.
        deploy_spec["replicas"] = md.spec.replicas if md.spec.replicas is not None else 1
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, ns, labels, owner),
                  "spec": deploy_spec}
    service = _service(_meta(name, ns, labels, owner), selector, cfg)
    children = [config_map, deployment, service, _pdb(name, ns, labels, selector, owner)]
    if md.spec.autoscaling is not None:
        children.append(_hpa(md.spec.autoscaling, _meta(name, ns, labels, owner)))
    return children


def _predictor_container(md: ModelDeployment, cfg: OperatorConfig) -> dict[str, Any]:
    return {
        "name": "predictor",
        "command": ["mlsteward"],
        "args": ["serve", "--config", f"{CONFIG_DIR}/{RUNTIME_CONFIG_FILE}", "--port", str(cfg.predictor_port)],
        "ports": [{"name": "http", "containerPort": cfg.predictor_port, "protocol": "TCP"}],
        # Ready only after the artifact's digest was verified, the model loaded and the golden input predicted.
        "readinessProbe": _http_probe("/v2/health/ready", periodSeconds=5, timeoutSeconds=3, failureThreshold=3),
        "livenessProbe": _http_probe("/v2/health/live", periodSeconds=10, timeoutSeconds=3, failureThreshold=3),
        # Fetching and loading a large artifact can take minutes; liveness waits for the first success.
        "startupProbe": _http_probe("/v2/health/live", periodSeconds=5, timeoutSeconds=3, failureThreshold=60),
        "resources": _resources(md.spec.resources, cfg.predictor_resources),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def _service(meta: dict[str, Any], selector: dict[str, str], cfg: OperatorConfig) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": cfg.service_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _hpa(a: Autoscaling, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"]},
            "minReplicas": a.min_replicas,
            "maxReplicas": a.max_replicas,
            "metrics": [{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": a.target_cpu_utilization},
                },
            }],
        },
    }


def _pdb(name: str, ns: str | None, labels: dict[str, str], selector: dict[str, str],
         owner: dict[str, Any]) -> dict[str, Any]:
    # maxUnavailable 1 rather than minAvailable: a single replica must not block node drains forever.
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(name, ns, labels, owner),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }


def render_router(
    md: ModelDeployment,
    model: str,
    traffic: Sequence[TrafficEntry],
    stable: str | None,
    cfg: OperatorConfig,
    shadow: str | None = None,
    experiment: Experiment | None = None,
    shadow_kind: str | None = None,
) -> list[dict[str, Any]]:
    """The router of `md`: ConfigMap, ServiceAccount, Role, RoleBinding, Deployment and PodDisruptionBudget
    `<md>-router`, and the Service `<md>` in front of them.

    The configuration reaches running router pods through the API, not through a pod roll: each replica watches
    its ConfigMap (the Role allows reading that one ConfigMap and nothing else) and reports the generation it
    serves, so the pod template changes only when the image, resources or replicas do. The ConfigMap is still
    mounted: a starting pod reads it before its first watch answers.
    """
    md_name, ns = md.metadata.name, md.metadata.namespace
    name = router_name(md_name)
    owner = owner_reference(md.metadata, "ModelDeployment")
    labels = deployment_labels(md_name, "router")
    selector = selector_labels(md_name, "router")
    config = router_config(md, model, traffic, stable, cfg, shadow, experiment, shadow_kind=shadow_kind)
    generation = short_hash(config.model_dump(mode="json", exclude_none=True, exclude={"outcome_priors"}), 16)
    config = config.model_copy(update={"generation": generation})
    config_meta = _meta(name, ns, labels, owner)
    config_meta["annotations"] = {ANNOTATION_TRAFFIC: traffic_summary(traffic),
                                  ANNOTATION_ROUTER_GENERATION: generation}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": config_meta,
                  "data": {ROUTER_CONFIG_FILE: _json(config.model_dump(mode="json", exclude_none=True))}}
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, ns, labels, owner),
               "automountServiceAccountToken": False}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(name, ns, labels, owner),
        # Read and watch its own ConfigMap (and its tokens and JWKS Secrets) only: a list or watch narrowed by
        # resourceNames needs the request's fieldSelector metadata.name=<name>, which is exactly what the router sends.
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name],
                   "verbs": ["get", "list", "watch"]}],
    }
    if secrets := auth_secrets(md):
        role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "resourceNames": secrets,
                              "verbs": ["get", "list", "watch"]})
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(name, ns, labels, owner),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, **({"namespace": ns} if ns else {})}],
    }
    pod_spec = _pod_spec(cfg, _router_container(md, cfg, name), config_map=name,
                         extra_volumes=[*auth_volume(md), key_volume(md_name)], service_account=name)
    pod_spec["topologySpreadConstraints"] = spread(selector)
    pod_spec["terminationGracePeriodSeconds"] = TERMINATION_GRACE_S
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, ns, labels, owner),
        "spec": {
            "replicas": md.spec.router.replicas,
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 3,
            # When the template does change (image, resources), old router pods keep serving until new ones are
            # ready: no request is dropped while it rolls.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    service = _service(_meta(service_name(md_name), ns, labels, owner), selector, cfg)
    return [config_map, account, role, binding, deployment, service, _pdb(name, ns, labels, selector, owner)]


def spread(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Replicas spread across nodes when the cluster has several; never unschedulable on a single node."""
    return [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": selector}}]


def key_volume(md_name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, mount) of the Secret `<md>-router-key` (made once by the reconcile, see `router_key`)."""
    volume = {"name": "router-key",
              "secret": {"secretName": router_key_name(md_name), "items": [{"key": ROUTER_KEY, "path": ROUTER_KEY}],
                         "defaultMode": 0o440}}
    return volume, {"name": "router-key", "mountPath": ROUTER_KEY_DIR, "readOnly": True}


def router_key(md: ModelDeployment, key: str) -> dict[str, Any]:
    """The Secret `<md>-router-key` holding `key` (random, made by the caller: this module stays pure)."""
    md_name = md.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(router_key_name(md_name), md.metadata.namespace, deployment_labels(md_name, "router"),
                          owner_reference(md.metadata, "ModelDeployment")),
        "type": "Opaque",
        "stringData": {ROUTER_KEY: key},
    }


def _router_container(md: ModelDeployment, cfg: OperatorConfig, config_map: str) -> dict[str, Any]:
    return {
        "name": "router",
        "command": ["mlsteward"],
        "args": ["route", "--config", f"{CONFIG_DIR}/{ROUTER_CONFIG_FILE}", "--config-map", config_map,
                 "--port", str(cfg.router_port)],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "MLSTEWARD_ROUTER_ID_KEY_FILE", "value": f"{ROUTER_KEY_DIR}/{ROUTER_KEY}"},
        ],
        "ports": [{"name": "http", "containerPort": cfg.router_port, "protocol": "TCP"}],
        # Ready once its configuration is loaded and a backend answered; a router with nowhere to send traffic
        # leaves the Service's endpoints instead of answering 502.
        "readinessProbe": _http_probe("/readyz", periodSeconds=5, timeoutSeconds=3, failureThreshold=3),
        "livenessProbe": _http_probe("/healthz", periodSeconds=10, timeoutSeconds=3, failureThreshold=3),
        "resources": router_resources(md, _resources(md.spec.router.resources, cfg.router_resources)),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def render_deployment(
    md: ModelDeployment,
    versions: Mapping[str, ModelVersion],
    live: Sequence[str],
    traffic: Sequence[TrafficEntry],
    stable: str | None,
    cfg: OperatorConfig,
    shadow: str | None = None,
    experiment: Experiment | None = None,
    shadow_kind: str | None = None,
    mirror: bool = True,
) -> list[dict[str, Any]]:
    """Every child of `md`, in apply order (predictors first, then the router that points at them).

    - `versions`: ModelVersion name -> object, holding at least every name in `live` (and `shadow`).
    - `live`: versions whose predictors must exist (the serving one, a warming one, canary arms).
    - `traffic`: the router's weight table; empty means nothing can be served yet, and then no router is rendered
      (a router without backends would only answer 503s).
    - `stable`: the fallback version of the router.
    - `shadow`: a Ready version receiving mirrored traffic (the caller checks spec.shadow's ModelVersion is Ready),
      compared as `shadow_kind` (classification or regression). Its predictor is rendered; the router mirrors to it
      only with `mirror` (the caller waits for that predictor to be ready, so that warming up counts no errors).
    - `experiment`: the Experiment whose split `traffic` is, if any (its strategy and priors go to the router).
    Raises NotReady when a ModelVersion it needs is missing from `versions`.
    """
    needed = list(dict.fromkeys([*live, *(t.version for t in traffic), *([shadow] if shadow else [])]))
    missing = [v for v in needed if v not in versions]
    if missing:
        raise NotReady(f"ModelVersion {', '.join(missing)} not found", reason="VersionNotFound")
    children: list[dict[str, Any]] = []
    for version in needed:
        children += render_predictor(md, versions[version], cfg)
    if needed and cfg.network_policy:
        children.append(render_network_policy(md, cfg))
    if traffic:
        model = md.spec.model or md.status.model or versions[traffic[0].version].spec.model
        children += render_router(md, model, traffic, stable, cfg, shadow if mirror else None, experiment,
                                  shadow_kind=shadow_kind)
    return children


def network_policy_name(md_name: str) -> str:
    """`<md>-predictors`: the NetworkPolicy in front of every predictor pod of the deployment."""
    return dns_name(md_name, "predictors")


def render_network_policy(md: ModelDeployment, cfg: OperatorConfig) -> dict[str, Any]:
    """Ingress to the predictor pods of `md`, on the predictor port only, from its router pods and the operator.

    The router reaches predictors through their Services, which keep the pod's port; the operator polls
    `/v1/drift/window` on each predictor pod. Everything else (other deployments' routers, other namespaces,
    clients going around the router and its auth) is refused by a cluster that enforces NetworkPolicies.
    """
    md_name, ns = md.metadata.name, md.metadata.namespace
    operator_peer: dict[str, Any] = {
        "namespaceSelector": (
            {"matchLabels": {"kubernetes.io/metadata.name": cfg.operator_namespace}} if cfg.operator_namespace else {}
        ),
        "podSelector": {"matchLabels": dict(cfg.operator_pod_labels)},
    }
    peers = [{"podSelector": {"matchLabels": selector_labels(md_name, "router")}}, operator_peer,
             *json.loads(json.dumps(cfg.network_policy_extra_peers))]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(network_policy_name(md_name), ns, deployment_labels(md_name, "predictor"),
                          owner_reference(md.metadata, "ModelDeployment")),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(md_name, "predictor")},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": cfg.predictor_port}]}],
        },
    }
