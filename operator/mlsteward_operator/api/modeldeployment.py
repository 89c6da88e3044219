"""ModelDeployment (`md`): a model served behind a stable Service (DESIGN §2).

`spec.version` names the ModelVersion the user wants served. The operator serves it once it is Ready, through a
rollout strategy, and keeps serving the current version whenever the wanted one is missing, not Ready or of another
model. What is actually served, and every decision taken on the way, is status; the operator never writes spec.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from mlsteward_operator.api.common import (
    AGE,
    DNS_LABEL,
    DURATION,
    MAX_NAME,
    MAX_DECISIONS,
    MAX_HEALTH_SAMPLES,
    MAX_MESSAGE,
    MAX_SHORT,
    ApiModel,
    KindInfo,
    Notify,
    ObjectMeta,
    ObjectName,
    Percent,
    PrinterColumn,
    SECRET_KEY_RE,
    SecretKeyRef,
    ShortText,
    StatusBase,
    cel,
    cel_string,
    checked,
    defaulted,
    matching,
    parse_duration,
    ranged,
    ready_column,
    rules,
)
from mlsteward_operator.api.fields import duration_type
from mlsteward_operator.api.shadow import Shadow, ShadowStatus

# A resource quantity (`500m`, `1Gi`, `2`): Kubernetes accepts an integer or a string. The pattern is
# apimachinery's Quantity without a sign, and integers have a minimum: a Pod refuses negative requests and limits.
# Schema keywords rather than CEL: CEL sizes an int-or-string value at the whole request, so any rule on it is
# estimated far over the cost budget.
QUANTITY_RE = (r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|"
               r"(\.[0-9]+))))?$")
QUANTITY_MESSAGE = "resource quantities are such as 500m, 1Gi or 2, and not negative"
# What a container's resources may name: the standard resources, hugepages and extended resources (a domain-prefixed
# name such as nvidia.com/gpu). Anything else makes the API server refuse the predictor Deployment later.
RESOURCE_NAMES = ("cpu", "memory", "ephemeral-storage")
RESOURCES_MESSAGE = (
    "resources requests and limits name cpu, memory, ephemeral-storage, hugepages-<size> or an extended resource "
    "such as nvidia.com/gpu"
)


def _quantity_ok(q: int | str) -> int | str:
    if (q < 0) if isinstance(q, int) else re.fullmatch(QUANTITY_RE, q) is None:
        raise ValueError(QUANTITY_MESSAGE)
    return q


def _names_ok(value: dict[str, int | str]) -> bool:
    return all(k in RESOURCE_NAMES or k.startswith("hugepages-") or "/" in k for k in value)


Quantity = Annotated[
    int | Annotated[str, Field(max_length=64)],
    Field(json_schema_extra={"pattern": QUANTITY_RE, "minimum": 0}),
    AfterValidator(_quantity_ok),
]
_NAMES_LIST = ", ".join(f"'{n}'" for n in RESOURCE_NAMES)
ResourceMap = Annotated[
    dict[Annotated[str, Field(max_length=MAX_SHORT)], Quantity],
    *checked(
        f"self.all(k, k in [{_NAMES_LIST}] || k.startsWith('hugepages-') || k.contains('/'))",
        RESOURCES_MESSAGE, _names_ok, max_length=16,
    ),
]


class Resources(ApiModel):
    """Compute resources of one container, as in a Pod spec."""

    requests: ResourceMap | None = Field(
        default=None, description="Minimum resources, e.g. {cpu: 100m, memory: 256Mi}."
    )
    limits: ResourceMap | None = Field(default=None, description="Maximum resources, e.g. {memory: 512Mi}.")


class Autoscaling(ApiModel):
    """Horizontal autoscaling of each predictor Deployment (an autoscaling/v2 HorizontalPodAutoscaler)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel(
                "self.minReplicas <= self.maxReplicas",
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            )
        )
    }

    min_replicas: int = Field(default=1, ge=1, le=1000, description="Fewest predictor pods per version.")
    max_replicas: int = Field(ge=1, le=1000, description="Most predictor pods per version.")
    target_cpu_utilization: Annotated[int, Field(ge=1, le=100)] = Field(
        default=70,
        alias="targetCPUUtilization",
        description="Average CPU utilisation (percent of the CPU request) the autoscaler aims for.",
    )

    @model_validator(mode="after")
    def _min_le_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError("autoscaling.minReplicas must not exceed autoscaling.maxReplicas")
        return self


class RolloutStrategy(StrEnum):
    canary = "Canary"
    blue_green = "BlueGreen"
    immediate = "Immediate"


