"""ModelVersion retention, applied (the policy and what it protects: retention.py).

One pass goes namespace by namespace: it lists the ModelVersions, ModelDeployments, Experiments and DriftMonitors,
plans, and when the plan deletes anything it lists all four again and plans again right before deleting, so that a
ModelDeployment or Experiment created meanwhile still protects its versions. Each deletion carries preconditions on
the uid and resourceVersion read by that second look: a recreated ModelVersion of the same name, or one labelled
`mlsteward.io/retain` since, is not deleted (the API server answers 409, the next pass plans again). Each deletion
is recorded three ways: an Event RetentionDeleted on the ModelVersion, a log line with a JSON record, and the
counter `mlsteward_retention_deletions{namespace, model}`. In dry run nothing is deleted and each version that
would be gets one Event RetentionWouldDelete (once per operator process, not once per pass).

A namespace where any of the four kinds cannot be read or parsed is skipped for this pass with a warning: an
unreadable ModelDeployment could be the one that serves a version. Nothing here raises past `run`.

Passes run every `retention_interval_seconds` and shortly after a ModelVersion turns Ready (`arrived`), one at a
time; the task only exists while the policy keeps fewer than all versions of some model.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mlsteward_operator import kube
from mlsteward_operator.retention import decide
from mlsteward_operator.api import DriftMonitor, Experiment, ModelDeployment, ModelVersion
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel.metrics import RetentionMetrics, retention_metrics

log = logging.getLogger(__name__)

API_VERSION = "mlsteward.io/v1alpha1"
# After a new version arrives, wait this long before a pass, so that a burst of arrivals makes one pass.
SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class Outcome:
    """One version retention deleted (`deleted`) or, in dry run, would have deleted."""

    namespace: str
    name: str
    model: str
    version: str
    deleted: bool
    message: str


@dataclass(frozen=True)
class _Observed:
    versions: list[ModelVersion]
    bodies: dict[str, dict[str, Any]]
    deployments: list[ModelDeployment]
    experiments: list[Experiment]
    monitors: list[DriftMonitor]


class Retention:
    """Applies the retention policy of `config` to the namespaces the operator watches."""

    def __init__(self, client: kube.Client, config: OperatorConfig, *, namespaces: Sequence[str] = (),
                 metrics: RetentionMetrics | None = None) -> None:
        self.client = client
        self.policy = decide.Policy(config.retention_keep_last, dict(config.retention_models))
        self.dry_run = config.retention_dry_run
        self.interval = config.retention_interval_seconds
        # Exact names are listed one by one; glob patterns (or none: every namespace) need a cluster-wide list.
        self._patterns = [n for n in namespaces if n]
        self._metrics = metrics or retention_metrics()
        self._announced: set[str] = set()
        self._ready: set[str] = set()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self.policy.enabled

    def arrived(self, uid: str | None) -> None:
        """A ModelVersion is Ready: wake the loop once for each version not seen Ready before."""
        if self.enabled and uid and uid not in self._ready:
            self._ready.add(uid)
            self._wake.set()

    async def loop(self) -> None:
        """Pass after pass until cancelled: at once, then every interval or soon after a new version arrived."""
        while True:
            await self.run()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
                await asyncio.sleep(SETTLE_SECONDS)
            self._wake.clear()

    async def run(self) -> list[Outcome]:
        """One pass over every namespace; never raises (a failure is logged and the pass goes on)."""
        async with self._lock:
            outcomes: list[Outcome] = []
            try:
                namespaces = await self._namespaces()
            except Exception as exc:  # the API server unreachable, RBAC: the next pass tries again
                log.warning("Failed to list namespaces with ModelVersions for retention: %s", exc)
                return outcomes
            for namespace in namespaces:
                try:
                    outcomes.extend(await self.run_namespace(namespace))
                except Exception:  # one namespace must never stop the others
                    log.exception("Failed retention pass namespace=%s", namespace)
            return outcomes

    async def _namespaces(self) -> list[str]:
        if self._patterns and not any(set(p) & set("*?[!") for p in self._patterns):
            return sorted(set(self._patterns))
        found = {(mv.get("metadata") or {}).get("namespace") or ""
                 for mv in await self.client.list(API_VERSION, "ModelVersion", None)}
        included = [p for p in self._patterns if not p.startswith("!")]
        excluded = [p[1:] for p in self._patterns if p.startswith("!")]
        return sorted(ns for ns in found if ns
                      and (not included or any(fnmatch.fnmatchcase(ns, p) for p in included))
                      and not any(fnmatch.fnmatchcase(ns, p) for p in excluded))

    async def _observe(self, namespace: str) -> _Observed | None:
        """The four kinds of one namespace, parsed; None (logged) when any object cannot be read or parsed."""
        try:
            raw = {kind: await self.client.list(API_VERSION, kind, namespace)
                   for kind in ("ModelVersion", "ModelDeployment", "Experiment", "DriftMonitor")}
            observed = _Observed(
                versions=[ModelVersion.model_validate(o) for o in raw["ModelVersion"]],
                bodies={o["metadata"]["name"]: o for o in raw["ModelVersion"]},
                deployments=[ModelDeployment.model_validate(o) for o in raw["ModelDeployment"]],
                experiments=[Experiment.model_validate(o) for o in raw["Experiment"]],
                monitors=[DriftMonitor.model_validate(o) for o in raw["DriftMonitor"]],
            )
        except (kube.ApiError, ValidationError, KeyError) as exc:
            log.warning("Skipped retention namespace=%s: could not read every object that may reference a "
                        "ModelVersion: %s", namespace, str(exc).splitlines()[0])
            return None
        return observed

    def _plan(self, namespace: str, seen: _Observed) -> list[decide.ModelPlan]:
        return decide.plan(namespace, seen.versions, seen.deployments, seen.experiments, seen.monitors,
                              self.policy)

    async def run_namespace(self, namespace: str) -> list[Outcome]:
        first = await self._observe(namespace)
        if first is None:
            return []
        plans = self._plan(namespace, first)
        for p in plans:
            self._metrics.kept.labels(namespace, p.model).set(len(p.kept))
        if not any(p.delete for p in plans):
            return []
        if self.dry_run:
            return [await self._would_delete(p, d, first.bodies[d.name]) for p in plans for d in p.delete
                    if d.uid not in self._announced]
        candidates = {d.uid for p in plans for d in p.delete}
        # Look again right before deleting: anything that started referencing a version since protects it.
        second = await self._observe(namespace)
        if second is None:
            return []
        outcomes = []
        for p in self._plan(namespace, second):
            self._metrics.kept.labels(namespace, p.model).set(len(p.kept))
            for doomed in p.delete:
                if doomed.uid in candidates:
                    outcome = await self._delete(p, doomed, second.bodies[doomed.name])
                    if outcome is not None:
                        outcomes.append(outcome)
        return outcomes

    async def _would_delete(self, p: decide.ModelPlan, doomed: decide.Doomed,
                            body: dict[str, Any]) -> Outcome:
        message = f"Retention would delete (dry run): {doomed.message(p)}"
        self._announced.add(doomed.uid or doomed.name)
        await self.client.event(body, reason="RetentionWouldDelete", message=message)
        _record("Would delete ModelVersion", p, doomed, deleted=False)
        return Outcome(p.namespace, doomed.name, p.model, doomed.version, False, message)

    async def _delete(self, p: decide.ModelPlan, doomed: decide.Doomed,
                      body: dict[str, Any]) -> Outcome | None:
        try:
            gone = await self.client.delete(API_VERSION, "ModelVersion", p.namespace, doomed.name, uid=doomed.uid,
                                            resource_version=doomed.resource_version)
        except kube.ApiError as exc:
            log.warning("Failed to delete ModelVersion namespace=%s name=%s for retention: %s", p.namespace,
                        doomed.name, exc)
            return None
        if not gone:
            log.info("Skipped deleting ModelVersion namespace=%s name=%s: already gone, recreated or changed since "
                     "it was read", p.namespace, doomed.name)
            return None
        message = f"Deleted by retention: {doomed.message(p)}"
        await self.client.event(body, reason="RetentionDeleted", message=message)
        self._metrics.deletions.labels(p.namespace, p.model).inc()
        _record("Deleted ModelVersion", p, doomed, deleted=True)
        return Outcome(p.namespace, doomed.name, p.model, doomed.version, True, message)


def _record(what: str, p: decide.ModelPlan, doomed: decide.Doomed, *, deleted: bool) -> None:
    log.info("%s for retention %s", what, json.dumps({
        "namespace": p.namespace, "name": doomed.name, "uid": doomed.uid, "model": p.model,
        "version": doomed.version, "rank": doomed.rank, "keepLast": p.keep_last, "policy": p.source,
        "deleted": deleted, "kept": {name: [str(k) for k in keeps] for name, keeps in sorted(p.kept.items())},
    }, sort_keys=True))
