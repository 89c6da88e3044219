"""Contracts shared by the runtime and the operator: configuration files and report schemas.

This module imports pydantic only (DESIGN §1): the operator imports it to render the runtime's and the router's
configuration and to parse what the data plane reports, without pulling scikit-learn or FastAPI into the control
plane. Every field has a description because the operator's CRD models reuse some of these classes and
`kubectl explain` shows the descriptions.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SHA256_PATTERN = r"^[0-9a-f]{64}$"


class _Model(BaseModel):
    """Base: unknown keys are an error, so a typo in a config file is caught where it is read."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --------------------------------------------------------------------------------------------------------------
# Model signature (the same shape as ModelVersion.spec.signature)
# --------------------------------------------------------------------------------------------------------------


class FeatureType(str, Enum):
    number = "number"
    integer = "integer"
    categorical = "categorical"
    boolean = "boolean"


class InputSpec(_Model):
    name: str = Field(description="Feature name; also the key of a named-feature request object.", min_length=1)
    type: FeatureType = Field(
        default=FeatureType.number,
        description="Value type: number (finite float), integer, categorical (one of `allowed`) or boolean.",
    )
    min: float | None = Field(default=None, description="Smallest accepted value (numbers and integers).")
    max: float | None = Field(default=None, description="Largest accepted value (numbers and integers).")
    allowed: list[str | int | float | bool] | None = Field(
        default=None, description="Accepted values of a categorical feature; any other value is refused."
    )
    required: bool = Field(
        default=True, description="Whether a request must carry this feature. A missing optional feature is NaN."
    )


class OutputKind(str, Enum):
    class_ = "class"
    probability = "probability"
    regression = "regression"


class OutputSpec(_Model):
    kind: OutputKind = Field(description="What the model returns: a class label, class probabilities, or a number.")
    classes: list[str | int | float | bool] | None = Field(
        default=None, description="Class labels in the model's order (classifiers)."
    )


class Signature(_Model):
    inputs: list[InputSpec] = Field(description="Input features, in the column order the model expects.")
    output: OutputSpec | None = Field(default=None, description="What the model returns.")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.inputs]


# --------------------------------------------------------------------------------------------------------------
# Runtime configuration (`mlsteward serve --config FILE`), rendered by the operator into a ConfigMap
# --------------------------------------------------------------------------------------------------------------


class ArtifactFormat(str, Enum):
    skops = "skops"
    onnx = "onnx"
    joblib = "joblib"
    pickle = "pickle"


class ArtifactRef(_Model):
    uri: str = Field(description="Where the artifact is: a path, file://, http(s):// or s3:// URI.", min_length=1)
    sha256: str | None = Field(
        default=None, description="Hex sha256 of the artifact bytes, checked before anything is deserialized.",
        pattern=SHA256_PATTERN,
    )
    format: ArtifactFormat = Field(default=ArtifactFormat.skops, description="Serialization format of the artifact.")


class Golden(_Model):
    inputs: list[list[Any]] = Field(description="Rows replayed at start-up before the pod reports ready.")
    outputs: list[Any] | None = Field(
        default=None, description="Expected predictions for `inputs`; when set, a mismatch keeps the pod unready."
    )


class BatchingConfig(_Model):
    enabled: bool = Field(default=True, description="Merge concurrent requests into one model call.")
    max_batch_size: int = Field(
        default=1024, ge=1, le=100_000,
        description="Most rows in one model call; a request of this many rows or more is a call of its own.")
    max_wait_ms: float = Field(default=1.0, ge=0, le=1000, description="Longest a request waits for a batch to fill.")
    max_queue: int = Field(
        default=2048, ge=1, description="Most requests waiting; past it a request gets 503 with Retry-After."
    )


class DriftWindowConfig(_Model):
    size: int = Field(default=2048, ge=16, le=1_000_000, description="Reservoir size per feature.")
    seed: int | None = Field(default=None, description="Seed of the reservoir's random choices (tests).")


class LimitsConfig(_Model):
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    max_rows: int = Field(default=10_000, ge=1, description="Most rows in one request.")


