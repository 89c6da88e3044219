"""When a ModelDeployment must be looked at again without an event (pure: spec + status + now in, a time out).

A watch event wakes the reconcile for everything an event carries (spec changes, children's status, versions,
Experiments and DriftMonitors naming it). What no event carries is the passing of time: the end of a canary or
BlueGreen step (`next_look`), the router replicas taking up a new configuration (they report it only when asked),
the counters of a mirrored shadow version (status.shadow moves only when the routers are asked) and the next health
sample of a deployment with alerts (`next_sample`), and the deadline of status.progress (progress.py: the end of the
grace period for a missing spec.version, or spec.rollout.progressDeadline for pods that are not ready).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from mlsteward_operator.api.common import parse_duration
from mlsteward_operator.api.modeldeployment import ModelDeployment
from mlsteward_operator.kernel.conditions import second
from mlsteward_operator.kernel.status import parse_object
from mlsteward_operator.modeldeployment import health

# A step past its interval that is still not judged (too few requests yet: decide.py extends it) is looked at
# again this often: the requests the routers count raise no event.
STEP_RECHECK = dt.timedelta(seconds=3)

# A router configuration not yet reported by every ready replica is looked at again this often.
ROUTER_RECHECK = dt.timedelta(seconds=1)

# A mirrored shadow version's counters (status.shadow) and its promotion gate are looked at this often. The status
# write this causes wakes nothing (a status-only change of the same generation is not an event for the reconcile,
# controllers.Watches), and a look whose numbers did not change writes nothing.
SHADOW_RECHECK = dt.timedelta(seconds=10)


def next_look(body: Mapping[str, Any], now: dt.datetime) -> tuple[dt.datetime | None, bool]:
    """(when the main reconcile must run again, None for on an event only; whether a rollout is in progress)."""
    md: ModelDeployment = parse_object(ModelDeployment, body)
    when, progressing = _next_rollout_look(md, now)
    shadow = md.status.shadow
    if md.spec.shadow is not None and shadow is not None and shadow.phase.value == "Mirroring" \
            and shadow.version == md.spec.shadow.version:
        when = min(when, now + SHADOW_RECHECK) if when is not None else now + SHADOW_RECHECK
    deadline = md.status.progress.deadline if md.status.progress is not None else None
    if deadline is not None and second(deadline) > now:
        # Only a deadline still ahead: one that passed has been judged by the reconcile that wrote this status.
        when = min(when, second(deadline)) if when is not None else second(deadline)
    return when, progressing


def _next_rollout_look(md: ModelDeployment, now: dt.datetime) -> tuple[dt.datetime | None, bool]:
    r = md.status.rollout
    progressing = r is not None and r.phase.value == "Progressing"
    router = md.status.router
    if router is not None and router.generation is not None and router.replicas > 0 \
            and router.current < router.replicas:
        # The router replicas apply a new configuration within a second or two and no event says so: ask again.
        return now + ROUTER_RECHECK, progressing
    if r is None or not progressing:
        return None, False
    if r.step_started_at is None:
        return None, True  # warming up: the predictor's Deployment reports readiness
    end = second(r.step_started_at) + dt.timedelta(seconds=parse_duration(md.spec.rollout.step_interval))
    return (end if end > now else now + STEP_RECHECK), True


def next_sample(body: Mapping[str, Any], now: dt.datetime) -> tuple[dt.datetime | None, bool]:
    """When the next health sample is due: only with spec.alerts, every spec.alerts.interval."""
    md: ModelDeployment = parse_object(ModelDeployment, body)
    if md.spec.alerts is None:
        return None, False
    last = md.status.health.last_sample_time if md.status.health is not None else None
    if last is None:
        return now, False
    return second(last) + dt.timedelta(seconds=health.interval_seconds(md.spec.alerts)), False
