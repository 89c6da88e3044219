"""Pure builder of a ModelVersion's one child (STYLE §2): the validation Job `<mv>-validate-<hash of spec>`."""

from __future__ import annotations

import json
from typing import Any

from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel.names import (
    ANNOTATION_SPEC_HASH,
    LABEL_COMPONENT,
    LABEL_MODEL,
    LABEL_MODELVERSION,
    MANAGED_BY,
    _meta,
    dns_name,
    label_value,
    owner_reference,
    short_hash,
)
from mlsteward_operator.kernel.pods import TERMINATION_LOG, _pod_spec


def validation_job_name(mv: ModelVersion) -> str:
    """`<mv>-validate-<hash of spec>`: one Job per spec, so a restarted operator finds the Job it created."""
    return dns_name(mv.metadata.name, "validate", short_hash(mv.spec.to_k8s(), 10))


def validation_args(mv: ModelVersion) -> list[str]:
    """Arguments of `mlsteward validate` for `mv`; the verdict goes to the termination message."""
    spec = mv.spec
    args = ["validate", "--uri", spec.artifact.uri, "--sha256", spec.artifact.sha256,
            "--format", spec.artifact.format.value]
    args += ["--allow-version-skew"] if spec.framework.allow_version_skew else []
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
