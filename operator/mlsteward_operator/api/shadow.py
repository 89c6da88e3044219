"""spec.shadow and status.shadow of a ModelDeployment: a version that receives a copy of the requests, how it does
on them, and the gate that promotes it (modeldeployment/shadow.py judges it)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated

from pydantic import Field, model_validator

from mlsteward_operator.api.common import ApiModel, ObjectName, Percent, ShortText, cel, ranged, rules


SHADOW_PROMOTE_MESSAGE = "shadow.promote needs minAgreement, notWorse: true or both"
DEFAULT_SHADOW_CONFIDENCE = 0.95


class ShadowPromote(ApiModel):
    """When the shadow version takes over: once enough mirrored requests (and labelled pairs) are counted, the gate
    passes when the agreement's Wilson lower bound reaches minAgreement and, with notWorse, the shadow is shown not
    worse than the served version by more than `margin`; it then becomes the served version through spec.rollout
    (status.override, a ShadowPassed decision naming the Git change). It fails when the agreement's upper bound is
    below minAgreement or, with notWorse, the shadow is significantly worse by more than `margin` (a ShadowFailed
    decision; nothing moves)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": rules(
            cel("has(self.minAgreement) || (has(self.notWorse) && self.notWorse)", SHADOW_PROMOTE_MESSAGE),
        )
    }

    min_requests: int = Field(
        default=100, ge=1, le=1_000_000_000,
        description="Mirrored requests compared with the served answer before the gate is judged.")
    min_pairs: int = Field(
        default=0, ge=0, le=1_000_000_000,
        description="Labelled pairs (mirrored requests whose label, sent to /v1/feedback, scored both answers) "
        "before the gate is judged.")
    min_agreement: Annotated[float, *ranged(0, 1, "shadow.promote.minAgreement must be between 0 and 1")] | None = \
        Field(default=None, description="Lowest share of compared requests on which the shadow must answer as the "
              "served version does (0..1), judged on the Wilson lower bound at `confidence`.")
    not_worse: bool = Field(
        default=False,
        description="Also require the shadow to be shown not worse on labelled pairs: classification, the Newcombe "
        "lower bound of shadow - served accuracy at least -margin; regression, the t upper bound of the mean of "
        "|shadow error| - |served error| at most margin.")
    margin: Annotated[float, *ranged(0, 1e12, "shadow.promote.margin must be at least 0")] = Field(
        default=0.0,
        description="Non-inferiority margin: accuracy points (0.01 = one point) for classification, error units for "
        "regression.")
    confidence: Annotated[float, *ranged(
        0, 1, "shadow.promote.confidence must be strictly between 0 and 1, e.g. 0.95", lo_open=True, hi_open=True,
    )] = Field(default=DEFAULT_SHADOW_CONFIDENCE, description="Confidence of the two-sided intervals judged.")

    @model_validator(mode="after")
    def _some_rule(self) -> ShadowPromote:
        if self.min_agreement is None and not self.not_worse:
            raise ValueError(SHADOW_PROMOTE_MESSAGE)
        return self


class Shadow(ApiModel):
    """Mirror a share of requests to another version; its answers are scored but never returned (status.shadow)."""

    version: ObjectName = Field(
        description="ModelVersion that receives the mirrored requests: Ready, of the served model, not the served "
        "version.")
    percent: Percent = Field(default=100, description="Percent of requests mirrored (0..100).")
    promote: ShadowPromote | None = Field(
        default=None, description="Promote the shadow version once it passes this gate; unset: only measure.")


class ShadowPhase(StrEnum):
    waiting = "Waiting"
    mirroring = "Mirroring"
    promoted = "Promoted"


class ShadowGateResult(StrEnum):
    pending = "Pending"
    passed = "Passed"
    failed = "Failed"


