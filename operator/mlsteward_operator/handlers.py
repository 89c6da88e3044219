"""kopf handlers: thin adapters (STYLE §1). Each unpacks kopf's arguments, calls one reconcile function, maps
domain errors to kopf's, and writes the status the reconcile computed through kopf's patch (one write, skipped
when nothing changed).

Why both events and timers: events make a change visible within a second; timers make the controllers
level-based. A timer re-observes children (pods becoming ready, a Job finishing) that raise no event on the parent
and repairs anything an event missed, including after a restart of the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from mlsteward_operator import kube
from mlsteward_operator.driftmonitor import reconcile as reconcile_drift
from mlsteward_operator.experiment import reconcile as reconcile_experiment
from mlsteward_operator.kernel import metrics
from mlsteward_operator.modeldeployment import reconcile as reconcile_deployment
from mlsteward_operator.modeldeployment import reconcile_health
from mlsteward_operator.modelversion import reconcile as reconcile_version
from mlsteward_operator.retention import reconcile as reconcile_retention
from mlsteward_operator.retraining.reconcile import Retraining
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.errors import InvalidSpec, NotReady

GROUP, VERSION = "mlsteward.io", "v1alpha1"

# Seconds between timer reconciles: short while something is in motion, since a user is watching.
VERSION_INTERVAL = 3.0
DEPLOYMENT_INTERVAL = 3.0
EXPERIMENT_INTERVAL = 5.0
# A DriftMonitor checks every spec.interval (the reconcile decides from status when a check is due); the timer
# only needs to be finer than the shortest interval anyone sets, and moves an active retraining on.
DRIFTMONITOR_INTERVAL = 3.0
# A ModelDeployment's health is sampled every spec.alerts.interval (default 1m) by a timer of its own, the only writer
# of status.health. A tick with no sample due is decided from kopf's copy of the object and costs no request, so the
# timer can be as fine as the shortest interval anyone sets.
HEALTH_INTERVAL = 1.0


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The pod's service account in a cluster, else the kubeconfig that KUBECONFIG names at this moment."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    kube.load_config()
    memo.client = kube.ApiServerClient()
    memo.config = OperatorConfig()
    # Controllers with state of their own (locks, background deliveries, the retraining workflow): one each per
    # operator run, owned here rather than by their modules.
    memo.driftmonitors = reconcile_drift.DriftMonitors(Retraining())
    memo.health = reconcile_health.Health()
    logger.info("Started mlsteward operator image=%s", memo.config.image)
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
    task = memo.get("retention_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _run(fn: Any, body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo) -> None:
    try:
        new_status = await fn(body, memo.client, memo.config)
    except InvalidSpec as exc:
        raise kopf.PermanentError(f"{exc.reason}: {exc.message}") from exc
    except NotReady as exc:
        raise kopf.TemporaryError(f"{exc.reason}: {exc.message}", delay=exc.delay) from exc
    except kube.ApiError as exc:
        raise kopf.TemporaryError(f"API server: {exc}", delay=5) from exc
    if new_status is not None:
        patch.status.update(new_status)


def _version_open(status: kopf.Status, **_: Any) -> bool:
    """A ModelVersion needs attention until it has a verdict."""
    return status.get("phase") not in ("Ready", "Failed")


@kopf.on.create(GROUP, VERSION, "modelversions")
@kopf.on.resume(GROUP, VERSION, "modelversions")
async def modelversion_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    await _run(reconcile_version.reconcile_version, body, patch, memo)


@kopf.timer(GROUP, VERSION, "modelversions", interval=VERSION_INTERVAL, when=_version_open)
async def modelversion_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    await _run(reconcile_version.reconcile_version, body, patch, memo)


@kopf.on.event(GROUP, VERSION, "modelversions", when=lambda status, **_: status.get("phase") == "Ready")
async def modelversion_ready(meta: kopf.Meta, memo: kopf.Memo, **_: Any) -> None:
    """A new Ready version may push an old one past a model's last N: retention passes soon."""
    if memo.get("retention") is not None:
        memo.retention.arrived(meta.get("uid"))


@kopf.on.create(GROUP, VERSION, "modeldeployments")
@kopf.on.update(GROUP, VERSION, "modeldeployments", field="spec")
@kopf.on.resume(GROUP, VERSION, "modeldeployments")
async def modeldeployment_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    await _run(reconcile_deployment.reconcile_deployment, body, patch, memo)


@kopf.timer(GROUP, VERSION, "modeldeployments", interval=DEPLOYMENT_INTERVAL)
async def modeldeployment_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    await _run(reconcile_deployment.reconcile_deployment, body, patch, memo)


@kopf.timer(GROUP, VERSION, "modeldeployments", interval=HEALTH_INTERVAL)
async def modeldeployment_health(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    await _run(memo.health.reconcile, body, patch, memo)


@kopf.on.delete(GROUP, VERSION, "modeldeployments", optional=True)
async def modeldeployment_deleted(meta: kopf.Meta, **_: Any) -> None:
    """Drops the deployment's alert series (optional: no finalizer; a deletion missed while down leaves them)."""
    metrics.alert_metrics().forget(meta.get("namespace") or "", meta.get("name") or "")


def _experiment_open(status: kopf.Status, **_: Any) -> bool:
    """An Experiment is looked at until it is Concluded or Stopped."""
    return status.get("phase") not in ("Concluded", "Stopped")


@kopf.on.create(GROUP, VERSION, "experiments")
@kopf.on.update(GROUP, VERSION, "experiments", field="spec")
@kopf.on.resume(GROUP, VERSION, "experiments")
async def experiment_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    await _run(reconcile_experiment.reconcile_experiment, body, patch, memo)


@kopf.timer(GROUP, VERSION, "experiments", interval=EXPERIMENT_INTERVAL, when=_experiment_open)
async def experiment_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    await _run(reconcile_experiment.reconcile_experiment, body, patch, memo)


@kopf.on.startup()
async def serve_metrics(memo: kopf.Memo, **_: Any) -> None:
    """The operator's /metrics (drift statistics), on OperatorConfig.metrics_port when set."""
    metrics.serve(OperatorConfig().metrics_port)


@kopf.on.create(GROUP, VERSION, "driftmonitors")
@kopf.on.update(GROUP, VERSION, "driftmonitors", field="spec")
@kopf.on.resume(GROUP, VERSION, "driftmonitors")
async def driftmonitor_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    await _run(memo.driftmonitors.reconcile, body, patch, memo)


@kopf.timer(GROUP, VERSION, "driftmonitors", interval=DRIFTMONITOR_INTERVAL)
async def driftmonitor_timer(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    await _run(memo.driftmonitors.reconcile, body, patch, memo)


@kopf.on.delete(GROUP, VERSION, "driftmonitors", optional=True)
async def driftmonitor_deleted(meta: kopf.Meta, **_: Any) -> None:
    """Drops the monitor's metric series (optional: no finalizer; a deletion missed while down leaves them)."""
    metrics.drift_metrics().forget(meta.get("namespace") or "", meta.get("name") or "")
