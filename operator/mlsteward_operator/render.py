"""Pure builders of the objects the operator applies (STYLE §2): typed objects and settings in, plain dicts out.

No I/O, no globals, no kopf. Same inputs, same output, byte for byte: names are derived from the parents' names
(with a hash when a name has to be shortened or cleaned), and a hash of each pod's configuration sits on its pod
template so that a configuration change rolls the pods.

For a ModelDeployment `<md>` (see `render_deployment`):
- per live version `<v>`: ConfigMap, Deployment and Service `<md>-<v>` (the predictor, `mlsteward serve`), a
  PodDisruptionBudget and, with autoscaling, a HorizontalPodAutoscaler of the same name;
- the router: ConfigMap, Deployment and PodDisruptionBudget `<md>-router` (`mlsteward route`) and the Service `<md>`
  in front of it, the stable entry point of the deployment; with `spec.auth.secretRef` the Secret's key is mounted
  read-only into the router pods as the tokens file;
- the NetworkPolicy `<md>-predictors` (unless the settings turn it off): only this deployment's router pods and the
  operator reach the predictor pods.
For a ModelVersion `<mv>`: the validation Job `<mv>-validate-<hash of spec>` (see `render_validation_job`).

Every child carries the labels `app.kubernetes.io/managed-by: mlsteward`, `mlsteward.io/deployment` (or
`mlsteward.io/modelversion`) and, for predictors, `mlsteward.io/version`, and an owner reference to its parent
(controller, blockOwnerDeletion) so that deleting the parent deletes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from mlsteward_runtime.contracts import (
    ArmOutcomes,
    ArtifactRef,
    AuthConfig,
    Backend,
    RateLimitConfig,
    RouterConfig,
    RouterStrategy,
    RuntimeConfig,
    ShadowConfig,
    StickyConfig,
)

from mlsteward_operator.api.common import API_VERSION, ObjectMeta
from mlsteward_operator.api.experiment import Experiment
from mlsteward_operator.api.modeldeployment import ModelDeployment, Resources, TrafficEntry
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.conventions import ANNOTATION_TRAFFIC
from mlsteward_operator.errors import InvalidSpec, NotReady

MANAGED_BY = "mlsteward"
LABEL_DEPLOYMENT = "mlsteward.io/deployment"
LABEL_VERSION = "mlsteward.io/version"
LABEL_MODEL = "mlsteward.io/model"
LABEL_MODELVERSION = "mlsteward.io/modelversion"
LABEL_COMPONENT = "app.kubernetes.io/component"
ANNOTATION_CONFIG_HASH = "mlsteward.io/config-hash"
ANNOTATION_SPEC_HASH = "mlsteward.io/spec-hash"

# A serving pod that is told to stop keeps accepting connections for a few seconds first: endpoints and
# kube-proxy's rules drop it asynchronously, and a pod that closed its socket at once would refuse the requests
# still sent to it meanwhile (kubernetes/kubernetes#43576). The sleep action needs no shell in the image.
SERVING_LIFECYCLE = {"preStop": {"sleep": {"seconds": 5}}}

CONFIG_DIR = "/etc/mlsteward"
RUNTIME_CONFIG_FILE = "config.json"
ROUTER_CONFIG_FILE = "router.json"
# The auth Secret's key is mounted here as one file. A Secret volume (no subPath) is updated in place by the
# kubelet, and the router re-reads the file when it changes, so rotating tokens needs no restart.
AUTH_DIR = "/etc/mlsteward-auth"
TOKENS_FILE = "tokens"
TERMINATION_LOG = "/dev/termination-log"
MAX_NAME = 63

_NOT_DNS = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]+")
_LABEL_OK = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


# --------------------------------------------------------------------------------------------------------------
# Names, labels, owner references, hashes
# --------------------------------------------------------------------------------------------------------------


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


def service_name(md_name: str) -> str:
    """`<md>`: the stable Service in front of the router (the CRD guarantees `<md>` is a valid Service name)."""
    return md_name


def validation_job_name(mv: ModelVersion) -> str:
    """`<mv>-validate-<hash of spec>`: one Job per spec, so a restarted operator finds the Job it created."""
    return dns_name(mv.metadata.name, "validate", short_hash(mv.spec.to_k8s(), 10))


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


def _json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, indent=2) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Pod building blocks
# --------------------------------------------------------------------------------------------------------------


def pod_security_context(cfg: OperatorConfig) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": cfg.run_as_user,
        "runAsGroup": cfg.run_as_user,
        "fsGroup": cfg.run_as_user,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def artifact_volume(cfg: OperatorConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts) of the artifact volume, or two empty lists when none is configured (see config.py)."""
    if cfg.artifact_volume_type == "hostPath":
        source: dict[str, Any] = {
            "hostPath": {"path": cfg.artifact_host_path or cfg.artifact_mount_path, "type": "Directory"}
        }
    elif cfg.artifact_volume_type == "pvc":
        source = {"persistentVolumeClaim": {"claimName": cfg.artifact_claim_name, "readOnly": True}}
    else:
        return [], []
    volume = {"name": "artifacts", **source}
    mount = {"name": "artifacts", "mountPath": cfg.artifact_mount_path, "readOnly": True}
    return [volume], [mount]


