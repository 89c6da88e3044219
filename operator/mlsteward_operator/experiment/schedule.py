"""When an Experiment must be looked at again without an event (pure): a Running one every `LOOK_INTERVAL` (its
routers' counters raise no event); a Pending one when its ModelDeployment or router changes (events), with the
operator's in-motion recheck as a safety net, and one waiting for its ModelDeployment to be applied at the end of
that grace (REFERENCE_GRACE after its creation: then it reads Stalled); a Concluded or Stopped one never."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from mlsteward_operator.api.experiment import Experiment
from mlsteward_operator.kernel.conditions import grace_end
from mlsteward_operator.kernel.status import parse_object

LOOK_INTERVAL = dt.timedelta(seconds=5)


def next_look(body: Mapping[str, Any], now: dt.datetime) -> tuple[dt.datetime | None, bool]:
    phase = (body.get("status") or {}).get("phase")
    if phase in ("Concluded", "Stopped"):
        return None, False
    if phase == "Running":
        return now + LOOK_INTERVAL, True
    reconciling = next((c for c in (body.get("status") or {}).get("conditions") or []
                        if c.get("type") == "Reconciling"), None)
    if reconciling is not None and reconciling.get("reason") == "DeploymentNotFound":
        exp: Experiment = parse_object(Experiment, body)
        return grace_end(exp.metadata.creation_timestamp, now), True
    return None, True