class Analysis(ApiModel):
    """Gates a canary step must pass, measured by the router on the new version's traffic during the step."""

    max_error_rate: Annotated[float, *ranged(0, 1, "analysis.maxErrorRate must be between 0 and 1")] | None = Field(
        default=None, description="Highest tolerated share of failed requests (0..1), e.g. 0.01."
    )
    max_p99_latency_ms: Annotated[
        float, *ranged(0, None, "analysis.maxP99LatencyMs must be greater than 0", lo_open=True)
    ] | None = Field(default=None, alias="maxP99LatencyMs", description="Highest tolerated p99 latency in ms.")
    min_requests: int = Field(
        default=0,
        ge=0,
        description="Requests the new version must have served in a step before the gates are judged; "
        "fewer holds the step.",
    )


def _steps_ascend(steps: list[int]) -> list[int]:
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError("rollout.steps must strictly ascend")
    if steps and steps[-1] != 100:
        raise ValueError("rollout.steps must end at 100")
    return steps


Steps = Annotated[
    list[Annotated[int, Field(ge=1, le=100)]],
    Field(
        max_length=20,
        json_schema_extra=rules(
            cel(
                "self.isSorted() && self.all(x, self.exists_one(y, y == x))",
                "rollout.steps must strictly ascend, e.g. [10, 50, 100]",
            ),
            cel("size(self) == 0 || self[size(self) - 1] == 100", "rollout.steps must end at 100"),
        ),
    ),
]


# spec.rollout.progressDeadline: its default, as a Deployment's progressDeadlineSeconds (600), and its lower bound
# (below it, pulling an image or loading a model would read as stuck).
DEFAULT_PROGRESS_DEADLINE = "10m"
MIN_PROGRESS_DEADLINE = "30s"


class Rollout(ApiModel):
    """How a new spec.version replaces the served one."""

    strategy: RolloutStrategy = Field(
        default=RolloutStrategy.immediate,
        description=(
            "Immediate: switch all traffic once the new version's pods are ready. Canary: shift traffic in `steps`, "
            "judging `analysis` after each. BlueGreen: warm the new version fully, check it, then switch at once."
        ),
    )
    steps: Steps = Field(
        default=[10, 50, 100],
        description="Canary traffic percentages of the new version, strictly ascending and ending at 100.",
    )
    step_interval: duration_type("rollout.stepInterval") = Field(
        default="1m", description="How long each canary step lasts before it is judged, e.g. 30s, 5m."
    )
    analysis: Analysis | None = Field(default=None, description="Gates judged at the end of each step.")
    progress_deadline: duration_type("rollout.progressDeadline", minimum=MIN_PROGRESS_DEADLINE) = Field(
        default=DEFAULT_PROGRESS_DEADLINE,
        description="How long a rollout may wait for the wanted version's predictor pods to become ready without "
        "progress (a pod becoming ready or going away, a new step, a new spec) before status says Stalled=True "
        "with reason ProgressDeadlineExceeded, like a Deployment's progressDeadlineSeconds, e.g. 10m. The rollout "
        "goes on: progress after the deadline makes it Reconciling again.",
    )

    @model_validator(mode="after")
    def _check_steps(self) -> Rollout:
        _steps_ascend(self.steps)
        return self


class RollbackPolicy(ApiModel):
    """When the operator goes back to stableVersion on its own (recorded in status.decisions)."""

    on_failed_analysis: bool = Field(default=True, description="Roll back when a canary step fails its gates.")
    on_drift: bool = Field(default=False, description="Roll back when a DriftMonitor with action Rollback fires.")


class RateLimitKey(StrEnum):
    token = "token"
    source = "source"


class RateLimit(ApiModel):
    """A token bucket per client: `burst` requests at once, refilled at `requestsPerSecond`; past it, 429."""

    requests_per_second: Annotated[
        float, *ranged(0, 100_000, "rateLimit.requestsPerSecond must be above 0 and at most 100000, e.g. 10", lo_open=True)
    ] = Field(description="Sustained requests per second allowed to each client.")
    burst: int | None = Field(
        default=None, ge=1, le=1_000_000,
        description="Requests a client may send at once; default: requestsPerSecond rounded up.",
    )
    by: RateLimitKey | None = Field(
        default=None,
        description="What a client is: its token (needs secretRef or jwt; a static token is one client, a JWT's "
        "client is its jwt.clientClaim, so a refreshed JWT keeps its bucket) or its source address. Default: token "
        "with secretRef or jwt, else source.",
    )


class JwtAlgorithm(StrEnum):
    rs256 = "RS256"
    es256 = "ES256"


MAX_LEEWAY_S = 300.0
_LEEWAY_MESSAGE = "auth.jwt.leeway must be a duration such as 30s or 1m, from 0s to 5m"
JwtLeeway = Annotated[str, *checked(
    f"self.matches({cel_string(DURATION)}) && !self.matches('[0-9]{{7,}}') && duration(self) <= duration('5m')",
    _LEEWAY_MESSAGE,
    lambda v: re.fullmatch(DURATION, v) is not None and re.search("[0-9]{7,}", v) is None
    and parse_duration(v) <= MAX_LEEWAY_S,
    max_length=32,
)]


