"""DriftMonitor (`dm`): watches the inputs a ModelDeployment receives (DESIGN §2, §3.5, §5).

The operator pools the predictors' input windows, tests each feature against the served version's reference
profile and acts after `consecutive` windows in breach: an Alert, a Rollback to stableVersion or a Retrain Job.

Retraining has two more triggers here, besides drift: `spec.schedule` (cron, UTC) and `spec.performance` (a floor on
the accuracy or mean reward that feedback measures on the served version's predictors). They live on the
DriftMonitor because it already owns everything a retraining needs: the Job template, the cooldown, the rule of at
most one active retraining per monitor, the deterministic Job names and the loop from the Job's result to a new
ModelVersion (spec.onRetrained). A separate kind would have to share all of that with the DriftMonitor, and two
owners of one model's retraining could start two Jobs at once.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated, Any

from croniter import croniter
from pydantic import AfterValidator, Field, model_validator

from mlsteward_operator.api.common import (
    AGE,
    ApiModel,
    KindInfo,
    Notify,
    ObjectMeta,
    ObjectName,
    PrinterColumn,
    ServingRequest,
    ShortText,
    StatusBase,
    cel,
    defaulted,
    ranged,
    rules,
)
from mlsteward_operator.api.fields import DeploymentRef, duration_type

MAX_HISTORY = 50
MAX_RETRAIN_STEPS = 20


class Window(ApiModel):
    """How many pooled input rows one check uses."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel("self.minSamples <= self.maxSamples", "window.minSamples must not exceed window.maxSamples")
        )
    }

    min_samples: int = Field(default=200, ge=1, le=10_000_000, description="Skip the check below this many rows.")
    max_samples: int = Field(
        default=5000,
        ge=1,
        le=10_000_000,
        description="Use at most this many rows (a uniform subsample), so large windows do not cry wolf.",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> Window:
        if self.min_samples > self.max_samples:
            raise ValueError("window.minSamples must not exceed window.maxSamples")
        return self


def _nonneg(name: str) -> tuple[Any, ...]:
    return ranged(0, None, f"thresholds.{name} must be at least 0")


class Thresholds(ApiModel):
    """Effect-size thresholds per method, and the significance level. A feature drifts only when both are passed."""

    p_value: Annotated[
        float,
        *ranged(0, 1, "thresholds.pValue must be strictly between 0 and 1, e.g. 0.01", lo_open=True, hi_open=True),
    ] = Field(default=0.01, description="Significance level after multiple-testing correction, in (0, 1).")
    ks: Annotated[float, *_nonneg("ks")] = Field(
        default=0.1, description="Kolmogorov-Smirnov statistic above which a numeric feature may drift."
    )
    wasserstein: Annotated[float, *_nonneg("wasserstein")] = Field(
        default=0.1, description="Wasserstein distance (in reference standard deviations) for numeric features."
    )
    psi: Annotated[float, *_nonneg("psi")] = Field(
        default=0.2, description="Population stability index (numeric bins and categories)."
    )
    jensen_shannon: Annotated[float, *_nonneg("jensenShannon")] = Field(
        default=0.1, description="Jensen-Shannon distance for categorical features."
    )


class Action(StrEnum):
    alert = "Alert"
    rollback = "Rollback"
    retrain = "Retrain"


RETRAIN_TEMPLATE_MESSAGE = ("retrain.template is a Job spec: it needs template.spec.containers with at least one "
                            "container")


def _has_containers(template: dict[str, Any]) -> bool:
    pod = template.get("template")
    spec = pod.get("spec") if isinstance(pod, dict) else None
    containers = spec.get("containers") if isinstance(spec, dict) else None
    return isinstance(containers, list) and len(containers) > 0


def _kept(description: str, **schema: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": True, **schema}


# The path to the containers of a Job spec, declared so that CEL can see it (CEL sees no field that the schema only
# preserves); everything else in the template stays free-form.
_JOB_SPEC_PATH = {"template": _kept("The Job's pod template.", properties={"spec": _kept(
    "The pod spec.", properties={"containers": {
        "type": "array", "description": "The pod's containers.", "items": _kept("A container.")}})})}


class Retrain(ApiModel):
    """The retraining Job run by the Retrain action."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel("has(self.template.template) && has(self.template.template.spec) && "
                "has(self.template.template.spec.containers) && size(self.template.template.spec.containers) > 0",
                RETRAIN_TEMPLATE_MESSAGE)
        )
    }

    template: dict[str, Any] = Field(
        description=(
            "A batch/v1 Job spec (`spec` of a Job) run to retrain; its result is registered as a new ModelVersion "
            "with lineage."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True, "properties": _JOB_SPEC_PATH},
    )

    @model_validator(mode="after")
    def _containers(self) -> Retrain:
        if not _has_containers(self.template):
            raise ValueError(RETRAIN_TEMPLATE_MESSAGE)
        return self


CRON_MESSAGE = ("spec.schedule must be a 5-field cron expression (minute hour day-of-month month day-of-week, in "
                "UTC), e.g. '0 3 * * *' for 03:00 every day")
# The API server checks the shape (five fields of cron characters); pydantic checks the values with croniter.
CRON_SHAPE = r"^[0-9A-Za-z*/,?#-]+( +[0-9A-Za-z*/,?#-]+){4}$"


def _check_cron(expr: str) -> str:
    """A standard 5-field cron expression (no seconds, no year, no @-macros), with values croniter accepts."""
    if not re.fullmatch(CRON_SHAPE, expr):
        raise ValueError(f"{CRON_MESSAGE}; got {expr!r}")
    if not croniter.is_valid(expr):
        raise ValueError(f"{CRON_MESSAGE}; {expr!r} has a value out of range or an unknown name")
    return expr


CronSchedule = Annotated[
    str,
    Field(max_length=256, json_schema_extra=rules(cel(f"self.matches('{CRON_SHAPE}')", CRON_MESSAGE))),
    AfterValidator(_check_cron),
]


class PerformanceMetric(StrEnum):
    accuracy = "accuracy"
    reward = "reward"


class Performance(ApiModel):
    """A floor on the live quality of the served version, measured from feedback (`POST /v1/feedback`)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel("self.metric != 'accuracy' || (self.floor >= 0.0 && self.floor <= 1.0)",
                "performance.floor of metric accuracy must be between 0 and 1")
        )
    }

    metric: PerformanceMetric = Field(
        description="accuracy (labels joined to predictions) or reward (mean reward), as each predictor's "
        "`GET /v1/stats` reports it over its stats window; the replicas are pooled, each weighed by its feedback count.")
    floor: float = Field(description="Retrain when the pooled metric is below this value (for `consecutive` checks).")
    min_samples: int = Field(
        default=100, ge=1, le=10_000_000,
        description="Pooled feedback needed before a check judges the metric; fewer gives no verdict (the run of "
        "breaches neither grows nor breaks).")

    @model_validator(mode="after")
    def _floor(self) -> Performance:
        if self.metric == PerformanceMetric.accuracy and not 0.0 <= self.floor <= 1.0:
            raise ValueError("performance.floor of metric accuracy must be between 0 and 1")
        return self


