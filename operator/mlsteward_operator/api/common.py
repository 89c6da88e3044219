"""Building blocks shared by the four custom resources: the base model, conditions, metadata and field types.

The pydantic models in this package are the single source of the CRDs (`crdgen` turns them into `crds/*.yaml`),
so every field carries a description (`kubectl explain` prints it) and every cross-field rule is written once as a
CEL rule that both the API server (at admission) and pydantic (when the operator parses an object) enforce.

Field names are snake_case in Python and camelCase on the wire, as Kubernetes users expect; dump with
`to_k8s()` to get the wire form.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "mlsteward.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "mlsteward"

# Bounds used on lists and strings. The API server estimates the worst-case cost of every CEL rule from these
# bounds and refuses a CRD whose rules could cost too much, so anything a rule iterates or compares is bounded.
MAX_NAME = 253
MAX_URI = 4096
MAX_SHORT = 256
MAX_MESSAGE = 32768
MAX_CONDITIONS = 16
MAX_DECISIONS = 20
MAX_HEALTH_SAMPLES = 240

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
CAMEL_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
SHA256_RE = r"^[0-9a-f]{64}$"
# A key of a Secret's data (what the API server accepts in a Secret: IsConfigMapKey).
SECRET_KEY_RE = r"^[-._a-zA-Z0-9]+$"


def cel(rule: str, message: str, *, reason: str | None = None, field_path: str | None = None) -> dict[str, Any]:
    """One `x-kubernetes-validations` entry. `reason`/`fieldPath` are optional API-server extras."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if reason is not None:
        out["reason"] = reason
    if field_path is not None:
        out["fieldPath"] = field_path
    return out


def defaulted(model: type[ApiModel]) -> Any:
    """`json_schema_extra` for a nested object whose fields all have defaults.

    The schema default is the model's defaults, written out, so that the API server creates the object when it is
    omitted (`kubectl get -o yaml` shows the effective spec), and the CEL rules on it see every field. A callable,
    because the class is complete only when the schema is generated.
    """

    def extra(schema: dict[str, Any]) -> None:
        schema["default"] = model().to_k8s()

    return extra


def rules(*entries: dict[str, Any]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules, for `model_config` or `Field(...)`."""
    return {"x-kubernetes-validations": list(entries)}


class ApiModel(BaseModel):
    """Base of every custom-resource model.

    Unknown keys are ignored rather than refused: the API server has already pruned what the CRD does not know,
    and an operator one release behind a newer CRD must still read the objects.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
        validate_default=False,
    )

    def to_k8s(self) -> dict[str, Any]:
        """The wire form: camelCase keys, enums as strings, datetimes as RFC 3339, unset (None) fields omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------------------------------------------
# Field types
# --------------------------------------------------------------------------------------------------------------


def _check_sha256(value: str) -> str:
    if not re.fullmatch(SHA256_RE, value):
        raise ValueError("sha256 must be 64 lowercase hex characters (the output of sha256sum)")
    return value


def _check_range(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool, message: str):
    def check(value: float) -> float:
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise ValueError(message)
        if hi is not None and (value >= hi if hi_open else value > hi):
            raise ValueError(message)
        return value

    return check


def _fmt(x: float) -> str:
    # CEL does not convert between int and double: compare a double field with a double literal.
    return repr(float(x))


def cel_string(text: str) -> str:
    """`text` as a CEL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def checked(rule: str, message: str, ok: Callable[[Any], bool], **field: Any) -> tuple[Any, ...]:
    """Metadata for `Annotated[T, *checked(...)]`: a CEL rule with `message`, and `ok` doing the same in pydantic.

    `field` goes to the one `Field` that carries the rule (pydantic keeps only the last `json_schema_extra` of an
    `Annotated`, so a type's schema keywords and its rule travel together).
    """

    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(message)
        return value

    return Field(**field, json_schema_extra=rules(cel(rule, message))), AfterValidator(check)


def matching(regex: str, message: str, **field: Any) -> tuple[Any, ...]:
    """`checked` for a regular expression anchored at both ends (RE2 in CEL, `re.fullmatch` in pydantic)."""
    if not (regex.startswith(("^", "(?i)^")) and regex.endswith("$")):
        raise ValueError(f"regex must be anchored: {regex}")
    return checked(f"self.matches({cel_string(regex)})", message, lambda v: re.fullmatch(regex, v) is not None,
                   **field)


def ranged(
    lo: float | None, hi: float | None, message: str, *, lo_open: bool = False, hi_open: bool = False
) -> tuple[Any, ...]:
    """Metadata for `Annotated[float, *ranged(...)]`: a range checked by a CEL rule with `message` and by pydantic.

    A CEL rule rather than `minimum`/`maximum` so that the API server's answer says which range and why, in words.
    """
    parts = []
    if lo is not None:
        parts.append(f"self {'>' if lo_open else '>='} {_fmt(lo)}")
    if hi is not None:
        parts.append(f"self {'<' if hi_open else '<='} {_fmt(hi)}")
    return (
        AfterValidator(_check_range(lo, hi, lo_open, hi_open, message)),
        Field(json_schema_extra=rules(cel(" && ".join(parts), message))),
    )