def _env_from(cfg: OperatorConfig) -> list[dict[str, Any]]:
    if not cfg.artifact_env_secret:
        return []
    return [{"secretRef": {"name": cfg.artifact_env_secret, "optional": True}}]


def _resources(spec_resources: Resources | None, default: Mapping[str, Any]) -> dict[str, Any]:
    if spec_resources is not None:
        return spec_resources.to_k8s()
    return json.loads(json.dumps(dict(default)))  # a copy: the settings object is shared


def _pod_spec(
    cfg: OperatorConfig,
    container: dict[str, Any],
    *,
    config_map: str | None,
    restart_policy: str = "Always",
    extra_volumes: Sequence[tuple[dict[str, Any], dict[str, Any]]] = (),
) -> dict[str, Any]:
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if config_map is not None:
        volumes.append({"name": "config", "configMap": {"name": config_map}})
        mounts.append({"name": "config", "mountPath": CONFIG_DIR, "readOnly": True})
    for volume, mount in extra_volumes:
        volumes.append(volume)
        mounts.append(mount)
    art_volumes, art_mounts = artifact_volume(cfg)
    volumes += art_volumes
    mounts += art_mounts
    container = {
        **container,
        "image": cfg.image,
        "imagePullPolicy": cfg.image_pull_policy,
        "securityContext": container_security_context(),
        "volumeMounts": mounts,
    }
    env_from = _env_from(cfg)
    if env_from:
        container["envFrom"] = env_from
    return {
        # The pods call no Kubernetes API: no token in them.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": restart_policy,
        "securityContext": pod_security_context(cfg),
        "containers": [container],
        "volumes": volumes,
    }


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
        signature=status.signature or spec.signature,
        golden=status.golden,
    )


def router_config(
    md: ModelDeployment,
    model: str,
    traffic: Sequence[TrafficEntry],
    stable: str | None,
    cfg: OperatorConfig,
    shadow: str | None = None,
    experiment: Experiment | None = None,
) -> RouterConfig:
    """The router's weight table: one backend per version in `traffic`, pointing at that version's Service.

    With an Experiment running on it, the router also gets the assignment strategy, sticky key, metric kind and
    goal, and each arm's outcome statistics merged so far (status.variants) as the bandits' priors.
    """
    namespace = md.metadata.namespace
    arms: dict[str, object] = {}
    if experiment is not None:
        spec = experiment.spec
        arms = {
            "strategy": RouterStrategy(spec.strategy.type.value),
            "epsilon": spec.strategy.epsilon,
            "sticky": StickyConfig(header=spec.sticky.header, body_key=spec.sticky.body_key) if spec.sticky else None,
            "experiment": experiment.metadata.name,
            "metric_kind": spec.metric.kind.value,
            "goal": spec.metric.goal.value,
            "outcome_priors": {
                v.version: ArmOutcomes(n=v.outcomes, sum=v.outcome_sum, sumsq=max(0.0, v.outcome_sumsq),
                                       m2=v.outcome_m2)
                for v in experiment.status.variants if v.outcomes
            },
        }
    auth, rate_limit = _access(md)
    return RouterConfig(
        deployment=md.metadata.name,
        model=model,
        backends=[
            Backend(version=t.version, url=_service_url(predictor_name(md.metadata.name, t.version), namespace, cfg),
                    weight=t.weight)
            for t in traffic
        ],
        stable_version=stable,
        fallback=md.spec.fallback,
        shadow=(
            ShadowConfig(
                version=shadow,
                url=_service_url(predictor_name(md.metadata.name, shadow), namespace, cfg),
                percent=md.spec.shadow.percent if md.spec.shadow else 100,
            )
            if shadow
            else None
        ),
        auth=auth,
        rate_limit=rate_limit,
        **arms,  # type: ignore[arg-type]
    )