class RuntimeConfig(_Model):
    """The JSON file read by `mlsteward serve --config`."""

    name: str = Field(description="Model name used in URLs (/v2/models/{name}).", min_length=1)
    version: str = Field(default="0.0.0", description="Version reported in x-model-version and metrics.")
    artifact: ArtifactRef = Field(description="The model artifact.")
    allow_unverified: bool = Field(
        default=False, description="Allow joblib/pickle without a sha256 (never set this in production)."
    )
    allow_version_skew: bool = Field(
        default=False,
        description="Load a model saved by a scikit-learn of another major.minor than the installed one "
        "(ModelVersion spec.framework.allowVersionSkew).",
    )
    signature: Signature | None = Field(
        default=None, description="Input and output schema; inferred from the model when absent."
    )
    golden: Golden | None = Field(default=None, description="Readiness check input; generated when absent.")
    batching: BatchingConfig = Field(default_factory=BatchingConfig, description="Adaptive micro-batching.")
    drift_window: DriftWindowConfig = Field(default_factory=DriftWindowConfig, description="Input sample for drift.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request size limits.")
    pii_fields: list[str] = Field(
        default_factory=list, description="Feature names redacted in logs and left out of the drift window."
    )
    prediction_log: str | None = Field(
        default=None, description="Path of a JSONL prediction log, written off the request path."
    )
    feedback_capacity: int = Field(
        default=100_000, ge=1, description="Most recent predictions kept to join feedback to."
    )
    stats_window_s: float = Field(default=60.0, gt=0, description="Sliding window of /v1/stats, in seconds.")


# --------------------------------------------------------------------------------------------------------------
# Router configuration (`mlsteward route --config FILE`)
# --------------------------------------------------------------------------------------------------------------


class Backend(_Model):
    # At most a Kubernetes object name's length: the version travels inside signed request ids (router.ids).
    version: str = Field(description="ModelVersion served by this backend.", min_length=1, max_length=253)
    url: str = Field(description="Base URL of the predictor Service, e.g. http://md-v1:8080.", min_length=1)
    weight: int = Field(default=0, ge=0, le=100, description="Percent of traffic sent to this backend.")


class StickyConfig(_Model):
    header: str | None = Field(default=None, description="Request header whose hash picks the arm.")
    body_key: str | None = Field(default=None, description="Top-level JSON body key whose hash picks the arm.")


class ShadowConfig(_Model):
    version: str = Field(description="Version that receives mirrored traffic; its answers are never returned.")
    url: str = Field(description="Base URL of the shadow backend.")
    percent: int = Field(default=100, ge=0, le=100, description="Percent of requests mirrored.")
    kind: Literal["classification", "regression"] | None = Field(
        default=None,
        description="Output kind of the shadow version (its signature's): how its answers are compared with the "
        "served ones (equal classes; absolute difference for regression) and labelled pairs scored (correct or "
        "not; absolute error for regression). Unset: classification.",
    )


class CacheConfig(_Model):
    max_entries: int = Field(ge=1, description="Most cached predictions.")
    max_bytes: int = Field(ge=1, description="Most bytes of cached keys and answers together.")
    ttl_s: float = Field(gt=0, description="Seconds a cached prediction stays valid.")


class JwtConfig(_Model):
    jwks_file: str | None = Field(
        default=None, min_length=1,
        description="File holding the JSON Web Key Set (RFC 7517) the tokens are verified with; re-read when it "
        "changes.",
    )
    secret_name: str | None = Field(
        default=None, min_length=1, max_length=253,
        description="Secret (in the router's namespace) whose key `secret_key` holds the JWKS; watched through the "
        "Kubernetes API by a router started with `--config-map`, so a rotation applies within seconds.",
    )
    secret_key: str = Field(default="jwks", min_length=1, description="Key of `secret_name` holding the JWKS.")
    issuer: str = Field(min_length=1, description="Required `iss` claim, compared exactly.")
    audiences: list[str] = Field(min_length=1, description="Accepted `aud` values; the token must name one.")
    algorithms: list[Literal["RS256", "ES256"]] = Field(
        default_factory=lambda: ["RS256", "ES256"], min_length=1,
        description="Accepted signature algorithms; never taken from the token.",
    )
    leeway_s: float = Field(default=30.0, ge=0, le=300, description="Clock skew allowed on exp, nbf and iat.")
    client_claim: str = Field(
        default="sub", min_length=1, description="Claim naming the client (the rate limit's key with by: token).",
    )

    @model_validator(mode="after")
    def _some_keys(self) -> JwtConfig:
        if self.jwks_file is None and self.secret_name is None:
            raise ValueError("jwt needs jwks_file, secret_name or both: without keys every JWT would be refused")
        return self


