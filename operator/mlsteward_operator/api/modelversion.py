"""ModelVersion (`mv`): one immutable entry of the model registry (DESIGN §2).

The spec says what the artifact is and how to judge it; the operator validates it in a Job and writes the verdict
to status. Only a Ready version is ever served. The spec is immutable: a new model is a new ModelVersion.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated

from mlsteward_runtime.contracts import ArtifactFormat, ArtifactRef, Golden, InputSpec, OutputSpec, Signature
from pydantic import Field, model_validator

from mlsteward_operator.api.common import (
    AGE,
    DNS_LABEL,
    MAX_SHORT,
    MAX_URI,
    ApiModel,
    KindInfo,
    ObjectMeta,
    ObjectName,
    PrinterColumn,
    Sha256,
    ShortText,
    StatusBase,
    cel,
    cel_string,
    defaulted,
    matching,
    rules,
)
from mlsteward_operator.api.fields import uri_type

SEMVER = (
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
# `accuracy >= 0.7`: a metric name, a comparison and a number.
THRESHOLD = r"^[A-Za-z_][A-Za-z0-9_]*\s*(>=|<=|>|<)\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"

# The metrics `mlsteward validate` computes (mlsteward_runtime.stats.evaluate: CLASSIFIER_METRICS, REGRESSOR_METRICS
# and the aliases f1, auc; a test keeps them equal). A threshold on any other metric could only fail validation.
VALIDATED_METRICS = ("accuracy", "f1_macro", "roc_auc", "r2", "rmse", "mae", "f1", "auc")
THRESHOLD_RULE = (
    r"(?i)^(" + "|".join(sorted(VALIDATED_METRICS, key=len, reverse=True))
    + r")\s*(>=|<=|>|<)\s*-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"
)
THRESHOLD_MESSAGE = (
    "validation.thresholds entries are `METRIC OP NUMBER`, e.g. `accuracy >= 0.7`, with METRIC one of "
    + ", ".join(VALIDATED_METRICS) + " and OP one of >=, >, <=, <"
)
MAX_INPUTS = 4096
MAX_VALUES = 4096

MetricName = Annotated[str, Field(min_length=1, max_length=63)]
Metrics = Annotated[dict[MetricName, float], Field(max_length=64)]


class SpecInput(InputSpec):
    """One input feature of a spec.signature: what `mlsteward validate` would find wrong is refused at admission."""

    model_config = InputSpec.model_config | {
        "json_schema_extra": rules(
            cel("!has(self.min) || !has(self.max) || self.min <= self.max",
                "signature.inputs[].min must not exceed its max (no value could pass)"),
        )
    }

    name: Annotated[str, Field(min_length=1, max_length=MAX_SHORT)] = Field(
        description="Feature name; also the key of a named-feature request object. Unique within the signature."
    )
    # At least one value: an empty list refuses every value. (A categorical input without `allowed` fails
    # validation too, but CEL cannot see a list of values of mixed types, so only `mlsteward validate` says so.)
    allowed: Annotated[list[str | int | float | bool], Field(min_length=1, max_length=MAX_VALUES)] | None = Field(
        default=None, description="Accepted values of a categorical feature; any other value is refused."
    )

    @model_validator(mode="after")
    def _check(self) -> SpecInput:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("signature.inputs[].min must not exceed its max (no value could pass)")
        return self


class SpecOutput(OutputSpec):
    """The output of a spec.signature, with its class list bounded."""

    classes: Annotated[list[str | int | float | bool], Field(max_length=MAX_VALUES)] | None = Field(
        default=None, description="Class labels in the model's order (classifiers)."
    )


class SpecSignature(Signature):
    """spec.signature: the runtime's Signature with bounds (every list of a custom resource is bounded) and the
    checks of `mlsteward validate` that need no model (unique names, min <= max, non-empty allowed values)."""

    inputs: Annotated[list[SpecInput], Field(
        min_length=1, max_length=MAX_INPUTS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )] = Field(description="Input features, in the column order the model expects; names are unique.")
    output: SpecOutput | None = Field(default=None, description="What the model returns.")

    @model_validator(mode="after")
    def _unique(self) -> SpecSignature:
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError("signature.inputs names must be unique")
        return self


class Artifact(ApiModel):
    """Where the serialized model is and how to check it."""

    uri: uri_type("artifact.uri") = Field(
        description=(
            "Artifact location: an absolute path or file:// URI (on the artifact volume the operator mounts), "
            "http(s):// or s3:// (any S3-compatible server)."
        )
    )
    sha256: Sha256 = Field(
        description="Hex sha256 of the artifact bytes. Checked before a single byte is deserialized."
    )
    format: ArtifactFormat = Field(
        default=ArtifactFormat.skops,
        description="Serialization format: skops or onnx (preferred, safe to load), joblib or pickle.",
    )


class Framework(ApiModel):
    """The library that trained the model."""

    name: str = Field(
        default="sklearn", description="Framework name; only sklearn is supported.", max_length=16, pattern="^sklearn$")
    version: ShortText | None = Field(default=None, description="Framework version the model was trained with.")
    allow_version_skew: bool = Field(
        default=False,
        description=(
            "Validate and serve the model even when the scikit-learn version recorded in the artifact differs in "
            "major.minor from the runtime's, which can change predictions silently. Without it such a version "
            "ends Failed with reason SklearnVersionSkew."
        ),
    )


class Reference(ApiModel):
    """The training-data profile (from `mlsteward profile`) that drift tests compare live inputs with."""

    uri: uri_type("reference.uri") = Field(
        description="Location of the reference profile (JSON), same URI schemes as the artifact.")
    sha256: Sha256 | None = Field(default=None, description="Hex sha256 of the profile; checked when set.")


class Validation(ApiModel):
    """How the validation Job judges the model before it may be served."""

    dataset: uri_type("validation.dataset") = Field(
        description="Location of a labelled validation set (CSV with a header row), same URI schemes as the artifact.")
    target: Annotated[str, Field(min_length=1, max_length=MAX_SHORT)] = Field(
        description="Name of the label column in the validation set."
    )
    thresholds: Annotated[
        list[Annotated[str, *matching(THRESHOLD_RULE, THRESHOLD_MESSAGE, max_length=MAX_SHORT, pattern=THRESHOLD)]],
        Field(max_length=32),
    ] = Field(
        default_factory=list,
        description=(
            "Conditions the validated metrics must meet, e.g. `accuracy >= 0.7` or `rmse < 3.5`. A version that "
            "misses one ends Failed with reason BelowThreshold."
        ),
    )


class Lineage(ApiModel):
    """Where the model came from (shown on the model card)."""

    parent: ObjectName | None = Field(default=None, description="Name of the ModelVersion this one was retrained from.")
    dataset: Annotated[str, Field(max_length=MAX_URI)] | None = Field(
        default=None, description="Training data location or identifier."
    )
    trained_by: ShortText | None = Field(default=None, description="Person, pipeline or Job that trained it.")
    trigger: ShortText | None = Field(
        default=None, description="Why it was trained: Manual, Schedule, Drift, Experiment, ..."
    )


KIND_METRICS_MESSAGE = (
    "validation.thresholds must name metrics of the signature's output kind: r2, rmse or mae for regression; "
    "accuracy, f1_macro, f1, roc_auc or auc for class and probability"
)
_REGRESSION_RE = r"(?i)^(r2|rmse|mae)\s*[<>]"
# Negated: the rules hold trivially without a signature output or thresholds.
_NOTHING_TO_CHECK = ("!has(self.signature) || !has(self.signature.output) || !has(self.validation) || "
                   "!has(self.validation.thresholds)")


class ModelVersionSpec(ApiModel):
    """A registered model artifact. Immutable: publish a new ModelVersion for a new model."""

    # `mlsteward validate` computes classifier metrics for classifiers and regressor metrics for regressors
    # (mlsteward_runtime.stats.evaluate); a threshold on another metric can only end BelowThreshold. (roc_auc exists
    # for binary classifiers only, but CEL cannot count signature.output.classes: they are of mixed types.)
    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel(f"{_NOTHING_TO_CHECK} || self.validation.thresholds.all(t, "
                f"(self.signature.output.kind == 'regression') == t.matches({cel_string(_REGRESSION_RE)}))",
                KIND_METRICS_MESSAGE),
        )
    }

    model: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)] = Field(
        description="Model name. Versions of one model share it; it is the {name} of /v2/models/{name}."
    )
    version: Annotated[str, Field(min_length=1, max_length=64, pattern=SEMVER)] = Field(
        description="Semantic version of this model, e.g. 1.4.0."
    )
    artifact: Artifact = Field(description="The serialized model and its digest.")
    framework: Framework = Field(
        default_factory=Framework,
        json_schema_extra=defaulted(Framework),
        description="Training framework and its version.",
    )
    signature: SpecSignature | None = Field(
        default=None,
        description="Input features and output; checked against the model during validation, inferred when absent.",
    )
    reference: Reference | None = Field(
        default=None, description="Training-data profile for drift; computed during validation when absent."
    )
    metrics: Metrics = Field(default_factory=dict, description="Metrics measured at training time, by name.")
    validation: Validation | None = Field(
        default=None,
        description="Validation set and thresholds; without it only digest, load and signature are checked.",
    )
    lineage: Lineage | None = Field(default=None, description="Provenance: parent version, data, trainer, trigger.")
    description: Annotated[str, Field(max_length=16384)] | None = Field(
        default=None, description="Free text for the model card (Markdown)."
    )

    @model_validator(mode="after")
    def _thresholds_fit(self) -> ModelVersionSpec:
        _check_thresholds_fit(self)
        return self


def _check_thresholds_fit(spec: ModelVersionSpec) -> None:
    output = spec.signature.output if spec.signature is not None else None
    if output is None or spec.validation is None:
        return
    thresholds = spec.validation.thresholds
    if any((output.kind == "regression") != (re.match(_REGRESSION_RE, t) is not None) for t in thresholds):
        raise ValueError(KIND_METRICS_MESSAGE)


class VersionPhase(StrEnum):
    pending = "Pending"
    validating = "Validating"
    ready = "Ready"
    failed = "Failed"


class VersionReason(StrEnum):
    """CamelCase reasons of a ModelVersion's phase."""

    created = "Created"
    validating = "Validating"
    validated = "Validated"
    digest_mismatch = "DigestMismatch"
    signature_mismatch = "SignatureMismatch"
    below_threshold = "BelowThreshold"
    fetch_failed = "FetchFailed"
    load_failed = "LoadFailed"
    untrusted_types = "UntrustedTypes"
    sklearn_version_skew = "SklearnVersionSkew"
    job_failed = "JobFailed"
    invalid_result = "InvalidResult"


