"""What a ModelVersion reconcile does, decided from one observation (pure): the validation Job to create when it
does not exist, the status to write when it changed, and the Events that go with both."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlsteward_operator.api.modelversion import ModelVersion, ModelVersionStatus
from mlsteward_operator.kernel.pods import JobState
from mlsteward_operator.kernel.status import status_changed
from mlsteward_operator.modelversion.status import compute_version_status


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    type_: str = "Normal"


@dataclass(frozen=True)
class VersionDecision:
    create: Mapping[str, Any] | None = None  # the validation Job, when it does not exist yet
    status: ModelVersionStatus | None = None  # None: nothing to write
    events: tuple[Event, ...] = ()


def decide_job(job: Mapping[str, Any], existing: Mapping[str, Any] | None) -> VersionDecision:
    """Create the Job `job` when none of its name exists. Create, not apply: a Job's template is immutable, and a
    Job whose name is derived from the spec is never changed, only created once."""
    if existing is not None:
        return VersionDecision()
    name = job["metadata"]["name"]
    return VersionDecision(create=job, events=(Event("ValidationStarted", f"Created validation Job {name}"),))


def decide(mv: ModelVersion, job_name: str, job: JobState, now: dt.datetime) -> VersionDecision:
    """The status the Job's state gives `mv`, and an Event when it reaches its verdict."""
    new = compute_version_status(mv, job_name, job, now)
    if not status_changed(mv.status, new):
        return VersionDecision()
    events: tuple[Event, ...] = ()
    if new.phase != mv.status.phase and new.phase.value in ("Ready", "Failed"):
        events = (Event(new.reason or new.phase.value,
                        f"ModelVersion {mv.metadata.name} is {new.phase.value}: {new.message or ''}".strip(": "),
                        "Normal" if new.phase.value == "Ready" else "Warning"),)
    return VersionDecision(status=new, events=events)
