"""Conventions every controller shares, below the peers plan, render, status, drift and experiment (which may not
import each other): condition bookkeeping, Kubernetes time resolution, and the annotation that carries a router's
weight table from the builder that writes it to the observer that reads it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from mlsteward_operator.api.common import Condition, ConditionStatus, ConditionType
from mlsteward_operator.errors import InvalidSpec

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


def parse_object(model: type[Any], body: Mapping[str, Any]) -> Any:
    """`body` (an object as kopf or the API server hands it) parsed as `model`; InvalidSpec naming the first
    offending field otherwise."""
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidSpec(f"{where}: {first.get('msg')}", field=where) from None