TRIGGERS_MESSAGE = ("spec.schedule and spec.performance trigger retraining: add Retrain to spec.actions (and set "
                    "spec.retrain.template)")


class OnRetrained(StrEnum):
    experiment = "Experiment"
    promote = "Promote"
    register = "Register"


class DriftMonitorSpec(ApiModel):
    """What to watch and what to do on drift."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel(
                "!has(self.actions) || !('Retrain' in self.actions) || has(self.retrain)",
                "actions include Retrain: set spec.retrain.template (the Job to run)",
            ),
            cel(
                "!has(self.actions) || !('Rollback' in self.actions && 'Retrain' in self.actions)",
                "choose Rollback or Retrain, not both",
            ),
            cel(
                "!(has(self.schedule) || has(self.performance)) || (has(self.actions) && 'Retrain' in self.actions)",
                TRIGGERS_MESSAGE,
            ),
        )
    }

    deployment: DeploymentRef = Field(description="ModelDeployment whose inputs are watched.")
    interval: duration_type("spec.interval") = Field(default="5m", description="Time between checks, e.g. 5m.")
    window: Window = Field(
        default_factory=Window, json_schema_extra=defaulted(Window), description="Rows pooled per check.")
    features: Annotated[list[Annotated[str, Field(min_length=1, max_length=253)]], Field(
        max_length=1024, json_schema_extra={"x-kubernetes-list-type": "set"})] = Field(
        default_factory=list, description="Features to test, each once (default: every input of the signature)."
    )
    thresholds: Thresholds = Field(
        default_factory=Thresholds, json_schema_extra=defaulted(Thresholds), description="Detection thresholds.")
    consecutive: int = Field(default=3, ge=1, le=100, description="Windows in breach before an action runs.")
    actions: Annotated[list[Action], Field(max_length=3, json_schema_extra={"x-kubernetes-list-type": "set"})] = Field(
        default=[Action.alert], description="What to do on drift: Alert, Rollback, Retrain."
    )
    retrain: Retrain | None = Field(default=None, description="Retraining Job (action Retrain).")
    cooldown: duration_type("spec.cooldown", zero=True) = Field(
        default="30m", description="Least time between two actions; a retraining started by spec.schedule or "
        "spec.performance counts as an action too.")
    notify: Notify | None = Field(default=None, description="Webhook for alerts.")
    schedule: CronSchedule | None = Field(
        default=None,
        description="Retrain on a calendar as well: a standard 5-field cron expression evaluated in UTC, e.g. "
        "'0 3 * * 0' (Sundays 03:00). A run is due when a cron time has passed since status.lastScheduledRun (or "
        "since the monitor was created); after downtime only the latest missed time runs, once. A due run that "
        "falls within the cooldown or while a retraining is active is skipped, not postponed. Needs Retrain in "
        "spec.actions: the DriftMonitor owns the retraining Job, its cooldown and spec.onRetrained.",
    )
    performance: Performance | None = Field(
        default=None,
        description="Retrain when live quality falls: the accuracy or mean reward that feedback measures on the "
        "served version's predictors, below `floor` with at least `minSamples` feedback, for `consecutive` checks "
        "in a row (checked every interval, with the drift check). Needs Retrain in spec.actions; shares the "
        "cooldown and the one-active-retraining rule with drift and the schedule.",
    )
    on_retrained: OnRetrained = Field(
        default=OnRetrained.register,
        description=(
            "What follows a successful retraining Job, once its new ModelVersion (with lineage) is validated: "
            "Register (stop there), Experiment (an Experiment on the same ModelDeployment, champion against the new "
            "version, 50/50, onSuccess Promote) or Promote (ask the ModelDeployment to serve it, only if its "
            "validated metrics beat the champion's on every metric both have)."
        ),
    )

    @model_validator(mode="after")
    def _actions(self) -> DriftMonitorSpec:
        if len(set(self.features)) != len(self.features):
            raise ValueError("spec.features must not repeat a feature")
        if Action.retrain in self.actions and self.retrain is None:
            raise ValueError("actions include Retrain: set spec.retrain.template (the Job to run)")
        if Action.retrain in self.actions and Action.rollback in self.actions:
            raise ValueError("choose Rollback or Retrain, not both")
        if (self.schedule is not None or self.performance is not None) and Action.retrain not in self.actions:
            raise ValueError(TRIGGERS_MESSAGE)
        return self


# --------------------------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------------------------


class FeatureResult(ApiModel):
    """The test of one feature."""

    name: ShortText = Field(description="Feature name.")
    method: ShortText = Field(description="Test used: ks, wasserstein, psi, chi-square, jensen-shannon.")
    statistic: float | None = Field(default=None, description="Test statistic.")
    p_value: float | None = Field(default=None, description="p-value after multiple-testing correction.")
    effect_size: float | None = Field(default=None, description="Effect size compared with the threshold.")
    drifted: bool = Field(default=False, description="Whether this feature drifted.")


class Report(ApiModel):
    """One drift check."""

    time: dt.datetime = Field(description="When the check ran.")
    window_size: int = Field(ge=0, description="Rows tested.")
    version: ShortText | None = Field(default=None, description="ModelVersion whose reference was used.")
    features: list[FeatureResult] = Field(default_factory=list, description="Per-feature results.")
    drifted: bool = Field(default=False, description="Whether the window was in breach.")


class HistoryEntry(ApiModel):
    """A past check, summarised."""

    time: dt.datetime = Field(description="When the check ran.")
    window_size: int = Field(ge=0, description="Rows tested.")
    drifted_features: int = Field(default=0, ge=0, description="Number of drifted features.")
    drifted: bool = Field(default=False, description="Whether the window was in breach.")


class LastAction(ApiModel):
    """The last action taken."""

    type: Action = Field(description="Alert, Rollback or Retrain.")
    time: dt.datetime = Field(description="When it ran.")
    message: Annotated[str, Field(max_length=4096)] = Field(default="", description="What was done.")
    job: ShortText | None = Field(default=None, description="Retraining Job name (Retrain).")
    trigger: ShortText | None = Field(
        default=None, description="What started it (Retrain): driftmonitor/..., schedule/... or performance/...")


class RetrainPhase(StrEnum):
    running = "Running"
    validating = "Validating"
    succeeded = "Succeeded"
    failed = "Failed"


class RetrainStep(ApiModel):
    """One step of a retraining, as it happened."""

    time: dt.datetime = Field(description="When the step was recorded.")
    step: ShortText = Field(
        description="JobCreated, JobSucceeded, JobFailed, VersionRegistered, VersionRefused, VersionReady, "
        "VersionFailed, ExperimentCreated, ExperimentRefused, PromotionRequested, PromotionSkipped or Registered.")
    message: Annotated[str, Field(max_length=4096)] = Field(default="", description="What happened, in words.")


class RetrainStatus(ApiModel):
    """The retraining started by the last Retrain action, from its Job to the step spec.onRetrained asks for."""

    job: ShortText = Field(description="The retraining Job (deterministic: named after the breach).")
    parent: ShortText | None = Field(default=None, description="ModelVersion retrained from (served at the breach).")
    trigger: ShortText = Field(
        description="What started it, also the new ModelVersion's lineage.trigger: driftmonitor/<name>@<time of the "
        "breach's first window> (drift), schedule/<name>@<cron time> or performance/<name>@<time of the first "
        "check below the floor>.")
    phase: RetrainPhase = Field(
        description="Running (the Job), Validating (the new ModelVersion), Succeeded (onRetrained done) or Failed.")
    model_version: ShortText | None = Field(default=None, description="The ModelVersion registered from the result.")
    experiment: ShortText | None = Field(default=None, description="The Experiment created (onRetrained Experiment).")
    started_at: dt.datetime = Field(description="When the action was decided.")
    steps: Annotated[list[RetrainStep], Field(max_length=MAX_RETRAIN_STEPS)] = Field(
        default_factory=list, description=f"The steps so far, oldest first (at most {MAX_RETRAIN_STEPS}).")


class PerformanceStatus(ApiModel):
    """The latest reading of spec.performance."""

    metric: PerformanceMetric = Field(description="accuracy or reward.")
    time: dt.datetime = Field(description="When the predictors were read.")
    version: ShortText | None = Field(default=None, description="The served ModelVersion that was measured.")
    value: float | None = Field(default=None, description="Pooled metric (None: no feedback with that metric).")
    samples: int = Field(default=0, ge=0, description="Pooled feedback behind the value.")
    floor: float | None = Field(default=None, description="spec.performance.floor at the time.")
    breaches: int = Field(default=0, ge=0, description="Checks below the floor in a row, since the last retraining "
                          "it started.")
    breach_started: dt.datetime | None = Field(
        default=None, description="Time of the first check of the current run below the floor; it names the Job.")
    message: Annotated[str, Field(max_length=4096)] = Field(default="", description="The reading, in words.")


class DriftMonitorStatus(StatusBase):
    """Latest report, history and actions."""

    last_report: Report | None = Field(default=None, description="The latest check.")
    history: Annotated[list[HistoryEntry], Field(max_length=MAX_HISTORY)] = Field(
        default_factory=list, description=f"The last {MAX_HISTORY} checks, oldest first."
    )
    drift_detected: bool | None = Field(default=None, description="Whether the latest window was in breach.")
    consecutive_breaches: int = Field(default=0, ge=0, description="Windows in breach in a row.")
    last_action: LastAction | None = Field(default=None, description="The last action and when it ran.")
    last_check: dt.datetime | None = Field(
        default=None, description="When the last check ran, with or without a verdict (the next is due an "
        "interval later).")
    serving_request: ServingRequest | None = Field(
        default=None, description="Rollback (action Rollback) or Promote (onRetrained Promote): the version the "
        "ModelDeployment is asked to serve; its reconcile applies it once and records the decision.")
    retrain: RetrainStatus | None = Field(default=None, description="The retraining started by the last Retrain.")
    last_scheduled_run: dt.datetime | None = Field(
        default=None, description="The cron time of spec.schedule last handled (run or skipped); the next run is "
        "due at the first cron time after it.")
    next_scheduled_run: dt.datetime | None = Field(default=None, description="When spec.schedule is next due.")
    performance: PerformanceStatus | None = Field(default=None, description="The latest spec.performance reading.")


class DriftMonitor(ApiModel):
    """A DriftMonitor object as read from the API server."""

    api_version: str = Field(default="mlsteward.io/v1alpha1", description="API version.")
    kind: str = Field(default="DriftMonitor", description="Kind.")
    metadata: ObjectMeta = Field(description="Object metadata.")
    spec: DriftMonitorSpec = Field(description="Desired state.")
    status: DriftMonitorStatus = Field(default_factory=DriftMonitorStatus, description="Observed state.")


INFO = KindInfo(
    kind="DriftMonitor",
    plural="driftmonitors",
    singular="driftmonitor",
    short_names=("dm",),
    description=(
        "DriftMonitor tests the inputs a ModelDeployment receives against the training-data profile and, after "
        "consecutive breaches, alerts, rolls back or retrains."
    ),
    spec=DriftMonitorSpec,
    status=DriftMonitorStatus,
    printer_columns=(
        PrinterColumn("Deployment", ".spec.deployment", "string", "ModelDeployment."),
        PrinterColumn("Drift", ".status.driftDetected", "boolean", "Latest window in breach."),
        PrinterColumn("Last Check", ".status.lastReport.time", "date", "Time of the latest check."),
        PrinterColumn("Last Action", ".status.lastAction.type", "string", "Last action taken."),
        PrinterColumn("Retrain", ".status.retrain.phase", "string", "Phase of the last retraining.", priority=1),
        PrinterColumn("Retrained", ".status.retrain.modelVersion", "string", "ModelVersion it registered.",
                      priority=1),
        AGE,
    ),
)
