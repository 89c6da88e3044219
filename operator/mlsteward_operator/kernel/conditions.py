"""Conditions every kind writes (STYLE §5) and Kubernetes time resolution."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from mlsteward_operator.api.common import Condition, ConditionStatus, ConditionType


def second(now: dt.datetime) -> dt.datetime:
    """`now` in UTC at one-second resolution: Kubernetes timestamps have no finer one, so a finer time would
    compare differently after a round trip through the API server."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    return now.astimezone(dt.UTC).replace(microsecond=0)


def _status_value(value: bool | str | ConditionStatus) -> ConditionStatus:
    if isinstance(value, bool):
        return ConditionStatus.true if value else ConditionStatus.false
    return ConditionStatus(value)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: bool | str | ConditionStatus,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: dt.datetime,
) -> list[Condition]:
    """A copy of `conditions` with `type_` set. lastTransitionTime changes only when the status value flips;
    a new reason or message alone keeps it (so "how long has it been not Ready" stays true)."""
    value = _status_value(status)
    previous = next((c for c in conditions if c.type == type_), None)
    since = previous.last_transition_time if previous is not None and previous.status == value else second(now)
    updated = Condition(
        type=type_, status=value, reason=reason, message=message, observed_generation=generation,
        last_transition_time=since,
    )
    out = [c for c in conditions if c.type != type_]
    out.append(updated)
    order = {t.value: i for i, t in enumerate(ConditionType)}
    return sorted(out, key=lambda c: (order.get(c.type, len(order)), c.type))


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)




# How long a reference to an object that does not exist yet (the ModelVersion of a ModelDeployment, the
# ModelDeployment of an Experiment or a DriftMonitor) reads as a wait (Reconciling) before it reads as a bad
# reference (Stalled). Flux and Argo CD apply every manifest of a sync at once, and the operator may see the
# referring object a moment before the one it names; a sync applies its manifests within seconds.
REFERENCE_GRACE = dt.timedelta(minutes=2)


def grace_end(since: dt.datetime | None, now: dt.datetime) -> dt.datetime | None:
    """The end of the REFERENCE_GRACE that began at `since` while `now` is before it; None once it is over (or
    without a start)."""
    if since is None:
        return None
    end = second(since) + REFERENCE_GRACE
    return end if second(now) < end else None


def stamp(t: dt.datetime) -> str:
    """`t` as Kubernetes writes times (RFC 3339, UTC, seconds), for messages."""
    return second(t).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_kstatus(
    conditions: Sequence[Condition],
    *,
    reconciling: tuple[str, str] | None,
    stalled: tuple[str, str] | None,
    generation: int | None,
    now: dt.datetime,
) -> list[Condition]:
    """A copy of `conditions` with kstatus's abnormal-true conditions (docs/gitops.md): `Reconciling` (reason,
    message) while the operator is still working towards the spec, `Stalled` when it will not get there by itself.
    Each is present only while True (as Flux's own controllers do) and never both; lastTransitionTime is kept while
    one stays True, so a reconcile that changes nothing writes nothing."""
    if reconciling is not None and stalled is not None:
        raise ValueError("an object is never both Reconciling and Stalled")
    out = list(conditions)
    for type_, value in ((ConditionType.reconciling, reconciling), (ConditionType.stalled, stalled)):
        if value is None:
            out = [c for c in out if c.type != type_]
        else:
            out = set_condition(out, type_, True, value[0], value[1], generation=generation, now=now)
    return out