class ModelVersionStatus(StatusBase):
    """The validation verdict."""

    phase: VersionPhase = Field(
        default=VersionPhase.pending, description="Pending, Validating, Ready (servable) or Failed."
    )
    reason: ShortText | None = Field(
        default=None,
        description="Why the phase is what it is: Validated, DigestMismatch, SignatureMismatch, BelowThreshold, "
        "FetchFailed, LoadFailed, UntrustedTypes, SklearnVersionSkew, JobFailed.",
    )
    message: Annotated[str, Field(max_length=4096)] | None = Field(default=None, description="Details of the verdict.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Metrics measured on the validation set.")
    sha256: ShortText | None = Field(default=None, description="Digest verified by the validation Job.")
    signature: Signature | None = Field(
        default=None, description="Signature checked against the model (inferred when the spec has none)."
    )
    golden: Golden | None = Field(
        default=None, description="A recorded input and the model's output, replayed by the predictors' readiness."
    )
    reference: ArtifactRef | None = Field(
        default=None, description="Reference profile computed during validation when the spec had none."
    )
    validation_job: ShortText | None = Field(default=None, description="Name of the validation Job.")
    validated_at: dt.datetime | None = Field(default=None, description="When the verdict was recorded.")


class ModelVersion(ApiModel):
    """A ModelVersion object as read from the API server."""

    api_version: str = Field(default="mlsteward.io/v1alpha1", description="API version.")
    kind: str = Field(default="ModelVersion", description="Kind.")
    metadata: ObjectMeta = Field(description="Object metadata.")
    spec: ModelVersionSpec = Field(description="Desired state.")
    status: ModelVersionStatus = Field(default_factory=ModelVersionStatus, description="Observed state.")


