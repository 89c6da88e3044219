"""The controllers: one work queue per kind, fed by watch events and by the deadlines the reconciles set (STYLE §9).

`Controller` runs one kind's reconcile for a key taken from its `WorkQueue` (kernel/wakeups.py): it reads the
object from the watch cache (kube/cache.py; no GET), calls the reconcile, maps the domain errors (STYLE §7), writes
the status it returned with one merge patch of the status subresource (only when it changed) and puts the answer in
the cache, then computes when the object must be looked at again:

- the deadline its kind's schedule computes from spec + status + now (the end of a canary step, the next drift
  check or cron time, the next health sample, an Experiment's next look at its routers), or
- `IN_MOTION_RECHECK` for an object still converging (a ModelVersion validating, a rollout progressing): a safety
  net for facts no watch carries (router pods answering, a counter reaching a threshold), never the way an
  expected change is noticed: those arrive as watch events;
- nothing for a steady object: it waits for an event.

Errors: `InvalidSpec` is logged and posted as an Event and the object is not retried until its generation changes;
`NotReady` retries after its delay; an API error retries with a doubling backoff (1 s to 5 min).

`Watches` turns watch events into wake-ups (see its docstring). Neither class imports kopf: handlers.py adapts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from mlsteward_operator import kube
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.errors import InvalidSpec, NotReady
from mlsteward_operator.kernel.wakeups import WorkQueue
from mlsteward_operator.kube.cache import Key, Store

log = logging.getLogger(__name__)

API_VERSION = "mlsteward.io/v1alpha1"
# See the module docstring: how often a converging object is looked at when no event came.
IN_MOTION_RECHECK = 30.0
BACKOFF_MIN, BACKOFF_MAX = 1.0, 300.0

ReconcileFn = Callable[[Mapping[str, Any], kube.Client, OperatorConfig], Awaitable[dict[str, Any] | None]]
# (object as written, now) -> when to look again (None: on an event only), and whether it is still converging.
ScheduleFn = Callable[[Mapping[str, Any], dt.datetime], tuple[dt.datetime | None, bool]]


@dataclass(frozen=True)
class KindSpec:
    kind: str
    reconcile: ReconcileFn
    schedule: ScheduleFn
    workers: int = 4


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def generation(obj: Mapping[str, Any] | None) -> int | None:
    return ((obj or {}).get("metadata") or {}).get("generation")


class Controller:
    """One kind's reconcile loop over a work queue (module docstring)."""

    def __init__(self, spec: KindSpec, store: Store, client: kube.Client, cfg: OperatorConfig) -> None:
        self.spec, self.store, self.client, self.cfg = spec, store, client, cfg
        self.queue = WorkQueue(spec.kind, self._run, workers=spec.workers)
        # Generation each object was last reconciled at: a watch event of the same generation (the operator's own
        # status write, a relist) needs no reconcile.
        self.reconciled: dict[Key, int | None] = {}
        self._invalid: dict[Key, int | None] = {}
        self._backoff: dict[Key, float] = {}

    def wake(self, key: Key) -> None:
        self.queue.wake(key)

    def wake_if_changed(self, key: Key, obj: Mapping[str, Any]) -> None:
        """Wakes the object's reconcile unless it was reconciled at this generation already."""
        if key not in self.reconciled or self.reconciled[key] != generation(obj):
            self.queue.wake(key)

    def forget(self, key: Key) -> None:
        self.queue.forget(key)
        for d in (self.reconciled, self._invalid, self._backoff):
            d.pop(key, None)

    async def _run(self, key: Hashable) -> float | None:
        assert isinstance(key, tuple)
        body = self.store.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        gen = generation(body)
        if key in self._invalid and self._invalid[key] == gen:
            return None  # InvalidSpec: nothing changes until the spec does
        self._invalid.pop(key, None)
        loop = asyncio.get_running_loop()
        try:
            new_status = await self.spec.reconcile(body, self.client, self.cfg)
            if new_status is not None:
                written = await self.client.patch_status(API_VERSION, self.spec.kind, key[0], key[1], new_status)
                if written is None:
                    return None  # deleted meanwhile
                self.store.put(written)
                body = self.store.get(key) or written
        except InvalidSpec as exc:
            self._invalid[key] = gen
            self.reconciled[key] = gen
            log.error("Failed to reconcile %s %s/%s permanently: %s: %s", self.spec.kind, *key, exc.reason,
                      exc.message)
            await self.client.event(_involved(self.spec.kind, body), reason=exc.reason, type_="Warning",
                                    message=exc.message)
            return None
        except NotReady as exc:
            log.info("Waiting %gs for %s %s/%s: %s: %s", exc.delay, self.spec.kind, *key, exc.reason, exc.message)
            return loop.time() + exc.delay
        except kube.ApiError as exc:
            delay = min(BACKOFF_MAX, self._backoff.get(key, BACKOFF_MIN / 2) * 2)
            self._backoff[key] = delay
            log.warning("Failed to reconcile %s %s/%s, retrying in %gs: API server: %s", self.spec.kind, *key,
                        delay, exc)
            return loop.time() + delay
        self._backoff.pop(key, None)
        self.reconciled[key] = gen
        now = _now()
        when, moving = self.spec.schedule(body, now)
        after = (when - now).total_seconds() if when is not None else None
        if moving:
            after = IN_MOTION_RECHECK if after is None else min(after, IN_MOTION_RECHECK)
        return None if after is None else loop.time() + max(0.0, after)


