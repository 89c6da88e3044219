"""The health of a ModelDeployment: sample its served version's predictors, judge spec.alerts, report what changed.

`reconcile_health(body, client, cfg, now)` follows the conventions of reconcile.py (parses the object, raises only
`InvalidSpec` and `NotReady`, returns the status to patch or None) and returns only `{"health": ...}`: a controller
of its own calls it, and it is the only writer of status.health, while the ModelDeployment's main reconcile never
writes that field (it derives the Alerting condition from it). Samples are taken only for a deployment with
spec.alerts, at the deadline schedule.next_sample computes (every spec.alerts.interval); a call with nothing due is
decided from the cached copy first and costs no request.

A sample: `GET /v1/stats` of every ready predictor pod of status.servingVersion (those reporting that ModelVersion's
spec.version), pooled and judged by health.py. Each alert that fires posts a Warning Event (reason: the alert's, e.g.
ErrorRateAbove) and each one that resolves a Normal Event AlertResolved; with spec.alerts.notify both are posted to
the webhook in a background task with bounded retries (a final failure is an Event). The gauge
`mlsteward_deployment_alert_firing` follows every configured rule. Notifications are sent before kopf writes the
status, so an operator stopped in between sends them again after a restart: at least once, never lost.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from mlsteward_operator import kube
from mlsteward_operator.kernel import names
from mlsteward_operator.modeldeployment import health
from mlsteward_operator.api.common import API_VERSION
from mlsteward_operator.api.modeldeployment import ActiveAlert, HealthStatus, ModelDeployment
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel.conditions import second
from mlsteward_operator.kernel.status import parse_object
from mlsteward_operator.kernel.metrics import alert_metrics
from mlsteward_operator.kernel.tasks import Background

def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def health_patch(new: HealthStatus, old: HealthStatus | None) -> dict[str, Any]:
    """status.health as a merge patch: lists replace, and a breaches key that ended is sent as null (a merge patch
    keeps the keys it does not name)."""
    out = new.to_k8s()
    gone = {k: None for k in (old.breaches if old is not None else {}) if k not in new.breaches}
    out["breaches"] = gone | out.get("breaches", {})
    return out


class Health:
    """The health sampler's state, owned by the composition root: the webhook deliveries still running."""

    def __init__(self) -> None:
        self.deliveries = Background()

    async def reconcile(self, body: Mapping[str, Any], client: kube.Client, cfg: OperatorConfig,
                        now: dt.datetime | None = None) -> dict[str, Any] | None:
        return await reconcile_health(body, client, cfg, now, deliveries=self.deliveries)


async def reconcile_health(body: Mapping[str, Any], client: kube.Client, cfg: OperatorConfig,
                           now: dt.datetime | None = None, *, deliveries: Background) -> dict[str, Any] | None:
    """Takes a sample when one is due and returns `{"health": ...}`, else None."""
    now = second(now or _now())
    md: ModelDeployment = parse_object(ModelDeployment, body)
    if md.spec.alerts is None and (md.status.health is None or not md.status.health.alerts):
        return None  # sampled only for spec.alerts (one last time after they are removed, to resolve what fired)
    if not health.due(md.status.health, md.spec.alerts, now):
        return None
    ns, name = md.metadata.namespace or "", md.metadata.name
    # The newest status, not kopf's copy: the sample written a moment ago may not have reached it yet.
    fresh = await client.get(API_VERSION, "ModelDeployment", ns, name)
    if fresh is None:
        return None
    md = parse_object(ModelDeployment, fresh)
    if not health.due(md.status.health, md.spec.alerts, now):
        return None

    sample = None
    serving = md.status.serving_version
    if serving:
        mv_obj = await client.get(API_VERSION, "ModelVersion", ns, serving)
        semver = ModelVersion.model_validate(mv_obj).spec.version if mv_obj is not None else None
        report = await client.predictor_stats(ns, names.selector_labels(name, "predictor", serving),
                                              cfg.predictor_port, timeout_s=cfg.drift_poll_timeout_seconds)
        # A predictor reports its ModelVersion's spec.version (a semver); status names the ModelVersion.
        sample = health.pool_sample([s for s in report.answers if semver is None or s.version == semver], serving,
                                    now)
    outcome = health.advance(md.status.health, md.spec.alerts, sample, now)

    alert_metrics().record(ns, name, ((r.value, m.value) for r, m, _ in health.rules_of(md.spec.alerts).values()),
                           ((a.rule.value, a.metric) for a in outcome.status.alerts))
    for alert in outcome.fired:
        await client.event(dict(fresh), reason=alert.reason, type_="Warning",
                           message=f"{alert.rule.value} alert fired: {alert.message}")
    for alert in outcome.resolved:
        await client.event(dict(fresh), reason="AlertResolved", type_="Normal",
                           message=f"{alert.rule.value} alert on {alert.metric} resolved: {alert.message}")
    if md.spec.alerts is not None and md.spec.alerts.notify is not None:
        changes = [(a, health.FIRING) for a in outcome.fired] + [(a, health.RESOLVED) for a in outcome.resolved]
        for alert, state in changes:
            deliveries.start(_deliver(md, fresh, client, cfg, alert, state), name=f"mlsteward-alert-{name}")
    return {"health": health_patch(outcome.status, md.status.health)}


async def _deliver(md: ModelDeployment, body: dict[str, Any], client: kube.Client, cfg: OperatorConfig,
                   alert: ActiveAlert, state: str) -> None:
    assert md.spec.alerts is not None and md.spec.alerts.notify is not None
    ref = md.spec.alerts.notify.webhook_secret_ref
    ns = md.metadata.namespace or ""
    payload = health.webhook_payload(ns, md.metadata.name, md.status.serving_version, alert, state)
    failure = await client.post_webhook_in_secret(ns, ref.name, ref.key, payload, attempts=cfg.webhook_attempts,
                                                  backoff_s=cfg.webhook_backoff_seconds)
    if failure is None:
        await client.event(body, reason="AlertSent", type_="Normal",
                           message=f"Posted the {alert.rule.value} alert on {alert.metric} ({state}) to the webhook "
                           f"in Secret {ref.name}")
    else:
        await client.event(body, reason="AlertNotSent", type_="Warning", message=failure)
