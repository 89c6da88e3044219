"""Experiment (`exp`): an online comparison between versions served by one ModelDeployment (DESIGN §2, §5).

The router assigns requests to variants and records outcomes; the operator merges the routers' sufficient
statistics, analyses them and writes the result here. Bandit state lives in status so that it survives restarts of
the operator and of the routers.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from mlsteward_operator.api.common import (
    AGE,
    DNS_LABEL,
    MAX_SHORT,
    ApiModel,
    KindInfo,
    ObjectMeta,
    ObjectName,
    Percent,
    PrinterColumn,
    ServingRequest,
    ShortText,
    StatusBase,
    cel,
    defaulted,
    matching,
    ranged,
    rules,
)
from mlsteward_operator.api.fields import DeploymentRef, duration_type

MAX_VARIANTS = 10


class Variant(ApiModel):
    """One arm of the experiment."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)] = Field(
        description="Arm name (unique), e.g. control, treatment."
    )
    version: ObjectName = Field(description="ModelVersion served to this arm.")
    weight: Percent = Field(
        description="Percent of traffic (Weighted) or initial share (bandits); the weights sum to 100."
    )


class StrategyType(StrEnum):
    weighted = "Weighted"
    epsilon_greedy = "EpsilonGreedy"
    thompson = "ThompsonSampling"


class Strategy(ApiModel):
    """How requests are assigned to arms."""

    type: StrategyType = Field(
        default=StrategyType.weighted,
        description="Weighted (fixed split), EpsilonGreedy or ThompsonSampling (bandits that favour the best arm).",
    )
    epsilon: Annotated[float, *ranged(0, 1, "strategy.epsilon must be between 0 and 1")] = Field(
        default=0.1, description="Exploration rate of EpsilonGreedy, in [0, 1]."
    )


class Sticky(ApiModel):
    """Keep a user on one arm by hashing a request key."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel("has(self.header) || has(self.bodyKey)", "sticky needs a header or a bodyKey to hash")
        )
    }

    header: Annotated[str, *matching(
        r"^[A-Za-z0-9_.-]+$", "sticky.header must be an HTTP header name: letters, digits, '-', '_' and '.'",
        min_length=1, max_length=MAX_SHORT,
    )] | None = Field(default=None, description="Request header whose value is hashed, e.g. x-user-id.")
    body_key: ShortText | None = Field(default=None, description="Top-level JSON body key whose value is hashed.")

    @model_validator(mode="after")
    def _has_key(self) -> Sticky:
        if self.header is None and self.body_key is None:
            raise ValueError("sticky needs a header or a bodyKey to hash")
        return self


class MetricName(StrEnum):
    reward = "reward"
    accuracy = "accuracy"
    error_rate = "error-rate"
    latency = "latency"


class MetricKind(StrEnum):
    binary = "binary"
    continuous = "continuous"


class Goal(StrEnum):
    maximize = "maximize"
    minimize = "minimize"


# Maximizing either would promote the slowest or the most failing arm.
LOWER_IS_BETTER = "metrics latency and error-rate are lower-is-better: set metric.goal: minimize"


class Metric(ApiModel):
    """What is compared between arms."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel(
                "self.name != 'latency' || self.kind == 'continuous'",
                "metric latency is continuous: set metric.kind: continuous",
            ),
            cel(
                "!(self.name in ['accuracy', 'error-rate']) || self.kind == 'binary'",
                "metrics accuracy and error-rate are binary: set metric.kind: binary",
            ),
            cel("!(self.name in ['latency', 'error-rate']) || self.goal == 'minimize'", LOWER_IS_BETTER),
        )
    }

    name: MetricName = Field(
        default=MetricName.reward,
        description="reward (from POST /v1/feedback), accuracy (feedback labels), error-rate or latency.",
    )
    kind: MetricKind = Field(default=MetricKind.binary, description="binary (0/1 outcomes) or continuous.")
    goal: Goal = Field(default=Goal.maximize, description="maximize or minimize.")

    @model_validator(mode="after")
    def _kind_fits_name(self) -> Metric:
        if self.name == MetricName.latency and self.kind != MetricKind.continuous:
            raise ValueError("metric latency is continuous: set metric.kind: continuous")
        if self.name in (MetricName.accuracy, MetricName.error_rate) and self.kind != MetricKind.binary:
            raise ValueError("metrics accuracy and error-rate are binary: set metric.kind: binary")
        if self.name in (MetricName.latency, MetricName.error_rate) and self.goal != Goal.minimize:
            raise ValueError(LOWER_IS_BETTER)
        return self