class JwksSecretRef(ApiModel):
    """The key of a Secret (in the deployment's namespace) holding a JSON Web Key Set."""

    name: ObjectName = Field(description="Secret name, in the same namespace.")
    # SecretKeyRef's key, with a default.
    key: Annotated[str, *checked(
        f"self.matches({cel_string(SECRET_KEY_RE)}) && self != '.' && self != '..'",
        "auth.jwt.jwksSecretRef.key is letters, digits, '-', '_' and '.', not '.' or '..'",
        lambda v: re.fullmatch(SECRET_KEY_RE, v) is not None and v not in (".", ".."),
        min_length=1, max_length=MAX_NAME,
    )] = Field(default="jwks", description="Key within the Secret holding the JWKS (RFC 7517 JSON).")


class Jwt(ApiModel):
    """Bearer JWTs accepted beside (or instead of) the static tokens, verified by the router against a JWKS.

    A request whose `Authorization: Bearer` value is not a listed token and is shaped like a JWT (three
    dot-separated parts) is accepted only if its header's alg is one of `algorithms` (never taken from the token:
    `none` and HS256 are refused), its signature verifies under the JWKS key with its `kid` (without a kid, any key
    of the alg's type), `exp`, `iss` and `aud` are present, `exp`/`nbf`/`iat` hold within `leeway`, `iss` equals
    `issuer` exactly and `aud` names one of `audiences`. Otherwise the answer is 401 with
    `WWW-Authenticate: Bearer error="invalid_token"` and a JSON body naming the rule.
    """

    jwks_secret_ref: JwksSecretRef = Field(
        description="Secret key holding the JWKS. Mounted into the router pods and watched through the API, so a "
        "rotated key set applies within seconds without a restart; a JWKS that does not parse (or has no RSA "
        "2048+ or EC P-256 signing key) keeps the keys in use; a deleted Secret accepts no JWT. Symmetric (oct) "
        "keys are never used.",
    )
    issuer: Annotated[str, Field(min_length=1, max_length=MAX_SHORT * 2)] = Field(
        description="The `iss` every token must carry, compared exactly (not as a prefix or substring).")
    audiences: Annotated[list[Annotated[str, Field(min_length=1, max_length=MAX_SHORT)]], Field(
        min_length=1, max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"})] = Field(
        description="Accepted `aud` values: a token's aud (a string or a list) must name at least one.")
    algorithms: Annotated[list[JwtAlgorithm], Field(
        min_length=1, max_length=2, json_schema_extra={"x-kubernetes-list-type": "set"})] = Field(
        default=[JwtAlgorithm.rs256, JwtAlgorithm.es256],
        description="Accepted signature algorithms (RS256: RSA keys of 2048 bits or more; ES256: EC P-256 keys). "
        "Never taken from the token: a token whose header names another alg (none, HS256) gets 401.",
    )
    leeway: JwtLeeway = Field(
        default="30s", description="Clock skew allowed on exp, nbf and iat, from 0s to 5m.")
    client_claim: Annotated[str, *matching(
        r"^[!-~]{1,128}$", "auth.jwt.clientClaim must be a claim name: 1 to 128 printable characters, no spaces",
        min_length=1, max_length=128,
    )] = Field(
        default="sub",
        description="Claim naming the client (a non-empty string or integer, else 401): the rate limit's key "
        "(`jwt:<value>`) with rateLimit.by token, and whose feedback a prediction accepts.",
    )


class Auth(ApiModel):
    """Access control of the deployment's endpoint: static tokens from a Secret, JWTs verified against a JWKS,
    and an optional rate limit."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel("has(self.secretRef) || has(self.jwt) || has(self.rateLimit)",
                "auth needs secretRef, jwt or rateLimit"),
            cel(
                "!has(self.rateLimit) || !has(self.rateLimit.by) || self.rateLimit.by != 'token' "
                "|| has(self.secretRef) || has(self.jwt)",
                "auth.rateLimit.by token needs auth.secretRef or auth.jwt; without either, limit by source",
            ),
        )
    }

    secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the accepted bearer tokens or API keys, one per line. Mounted into the "
        "router pods as a file and re-read when it changes, so rotating the Secret needs no restart.",
    )
    header: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9-]+$")] = Field(
        default="x-api-key", description="Header that may carry a token instead of Authorization: Bearer.",
    )
    jwt: Jwt | None = Field(
        default=None,
        description="Also accept bearer JWTs verified against a JWKS; with secretRef, a listed token or a valid JWT "
        "passes. An `Authorization: Bearer` value that is not a listed token and has three dot-separated parts is "
        "accepted only if its alg is one of `algorithms`, its signature verifies under the JWKS key with its kid "
        "(without a kid, any key for its alg), it carries exp, iss and aud, exp/nbf/iat hold within `leeway`, iss "
        "equals `issuer` and aud names one of `audiences`; otherwise 401 with WWW-Authenticate: Bearer "
        "error=\"invalid_token\" and a JSON body naming the rule.",
    )
    rate_limit: RateLimit | None = Field(default=None, description="Requests allowed per client.")

    @model_validator(mode="after")
    def _check(self) -> Auth:
        if self.secret_ref is None and self.jwt is None and self.rate_limit is None:
            raise ValueError("auth needs secretRef, jwt or rateLimit")
        if self.rate_limit is not None and self.rate_limit.by == RateLimitKey.token and self.secret_ref is None \
                and self.jwt is None:
            raise ValueError("auth.rateLimit.by token needs auth.secretRef or auth.jwt; without either, limit by "
                             "source")
        return self


class Cache(ApiModel):
    """A prediction cache in each router pod (the behaviour is described on ModelDeploymentSpec.cache)."""

    max_entries: int = Field(
        default=10000, ge=1, le=10_000_000,
        description="Most cached predictions per router pod; past it (or past maxBytes) the least recently used "
        "prediction is dropped first.",
    )
    max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, le=8 * 1024 * 1024 * 1024,
        description="Most memory, in bytes, the cache of one router pod may hold (1 KiB to 8 GiB; default 64 MiB): "
        "each entry counts its 32-byte key, the response body, its content-type and model-version header values "
        "and a fixed per-entry overhead of 512 bytes. Past it the least recently used prediction is dropped first; "
        "a single answer larger than this is never stored. The router pod's memory limit must leave room for it "
        "(spec.router.resources).",
    )
    ttl: duration_type("cache.ttl") = Field(
        default="5m",
        description="How long a cached prediction is answered from memory after the predictor computed it (e.g. "
        "30s, 5m, 1h); checked when the entry is read, so an expired one is never returned.",
    )


class RouterSpec(ApiModel):
    """The router pods in front of the predictors (the Service `<name>` selects them)."""

    replicas: int = Field(default=1, ge=1, le=100, description="Router pods.")
    resources: Resources | None = Field(default=None, description="Router container resources.")


class HealthMetric(StrEnum):
    """A field of status.health.samples that anomaly detection can watch."""

    request_rate = "requestRate"
    error_rate = "errorRate"
    p99_ms = "p99Ms"
    accuracy = "accuracy"


class AnomalyMethod(StrEnum):
    z_score = "ZScore"
    iqr = "IQR"


# Effective anomaly thresholds when spec.alerts.anomaly.threshold is unset. For IQR, 2.2 rather than Tukey's 1.5:
# the fences at 1.5 label about 0.7% of Gaussian samples, and since consecutive samples are judged against nearly
# the same history they breach together, so about one steady noisy series in ten raised an alert within a hundred
# samples (tests/unit/operator/test_health.py); 2.2 (Hoaglin and Iglewicz, 1987) sits near the z-score's 3 sigma.
DEFAULT_ANOMALY_THRESHOLD = {AnomalyMethod.z_score: 3.0, AnomalyMethod.iqr: 2.2}
DEFAULT_MIN_FEEDBACK = 30


class Anomaly(ApiModel):
    """Anomaly detection: the latest sample of each metric judged against the samples before it."""

    method: AnomalyMethod = Field(
        default=AnomalyMethod.z_score,
        description="ZScore: |x - mean| / std (sample std) of the previous samples above `threshold`. IQR: x outside "
        "[Q1 - k*IQR, Q3 + k*IQR] of the previous samples, k being `threshold` (Tukey's fences).",
    )
    threshold: Annotated[
        float, *ranged(0, 100, "alerts.anomaly.threshold must be above 0 and at most 100", lo_open=True)
    ] | None = Field(
        default=None,
        description="ZScore: the z-score beyond which a sample is anomalous (default 3). IQR: the fence "
        "multiplier k (default 2.2; Tukey's 1.5 raises too many alerts on steady noisy traffic).",
    )
    min_history: int = Field(
        default=20, ge=5, le=MAX_HEALTH_SAMPLES,
        description="Previous samples with the metric needed before a sample gets a verdict; fewer: no verdict.",
    )
    metrics: Annotated[list[HealthMetric], Field(
        min_length=1, max_length=4, json_schema_extra={"x-kubernetes-list-type": "set"})] = Field(
        default=[HealthMetric.error_rate, HealthMetric.p99_ms],
        description="Sample fields watched: requestRate, errorRate, p99Ms, accuracy.",
    )

    @property
    def effective_threshold(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_ANOMALY_THRESHOLD[self.method]


MIN_FEEDBACK_MESSAGE = "alerts.minFeedback applies to alerts.minAccuracy: set minAccuracy too"
MIN_HISTORY_MESSAGE = "alerts.anomaly.minHistory must be less than alerts.history (the samples kept)"


class Alerts(ApiModel):
    """Alerts on the served version's traffic, judged on every sample of status.health."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel("!has(self.minFeedback) || has(self.minAccuracy)", MIN_FEEDBACK_MESSAGE),
            cel("!has(self.anomaly) || self.anomaly.minHistory < self.history", MIN_HISTORY_MESSAGE),
        )
    }

    interval: duration_type("alerts.interval") = Field(
        default="1m", description="Time between two samples of the predictors, e.g. 30s.")
    history: int = Field(
        default=60, ge=10, le=MAX_HEALTH_SAMPLES,
        description=f"Samples kept in status.health.samples (10..{MAX_HEALTH_SAMPLES}); anomaly detection looks back "
        "this far.",
    )
    consecutive: int = Field(default=2, ge=1, le=100, description="Samples in breach in a row before an alert fires.")
    min_requests: int = Field(
        default=20, ge=0, le=10_000_000,
        description="Requests in the predictors' window before errorRate and p99 get a verdict; fewer: no verdict "
        "(the run of breaches neither grows nor breaks).",
    )
    max_error_rate: Annotated[float, *ranged(0, 1, "alerts.maxErrorRate must be between 0 and 1")] | None = Field(
        default=None, description="Fire ErrorRate when errors / requests is above this (0..1), e.g. 0.05.")
    max_p99_latency_ms: Annotated[
        float, *ranged(0, None, "alerts.maxP99LatencyMs must be greater than 0", lo_open=True)
    ] | None = Field(default=None, alias="maxP99LatencyMs", description="Fire P99Latency when p99 (ms) is above this.")
    min_accuracy: Annotated[float, *ranged(0, 1, "alerts.minAccuracy must be between 0 and 1")] | None = Field(
        default=None, description="Fire Accuracy when the rolling accuracy of labelled requests is below this (0..1).")
    min_feedback: int | None = Field(
        default=None, ge=1, le=10_000_000,
        description=f"Labelled requests in the window before accuracy gets a verdict (default {DEFAULT_MIN_FEEDBACK}); "
        "only with minAccuracy.",
    )
    anomaly: Anomaly | None = Field(default=None, description="Anomaly detection on the samples (z-score or IQR).")
    notify: Notify | None = Field(
        default=None, description="Webhook that receives every alert that fires or resolves (JSON POST).")

    @model_validator(mode="after")
    def _check(self) -> Alerts:
        if self.min_feedback is not None and self.min_accuracy is None:
            raise ValueError(MIN_FEEDBACK_MESSAGE)
        if self.anomaly is not None and self.anomaly.min_history >= self.history:
            raise ValueError(MIN_HISTORY_MESSAGE)
        return self

    @property
    def effective_min_feedback(self) -> int:
        return self.min_feedback if self.min_feedback is not None else DEFAULT_MIN_FEEDBACK