class AuthConfig(_Model):
    tokens_file: str | None = Field(
        default=None,
        description="File with the accepted bearer tokens or API keys, one per line (blank lines and lines starting "
        "with # are skipped); re-read when it changes, so a rotated Secret applies without a restart.",
        min_length=1,
    )
    header: str = Field(
        default="x-api-key", min_length=1,
        description="Header that may carry an API key instead of `Authorization: Bearer <token>`.",
    )
    secret_name: str | None = Field(
        default=None, min_length=1, max_length=253,
        description="Secret (in the router's namespace) whose key `secret_key` holds the tokens. A router started "
        "with `--config-map` watches it through the Kubernetes API, so a rotation applies within seconds; until "
        "the Secret is first read, and without `--config-map`, `tokens_file` is used.",
    )
    secret_key: str = Field(default="tokens", min_length=1, description="Key of `secret_name` holding the tokens.")
    jwt: JwtConfig | None = Field(
        default=None, description="Also accept bearer JWTs signed by a key of this JWKS (tokens and JWTs together).",
    )

    @model_validator(mode="after")
    def _some_credential(self) -> AuthConfig:
        if self.tokens_file is None and self.jwt is None:
            raise ValueError("auth needs tokens_file, jwt or both")
        return self


class RateLimitConfig(_Model):
    requests_per_second: float = Field(gt=0, description="Sustained requests per second allowed to each key.")
    burst: int = Field(ge=1, description="Requests a key may send at once before the sustained rate applies.")
    by: Literal["token", "source"] = Field(
        default="source",
        description="What a bucket belongs to: the client's token (needs auth) or its source address.",
    )


class RouterStrategy(str, Enum):
    weighted = "Weighted"
    epsilon_greedy = "EpsilonGreedy"
    thompson = "ThompsonSampling"


class ArmOutcomes(_Model):
    """Sufficient statistics of one arm's outcomes: enough for means, variances and the bandits' posteriors."""

    n: int = Field(default=0, ge=0, description="Number of outcomes.")
    sum: float = Field(default=0.0, description="Sum of the outcomes.")
    sumsq: float = Field(default=0.0, ge=0, description="Sum of the squared outcomes.")
    m2: float | None = Field(
        default=None, ge=0, description="Sum of squared deviations from the mean, the variance's exact form for a "
        "metric with a large mean (mlsteward_runtime.stats.moments); unset: derived from sum and sumsq.",
    )


class RouterConfig(_Model):
    """The JSON file read by `mlsteward route --config`."""

    deployment: str = Field(description="ModelDeployment name.", min_length=1)
    model: str = Field(description="Model name used in URLs.", min_length=1)
    backends: list[Backend] = Field(description="Live versions and their traffic weights.", min_length=1)
    stable_version: str | None = Field(default=None, description="Version used as fallback on backend errors.")
    fallback: bool = Field(default=True, description="Retry a failed request on the stable version.")
    timeout_s: float = Field(default=10.0, gt=0, description="Backend request timeout.")
    strategy: RouterStrategy = Field(default=RouterStrategy.weighted, description="Arm assignment strategy.")
    epsilon: float = Field(default=0.1, ge=0, le=1, description="Exploration rate of EpsilonGreedy.")
    sticky: StickyConfig | None = Field(default=None, description="Sticky assignment key.")
    shadow: ShadowConfig | None = Field(default=None, description="Mirror a share of traffic to a candidate.")
    cache: CacheConfig | None = Field(
        default=None, description="Cache answers keyed by the chosen version and the canonical input rows.",
    )
    experiment: str | None = Field(default=None, description="Experiment name whose arms these backends are.")
    metric_kind: Literal["binary", "continuous"] | None = Field(
        default=None,
        description="Outcome kind the bandits model: binary (Beta posterior) or continuous (Normal posterior). "
        "Unset: binary while every outcome seen is 0 or 1.",
    )
    goal: Literal["maximize", "minimize"] = Field(
        default="maximize", description="Whether the bandits favour arms with high or low mean outcome."
    )
    outcome_priors: dict[str, ArmOutcomes] = Field(
        default_factory=dict,
        description="Outcome statistics per version merged across all router replicas (from Experiment status). "
        "The bandits add the outcomes this replica records after loading the config, so bandit state survives "
        "restarts and is shared between replicas.",
    )
    auth: AuthConfig | None = Field(
        default=None, description="Require a token on every endpoint but health, readiness, metrics and stats."
    )
    rate_limit: RateLimitConfig | None = Field(
        default=None, description="Token-bucket limit per client on the endpoints that auth protects."
    )
    generation: str | None = Field(
        default=None, max_length=128,
        description="Opaque id of this config (the operator sets a hash of its routing part); every replica reports "
        "the generation it serves in GET /v1/router/stats.",
    )


