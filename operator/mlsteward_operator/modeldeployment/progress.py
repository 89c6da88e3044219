"""The clock of a ModelDeployment that works towards a version (pure: status + observations + now in, verdicts out).

Two waits end in Stalled if nothing moves, so that a GitOps health check (kstatus: Flux, `kubectl wait`) neither
fails a sync that would converge by itself nor waits forever for one that never will:

- **A missing ModelVersion** (`VERSION_GRACE`). Flux and Argo CD apply every manifest of a sync at once, so a
  ModelDeployment often reaches the operator before the ModelVersion it names. For `VERSION_GRACE` after the
  operator first saw the deployment want that version (at this generation), a missing version reads as a wait:
  Reconciling=True with reason `WaitingForVersion` and a message naming it; only then Stalled (`VersionNotFound`).
  A version that exists but failed validation is Stalled at once: it can never become ready.
- **Pods that never become ready** (spec.rollout.progressDeadline, as a Deployment's progressDeadlineSeconds and
  Argo Rollouts' progressDeadlineSeconds). While a rollout is under way and the wanted version's predictor is not
  fully ready, no progress for that long is Stalled=True with reason `ProgressDeadlineExceeded` (Progressing=False
  and Degraded=True with the same reason, as Argo CD reads a Deployment). Progress restarts the clock: a new wanted
  version or generation, a change in the number of its ready pods, a new rollout phase or step. The rollout itself
  goes on: progress after the deadline makes the deployment Reconciling again.

status.progress holds the clock (since when nothing moved, and the deadline), so the verdict survives a restart of
the operator, and the reconcile is woken at `deadline` (schedule.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

from mlsteward_operator.api.common import MAX_MESSAGE, parse_duration
from mlsteward_operator.api.modeldeployment import ModelDeployment, ProgressStatus
from mlsteward_operator.kernel.conditions import REFERENCE_GRACE, second, stamp
from mlsteward_operator.kernel.pods import WorkloadState
from mlsteward_operator.modeldeployment.rollout.base import Plan, Problem
from mlsteward_operator.modeldeployment.status import EXCEEDED, WAITING, rollout_status

# How long a ModelVersion named by spec.version may be missing before the deployment reads Stalled: a GitOps sync
# applies its manifests within seconds, and the operator sees a new ModelVersion as soon as its watch delivers it.
VERSION_GRACE = REFERENCE_GRACE

MISSING = "VersionNotFound"


def started(prev: ProgressStatus | None, version: str, generation: int | None, now: dt.datetime) -> dt.datetime:
    """When the operator first saw the deployment want `version` at `generation` (now, unless status.progress
    already tracks them)."""
    if prev is not None and prev.version == version and prev.generation == generation:
        return second(prev.last_progress_time)
    return second(now)


def grace_deadline(since: dt.datetime) -> dt.datetime:
    return second(since) + VERSION_GRACE


def within_grace(plan: Plan, prev: ProgressStatus | None, version: str, generation: int | None,
                 now: dt.datetime) -> Plan:
    """`plan` with a missing `version` turned into a wait (progressing `WaitingForVersion`) while the grace runs;
    unchanged otherwise (after the grace it stays degraded `VersionNotFound`: Stalled)."""
    if plan.degraded is None or plan.degraded.reason != MISSING:
        return plan
    until = grace_deadline(started(prev, version, generation, now))
    if second(now) >= until:
        return plan
    waiting = Problem(WAITING, f"ModelVersion {version} does not exist yet; waiting for it until {stamp(until)} (it "
                               "may be applied in the same sync), then Stalled")
    return dataclasses.replace(plan, degraded=None, progressing=waiting)


def is_waiting(plan: Plan) -> bool:
    return plan.progressing is not None and plan.progressing.reason == WAITING


def _fully_ready(p: WorkloadState | None) -> bool:
    return p is not None and p.exists and p.rolled_out and p.ready_replicas >= p.replicas


def clock(md: ModelDeployment, plan: Plan, wanted: str, predictors: Mapping[str, WorkloadState],
          now: dt.datetime) -> tuple[ProgressStatus | None, Problem | None]:
    """status.progress after this reconcile (None when settled: no rollout under way, nothing waited for), and the
    ProgressDeadlineExceeded problem when its deadline passed without progress."""
    prev = md.status.progress
    waiting_for_version = plan.degraded is not None and plan.degraded.reason in (MISSING, "VersionNotReady")
    if plan.progressing is None and not waiting_for_version:
        return None, None
    predictor = predictors.get(wanted)
    ready = predictor.ready_replicas if predictor is not None else 0
    rollout, before = rollout_status(md.status.rollout, plan, wanted, now), md.status.rollout
    mark = (rollout.phase, rollout.step, rollout.target_version)
    same = prev is not None and prev.version == wanted and prev.generation == md.metadata.generation \
        and prev.ready_replicas == ready and before is not None \
        and (before.phase, before.step, before.target_version) == mark
    since = second(prev.last_progress_time) if same and prev is not None else second(now)
    if is_waiting(plan):
        until: dt.datetime | None = grace_deadline(since)
    elif plan.progressing is not None and not _fully_ready(predictor):
        until = since + dt.timedelta(seconds=parse_duration(md.spec.rollout.progress_deadline))
    else:
        until = None  # pods ready (a canary step, the router switching) or a version validating: no clock runs
    progress = ProgressStatus(version=wanted, generation=md.metadata.generation, ready_replicas=ready,
                              last_progress_time=since, deadline=until)
    return progress, exceeded(plan, progress, now)


def exceeded(plan: Plan, progress: ProgressStatus | None, now: dt.datetime) -> Problem | None:
    """The ProgressDeadlineExceeded problem when the rollout's pods made no progress until the deadline."""
    if progress is None or progress.deadline is None or is_waiting(plan) or plan.progressing is None:
        return None
    if second(now) < second(progress.deadline):
        return None
    why = (f"the predictor of {progress.version} has {progress.ready_replicas} ready pod(s) and made no progress "
           f"since {stamp(progress.last_progress_time)} (spec.rollout.progressDeadline); "
           f"{plan.progressing.reason}: {plan.progressing.message}")
    return Problem(EXCEEDED, why[:MAX_MESSAGE])