class ModelDeploymentSpec(ApiModel):
    """A model served behind the stable Service `<name>`."""

    version: ObjectName = Field(description="Name of the ModelVersion to serve; served once it is Ready.")
    model: Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)] | None = Field(
        default=None,
        description=(
            "Model this deployment serves. A spec.version of another model is refused (Degraded, ModelMismatch). "
            "When unset, the model of the first version served is kept."
        ),
    )
    replicas: int | None = Field(
        default=None, ge=0, le=1000, description="Predictor pods per version (default 1); exclusive with autoscaling."
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Autoscale the predictors; exclusive with replicas."
    )
    resources: Resources | None = Field(default=None, description="Predictor container resources.")
    rollout: Rollout = Field(
        default_factory=Rollout,
        json_schema_extra=defaulted(Rollout),
        description="How a new version replaces the served one.",
    )
    shadow: Shadow | None = Field(
        default=None,
        description="Mirror a share of the prediction requests to another version, without delaying the answer: "
        "its answers are never returned, they are compared with the served ones and, with labels sent to "
        "/v1/feedback, scored against them (status.shadow); with promote, a shadow that passes the gate is "
        "rolled out through spec.rollout.",
    )
    fallback: bool = Field(
        default=True, description="Answer from the stable version when the active one errors."
    )
    rollback: RollbackPolicy = Field(
        default_factory=RollbackPolicy,
        json_schema_extra=defaulted(RollbackPolicy),
        description="Automatic rollback policy.",
    )
    auth: Auth | None = Field(
        default=None, description="Require tokens read from a Secret or JWTs verified against a JWKS, and/or limit "
        "each client's request rate."
    )
    cache: Cache | None = Field(
        default=None,
        description="A prediction cache in each router pod (off when absent): a repeated request is answered "
        "from memory, without a call to a predictor. The key is the version chosen for the request (by the traffic "
        "split, so a canary split never mixes versions and a new version never gets another's answers), the path, "
        "and the request's JSON body in canonical form (key order and whitespace do not matter). Only successful "
        "(2xx) predictions are stored; a body that is not JSON, or is over 1 MiB, is never cached. Requests with "
        "`Cache-Control: no-cache` skip the lookup, with `no-store` skip storing. A cached answer carries "
        "`x-cache: hit` (a call to a predictor `x-cache: miss`, or `bypass` when the lookup was skipped), the "
        "version in `x-model-version` and a request id of its own, so feedback is attributed to the version as "
        "usual; it is not mirrored to the shadow version and does not count in the version's request statistics "
        "(a canary's gates judge the calls the version really served). While an Experiment runs on this deployment "
        "the cache is off: every assignment must be a real call. Each router replica has its own cache; changing "
        "these settings empties it.",
    )
    router: RouterSpec = Field(
        default_factory=RouterSpec, json_schema_extra=defaulted(RouterSpec), description="Router pods.")
    alerts: Alerts | None = Field(
        default=None,
        description="Thresholds and anomaly detection on the served version's traffic (status.health); alerts are "
        "the Alerting condition, Events and an optional webhook. Without it the predictors are still sampled every "
        "minute (60 kept), with no alerts.",
    )

    @model_validator(mode="after")
    def _replicas_xor_autoscaling(self) -> ModelDeploymentSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set either replicas or autoscaling, not both")
        return self