# --------------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------------


class ValidationResult(_Model):
    """What `mlsteward validate` writes to the Job's termination message (kept under 4 KiB)."""

    phase: Literal["Ready", "Failed"]
    reason: str = Field(description="CamelCase reason: Validated, DigestMismatch, SignatureMismatch, ...")
    message: str = ""
    sha256: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    signature: Signature | None = None
    golden: Golden | None = None
    reference: ArtifactRef | None = Field(default=None, description="Reference profile written when missing.")


class ProfileRef(_Model):
    """A reference profile written by a trainer."""

    uri: str = Field(description="Where the reference profile was written.")
    sha256: str = Field(description="Hex sha256 of the profile JSON.", pattern=SHA256_PATTERN)


class TrainResult(_Model):
    """What `mlsteward train` writes to the termination message of a retraining Job (kept under 4 KiB), and what a
    user's training image must write there to be a drop-in: the operator registers a ModelVersion from it."""

    phase: Literal["Succeeded", "Failed"]
    reason: str = Field(description="Trained, or why not: FetchFailed, InvalidData, TrainingFailed, LoadFailed, "
                                    "WriteFailed.")
    message: str = ""
    artifact: ArtifactRef | None = None
    reference: ProfileRef | None = Field(default=None, description="The training data's profile (uri, sha256).")
    metrics: dict[str, float] = Field(default_factory=dict, description="Holdout metrics.")
    signature: Signature | None = None
    framework: dict[str, str] = Field(default_factory=dict)
    estimator: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    data: str | None = None
    target: str | None = None
    rows: dict[str, int] = Field(default_factory=dict, description="Rows used to train and to test.")


class Quantiles(_Model):
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None


class VersionStats(_Model):
    """Per-version (per-arm) counters, summed across replicas by the operator."""

    version: str
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    latency_ms: Quantiles = Field(default_factory=Quantiles)
    latency_buckets: dict[str, int] = Field(
        default_factory=dict, description="Cumulative histogram counts by upper bound (ms), mergeable."
    )
    # Sum and sum of squares of the latencies (ms) of the requests counted in latency_buckets.
    latency_sum_ms: float = 0.0
    latency_sumsq_ms: float = 0.0
    # Sufficient statistics of the outcomes joined through feedback: n, sum, sum of squares.
    outcomes: int = 0
    outcome_sum: float = 0.0
    outcome_sumsq: float = 0.0
    # The numerically stable form of the same (mlsteward_runtime.stats.moments): mean and sum of squared
    # deviations, merged with Chan's formula. The sums above stay for readers that predate these; the variance
    # must come from M2, since sumsq - sum^2/n loses it for a metric with a large mean. None: not reported.
    outcome_mean: float | None = None
    outcome_m2: float | None = Field(default=None, ge=0)
    latency_mean_ms: float | None = None
    latency_m2_ms: float | None = Field(default=None, ge=0)


