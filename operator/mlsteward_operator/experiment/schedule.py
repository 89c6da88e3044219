"""When an Experiment must be looked at again without an event (pure): a Running one every `LOOK_INTERVAL` (its
routers' counters raise no event); a Pending one when its ModelDeployment or router changes (events), with the
operator's in-motion recheck as a safety net; a Concluded or Stopped one never."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

LOOK_INTERVAL = dt.timedelta(seconds=5)


def next_look(body: Mapping[str, Any], now: dt.datetime) -> tuple[dt.datetime | None, bool]:
    phase = (body.get("status") or {}).get("phase")
    if phase in ("Concluded", "Stopped"):
        return None, False
    if phase == "Running":
        return now + LOOK_INTERVAL, True
    return None, True