# --------------------------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------------------------


class TrafficEntry(ApiModel):
    """One row of the router's weight table."""

    version: ShortText = Field(description="ModelVersion name.")
    weight: Percent = Field(description="Percent of requests routed to it.")


class RolloutPhase(StrEnum):
    stable = "Stable"
    waiting = "Waiting"
    progressing = "Progressing"
    paused = "Paused"
    rolled_back = "RolledBack"


class ReplicaBaseline(ApiModel):
    """One router replica's counters of the target version when the current step began.

    A step's analysis uses what each replica counted since then. A replica is identified by its name and the time
    its process started, so a restarted router (whose counters start again at zero) has no baseline.
    """

    replica: ShortText = Field(description="Router replica (pod) name.")
    started: float = Field(description="Unix time the router process started.")
    requests: int = Field(default=0, ge=0, description="Requests sent to the target version so far.")
    errors: int = Field(default=0, ge=0, description="Of which failed (connect error, timeout, 5xx).")
    latency_buckets: Annotated[dict[Annotated[str, Field(max_length=32)], int], Field(max_length=32)] = Field(
        default_factory=dict, description="Cumulative latency histogram counts by upper bound in ms."
    )


class RolloutStatus(ApiModel):
    """Where a rollout stands."""

    phase: RolloutPhase = Field(
        description="Stable (nothing to do), Waiting (for the wanted version), Progressing, Paused (a failed "
        "analysis with rollback.onFailedAnalysis off) or RolledBack (targetVersion failed its analysis and is not "
        "retried until spec.version changes)."
    )
    step: int | None = Field(default=None, ge=0, description="Index of the current canary step in spec.rollout.steps.")
    target_version: ShortText | None = Field(default=None, description="Version being rolled out.")
    step_started_at: dt.datetime | None = Field(default=None, description="When the current step began.")
    baseline: Annotated[list[ReplicaBaseline], Field(max_length=100)] | None = Field(
        default=None,
        description="Canary and BlueGreen: each router replica's counters of the target version when the step "
        "began, so that the step is judged on the requests served during it.",
    )


