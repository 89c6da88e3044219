"""The status write every kind shares (STYLE §6): parse the object kopf hands over, say whether the new status
differs from the old one, and turn it into a merge patch that leaves nothing stale behind."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mlsteward_operator.errors import InvalidSpec

M = TypeVar("M", bound=BaseModel)


def _plain(status: BaseModel | Mapping[str, Any] | None) -> dict[str, Any]:
    if status is None:
        return {}
    if isinstance(status, BaseModel):
        return status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.loads(json.dumps(dict(status), default=str))


def status_changed(old: BaseModel | Mapping[str, Any] | None, new: BaseModel | Mapping[str, Any]) -> bool:
    """Whether writing `new` would change anything compared with `old` (a model or the dict read from the object).

    Both sides are normalised the same way (camelCase, no unset fields) and parsed as the same model, so a status
    read back from the API server compares equal to the one that was written.
    """
    if isinstance(new, BaseModel) and old is not None and not isinstance(old, BaseModel):
        try:
            old = type(new).model_validate(old)
        except ValidationError:
            return True
    return _plain(old) != _plain(new)


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
