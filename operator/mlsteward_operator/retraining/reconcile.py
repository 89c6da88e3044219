"""The retraining workflow, run (observe, then act): the Job a DriftMonitor's Retrain decision recorded in
status.retrain, then the ModelVersion registered from its result, then what spec.onRetrained asks for.

`Retraining.follow` moves an active retraining on by at most one step per call, level-based: the Job is created if
it was never created (a 409 means it exists); on its success the TrainResult is read from the pod's termination
message and the new ModelVersion registered (deterministic name; a 409 means it exists); once that version is
validated, Register, Experiment or Promote. Each step is appended to status.retrain.steps and posted as an Event.
The DriftMonitor reconcile calls it with the monitor's status; the new status goes back in the same write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from mlsteward_operator import kube
from mlsteward_operator.api.common import API_VERSION, ServingRequest
from mlsteward_operator.api.driftmonitor import (
    DriftMonitor,
    DriftMonitorStatus,
    OnRetrained,
    RetrainPhase,
    RetrainStatus,
)
from mlsteward_operator.api.modeldeployment import ModelDeployment
from mlsteward_operator.api.modelversion import ModelVersion, VersionPhase
from mlsteward_operator.kernel import pods
from mlsteward_operator.retraining import decide, render

# What the API server answers an object it will never accept (schema, CEL rules, a forbidden field).
_REFUSED = (400, 422)

# A step: its name (the Event's reason), its message, whether it is a warning, and the status.retrain fields it sets.
Step = Callable[..., Awaitable[None]]


class Retraining:
    """The retraining workflow of the operator, one instance owned by the composition root (no module state)."""

    async def follow(self, dm: DriftMonitor, body: Mapping[str, Any], client: kube.Client,
                     now: dt.datetime) -> DriftMonitorStatus:
        """`dm.status` with status.retrain moved on by one step (see the module docstring)."""
        return await _follow_retrain(dm, dict(body), client, now)


async def _event(client: kube.Client, body: Mapping[str, Any], reason: str, message: str, *, warning: bool) -> None:
    await client.event(dict(body), reason=reason, message=message, type_="Warning" if warning else "Normal")


async def _follow_retrain(dm: DriftMonitor, body: dict[str, Any], client: kube.Client,
                          now: dt.datetime) -> DriftMonitorStatus:
    st = dm.status
    r = st.retrain
    assert r is not None
    ns = dm.metadata.namespace

    async def step(name: str, message: str, *, warning: bool = False, **update: Any) -> None:
        nonlocal r
        assert r is not None
        r = decide.add_step(r, name, message, now, **update)
        await _event(client, body, name, message, warning=warning)

    if r.phase == RetrainPhase.running:
        job = await client.get("batch/v1", "Job", ns, r.job)
        if job is None:
            if any(s.step == "JobCreated" for s in r.steps):
                await step("JobFailed", f"Job {r.job} was deleted before it finished; not run again",
                           warning=True, phase=RetrainPhase.failed)
            elif dm.spec.retrain is None:
                await step("JobFailed", "spec.retrain was removed before the Job was created", warning=True,
                           phase=RetrainPhase.failed)
            else:
                await client.create(render.render_retrain_job(dm, r))  # None on 409: it exists already
                await step("JobCreated", f"Created retraining Job {r.job} (parent {r.parent})")
        else:
            job_pods = await client.list("v1", "Pod", ns, labels={"job-name": r.job})
            js = pods.observe_job(job, job_pods)
            if js.succeeded or js.failed:
                await _job_done(dm, client, r, js, step)
    elif r.phase == RetrainPhase.validating and r.model_version:
        mv_obj = await client.get(API_VERSION, "ModelVersion", ns, r.model_version)
        if mv_obj is None:
            await step("VersionFailed", f"ModelVersion {r.model_version} was deleted before it was validated",
                       warning=True, phase=RetrainPhase.failed)
        else:
            mv = ModelVersion.model_validate(mv_obj)
            if mv.status.phase == VersionPhase.failed:
                await step("VersionFailed", f"ModelVersion {mv.metadata.name} failed validation: "
                           f"{mv.status.reason}: {mv.status.message or ''}", warning=True, phase=RetrainPhase.failed)
            elif mv.status.phase == VersionPhase.ready:
                await step("VersionReady", f"ModelVersion {mv.metadata.name} is validated: "
                           + ", ".join(f"{k}={v:.4g}" for k, v in sorted(mv.status.metrics.items())))
                request = await _on_retrained(dm, client, mv, r, step, now)
                if request is not None:
                    st = st.model_copy(update={"serving_request": request})
    return st.model_copy(update={"retrain": r})


async def _job_done(dm: DriftMonitor, client: kube.Client, r: RetrainStatus, js: pods.JobState, step: Step) -> None:
    result = render.parse_train_result(js.termination_message)
    if js.failed or result is None or result.phase != "Succeeded" or result.artifact is None \
            or result.artifact.sha256 is None:
        why = (f"{result.reason}: {result.message}" if result is not None and result.phase != "Succeeded" else
               "its termination message holds no TrainResult with an artifact and its sha256" if js.succeeded else
               f"{js.failure_reason or 'Failed'}: {js.failure_message or ''}")
        await step("JobFailed", f"Job {r.job} failed: {why}".rstrip(": "), warning=True, phase=RetrainPhase.failed)
        return
    ns = dm.metadata.namespace
    parent_obj = await client.get(API_VERSION, "ModelVersion", ns, r.parent) if r.parent else None
    if parent_obj is None:
        await step("JobFailed", f"Job {r.job} succeeded but its parent ModelVersion {r.parent} is gone; nothing "
                   "to register against", warning=True, phase=RetrainPhase.failed)
        return
    parent = ModelVersion.model_validate(parent_obj)
    await step("JobSucceeded", f"Job {r.job} succeeded: {result.message}")
    mv = render.render_retrained_version(parent, result, r, dm.metadata.name)
    name = mv["metadata"]["name"]
    try:
        created = await client.create(mv)
    except kube.ApiError as exc:
        if exc.status not in _REFUSED:
            raise  # the API server is unwell: the next pass tries again
        # Admission refused what the training image reported (an artifact location the fetcher cannot read, a
        # metric or signature no ModelVersion may carry): asking again would be refused again.
        await step("VersionRefused", f"Job {r.job} succeeded but the API server refused ModelVersion {name}: "
                   f"{exc.message}", warning=True, phase=RetrainPhase.failed)
        return
    await step("VersionRegistered", f"Registered ModelVersion {name} (version {mv['spec']['version']}, parent "
               f"{parent.metadata.name}){'' if created is not None else '; it existed already'}",
               phase=RetrainPhase.validating, model_version=name)


async def _on_retrained(dm: DriftMonitor, client: kube.Client, mv: ModelVersion, r: RetrainStatus, step: Step,
                        now: dt.datetime) -> ServingRequest | None:
    """spec.onRetrained for the validated `mv`; returns a ServingRequest for Promote, else None."""
    ns = dm.metadata.namespace
    how = dm.spec.on_retrained
    if how == OnRetrained.register:
        await step("Registered", f"ModelVersion {mv.metadata.name} is registered and validated (onRetrained "
                   "Register): serve it by setting spec.version in Git", phase=RetrainPhase.succeeded)
        return None
    md_obj = await client.get(API_VERSION, "ModelDeployment", ns, dm.spec.deployment)
    serving = ModelDeployment.model_validate(md_obj).status.serving_version if md_obj else None
    champion = serving or r.parent
    if how == OnRetrained.experiment:
        if not champion:
            await step("ExperimentSkipped", "no champion version to compare with", warning=True,
                       phase=RetrainPhase.failed)
            return None
        exp = render.render_experiment(dm, champion, mv.metadata.name)
        try:
            created = await client.create(exp)
        except kube.ApiError as exc:
            if exc.status not in _REFUSED:
                raise
            await step("ExperimentRefused", f"the API server refused Experiment {exp['metadata']['name']}: "
                       f"{exc.message}", warning=True, phase=RetrainPhase.failed)
            return None
        await step("ExperimentCreated", f"Created Experiment {exp['metadata']['name']}: {champion} against "
                   f"{mv.metadata.name}, 50/50, onSuccess Promote{'' if created is not None else ' (it existed)'}",
                   phase=RetrainPhase.succeeded, experiment=exp["metadata"]["name"])
        return None
    champ_obj = await client.get(API_VERSION, "ModelVersion", ns, champion) if champion else None
    champ_metrics = ModelVersion.model_validate(champ_obj).status.metrics if champ_obj else {}
    better, why = decide.compare_metrics(mv.status.metrics, champ_metrics)
    if not better or not serving:
        await step("PromotionSkipped", f"{mv.metadata.name} is not promoted over {champion}: "
                   f"{why if serving else 'the ModelDeployment serves no version'}", phase=RetrainPhase.succeeded)
        return None
    await step("PromotionRequested", f"Asked ModelDeployment {dm.spec.deployment} to serve {mv.metadata.name} "
               f"instead of {serving}: {why}", phase=RetrainPhase.succeeded)
    return render.promote_request(mv.metadata.name, serving, why, mv.status.metrics, champ_metrics, now)