class ProgressStatus(ApiModel):
    """The clock of a rollout or a wait for its version: since when nothing has moved. It runs while the deployment
    works towards `version` (a rollout, a ModelVersion still missing or validating) and is absent once it is
    settled."""

    version: ShortText = Field(description="The version worked towards (spec.version, or an override's).")
    generation: int | None = Field(default=None, ge=0, description="metadata.generation when the clock started.")
    ready_replicas: int = Field(default=0, ge=0, description="Ready pods of that version's predictor at the last "
                                "progress.")
    last_progress_time: dt.datetime = Field(
        description="The last progress: a new version or spec, a pod of the version becoming ready or going away, "
        "a new rollout phase or step.")
    deadline: dt.datetime | None = Field(
        default=None,
        description="When the deployment turns Stalled if nothing progresses before: the end of the grace period "
        "for a missing ModelVersion (WaitingForVersion), or of spec.rollout.progressDeadline while the version's "
        "pods are not ready. Absent when no such clock runs.")


class RouterStatus(ApiModel):
    """Which router configuration the router replicas serve (they read it through the API, without a restart)."""

    generation: ShortText | None = Field(
        default=None, description="Generation of the router configuration last applied (its ConfigMap).")
    traffic: ShortText | None = Field(default=None, description="That configuration's weight table on one line.")
    replicas: int = Field(default=0, ge=0, description="Router replicas wanted.")
    current: int = Field(
        default=0, ge=0,
        description="Ready router replicas that report serving `generation`. A canary step starts, and an "
        "Experiment starts, only once every replica does.")


