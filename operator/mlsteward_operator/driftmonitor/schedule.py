"""When a DriftMonitor must be looked at again without an event (pure: spec + status + now in, a time out):
the next drift check (`spec.interval` after the last), the end of the grace of a reference not applied yet (a
missing ModelDeployment or ModelVersion, decide.MISSING), the next cron time of `spec.schedule`, and while a
retraining is active, soon (its Job and its new ModelVersion raise events; the recheck is a safety net)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from mlsteward_operator.api.common import parse_duration
from mlsteward_operator.api.driftmonitor import DriftMonitor
from mlsteward_operator.driftmonitor.actions import waiting_for_reference
from mlsteward_operator.kernel.conditions import grace_end, second
from mlsteward_operator.kernel.status import parse_object
from mlsteward_operator.retraining import decide as triggers


def next_look(body: Mapping[str, Any], now: dt.datetime) -> tuple[dt.datetime | None, bool]:
    dm: DriftMonitor = parse_object(DriftMonitor, body)
    st = dm.status
    times = [second(t) for t in (st.last_check, st.last_report.time if st.last_report else None) if t is not None]
    if st.observed_generation != dm.metadata.generation or not times:
        check = now
    else:
        check = max(times) + dt.timedelta(seconds=parse_duration(dm.spec.interval))
    due = [check]
    if st.observed_generation == dm.metadata.generation and waiting_for_reference(dm):
        # A reference not applied yet: look again when its grace ends (then Stalled if it is still missing).
        due.append(grace_end(dm.metadata.creation_timestamp, now) or now)
    if dm.spec.schedule is not None:
        due.append(st.next_scheduled_run or triggers.next_run(dm.spec.schedule, now))
    return min(due), triggers.retrain_active(st)
