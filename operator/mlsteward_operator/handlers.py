"""kopf handlers: thin adapters (STYLE §1). kopf watches; the controllers (controllers.py) reconcile.

Every handler here is an `on.event` handler: it hands the event to `controllers.Watches`, which keeps an in-memory
copy of each object and wakes the reconciles the change concerns; each kind's `Controller` runs its reconcile from
a work queue, when woken or at a deadline the reconcile set (STYLE §9). No kopf timer, daemon or changing handler
(create/update/resume) is registered, so kopf writes nothing on our objects: no progress or last-handled
annotations and no finalizer, and a steady object costs no request. After a restart the watches list every object,
and each one is reconciled once (what `on.resume` did).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from mlsteward_operator import controllers, kube
from mlsteward_operator.driftmonitor import reconcile as reconcile_drift
from mlsteward_operator.driftmonitor import schedule as drift_schedule
from mlsteward_operator.experiment import reconcile as reconcile_experiment
from mlsteward_operator.experiment import schedule as experiment_schedule
from mlsteward_operator.kernel import metrics
from mlsteward_operator.modeldeployment import reconcile as reconcile_deployment
from mlsteward_operator.modeldeployment import reconcile_health
from mlsteward_operator.modeldeployment import schedule as deployment_schedule
from mlsteward_operator.modelversion import reconcile as reconcile_version
from mlsteward_operator.modelversion import schedule as version_schedule
from mlsteward_operator.retention import reconcile as reconcile_retention
from mlsteward_operator.retraining.reconcile import Retraining
from mlsteward_operator.config import OperatorConfig

GROUP, VERSION = "mlsteward.io", "v1alpha1"
MANAGED = {"app.kubernetes.io/managed-by": "mlsteward"}



def kind_specs(drift: reconcile_drift.DriftMonitors,
               health: reconcile_health.Health) -> tuple[tuple[controllers.KindSpec, ...], controllers.KindSpec]:
    """Each kind's reconcile and schedule; the second is the health sampler, a second controller over the
    ModelDeployments and the only writer of status.health. `drift` and `health` hold state of their own (locks,
    background deliveries, the retraining workflow): one each per operator run, owned by the startup below."""
    kinds = (
        controllers.KindSpec("ModelVersion", reconcile_version.reconcile_version, version_schedule.next_look),
        controllers.KindSpec("ModelDeployment", reconcile_deployment.reconcile_deployment,
                             deployment_schedule.next_look, workers=8),
        controllers.KindSpec("Experiment", reconcile_experiment.reconcile_experiment, experiment_schedule.next_look),
        controllers.KindSpec("DriftMonitor", drift.reconcile, drift_schedule.next_look),
    )
    return kinds, controllers.KindSpec("ModelDeployment", health.reconcile, deployment_schedule.next_sample)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account in a cluster, else the kubeconfig that KUBECONFIG names at this moment."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    kube.load_config()
    memo.client = kube.ApiServerClient()
    memo.config = OperatorConfig()
    logger.info("Started mlsteward operator image=%s", memo.config.image)
    kinds, sampler = kind_specs(reconcile_drift.DriftMonitors(Retraining()), reconcile_health.Health())
    ctls = {k.kind: controllers.Controller(k, kube.Store(), memo.client, memo.config) for k in kinds}
    health = controllers.Controller(sampler, ctls["ModelDeployment"].store, memo.client, memo.config)
    memo.controllers = [*ctls.values(), health]
    memo.watches = controllers.Watches(ctls, health)
    for ctl in memo.controllers:
        ctl.queue.start()
    # Retention runs in its own task, only when the policy can delete something (main.run_async puts the watched
    # namespaces in the memo).
    memo.retention = reconcile_retention.Retention(memo.client, memo.config,
                                                   namespaces=memo.get("watch_namespaces") or ())
    if memo.retention.enabled:
        memo.retention_task = asyncio.create_task(memo.retention.loop(), name="mlsteward-retention")
        logger.info("Started retention keepLast=%d models=%s dryRun=%s", memo.config.retention_keep_last,
                    memo.config.retention_models, memo.config.retention_dry_run)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for ctl in memo.get("controllers") or ():
        await ctl.queue.stop()
    task = memo.get("retention_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@kopf.on.event(GROUP, VERSION, "modelversions")
async def modelversion_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.watches.modelversion(event)


@kopf.on.event(GROUP, VERSION, "modelversions", when=lambda status, **_: status.get("phase") == "Ready")
async def modelversion_ready(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """A new Ready version may push an old one past a model's last N: retention passes soon."""
    if memo.get("retention") is not None:
        memo.retention.arrived(meta.get("uid"))


@kopf.on.event(GROUP, VERSION, "modeldeployments")
async def modeldeployment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.watches.modeldeployment(event)
    _forget_when_deleted(event, metrics.alert_metrics())


@kopf.on.event(GROUP, VERSION, "experiments")
async def experiment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.watches.experiment(event)


@kopf.on.event(GROUP, VERSION, "driftmonitors")
async def driftmonitor_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.watches.driftmonitor(event)
    _forget_when_deleted(event, metrics.drift_metrics())


def _forget_when_deleted(event: kopf.RawEvent, series: Any) -> None:
    """Drops a deleted object's metric series (a deletion missed while the operator was down leaves them)."""
    if event.get("type") == "DELETED":
        meta = event["object"].get("metadata") or {}
        series.forget(meta.get("namespace") or "", meta.get("name") or "")


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
async def child_deployment_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.watches.child(event, "Deployment")


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
async def child_job_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    memo.watches.child(event, "Job")


@kopf.on.startup()
async def serve_metrics(memo: kopf.Memo, **_: Any) -> None:
    """The operator's /metrics (drift statistics), on OperatorConfig.metrics_port when set."""
    metrics.serve(OperatorConfig().metrics_port)