class DecisionKind(StrEnum):
    rollout = "Rollout"
    promote = "Promote"
    rollback = "Rollback"
    hold = "Hold"


class Decision(ApiModel):
    """One entry of the decision log: what the operator decided on its own, on which numbers, and how Git catches up."""

    time: dt.datetime = Field(description="When it was decided.")
    kind: DecisionKind = Field(description="Rollout, Promote, Rollback or Hold.")
    from_: ShortText | None = Field(default=None, alias="from", description="Version served before.")
    to: ShortText | None = Field(default=None, description="Version served after (for Hold: the version kept).")
    reason: ShortText = Field(description="CamelCase reason, e.g. VersionNotReady, AnalysisFailed.")
    message: Annotated[str, Field(max_length=MAX_MESSAGE)] = Field(default="", description="What happened, in words.")
    numbers: dict[str, float] = Field(default_factory=dict, description="Measurements the decision was based on.")
    thresholds: dict[str, float] = Field(default_factory=dict, description="Thresholds they were compared with.")
    git_change: Annotated[str, Field(max_length=1024)] | None = Field(
        default=None, description="The one-line spec change that brings Git in line with what is served."
    )


class ServingOverride(ApiModel):
    """A version served instead of spec.version, on a request from an Experiment (Promote) or a DriftMonitor
    (Rollback). It holds while spec.version is still `specVersion`: a commit that changes spec.version ends it (and
    setting spec.version to `version` makes Git say what is served)."""

    version: ShortText = Field(description="The version served instead of spec.version.")
    spec_version: ShortText = Field(description="spec.version when the request was applied.")
    kind: ShortText = Field(description="Promote or Rollback.")
    source: ShortText = Field(description="Who asked, e.g. Experiment/iris-ab or DriftMonitor/iris-drift.")
    time: dt.datetime = Field(description="Time of the request (each request is applied once).")
    ended_at: dt.datetime | None = Field(
        default=None, description="When a change of spec.version ended it (kept as the record of the last request).")


class HealthSample(ApiModel):
    """One sample of the served version's predictors, pooled over their ready pods (their `GET /v1/stats`)."""

    time: dt.datetime = Field(description="When the predictors were asked.")
    version: ShortText = Field(description="ModelVersion sampled (the served version).")
    window_seconds: float = Field(ge=0, description="Sliding window the predictors count over (their stats_window_s).")
    replicas: int = Field(default=0, ge=0, description="Predictor pods that answered.")
    requests: int = Field(default=0, ge=0, description="Requests in the window, summed over the pods.")
    errors: int = Field(default=0, ge=0, description="Of which failed (4xx excluded: 5xx and model errors).")
    request_rate: float = Field(default=0.0, ge=0, description="Requests per second, summed over the pods.")
    error_rate: float | None = Field(default=None, ge=0, le=1, description="errors / requests; none without requests.")
    p50_ms: float | None = Field(default=None, ge=0, description="Median latency (ms), the pods' weighted by requests.")
    p95_ms: float | None = Field(default=None, ge=0, description="95th percentile latency (ms), the slowest pod's.")
    p99_ms: float | None = Field(default=None, ge=0, description="99th percentile latency (ms), the slowest pod's.")
    feedback: int = Field(default=0, ge=0, description="Labels or rewards joined in the window.")
    accuracy: float | None = Field(default=None, ge=0, le=1, description="Rolling accuracy of the labelled requests.")
    mean_reward: float | None = Field(default=None, description="Rolling mean reward.")


class AlertRule(StrEnum):
    error_rate = "ErrorRate"
    p99_latency = "P99Latency"
    accuracy = "Accuracy"
    anomaly = "Anomaly"


class ActiveAlert(ApiModel):
    """An alert that fires now."""

    rule: AlertRule = Field(description="ErrorRate, P99Latency, Accuracy (thresholds) or Anomaly (z-score or IQR).")
    metric: ShortText = Field(description="Sample field judged, e.g. errorRate, p99Ms, accuracy, requestRate.")
    reason: ShortText = Field(description="CamelCase reason, e.g. ErrorRateAbove, AccuracyBelow, AnomalyDetected.")
    value: float = Field(description="The latest value of the metric.")
    threshold: float | None = Field(default=None, description="The threshold or bound it crossed.")
    since: dt.datetime = Field(description="First sample of the breach that fired it.")
    message: Annotated[str, Field(max_length=MAX_MESSAGE)] = Field(default="", description="What is wrong, in words.")