Sha256 = Annotated[
    str,
    Field(
        max_length=64,
        json_schema_extra=rules(
            cel(f"self.matches('{SHA256_RE}')", "sha256 must be 64 lowercase hex characters (the output of sha256sum)")
        ),
    ),
    AfterValidator(_check_sha256),
]
ObjectName = Annotated[str, Field(min_length=1, max_length=MAX_NAME, pattern=DNS_SUBDOMAIN)]
ShortText = Annotated[str, Field(max_length=MAX_SHORT)]
Percent = Annotated[int, Field(ge=0, le=100)]

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go-style duration such as `30s`, `5m` or `1h30m` (the form the CRDs accept)."""
    if not re.fullmatch(DURATION, text):
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h30m)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


# --------------------------------------------------------------------------------------------------------------
# Metadata and conditions
# --------------------------------------------------------------------------------------------------------------


class ObjectMeta(ApiModel):
    """The part of `metadata` the operator reads (not part of the CRD schema: the API server owns metadata)."""

    name: str = Field(description="Object name.")
    namespace: str | None = Field(default=None, description="Object namespace.")
    uid: str | None = Field(default=None, description="Object UID, used in owner references.")
    generation: int | None = Field(default=None, description="Spec generation.")
    resource_version: str | None = Field(default=None, description="Resource version.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
    creation_timestamp: dt.datetime | None = Field(default=None, description="When the object was created.")
    deletion_timestamp: dt.datetime | None = Field(default=None, description="When deletion was requested.")


class ConditionStatus(StrEnum):
    true = "True"
    false = "False"
    unknown = "Unknown"


class ConditionType(StrEnum):
    ready = "Ready"
    progressing = "Progressing"
    degraded = "Degraded"
    # ModelDeployment: whether a metric alert (spec.alerts) fires on the served version.
    alerting = "Alerting"
    # kstatus (kubernetes-sigs/cli-utils, read by Flux health checks and `kubectl wait`): abnormal-true conditions,
    # present only while True. Reconciling: the operator is still moving the object towards its spec. Stalled: it
    # will not get there without a change of spec (a person must act).
    reconciling = "Reconciling"
    stalled = "Stalled"


class Condition(ApiModel):
    """A standard Kubernetes condition (the shape of metav1.Condition)."""

    type: str = Field(
        description="Condition type: Ready, Progressing, Degraded (and Alerting on a ModelDeployment); Reconciling "
        "and Stalled, present only while True, for kstatus (Flux health checks).", min_length=1, max_length=316
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="CamelCase reason for the last transition, e.g. VersionNotReady.",
        min_length=1,
        max_length=1024,
        pattern=CAMEL_REASON,
    )
    message: str = Field(default="", description="Human-readable details.", max_length=MAX_MESSAGE)
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from."
    )
    last_transition_time: dt.datetime = Field(
        description="When the status last flipped (True/False/Unknown); unchanged when only reason or message change."
    )


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class StatusBase(ApiModel):
    """Fields every status has."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation last acted on by the operator."
    )
    conditions: Conditions = Field(
        default_factory=list, description="Standard conditions: Ready, Progressing, Degraded; Reconciling (still "
        "working towards the spec) or Stalled (will not get there until the spec changes) while True."
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class SecretKeyRef(ApiModel):
    """A key of a Secret in the object's namespace."""

    name: ObjectName = Field(description="Secret name, in the same namespace.")
    key: Annotated[str, *checked(
        f"self.matches({cel_string(SECRET_KEY_RE)}) && self != '.' && self != '..'",
        "a Secret key (secretRef.key, webhookSecretRef.key) is letters, digits, '-', '_' and '.', not '.' or '..'",
        lambda v: re.fullmatch(SECRET_KEY_RE, v) is not None and v not in (".", ".."),
        min_length=1, max_length=MAX_NAME,
    )] = Field(description="Key within the Secret.")


class Notify(ApiModel):
    """Where alerts are posted."""

    webhook_secret_ref: SecretKeyRef = Field(description="Secret key holding the webhook URL.")


class ServingRequestKind(StrEnum):
    promote = "Promote"
    rollback = "Rollback"


class ServingRequest(ApiModel):
    """What an Experiment or a DriftMonitor asks of its ModelDeployment: serve another version than spec.version.

    It lives in the asking object's status; the ModelDeployment's own reconcile is the only writer of what is
    served. It applies the request once (status.override of the ModelDeployment records it, with a Promote or
    Rollback entry in status.decisions), and only while `fromVersion` is still the served version, so a stale
    request never moves traffic. Rollback without `version` means the ModelDeployment's previous stable version.
    """

    kind: ServingRequestKind = Field(description="Promote (serve `version`) or Rollback (serve the previous one).")
    version: ShortText | None = Field(
        default=None, description="ModelVersion to serve; unset for Rollback: the previous stable version.")
    from_version: ShortText = Field(description="The version served when this was decided; applies only while it is.")
    time: dt.datetime = Field(description="When it was decided; a request is applied at most once.")
    reason: ShortText = Field(description="CamelCase reason, e.g. ExperimentConcluded, DriftDetected.")
    message: Annotated[str, Field(max_length=4096)] = Field(default="", description="Why, in words.")
    numbers: dict[str, float] = Field(default_factory=dict, description="Measurements it was based on.")
    thresholds: dict[str, float] = Field(default_factory=dict, description="Thresholds they were compared with.")


# --------------------------------------------------------------------------------------------------------------
# Kind registry (crdgen and the kopf layer read it)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str = ""
    priority: int = 0
    format: str | None = None

    def to_k8s(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.format:
            out["format"] = self.format
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date", "Time since creation.")


def ready_column() -> PrinterColumn:
    return PrinterColumn(
        "Ready", '.status.conditions[?(@.type=="Ready")].status', "string", "Ready condition status."
    )


@dataclass(frozen=True)
class KindInfo:
    """Everything crdgen needs to know about one custom resource besides its models."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    printer_columns: tuple[PrinterColumn, ...]
    # CEL rules on the whole object (they can see metadata.name) and on `spec` as a whole.
    root_rules: tuple[dict[str, Any], ...] = ()
    spec_rules: tuple[dict[str, Any], ...] = ()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"