def _involved(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, **{k: v for k, v in body.items() if k != "kind"}}


def _mentions(value: Any, name: str) -> bool:
    """Whether the string `name` is any value in `value` (nested mappings and lists)."""
    if isinstance(value, str):
        return value == name
    if isinstance(value, Mapping):
        return any(_mentions(v, name) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, name) for v in value)
    return False


def _owner(obj: Mapping[str, Any], kind: str) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind and ref.get("apiVersion") == API_VERSION:
            return ref.get("name")
    return None


def _deployment_of(obj: Mapping[str, Any] | None) -> str | None:
    return ((obj or {}).get("spec") or {}).get("deployment")


class Watches:
    """Turns watch events into wake-ups, from an in-memory copy of each kind (no request). Every mapping is
    level-based: it compares the object with the copy held before, so a relist or the operator's own status write
    wakes nothing, and a missed event is made good by the next one (or a restart, which reconciles everything).

    - An object of our kinds wakes its own reconcile when first seen (creation, operator start) or when its
      generation changed (spec edits); the ModelDeployment's health sampler too.
    - A ModelVersion whose phase changed wakes the ModelDeployments, Experiments and DriftMonitors of its namespace
      that name it anywhere in spec or status (or whose Experiments and DriftMonitors do).
    - An Experiment created, deleted, or whose phase or servingRequest changed, and a DriftMonitor created, deleted
      or whose servingRequest changed, wake the ModelDeployment they name.
    - A ModelDeployment whose served version or experiment changed wakes its Experiments and DriftMonitors; one
      whose status.health.alerts changed (the health sampler's write) wakes its main reconcile (Alerting).
    - A child Deployment (managed by mlsteward, owned by a ModelDeployment) whose spec or status changed, or that
      was deleted, wakes its ModelDeployment and that deployment's open Experiments (they wait for the router).
    - A Job whose status changed wakes the ModelVersion (validation) or DriftMonitor (retraining) that owns it.
    """

    def __init__(self, controllers: Mapping[str, Controller], health: Controller) -> None:
        self.c, self.health = controllers, health
        self.stores = {kind: ctl.store for kind, ctl in controllers.items()}
        # The copy each watch event brought, apart from the controllers' stores: those also take the answers to the
        # operator's own status writes, and a change compared against them would look like no change when its
        # watch event arrives (then, e.g., an Experiment would never hear that its deployment serves the control).
        self._seen = {kind: Store() for kind in controllers}
        self._children: dict[tuple[str, str, str], Any] = {}

    def _put(self, kind: str, event: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, Mapping[str, Any], bool]:
        """(copy held before, the object, whether it was deleted); wakes the object's own reconcile."""
        obj = event["object"]
        key = kube.key_of(obj)
        ctl = self.c[kind]
        if event.get("type") == "DELETED":
            old = self._seen[kind].delete(key)
            ctl.store.delete(key)
            ctl.forget(key)
            if kind == "ModelDeployment":
                self.health.forget(key)
            return old, obj, True
        old = self._seen[kind].put(obj)
        ctl.store.put(obj)
        ctl.wake_if_changed(key, obj)
        if kind == "ModelDeployment":
            self.health.wake_if_changed(key, obj)
        return old, obj, False

    def _wake_deployment(self, ns: str, name: str | None) -> None:
        if name:
            self.c["ModelDeployment"].wake((ns, name))

    def _wake_naming(self, kind: str, ns: str, deployment: str) -> None:
        for obj in self.stores[kind].in_namespace(ns):
            if _deployment_of(obj) == deployment:
                self.c[kind].wake(kube.key_of(obj))

    def modelversion(self, event: Mapping[str, Any]) -> None:
        old, obj, gone = self._put("ModelVersion", event)
        phase = (obj.get("status") or {}).get("phase")
        if not gone and old is not None and (old.get("status") or {}).get("phase") == phase:
            return
        ns, name = kube.key_of(obj)
        woken = set()
        for kind in ("Experiment", "DriftMonitor"):
            for other in self.stores[kind].in_namespace(ns):
                if _mentions(other.get("spec"), name) or _mentions(other.get("status"), name):
                    self.c[kind].wake(kube.key_of(other))
                    woken.add(_deployment_of(other))
        for md in self.stores["ModelDeployment"].in_namespace(ns):
            md_name = kube.key_of(md)[1]
            if md_name in woken or _mentions(md.get("spec"), name) or _mentions(md.get("status"), name):
                self._wake_deployment(ns, md_name)

    def modeldeployment(self, event: Mapping[str, Any]) -> None:
        old, obj, gone = self._put("ModelDeployment", event)

        def served(o: Mapping[str, Any] | None) -> tuple[Any, ...]:
            st = (o or {}).get("status") or {}
            return st.get("servingVersion"), st.get("experiment")

        ns, name = kube.key_of(obj)
        if gone or old is None or served(old) != served(obj):
            self._wake_naming("Experiment", ns, name)
            self._wake_naming("DriftMonitor", ns, name)

        def alerts(o: Mapping[str, Any] | None) -> Any:
            return (((o or {}).get("status") or {}).get("health") or {}).get("alerts")

        if not gone and old is not None and alerts(old) != alerts(obj):
            # The health sampler changed what fires: the main reconcile derives the Alerting condition from it.
            self.c["ModelDeployment"].wake((ns, name))

    def experiment(self, event: Mapping[str, Any]) -> None:
        self._requester("Experiment", event, ("phase", "servingRequest"))

    def driftmonitor(self, event: Mapping[str, Any]) -> None:
        self._requester("DriftMonitor", event, ("servingRequest",))

    def _requester(self, kind: str, event: Mapping[str, Any], fields: tuple[str, ...]) -> None:
        old, obj, gone = self._put(kind, event)

        def facts(o: Mapping[str, Any] | None) -> tuple[Any, ...]:
            st = (o or {}).get("status") or {}
            return (_deployment_of(o), *(st.get(f) for f in fields))

        if gone or old is None or facts(old) != facts(obj):
            ns = kube.key_of(obj)[0]
            self._wake_deployment(ns, _deployment_of(obj))
            if old is not None and _deployment_of(old) != _deployment_of(obj):
                self._wake_deployment(ns, _deployment_of(old))

    def child(self, event: Mapping[str, Any], kind: str) -> None:
        """A `kind` Deployment (owner ModelDeployment) or Job (owner ModelVersion or DriftMonitor) changed."""
        obj = event["object"]
        meta = obj.get("metadata") or {}
        ckey = (kind, meta.get("namespace") or "", meta.get("name") or "")
        facts = (meta.get("generation"), obj.get("status"))
        if event.get("type") == "DELETED":
            self._children.pop(ckey, None)
        elif self._children.get(ckey) == facts:
            return
        else:
            self._children[ckey] = facts
        ns = ckey[1]
        if kind == "Deployment":
            owner = _owner(obj, "ModelDeployment")
            self._wake_deployment(ns, owner)
            if owner:
                for exp in self.stores["Experiment"].in_namespace(ns):
                    if _deployment_of(exp) == owner and (exp.get("status") or {}).get("phase") not in (
                            "Concluded", "Stopped"):
                        self.c["Experiment"].wake(kube.key_of(exp))
            return
        for kind in ("ModelVersion", "DriftMonitor"):
            name = _owner(obj, kind)
            if name:
                self.c[kind].wake((ns, name))