INFO = KindInfo(
    kind="ModelVersion",
    plural="modelversions",
    singular="modelversion",
    short_names=("mv",),
    description=(
        "ModelVersion is one immutable entry of the model registry: an artifact with its sha256, signature, "
        "reference profile and validation thresholds. The operator validates it in a Job; only Ready versions are "
        "served."
    ),
    spec=ModelVersionSpec,
    status=ModelVersionStatus,
    printer_columns=(
        PrinterColumn("Model", ".spec.model", "string", "Model name."),
        PrinterColumn("Version", ".spec.version", "string", "Semantic version."),
        PrinterColumn("Phase", ".status.phase", "string", "Validation phase."),
        PrinterColumn("Reason", ".status.reason", "string", "Reason of the phase.", priority=1),
        AGE,
    ),
    spec_rules=(
        cel(
            "self == oldSelf",
            "spec is immutable: a new model is a new ModelVersion (create one under a new name)",
            reason="FieldValueForbidden",
        ),
    ),
)

# Re-exported so the reconcile layer needs one import for everything about this kind.
__all__ = [
    "INFO",
    "Artifact",
    "Framework",
    "Lineage",
    "ModelVersion",
    "ModelVersionSpec",
    "ModelVersionStatus",
    "Reference",
    "Validation",
    "VersionPhase",
    "VersionReason",
]