class ShadowGate(ApiModel):
    """The verdict of spec.shadow.promote on the numbers of status.shadow."""

    result: ShadowGateResult = Field(
        description="Pending (too few requests or pairs, or not yet conclusive), Passed (promoted) or Failed "
        "(kept as it is until spec changes).")
    message: Annotated[str, Field(max_length=4096)] = Field(default="", description="The numbers and thresholds.")
    since: dt.datetime = Field(description="When the gate reached this result.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the verdict was reached at (Failed holds until it "
        "changes).")


Fraction = Annotated[float, Field(ge=0, le=1)]


class ShadowStatus(ApiModel):
    """How spec.shadow's version does on mirrored traffic: the sum over the router replicas answering now.

    Each router replica counts from its own start, so a restarted replica's counts start again from zero and these
    numbers may go down; nothing here is carried over a restart. Intervals are two-sided at the gate's confidence
    (0.95 without spec.shadow.promote). Differences are shadow minus served."""

    version: ShortText = Field(description="The shadow ModelVersion (spec.shadow.version).")
    percent: int = Field(default=100, ge=0, le=100, description="Percent of requests mirrored.")
    phase: ShadowPhase = Field(
        description="Waiting (not mirrored: `message` says why), Mirroring, or Promoted (the shadow version is the "
        "one wanted now: no longer mirrored; the numbers are those it was promoted on).")
    message: Annotated[str, Field(max_length=4096)] = Field(default="", description="Why, in words.")
    kind: ShortText | None = Field(
        default=None, description="classification or regression: how answers are compared and pairs scored.")
    replicas: int = Field(default=0, ge=0, description="Router replicas whose counters are summed.")
    requests: int = Field(default=0, ge=0, description="Mirrored requests the shadow answered (ok or error).")
    errors: int = Field(default=0, ge=0, description="Of which failed (non-2xx, timeout, refused).")
    error_rate: Fraction | None = Field(default=None, description="errors / requests.")
    dropped: int = Field(default=0, ge=0, description="Mirrors not sent: a router's in-flight bounds were full.")
    p99_ms: float | None = Field(default=None, ge=0, description="The shadow's p99 latency (ms), from the summed "
                                 "histograms.")
    compared: int = Field(default=0, ge=0, description="Answered mirrors compared with the served answer.")
    agreement: Fraction | None = Field(default=None, description="Share of compared requests answered alike.")
    agreement_low: Fraction | None = Field(default=None, description="Wilson lower bound of the agreement.")
    agreement_high: Fraction | None = Field(default=None, description="Wilson upper bound of the agreement.")
    mean_abs_diff: float | None = Field(
        default=None, ge=0, description="Regression: mean |served - shadow| over compared rows.")
    pairs: int = Field(default=0, ge=0, description="Labelled pairs: mirrored requests whose label scored both.")
    served_accuracy: Fraction | None = Field(default=None, description="Classification: served accuracy on pairs.")
    shadow_accuracy: Fraction | None = Field(default=None, description="Classification: shadow accuracy on pairs.")
    accuracy_diff: float | None = Field(default=None, ge=-1, le=1, description="shadow - served accuracy.")
    accuracy_diff_low: float | None = Field(default=None, ge=-1, le=1, description="Newcombe lower bound.")
    accuracy_diff_high: float | None = Field(default=None, ge=-1, le=1, description="Newcombe upper bound.")
    mcnemar_p: Fraction | None = Field(default=None, description="McNemar's exact p of equal accuracy.")
    mean_error_diff: float | None = Field(
        default=None, description="Regression: mean of |shadow error| - |served error| over labelled rows.")
    mean_error_diff_low: float | None = Field(default=None, description="Paired t lower bound.")
    mean_error_diff_high: float | None = Field(default=None, description="Paired t upper bound.")
    p_value: Fraction | None = Field(default=None, description="Regression: paired t-test p of equal errors.")
    gate: ShadowGate | None = Field(default=None, description="spec.shadow.promote's verdict.")
    updated_at: dt.datetime | None = Field(default=None, description="When these numbers last changed.")
