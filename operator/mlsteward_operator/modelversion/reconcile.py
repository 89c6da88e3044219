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
from mlsteward_operator.kernel.status import parse_object
from mlsteward_operator.modelversion import decide, render, status


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
    started = decide.decide_job(job, existing)
    if started.create is not None:
        await client.create(dict(started.create))  # None on 409: a previous run of this reconcile created it
        existing = await client.get("batch/v1", "Job", ns, job_name)
        await _post(client, body, started.events)
    job_pods = await client.list("v1", "Pod", ns, labels={"job-name": job_name}) if existing else []
    verdict = decide.decide(mv, job_name, observe_job(existing, job_pods), now)
    await _post(client, body, verdict.events)
    return verdict.status.to_k8s() if verdict.status is not None else None


async def _post(client: kube.Client, body: Mapping[str, Any], events: tuple[decide.Event, ...]) -> None:
    for e in events:
        await client.event(dict(body), reason=e.reason, message=e.message, type_=e.type_)
