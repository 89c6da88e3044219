"""Conventions every controller shares, below the peers plan, render, status, drift and experiment (which may not
import each other): condition bookkeeping, Kubernetes time resolution, and the annotation that carries a router's
weight table from the builder that writes it to the observer that reads it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mlsteward_operator.api.common import Condition, ConditionStatus, ConditionType
from mlsteward_operator.errors import InvalidSpec

M = TypeVar("M", bound=BaseModel)

# On the router's pod template: the weight table its configuration carries, e.g. `iris-v1=100`. Once the router
# Deployment has rolled out, this says what every router pod routes by (render writes it, status reads it).
ANNOTATION_TRAFFIC = "mlsteward.io/traffic"


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


def parse_object(model: type[M], body: Mapping[str, Any]) -> M:
    """`body` (an object as kopf or the API server hands it) as `model`; InvalidSpec names the first bad field."""
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidSpec(f"{where}: {first.get('msg')}", field=where) from None


def status_patch(new: BaseModel, old: BaseModel | None, replaced: Sequence[str],
                 others: Sequence[str] = ()) -> dict[str, Any]:
    """`new` (a status model) as a JSON merge patch that leaves nothing stale behind.

    A merge patch keeps every key it does not name, so a field `new` leaves unset is sent as null when `old` had it,
    and the nested objects named in `replaced` (by wire name) are replaced whole: their unset fields are sent as null
    too (a step's start time or a request's version from an earlier value would otherwise be read back as current).
    The top-level fields named in `others` belong to another writer: they are left out of the patch altogether
    (neither written from a possibly older copy nor cleared).
    """
    out: dict[str, Any] = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    before = old.model_dump(mode="json", by_alias=True, exclude_none=True) if old is not None else {}
    for key in before.keys() - out.keys():
        out[key] = None
    for key in others:
        out.pop(key, None)
    for name, f in type(new).model_fields.items():
        key, value = f.alias or name, getattr(new, name)
        if key in replaced and isinstance(value, BaseModel):
            out[key] = {(g.alias or n): None for n, g in type(value).model_fields.items()} | out[key]
    return out