class HealthStatus(ApiModel):
    """Recent samples of the served version's traffic and the alerts judged on them."""

    last_sample_time: dt.datetime | None = Field(default=None, description="When the predictors were last sampled.")
    samples: Annotated[list[HealthSample], Field(max_length=MAX_HEALTH_SAMPLES)] = Field(
        default_factory=list, description=f"The last samples (at most {MAX_HEALTH_SAMPLES}), oldest first."
    )
    breaches: dict[str, int] = Field(
        default_factory=dict, description="Samples in breach in a row, per rule and metric (e.g. ErrorRate/errorRate)."
    )
    alerts: Annotated[list[ActiveAlert], Field(max_length=32)] = Field(
        default_factory=list, description="Alerts firing now."
    )


class ModelDeploymentStatus(StatusBase):
    """What is served and why."""

    model: ShortText | None = Field(default=None, description="Model served (spec.model or the first version's).")
    serving_version: ShortText | None = Field(default=None, description="Version receiving most traffic, once ready.")
    stable_version: ShortText | None = Field(
        default=None, description="Last version that completed a rollout; the target of fallback and rollback."
    )
    traffic: list[TrafficEntry] = Field(default_factory=list, description="The router's weight table.")
    traffic_summary: ShortText | None = Field(
        default=None, description="The weight table on one line, e.g. `iris-v1=90,iris-v2=10` (kubectl get)."
    )
    rollout: RolloutStatus | None = Field(default=None, description="Rollout phase and step.")
    url: ShortText | None = Field(default=None, description="In-cluster URL of the Service `<name>`.")
    previous_version: ShortText | None = Field(
        default=None, description="The stable version before stableVersion: where a Rollback goes once a rollout is done.")
    override: ServingOverride | None = Field(
        default=None, description="A version served instead of spec.version (promotion or rollback), while it holds.")
    experiment: ShortText | None = Field(default=None, description="Experiment currently steering the traffic.")
    router: RouterStatus | None = Field(default=None, description="The configuration the router replicas serve.")
    decisions: Annotated[list[Decision], Field(max_length=MAX_DECISIONS)] = Field(
        default_factory=list, description=f"The last {MAX_DECISIONS} decisions, oldest first."
    )
    health: HealthStatus | None = Field(
        default=None, description="Samples of the served version's traffic and the alerts on them (spec.alerts)."
    )
    shadow: ShadowStatus | None = Field(
        default=None, description="How spec.shadow's version does on mirrored traffic, and the promotion gate.")
    progress: ProgressStatus | None = Field(
        default=None, description="Since when the rollout or the wait for spec.version has made no progress, and "
        "when it turns Stalled if none comes (spec.rollout.progressDeadline, the grace for a missing version).")


class ModelDeployment(ApiModel):
    """A ModelDeployment object as read from the API server."""

    api_version: str = Field(default="mlsteward.io/v1alpha1", description="API version.")
    kind: str = Field(default="ModelDeployment", description="Kind.")
    metadata: ObjectMeta = Field(description="Object metadata.")
    spec: ModelDeploymentSpec = Field(description="Desired state.")
    status: ModelDeploymentStatus = Field(default_factory=ModelDeploymentStatus, description="Observed state.")


INFO = KindInfo(
    kind="ModelDeployment",
    plural="modeldeployments",
    singular="modeldeployment",
    short_names=("md",),
    description=(
        "ModelDeployment serves a model behind the stable Service <name>: predictor pods per live version, a router "
        "that splits traffic, and rollouts that never write your spec (what is served is in status)."
    ),
    spec=ModelDeploymentSpec,
    status=ModelDeploymentStatus,
    printer_columns=(
        PrinterColumn("Serving", ".status.servingVersion", "string", "Version receiving most traffic."),
        PrinterColumn("Traffic", ".status.trafficSummary", "string", "Weight table."),
        ready_column(),
        PrinterColumn("URL", ".status.url", "string", "In-cluster URL."),
        PrinterColumn("Wanted", ".spec.version", "string", "spec.version.", priority=1),
        PrinterColumn("Shadow", ".status.shadow.agreement", "number",
                      "Share of mirrored requests the shadow version answered as the served one did.", priority=1),
        PrinterColumn("Alerting", '.status.conditions[?(@.type=="Alerting")].status', "string",
                      "Whether a metric alert (spec.alerts) fires.", priority=1),
        AGE,
    ),
    root_rules=(
        cel(
            "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 63",
            "a ModelDeployment name becomes a Service name: at most 63 lowercase letters, digits and '-', "
            "starting with a letter",
        ),
    ),
    spec_rules=(
        cel("!(has(self.replicas) && has(self.autoscaling))", "set either replicas or autoscaling, not both"),
    ),
)
