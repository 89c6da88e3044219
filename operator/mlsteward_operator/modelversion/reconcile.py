"""The ModelVersion reconcile: runs the validation Job once and turns its result into status.

It takes the object as kopf hands it (a plain mapping), a kube client and the operator settings, and returns the
new status (a dict ready for a status patch) or None when nothing changed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from mlsteward_operator import kube
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel.pods import observe_job
from mlsteward_operator.kernel.status import parse_object, status_changed
from mlsteward_operator.modelversion import render, status


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def reconcile_version(body: Mapping[str, Any], client: kube.Client, cfg: OperatorConfig,
                            now: dt.datetime | None = None) -> dict[str, Any] | None:
    """Runs the validation Job of a ModelVersion (once) and turns its result into status."""
    now = now or _now()
    mv: ModelVersion = parse_object(ModelVersion, body)
    job = render.render_validation_job(mv, cfg)
    job_name = job["metadata"]["name"]
    ns = mv.metadata.namespace
    if status.version_is_terminal(mv, job_name):
        return None

    existing = await client.get("batch/v1", "Job", ns, job_name)
    if existing is None:
        # Create, not apply: a Job's template is immutable, and a Job whose name is derived from the spec is
        # never changed, only created once. A 409 means a previous run of this reconcile created it.
        await client.create(job)
        existing = await client.get("batch/v1", "Job", ns, job_name)
        await client.event(body, reason="ValidationStarted", message=f"Created validation Job {job_name}")
    pods = await client.list("v1", "Pod", ns, labels={"job-name": job_name}) if existing else []
    new = status.compute_version_status(mv, job_name, observe_job(existing, pods), now)
    if not status_changed(mv.status, new):
        return None
    if new.phase != mv.status.phase and new.phase.value in ("Ready", "Failed"):
        await client.event(
            body, reason=new.reason or new.phase.value, type_="Normal" if new.phase.value == "Ready" else "Warning",
            message=f"ModelVersion {mv.metadata.name} is {new.phase.value}: {new.message or ''}".strip(": "),
        )
    return new.to_k8s()