class ShadowStats(_Model):
    """How a shadow version did on mirrored traffic, at one router replica. Every field is a count or a sum, so
    the operator merges replicas by adding (moments with Chan's formula)."""

    version: str
    kind: Literal["classification", "regression"] | None = None
    mirrored: int = Field(default=0, ge=0, description="Mirrored requests the shadow answered (ok or error).")
    errors: int = Field(default=0, ge=0, description="Mirrored requests that failed (non-2xx, timeout, refused).")
    dropped: int = Field(default=0, ge=0, description="Mirrors not sent: the in-flight bounds were full.")
    compared: int = Field(default=0, ge=0, description="Answered mirrors compared with the served answer.")
    agreed: int = Field(default=0, ge=0, description="Of `compared`, those whose every row matched.")
    rows_compared: int = Field(default=0, ge=0)
    rows_agreed: int = Field(default=0, ge=0)
    # Regression: per compared row, |served - shadow| (moments: n, mean, M2).
    diff_n: int = Field(default=0, ge=0)
    diff_mean: float = 0.0
    diff_m2: float = Field(default=0.0, ge=0)
    latency_ms: Quantiles = Field(default_factory=Quantiles)
    latency_buckets: dict[str, int] = Field(
        default_factory=dict, description="Cumulative histogram of the shadow's latency by upper bound (ms).",
    )
    # Labelled pairs: feedback with a label for a mirrored request, scored against both answers at the replica
    # that mirrored it. Classification: the four cells of the paired table (per request: every row right or not).
    pairs: int = Field(default=0, ge=0, description="Mirrored requests whose label scored both answers.")
    both_correct: int = Field(default=0, ge=0)
    served_only: int = Field(default=0, ge=0, description="Pairs where only the served answer was right.")
    shadow_only: int = Field(default=0, ge=0, description="Pairs where only the shadow's answer was right.")
    neither: int = Field(default=0, ge=0)
    # Regression: per labelled row, |shadow error| - |served error| (positive: the shadow is worse).
    error_diff_n: int = Field(default=0, ge=0)
    error_diff_mean: float = 0.0
    error_diff_m2: float = Field(default=0.0, ge=0)


class RouterStats(_Model):
    """`GET /v1/router/stats`."""

    deployment: str
    replica: str
    started: float = Field(description="Unix time this router process started; a change means a restart.")
    generation: str | None = Field(default=None, description="`generation` of the RouterConfig this replica serves.")
    config_loaded_at: float | None = Field(
        default=None, description="Unix time the served config was loaded (from its file or its ConfigMap)."
    )
    versions: dict[str, VersionStats]
    shadow: dict[str, ShadowStats] | None = Field(
        default=None, description="Per shadow version, how it did on the requests mirrored to it (summed by the "
        "operator across replicas).",
    )


class RuntimeStats(_Model):
    """`GET /v1/stats` of a predictor."""

    name: str
    version: str
    window_s: float
    count: int
    errors: int = Field(description="Server errors (5xx) in the window; the error rate gates and alerts read.")
    error_rate: float = Field(description="errors / count: server errors only, never the clients' 4xx.")
    client_errors: int = Field(default=0, description="Requests refused as the client's fault (4xx).")
    throughput_rps: float
    latency_ms: Quantiles
    feedback: int = 0
    accuracy: float | None = None
    mean_reward: float | None = None


class FeatureWindow(_Model):
    type: FeatureType
    values: list[Any] = Field(description="Uniform sample (reservoir) of the values seen.")


class DriftWindow(_Model):
    """`GET /v1/drift/window`: a uniform sample of recent inputs. `seen` lets the operator pool replicas fairly."""

    name: str
    version: str
    replica: str
    seen: int = Field(description="Rows observed since start; each kept row stands for seen/len(values) rows.")
    features: dict[str, FeatureWindow]


# --------------------------------------------------------------------------------------------------------------
# Reference profile (`mlsteward profile`), the baseline of drift tests
# --------------------------------------------------------------------------------------------------------------


class FeatureProfile(_Model):
    type: FeatureType
    count: int
    missing: int = 0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    quantile_edges: list[float] | None = Field(default=None, description="Bin edges at reference deciles (PSI).")
    bin_fractions: list[float] | None = Field(default=None, description="Reference share in each bin.")
    categories: dict[str, int] | None = Field(default=None, description="Counts of each category.")
    sample: list[Any] = Field(default_factory=list, description="Bounded uniform sample for KS and Wasserstein.")


class Profile(_Model):
    schema_version: Literal[1] = 1
    rows: int
    features: dict[str, FeatureProfile]
