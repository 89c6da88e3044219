"""When a ModelVersion must be looked at again without an event (pure): never; its validation Job's status changes
wake it. Until it has a verdict it is converging (the operator's in-motion recheck is its safety net)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any


def next_look(body: Mapping[str, Any], now: dt.datetime) -> tuple[dt.datetime | None, bool]:
    return None, (body.get("status") or {}).get("phase") not in ("Ready", "Failed")
