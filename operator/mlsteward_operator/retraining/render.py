"""Pure builders of the retraining workflow's objects (STYLE §2): the retraining Job a DriftMonitor's trigger
starts, the ModelVersion registered from its result (with lineage), the Experiment that pits it against the
champion, and the ServingRequest that promotes it."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from mlsteward_runtime.contracts import TrainResult
from pydantic import ValidationError

from mlsteward_operator.api.common import API_VERSION, ServingRequest, ServingRequestKind
from mlsteward_operator.api.driftmonitor import DriftMonitor, RetrainStatus
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.kernel.conditions import second
from mlsteward_operator.kernel.names import LABEL_COMPONENT, MANAGED_BY, dns_name, label_value, owner_reference


LABEL_MONITOR = "mlsteward.io/driftmonitor"


ENV_REPORT = "MLSTEWARD_DRIFT_REPORT"


ENV_PARENT = "MLSTEWARD_PARENT_VERSION"


ENV_TRIGGER = "MLSTEWARD_TRIGGER"


ENV_MONITOR = "MLSTEWARD_DRIFT_MONITOR"


# The Job's own name: a unique output location per retraining, e.g. `--output s3://m/$(MLSTEWARD_RETRAIN_JOB)/m.skops`
# (Kubernetes expands $(VAR) in args from the container's env).
ENV_JOB = "MLSTEWARD_RETRAIN_JOB"


def job_report(dm: DriftMonitor, r: RetrainStatus) -> dict[str, Any]:
    """The drift report handed to the retraining Job (from status, so a restarted operator hands the same)."""
    rep = dm.status.last_report
    t = dm.spec.thresholds
    return {
        "monitor": dm.metadata.name, "namespace": dm.metadata.namespace, "deployment": dm.spec.deployment,
        "parent": r.parent, "trigger": r.trigger,
        "report": rep.to_k8s() if rep is not None else None,
        "thresholds": {"pValue": t.p_value, "ks": t.ks, "wasserstein": t.wasserstein, "psi": t.psi,
                       "jensenShannon": t.jensen_shannon, "minSamples": dm.spec.window.min_samples},
    }


def render_retrain_job(dm: DriftMonitor, r: RetrainStatus) -> dict[str, Any]:
    """The retraining Job: spec.retrain.template as the Job's spec, named `r.job`, owned by the monitor.

    Every container gets the drift report (JSON), the parent version, the trigger, the monitor and the Job's name
    in its environment. The template's restartPolicy defaults to Never: the result is read from the termination message of
    the pod that ran, and a container restarted in place would overwrite it.
    """
    assert dm.spec.retrain is not None
    spec = json.loads(json.dumps(dm.spec.retrain.template))  # a deep copy: the spec is never modified
    template = spec.setdefault("template", {})
    pod = template.setdefault("spec", {})
    pod.setdefault("restartPolicy", "Never")
    env = [
        {"name": ENV_REPORT, "value": json.dumps(job_report(dm, r), sort_keys=True, separators=(",", ":"))},
        {"name": ENV_PARENT, "value": r.parent or ""},
        {"name": ENV_TRIGGER, "value": r.trigger},
        {"name": ENV_MONITOR, "value": dm.metadata.name},
        {"name": ENV_JOB, "value": r.job},
    ]
    ours = {e["name"] for e in env}
    for container in pod.get("containers") or []:
        container["env"] = [e for e in container.get("env") or [] if e.get("name") not in ours] + env
    labels = {
        "app.kubernetes.io/name": "mlsteward",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_COMPONENT: "retrain",
        LABEL_MONITOR: label_value(dm.metadata.name),
    }
    template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    meta: dict[str, Any] = {"name": r.job, "labels": labels,
                            "ownerReferences": [owner_reference(dm.metadata, "DriftMonitor")]}
    if dm.metadata.namespace:
        meta["namespace"] = dm.metadata.namespace
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": spec}


def parse_train_result(message: str | None) -> TrainResult | None:
    """The TrainResult in a termination message (what `mlsteward train` writes), or None."""
    if not message:
        return None
    try:
        return TrainResult.model_validate_json(message.strip())
    except ValidationError:
        return None


_SEMVER_CORE = re.compile(r"^(\d+\.\d+\.\d+)")


def retrained_version_name(model: str, artifact_sha256: str) -> str:
    """`<model>-r<first 10 hex digits of the artifact's sha256>`: the same artifact always gets the same name, so
    registering it twice (a restart) finds it there (409)."""
    return dns_name(model, f"r{artifact_sha256[:10]}")


def render_retrained_version(parent: ModelVersion, result: TrainResult, r: RetrainStatus, monitor: str
                             ) -> dict[str, Any]:
    """The ModelVersion registered from a successful retraining: the parent's model, signature and validation
    (so it is judged by the same thresholds), the result's artifact, reference profile and metrics, and lineage
    {parent, trigger, dataset, trainedBy}. Its version is the parent's next patch release with the pre-release
    `retrain.g<8 hex digits of the artifact>` (1.4.0 -> 1.4.1-retrain.g3f5a09c2): above the parent, below a 1.4.1
    a person would publish. The artifact's format is the result's (what was actually written)."""
    assert result.artifact is not None and result.artifact.sha256 is not None
    sha = result.artifact.sha256
    name = retrained_version_name(parent.spec.model, sha)
    core = _SEMVER_CORE.match(parent.spec.version)
    spec: dict[str, Any] = {
        "model": parent.spec.model,
        "version": f"{_next_patch(core.group(1) if core else '0.0.0')}-retrain.g{sha[:8]}",
        "artifact": {"uri": result.artifact.uri, "sha256": sha, "format": result.artifact.format.value},
        "metrics": dict(result.metrics),
        "lineage": {"parent": parent.metadata.name, "trigger": r.trigger, "trainedBy": f"Job/{r.job}"},
        "description": f"Retrained from {parent.metadata.name} by Job {r.job} ({r.trigger}).",
    }
    if result.framework.get("version"):
        spec["framework"] = {"name": "sklearn", "version": result.framework["version"]}
    if result.data:
        spec["lineage"]["dataset"] = result.data
    signature = parent.spec.signature or result.signature
    if signature is not None:
        spec["signature"] = signature.model_dump(mode="json", exclude_none=True)
    if result.reference is not None:
        spec["reference"] = {"uri": result.reference.uri, "sha256": result.reference.sha256}
    if parent.spec.validation is not None:
        spec["validation"] = parent.spec.validation.to_k8s()
    meta: dict[str, Any] = {"name": name, "labels": {
        "app.kubernetes.io/managed-by": MANAGED_BY, LABEL_MONITOR: label_value(monitor)}}
    if parent.metadata.namespace:
        meta["namespace"] = parent.metadata.namespace
    return {"apiVersion": API_VERSION, "kind": "ModelVersion", "metadata": meta, "spec": spec}


def _next_patch(core: str) -> str:
    major, minor, patch = (int(x) for x in core.split("."))
    return f"{major}.{minor}.{patch + 1}"


def experiment_name(monitor: str, version: str) -> str:
    return dns_name(monitor, version)


def render_experiment(dm: DriftMonitor, champion: str, challenger: str) -> dict[str, Any]:
    """The Experiment of onRetrained Experiment: champion (control) against the retrained version, 50/50, on the
    monitor's ModelDeployment, promoting a winner. Not owned by the monitor: deleting the monitor does not end a
    running experiment."""
    meta: dict[str, Any] = {"name": experiment_name(dm.metadata.name, challenger), "labels": {
        "app.kubernetes.io/managed-by": MANAGED_BY, LABEL_MONITOR: label_value(dm.metadata.name)}}
    if dm.metadata.namespace:
        meta["namespace"] = dm.metadata.namespace
    return {"apiVersion": API_VERSION, "kind": "Experiment", "metadata": meta, "spec": {
        "deployment": dm.spec.deployment,
        "variants": [{"name": "champion", "version": champion, "weight": 50},
                     {"name": "challenger", "version": challenger, "weight": 50}],
        "onSuccess": "Promote",
    }}


def promote_request(version: str, serving: str, reason_message: str, new: Mapping[str, float],
                    champion: Mapping[str, float], now: dt.datetime) -> ServingRequest:
    """status.servingRequest of onRetrained Promote."""
    numbers = {f"new.{k}": float(v) for k, v in new.items()} | {f"champion.{k}": float(v) for k, v in champion.items()}
    return ServingRequest(kind=ServingRequestKind.promote, version=version, from_version=serving, time=second(now),
                          reason="RetrainedVersionBetter", message=reason_message[:4096], numbers=numbers)
