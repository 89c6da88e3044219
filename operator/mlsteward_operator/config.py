"""Operator settings, read once from the environment (prefix `MLSTEWARD_OPERATOR_`) at startup and passed down.

The chart sets these from its values (image, pull policy, artifact volume). Builders receive an `OperatorConfig`
as an argument and never read the environment themselves.

Artifacts on a volume: with `artifact_volume_type` `hostPath` (a directory of the node, e.g. on a single-node
cluster) or `pvc` (a PersistentVolumeClaim in the object's namespace, e.g. ReadOnlyMany NFS), predictor and
validation pods mount it read-only at `artifact_mount_path`, so a ModelVersion URI such as
`file:///models/iris-1.0.0.skops` (or the plain path `/models/iris-1.0.0.skops`) resolves the same way inside the
pod as on the volume. URIs `http(s)://` and `s3://` need no volume; credentials for them come from the optional
Secret `artifact_env_secret`, injected as environment variables (e.g. AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL).

Retention (`retention_*`, off by default): retention.py says what is kept and deleted, reconcile_retention.py how
it is applied.

NetworkPolicy `<md>-predictors` (`network_policy`, on by default): predictor pods accept connections on their port
only from the router pods of their ModelDeployment and from the operator's pods (`operator_pod_labels` in
`operator_namespace`; the operator reads drift windows from predictor pods), plus any `network_policy_extra_peers`
(e.g. a Prometheus that scrapes predictors). A cluster without a NetworkPolicy controller ignores the object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "MLSTEWARD_OPERATOR_"


def _default_predictor_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


def _default_router_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}


def _default_operator_pod_labels() -> dict[str, str]:
    # The selector labels the chart puts on the operator's pod (charts/mlsteward/templates/_helpers.tpl).
    return {"app.kubernetes.io/name": "mlsteward", "app.kubernetes.io/component": "operator"}


def _default_validation_resources() -> dict[str, Any]:
    return {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}


class OperatorConfig(BaseSettings):
    """Settings of the mlsteward operator. Each field is read from `MLSTEWARD_OPERATOR_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    image: str = Field(
        default="mlsteward:0.1.0",
        description="Image of the predictor, router and validation pods (same as the operator).",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Pull policy of those pods."
    )
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Namespaces to watch, comma-separated; empty watches every namespace."
    )
    predictor_port: int = Field(default=8080, ge=1, le=65535, description="Port `mlsteward serve` listens on.")
    router_port: int = Field(default=8080, ge=1, le=65535, description="Port `mlsteward route` listens on.")
    service_port: int = Field(default=8080, ge=1, le=65535, description="Port of the Services the operator creates.")
    cluster_domain: str = Field(default="cluster.local", description="Cluster DNS domain, used in status.url.")
    predictor_resources: dict[str, Any] = Field(
        default_factory=_default_predictor_resources,
        description="Predictor container resources when the ModelDeployment sets none (JSON).",
    )
    router_resources: dict[str, Any] = Field(
        default_factory=_default_router_resources,
        description="Router container resources when the ModelDeployment sets none (JSON).",
    )
    validation_resources: dict[str, Any] = Field(
        default_factory=_default_validation_resources, description="Validation Job container resources (JSON)."
    )
    validation_backoff_limit: int = Field(
        default=0,
        ge=0,
        le=6,
        description="Retries of a failed validation pod. 0: a verdict (Failed) is final and the termination "
        "message of the one pod is the result.",
    )
    validation_deadline_seconds: int = Field(
        default=900, ge=30, description="activeDeadlineSeconds of the validation Job (fetching and evaluating)."
    )
    artifact_volume_type: Literal["", "hostPath", "pvc"] = Field(
        default="", description="Volume with the artifacts: '' (none), hostPath or pvc."
    )
    artifact_mount_path: str = Field(default="/models", description="Where the artifact volume is mounted (read-only).")
    artifact_host_path: str = Field(
        default="", description="Node directory of a hostPath artifact volume (default: artifact_mount_path)."
    )
    artifact_claim_name: str = Field(default="", description="PersistentVolumeClaim of a pvc artifact volume.")
    artifact_env_secret: str = Field(
        default="", description="Secret whose keys become environment variables of predictor and validation pods."
    )
    run_as_user: int = Field(default=10001, ge=1, description="Non-root UID of the pods the operator creates.")
    metrics_port: int = Field(
        default=0, ge=0, le=65535,
        description="Port of the operator's Prometheus endpoint (/metrics: drift statistics per monitor and "
        "feature); 0 serves none. The chart sets it.",
    )
    webhook_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts to post one alert to a webhook before giving up (an Event "
        "records the failure).",
    )
    webhook_backoff_seconds: float = Field(
        default=1.0, gt=0, le=60, description="Wait before the second attempt; doubled after each failure.",
    )
    drift_poll_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Time each predictor pod has to answer GET /v1/drift/window.",
    )
    network_policy: bool = Field(
        default=True, description="Render the NetworkPolicy `<md>-predictors` that lets only the deployment's router "
        "(and the operator) reach its predictor pods.",
    )
    operator_namespace: str = Field(
        default="", description="Namespace of the operator's pods, allowed to reach predictors; '' allows pods "
        "with operator_pod_labels in any namespace. The chart sets the release namespace.",
    )
    operator_pod_labels: dict[str, str] = Field(
        default_factory=_default_operator_pod_labels,
        description="Labels of the operator's pods, allowed to reach predictors (JSON).",
    )
    network_policy_extra_peers: list[dict[str, Any]] = Field(
        default_factory=list,
        description="More NetworkPolicy peers (`from` entries) allowed to reach predictors, e.g. a Prometheus "
        "namespace (JSON).",
    )

    retention_keep_last: int = Field(
        default=0, ge=0, le=10000,
        description="Keep the last N ModelVersions of each model (by semver) and delete older ones that nothing "
        "references (see retention.py); 0 turns retention off: nothing is ever deleted.",
    )
    retention_models: dict[str, Annotated[int, Field(ge=0, le=10000)]] = Field(
        default_factory=dict,
        description="N per model, overriding retention_keep_last (JSON); key `model` or `namespace/model` (the "
        "namespaced key wins); 0 keeps every version of that model.",
    )
    retention_interval_seconds: float = Field(
        default=300.0, ge=1, le=86400, description="Seconds between two retention passes over all namespaces.",
    )
    retention_dry_run: bool = Field(
        default=False, description="Decide and record what retention would delete (Event RetentionWouldDelete), "
        "but delete nothing.",
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _volume(self) -> OperatorConfig:
        if self.artifact_volume_type == "pvc" and not self.artifact_claim_name:
            raise ValueError("artifact_volume_type pvc needs artifact_claim_name")
        if not self.artifact_mount_path.startswith("/"):
            raise ValueError("artifact_mount_path must be absolute")
        return self