class Stopping(ApiModel):
    """When the experiment concludes."""

    confidence: Annotated[
        float,
        *ranged(0, 1, "stopping.confidence must be strictly between 0 and 1, e.g. 0.95", lo_open=True, hi_open=True),
    ] = Field(default=0.95, description="Confidence required to call a winner, in (0, 1).")
    min_samples_per_variant: int = Field(
        default=1000, ge=1, le=1_000_000_000, description="Outcomes each arm needs before any conclusion."
    )
    max_duration: duration_type("stopping.maxDuration") | None = Field(
        default=None, description="Stop (phase Stopped) after this long without a conclusion, e.g. 72h."
    )
    sequential: bool = Field(
        default=True,
        description="Use always-valid (sequential) p-values, so that looking at a running experiment is safe.",
    )


class OnSuccess(StrEnum):
    promote = "Promote"
    report = "Report"


ZERO_WEIGHT_MESSAGE = ("with strategy Weighted every variant needs a weight above 0 (an arm without traffic never "
                       "gets the outcomes a conclusion needs)")


class ExperimentSpec(ApiModel):
    """Compare versions on live traffic."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel("self.strategy.type != 'Weighted' || self.variants.all(v, v.weight > 0)", ZERO_WEIGHT_MESSAGE)
        )
    }

    deployment: DeploymentRef = Field(description="ModelDeployment whose traffic is split.")
    variants: Annotated[
        list[Variant],
        Field(
            min_length=2,
            max_length=MAX_VARIANTS,
            json_schema_extra=rules(
                cel("size(self) >= 2", "an experiment needs at least two variants (control first)"),
                cel(
                    "self.map(v, v.weight).sum() == 100",
                    "variant weights must sum to 100",
                ),
                cel("self.all(v, self.exists_one(w, w.name == v.name))", "variant names must be unique"),
                cel(
                    "self.all(v, self.exists_one(w, w.version == v.version))",
                    "variant versions must be distinct (the router counts outcomes per version)",
                ),
            ),
        ),
    ] = Field(description="Arms, control first; 2 to 10, weights summing to 100.")
    strategy: Strategy = Field(
        default_factory=Strategy, json_schema_extra=defaulted(Strategy), description="Assignment strategy.")
    sticky: Sticky | None = Field(default=None, description="Sticky assignment by a request key.")
    metric: Metric = Field(
        default_factory=Metric, json_schema_extra=defaulted(Metric), description="Metric compared between arms.")
    stopping: Stopping = Field(
        default_factory=Stopping, json_schema_extra=defaulted(Stopping), description="Stopping rules.")
    on_success: OnSuccess = Field(
        default=OnSuccess.report,
        description="Promote: make the winner the served version (status and decisions, never spec). "
        "Report: only report.",
    )

    @model_validator(mode="after")
    def _variants(self) -> ExperimentSpec:
        if sum(v.weight for v in self.variants) != 100:
            raise ValueError("variant weights must sum to 100")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if self.strategy.type == StrategyType.weighted and any(v.weight == 0 for v in self.variants):
            raise ValueError(ZERO_WEIGHT_MESSAGE)
        versions = [v.version for v in self.variants]
        if len(set(versions)) != len(versions):
            raise ValueError("variant versions must be distinct (the router counts outcomes per version)")
        return self


# --------------------------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------------------------


class Interval(ApiModel):
    """A confidence or credible interval."""

    lower: float = Field(description="Lower bound.")
    upper: float = Field(description="Upper bound.")


class PosteriorFamily(StrEnum):
    beta = "Beta"
    normal = "Normal"


class Posterior(ApiModel):
    """Posterior of an arm's mean: Beta(alpha, beta) for binary metrics, Normal(mean, sd) for continuous ones."""

    family: PosteriorFamily = Field(description="Beta or Normal.")
    alpha: float | None = Field(default=None, description="Beta alpha (successes + prior).")
    beta: float | None = Field(default=None, description="Beta beta (failures + prior).")
    mean: float | None = Field(default=None, description="Normal mean.")
    sd: float | None = Field(default=None, description="Normal standard deviation.")


