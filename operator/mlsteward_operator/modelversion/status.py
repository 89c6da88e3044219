"""A ModelVersion's status (STYLE §5, §6): the validation Job (and its pod's termination message) mapped to phase
Pending | Validating | Ready | Failed with a reason (DigestMismatch, SignatureMismatch, BelowThreshold,
FetchFailed, LoadFailed, ...). Times are passed in (`now`), never read here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from mlsteward_runtime.contracts import ArtifactRef, ValidationResult
from pydantic import ValidationError

from mlsteward_operator.api.common import Condition, ConditionType
from mlsteward_operator.api.modelversion import ModelVersion, ModelVersionStatus, VersionPhase, VersionReason
from mlsteward_operator.kernel.conditions import second, set_condition, set_kstatus
from mlsteward_operator.kernel.pods import JobState


def parse_validation_result(message: str | None) -> ValidationResult | None:
    """The ValidationResult in a termination message, or None when there is none or it is not one."""
    if not message:
        return None
    try:
        return ValidationResult.model_validate_json(message.strip())
    except ValidationError:
        return None


def version_is_terminal(mv: ModelVersion, job_name: str) -> bool:
    """Whether `mv` already has a verdict from the Job `job_name` (then no Job needs to exist or be re-created)."""
    return mv.status.phase in (VersionPhase.ready, VersionPhase.failed) and mv.status.validation_job == job_name


def compute_version_status(mv: ModelVersion, job_name: str, job: JobState, now: dt.datetime) -> ModelVersionStatus:
    """The whole status of `mv` from its validation Job `job_name` (observed as `job`).

    A verdict already recorded for this Job is kept as it is, even after the Job is gone: the spec is immutable,
    so the verdict cannot change.
    """
    prev = mv.status
    generation = mv.metadata.generation
    if version_is_terminal(mv, job_name):
        # Stalled also reaches a verdict recorded before that condition existed.
        failed = prev.phase == VersionPhase.failed
        stalled = (prev.reason or "Failed", prev.message or "") if failed else None
        conds = set_kstatus(prev.conditions, reconciling=None, stalled=stalled, generation=generation, now=now)
        return prev.model_copy(update={"observed_generation": generation, "conditions": conds})

    base: dict[str, Any] = {"observed_generation": generation, "validation_job": job_name}
    result = parse_validation_result(job.termination_message)
    if result is not None and (job.succeeded or job.failed or not job.active):
        ready = result.phase == "Ready"
        status = ModelVersionStatus(
            **base,
            phase=VersionPhase.ready if ready else VersionPhase.failed,
            reason=result.reason or (VersionReason.validated if ready else VersionReason.job_failed),
            message=result.message or ("validated" if ready else "validation failed"),
            metrics=result.metrics,
            sha256=result.sha256,
            signature=result.signature,
            golden=result.golden,
            reference=result.reference if isinstance(result.reference, ArtifactRef) else None,
            validated_at=second(now),
        )
    elif job.failed:
        status = ModelVersionStatus(
            **base,
            phase=VersionPhase.failed,
            reason=VersionReason.job_failed,
            message=f"validation Job {job_name} failed without a result: "
            f"{job.failure_reason or 'unknown'}: {job.failure_message or ''}".rstrip(": "),
            validated_at=second(now),
        )
    elif job.succeeded:
        status = ModelVersionStatus(
            **base,
            phase=VersionPhase.failed,
            reason=VersionReason.invalid_result,
            message=f"validation Job {job_name} succeeded but left no readable result in its termination message",
            validated_at=second(now),
        )
    elif job.exists:
        status = ModelVersionStatus(
            **base, phase=VersionPhase.validating, reason=VersionReason.validating,
            message=f"validation Job {job_name} is running",
        )
    else:
        status = ModelVersionStatus(
            **base, phase=VersionPhase.pending, reason=VersionReason.created,
            message=f"validation Job {job_name} not created yet",
        )
    return _with_version_conditions(status, prev.conditions, generation, now)


def _with_version_conditions(
    status: ModelVersionStatus, previous: Sequence[Condition], generation: int | None, now: dt.datetime
) -> ModelVersionStatus:
    phase, reason, message = status.phase, status.reason or status.phase.value, status.message or ""
    conds = list(previous)
    conds = set_condition(conds, ConditionType.ready, phase == VersionPhase.ready, reason, message,
                          generation=generation, now=now)
    in_progress = phase in (VersionPhase.pending, VersionPhase.validating)
    conds = set_condition(conds, ConditionType.progressing, in_progress, reason, message,
                          generation=generation, now=now)
    conds = set_condition(conds, ConditionType.degraded, phase == VersionPhase.failed, reason, message,
                          generation=generation, now=now)
    # The spec is immutable: a Failed version never becomes Ready by itself (kstatus: Stalled, so Failed).
    conds = set_kstatus(conds, reconciling=(reason, message) if in_progress else None,
                        stalled=(reason, message) if phase == VersionPhase.failed else None,
                        generation=generation, now=now)
    return status.model_copy(update={"conditions": conds})