def _access(md: ModelDeployment) -> tuple[AuthConfig | None, RateLimitConfig | None]:
    """The router's auth and rate limit from spec.auth, with the defaults the CRD describes filled in."""
    spec = md.spec.auth
    if spec is None:
        return None, None
    auth = AuthConfig(tokens_file=f"{AUTH_DIR}/{TOKENS_FILE}", header=spec.header) if spec.secret_ref else None
    rate_limit = None
    if spec.rate_limit is not None:
        rl = spec.rate_limit
        by = rl.by.value if rl.by is not None else ("token" if auth is not None else "source")
        rate_limit = RateLimitConfig(
            requests_per_second=rl.requests_per_second,
            burst=rl.burst if rl.burst is not None else max(1, math.ceil(rl.requests_per_second)),
            by=by,  # type: ignore[arg-type]
        )
    return auth, rate_limit


def auth_volume(md: ModelDeployment) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(volume, mount) of the auth Secret's key as the router's tokens file, or nothing without secretRef."""
    if md.spec.auth is None or md.spec.auth.secret_ref is None:
        return []
    ref = md.spec.auth.secret_ref
    volume = {
        "name": "auth",
        # Not optional: without its Secret the router pod waits in ContainerCreating rather than start open.
        "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": TOKENS_FILE}], "defaultMode": 0o440},
    }
    return [(volume, {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})]


def _service_url(service: str, namespace: str | None, cfg: OperatorConfig) -> str:
    # Fully qualified, so a lookup does not walk the pod's DNS search path first.
    host = f"{service}.{namespace}.svc.{cfg.cluster_domain}" if namespace else service
    return f"http://{host}:{cfg.service_port}"


def deployment_url(md: ModelDeployment, cfg: OperatorConfig) -> str:
    """In-cluster URL of the Service `<md>` (status.url)."""
    return _service_url(service_name(md.metadata.name), md.metadata.namespace, cfg)


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
    container = {
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
        "lifecycle": SERVING_LIFECYCLE,
    }
    pod_spec = _pod_spec(cfg, container, config_map=name)
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
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, ns, labels, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": cfg.service_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    children = [config_map, deployment, service, _pdb(name, ns, labels, selector, owner)]
    if md.spec.autoscaling is not None:
        a = md.spec.autoscaling
        children.append({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(name, ns, labels, owner),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
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
        })
    return children


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
) -> list[dict[str, Any]]:
    """ConfigMap, Deployment and PodDisruptionBudget `<md>-router`, and the Service `<md>` in front of them.

    The pod template carries a hash of the configuration, so a change rolls the router pods, except for the
    bandits' priors (`outcome_priors`), which the router reloads from the mounted file without a restart.
    """
    md_name, ns = md.metadata.name, md.metadata.namespace
    name = router_name(md_name)
    owner = owner_reference(md.metadata, "ModelDeployment")
    labels = deployment_labels(md_name, "router")
    selector = selector_labels(md_name, "router")
    config = router_config(md, model, traffic, stable, cfg, shadow, experiment)
    config_data = {ROUTER_CONFIG_FILE: _json(config.model_dump(mode="json", exclude_none=True))}
    hashed = {ROUTER_CONFIG_FILE: _json(config.model_dump(mode="json", exclude_none=True,
                                                           exclude={"outcome_priors"}))}
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(name, ns, labels, owner),
                  "data": config_data}
    container = {
        "name": "router",
        "command": ["mlsteward"],
        "args": ["route", "--config", f"{CONFIG_DIR}/{ROUTER_CONFIG_FILE}", "--port", str(cfg.router_port)],
        "ports": [{"name": "http", "containerPort": cfg.router_port, "protocol": "TCP"}],
        # Ready once its configuration is loaded and a backend answered; a router with nowhere to send traffic
        # leaves the Service's endpoints instead of answering 502.
        "readinessProbe": _http_probe("/readyz", periodSeconds=5, timeoutSeconds=3, failureThreshold=3),
        "livenessProbe": _http_probe("/healthz", periodSeconds=10, timeoutSeconds=3, failureThreshold=3),
        "resources": _resources(md.spec.router.resources, cfg.router_resources),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "lifecycle": SERVING_LIFECYCLE,
    }
    annotations = {ANNOTATION_CONFIG_HASH: short_hash(hashed, 16), ANNOTATION_TRAFFIC: traffic_summary(traffic)}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, ns, labels, owner),
        "spec": {
            "replicas": md.spec.router.replicas,
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 3,
            # Old router pods keep serving with the old weights until new ones are ready: no request is dropped
            # while a configuration rolls out.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels, "annotations": annotations},
                         "spec": _pod_spec(cfg, container, config_map=name, extra_volumes=auth_volume(md))},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(service_name(md_name), ns, labels, owner),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": cfg.service_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [config_map, deployment, service, _pdb(name, ns, labels, selector, owner)]


def render_deployment(
    md: ModelDeployment,
    versions: Mapping[str, ModelVersion],
    live: Sequence[str],
    traffic: Sequence[TrafficEntry],
    stable: str | None,
    cfg: OperatorConfig,
    shadow: str | None = None,
    experiment: Experiment | None = None,
) -> list[dict[str, Any]]:
    """Every child of `md`, in apply order (predictors first, then the router that points at them).

    - `versions`: ModelVersion name -> object, holding at least every name in `live` (and `shadow`).
    - `live`: versions whose predictors must exist (the serving one, a warming one, canary arms).
    - `traffic`: the router's weight table; empty means nothing can be served yet, and then no router is rendered
      (a router without backends would only answer 503s).
    - `stable`: the fallback version of the router.
    - `shadow`: a Ready version receiving mirrored traffic (the caller checks spec.shadow's ModelVersion is Ready).
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
        children += render_router(md, model, traffic, stable, cfg, shadow, experiment)
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


def child_key(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    """(apiVersion, kind, name) of a rendered child: compare with what exists to find children to delete."""
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


# --------------------------------------------------------------------------------------------------------------
# ModelVersion validation Job
# --------------------------------------------------------------------------------------------------------------


def validation_args(mv: ModelVersion) -> list[str]:
    """Arguments of `mlsteward validate` for `mv`; the verdict goes to the termination message."""
    spec = mv.spec
    args = ["validate", "--uri", spec.artifact.uri, "--sha256", spec.artifact.sha256,
            "--format", spec.artifact.format.value]
    if spec.signature is not None:
        signature = spec.signature.model_dump(mode="json", exclude_none=True)
        args += ["--signature-json", json.dumps(signature, sort_keys=True, separators=(",", ":"))]
    if spec.validation is not None:
        args += ["--validation-data", spec.validation.dataset, "--target", spec.validation.target]
        for threshold in spec.validation.thresholds:
            args += ["--threshold", threshold.replace(" ", "")]
    args += ["--result-file", TERMINATION_LOG]
    return args


def render_validation_job(mv: ModelVersion, cfg: OperatorConfig) -> dict[str, Any]:
    """The Job that validates `mv`. Its one pod writes a ValidationResult (JSON) to its termination message.

    backoffLimit comes from the settings (default 0: a verdict is a verdict, and the one pod's termination message
    is the result); ttlSecondsAfterFinished is unset so the Job and its result stay readable until the
    ModelVersion is deleted (the owner reference removes them then).
    """
    name = validation_job_name(mv)
    ns = mv.metadata.namespace
    owner = owner_reference(mv.metadata, "ModelVersion")
    labels = {
        "app.kubernetes.io/name": "mlsteward",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_COMPONENT: "validation",
        LABEL_MODELVERSION: label_value(mv.metadata.name),
        LABEL_MODEL: label_value(mv.spec.model),
    }
    container = {
        "name": "validate",
        "command": ["mlsteward"],
        "args": validation_args(mv),
        # The result is read from the termination message, so it must come from the file, never from logs.
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "resources": json.loads(json.dumps(cfg.validation_resources)),
    }
    meta = _meta(name, ns, labels, owner)
    meta["annotations"] = {ANNOTATION_SPEC_HASH: short_hash(mv.spec.to_k8s(), 16)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": cfg.validation_backoff_limit,
            "activeDeadlineSeconds": cfg.validation_deadline_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": _pod_spec(cfg, container, config_map=None, restart_policy="Never"),
            },
        },
    }
