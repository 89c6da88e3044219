"""Pods every kind runs or reads: the hardened pod spec of the operator's own pods (no token, non-root, read-only
root filesystem, the artifact volume from the settings), and the observation of Jobs, their pods and the router
Deployment's weight table, turned into the few facts the status functions need."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlsteward_operator.api.modeldeployment import Resources
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel.names import ANNOTATION_ROUTER_GENERATION, ANNOTATION_TRAFFIC


CONFIG_DIR = "/etc/mlsteward"


TERMINATION_LOG = "/dev/termination-log"


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
    service_account: str | None = None,
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
    spec: dict[str, Any] = {
        # Only a pod with a service account of its own calls the Kubernetes API (the router reads its ConfigMap);
        # the others get no token.
        "automountServiceAccountToken": service_account is not None,
        "enableServiceLinks": False,
        "restartPolicy": restart_policy,
        "securityContext": pod_security_context(cfg),
        "containers": [container],
        "volumes": volumes,
    }
    if service_account is not None:
        spec["serviceAccountName"] = service_account
    return spec


def router_config_map(obj: Mapping[str, Any] | None) -> tuple[str | None, dict[str, int]]:
    """(generation, weight table) of the router configuration a router ConfigMap holds ((None, {}) without one)."""
    annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
    return annotations.get(ANNOTATION_ROUTER_GENERATION), parse_traffic(annotations.get(ANNOTATION_TRAFFIC, ""))


@dataclass(frozen=True)
class RouterView:
    """What the router replicas serve: the generation and table of their ConfigMap, and how many of the ready
    replicas report serving that generation (each replica watches the ConfigMap and applies it in place)."""

    generation: str | None = None
    table: Mapping[str, int] = field(default_factory=dict)
    replicas: int = 0  # ready router replicas at the look
    current: int = 0  # of which report serving `generation`

    @property
    def settled(self) -> bool:
        """Every ready replica serves the ConfigMap's configuration (and there is at least one)."""
        return self.generation is not None and self.replicas > 0 and self.current >= self.replicas

    @property
    def served_table(self) -> dict[str, int] | None:
        """The weight table every ready router replica routes by, or None while they are not all on it."""
        return dict(self.table) if self.settled else None


@dataclass(frozen=True)
class JobState:
    """What a validation Job and its pod show."""

    exists: bool = False
    active: bool = False
    succeeded: bool = False
    failed: bool = False
    failure_reason: str | None = None  # the Job's Failed condition reason, e.g. DeadlineExceeded
    failure_message: str | None = None
    termination_message: str | None = None  # what `mlsteward validate` wrote to /dev/termination-log


def observe_job(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]] = ()) -> JobState:
    """Facts of a batch/v1 Job and its pods (those labelled job-name=<job>), as read from the API server."""
    if not job:
        return JobState()
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    failed_cond = conditions.get("Failed") or conditions.get("FailureTarget")
    message = None
    # The newest terminated container wins (with backoffLimit > 0 an earlier attempt may have failed).
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated") or {}
            if terminated.get("message"):
                message = terminated["message"]
                break
        if message:
            break
    return JobState(
        exists=True,
        active=bool(status.get("active")),
        succeeded="Complete" in conditions or "SuccessCriteriaMet" in conditions or bool(status.get("succeeded")),
        failed=failed_cond is not None,
        failure_reason=failed_cond.get("reason") if failed_cond else None,
        failure_message=failed_cond.get("message") if failed_cond else None,
        termination_message=message,
    )


@dataclass(frozen=True)
class WorkloadState:
    """What a Deployment shows."""

    exists: bool = False
    replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    updated_replicas: int = 0
    # The controller has seen the latest spec and every pod runs it (no old pods left).
    rolled_out: bool = False

    @property
    def ready(self) -> bool:
        """Rolled out and serving: at least one available pod (or zero wanted)."""
        return self.exists and self.rolled_out and (self.available_replicas >= 1 or self.replicas == 0)



def observe_deployment(obj: Mapping[str, Any] | None) -> WorkloadState:
    """Facts of an apps/v1 Deployment as read from the API server (None: it does not exist)."""
    if not obj:
        return WorkloadState()
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation", 0)
    wanted = spec.get("replicas", 1)
    replicas = status.get("replicas", 0)
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    rolled_out = (
        status.get("observedGeneration", -1) >= generation
        and updated >= wanted
        and replicas == updated  # no pod of an older template is left
        and available >= min(wanted, updated)
    )
    return WorkloadState(
        exists=True,
        replicas=wanted,
        ready_replicas=status.get("readyReplicas", 0),
        available_replicas=available,
        updated_replicas=updated,
        rolled_out=rolled_out,
    )



def parse_traffic(summary: str) -> dict[str, int]:
    """`v1=90,v2=10` -> {"v1": 90, "v2": 10} (the inverse of render.traffic_summary); bad entries are skipped."""
    out: dict[str, int] = {}
    for part in summary.split(","):
        name, _, weight = part.partition("=")
        if name and weight.isdigit():
            out[name] = int(weight)
    return out