class VariantStatus(ApiModel):
    """Running totals and analysis of one arm."""

    name: ShortText = Field(description="Arm name.")
    version: ShortText = Field(description="ModelVersion of the arm.")
    weight: Percent | None = Field(default=None, description="Current share of traffic (bandits move it).")
    requests: int = Field(default=0, ge=0, description="Requests assigned.")
    outcomes: int = Field(default=0, ge=0, description="Outcomes (feedback) joined.")
    outcome_sum: float = Field(default=0.0, description="Sum of outcomes (sufficient statistic).")
    outcome_sumsq: float = Field(default=0.0, description="Sum of squared outcomes (sufficient statistic).")
    outcome_m2: float | None = Field(
        default=None, ge=0, description="Sum of squared deviations from the mean (sufficient statistic the variance "
        "is taken from, exact for a metric with a large mean); unset in statuses written before it was kept.",
    )
    mean: float | None = Field(default=None, description="Mean outcome.")
    ci: Interval | None = Field(default=None, description="Confidence interval of the mean.")
    posterior: Posterior | None = Field(default=None, description="Posterior of the mean.")
    probability_best: float | None = Field(default=None, description="Posterior probability that this arm is best.")


class ReplicaCheckpoint(ApiModel):
    """The last counters read from one router replica.

    Router counters reset when a router restarts; the operator keeps what it last read so that a restart (a new
    `started`) adds to the totals instead of replacing them.
    """

    replica: ShortText = Field(description="Router pod name.")
    started: float = Field(description="Unix start time of that router process.")
    variants: list[VariantStatus] = Field(default_factory=list, description="Counters per arm at the last read.")


class SampleRatio(ApiModel):
    """Sample-ratio-mismatch check: are requests split as configured?"""

    p_value: float | None = Field(default=None, description="Chi-square p-value of observed vs configured split.")
    mismatch: bool = Field(default=False, description="True when the split is implausible (assignment is broken).")


class ExperimentPhase(StrEnum):
    pending = "Pending"
    running = "Running"
    concluded = "Concluded"
    stopped = "Stopped"


class ExperimentStatus(StatusBase):
    """Results of the analysis."""

    phase: ExperimentPhase | None = Field(
        default=None,
        description="Pending (until the ModelDeployment splits the traffic), Running, Concluded or Stopped.",
    )
    started_at: dt.datetime | None = Field(default=None, description="When traffic started being split.")
    concluded_at: dt.datetime | None = Field(default=None, description="When it concluded or stopped.")
    variants: list[VariantStatus] = Field(default_factory=list, description="Per-arm results.")
    test: ShortText | None = Field(default=None, description="Test used, e.g. two-proportion z, Welch t, chi-square.")
    p_value: float | None = Field(default=None, description="p-value (always-valid when stopping.sequential).")
    effect: float | None = Field(default=None, description="Effect of the best treatment against control.")
    effect_ci: Interval | None = Field(default=None, description="Confidence interval of the effect.")
    sample_ratio: SampleRatio | None = Field(default=None, description="Sample-ratio-mismatch check.")
    leader: ShortText | None = Field(default=None, description="Arm currently most likely to be best.")
    probability_best: float | None = Field(default=None, description="P(best) of the leader.")
    winner: ShortText | None = Field(default=None, description="Arm declared the winner, once concluded.")
    serving_request: ServingRequest | None = Field(
        default=None, description="With onSuccess Promote: the winner, for the ModelDeployment to serve.")
    checkpoints: list[ReplicaCheckpoint] = Field(
        default_factory=list, description="Last counters per router replica (restart-safe merging)."
    )


class Experiment(ApiModel):
    """An Experiment object as read from the API server."""

    api_version: str = Field(default="mlsteward.io/v1alpha1", description="API version.")
    kind: str = Field(default="Experiment", description="Kind.")
    metadata: ObjectMeta = Field(description="Object metadata.")
    spec: ExperimentSpec = Field(description="Desired state.")
    status: ExperimentStatus = Field(default_factory=ExperimentStatus, description="Observed state.")


INFO = KindInfo(
    kind="Experiment",
    plural="experiments",
    singular="experiment",
    short_names=("exp",),
    description=(
        "Experiment compares ModelVersions on the live traffic of one ModelDeployment (weighted split or bandit), "
        "analyses the outcomes and can promote the winner."
    ),
    spec=ExperimentSpec,
    status=ExperimentStatus,
    printer_columns=(
        PrinterColumn("Deployment", ".spec.deployment", "string", "ModelDeployment."),
        PrinterColumn("Phase", ".status.phase", "string", "Pending, Running, Concluded or Stopped."),
        PrinterColumn("Leader", ".status.leader", "string", "Arm most likely best."),
        PrinterColumn("P(best)", ".status.probabilityBest", "number", "P(best) of the leader."),
        PrinterColumn("Winner", ".status.winner", "string", "Declared winner.", priority=1),
        AGE,
    ),
)
