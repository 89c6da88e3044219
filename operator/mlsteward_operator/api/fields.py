"""Field types whose every accepted value the operator can act on (DESIGN §4: bad input is refused at admission).

Each is a CEL rule whose message names the field and the rule, and the same check in pydantic, so that the API
server and the operator's models refuse the same values: a location the artifact fetcher cannot read, a duration the
reconciles cannot wait for, a reference that cannot name a ModelDeployment.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from mlsteward_operator.api.common import (
    DURATION,
    MAX_URI,
    cel_string,
    checked,
    matching,
    parse_duration,
)

# What `mlsteward_runtime.artifacts.fetch_artifact` reads (see `uri_type`).
URI_RE = r"^(/\S*|file://(localhost)?/\S*|https?://[^/?#\s]+([/?#]\S*)?|s3://[^/\s]+/+[^/\s]\S*)$"
MAX_DURATION = "8760h"
MAX_DURATION_S = 8760 * 3600
# A ModelDeployment's name is a Service name (its root rule); a reference that is not one names nothing.
DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DeploymentRef = Annotated[str, *matching(
    DNS_1035,
    "spec.deployment must be a ModelDeployment name: at most 63 lowercase letters, digits and '-', starting with a "
    "letter",
    min_length=1, max_length=63,
)]


def uri_type(field: str) -> Any:
    """A location `mlsteward_runtime.artifacts.fetch_artifact` can read: an absolute path, file:///path (or
    file://localhost/path), http(s)://host/... or s3://bucket/key. Anything else (a relative path, which resolves
    against nobody knows which working directory, another scheme, a file URI naming a remote host, an s3 URI without
    a key) could only end in FetchFailed once a Job has run, so the API server refuses it."""
    message = (f"{field} must be an absolute path, file:///path, http(s)://host/path or s3://bucket/key, without "
               "whitespace (percent-encode it in a file:// URI)")
    return Annotated[str, *matching(URI_RE, message, min_length=1, max_length=MAX_URI)]


def duration_type(field: str, *, zero: bool = False, minimum: str | None = None) -> Any:
    """A Go-style duration the operator can wait for: above 0 unless `zero` (a zero check interval would busy-loop,
    a zero canary step be judged on no traffic; a zero cooldown means none and is fine), at least `minimum` when
    given, and at most a year (a larger one overflows the datetime arithmetic of the reconciles). At most 6 digits
    per number keeps CEL's duration() within its int64 nanoseconds."""
    if minimum is not None:
        lower, bound = f"at least {minimum} and ", f"duration(self) >= duration('{minimum}') && "
    else:
        lower, bound = ("", "") if zero else ("above 0 and ", "duration(self) > duration('0s') && ")
    message = (f"{field} must be a duration such as 30s, 5m or 1h30m, {lower}at most {MAX_DURATION}, with at "
               "most 6 digits per number")
    rule = (f"self.matches({cel_string(DURATION)}) && !self.matches('[0-9]{{7,}}') && {bound}"
            f"duration(self) <= duration('{MAX_DURATION}')")
    least = parse_duration(minimum) if minimum is not None else None

    def ok(value: str) -> bool:
        if re.fullmatch(DURATION, value) is None or re.search("[0-9]{7,}", value) is not None:
            return False
        seconds = parse_duration(value)
        above = seconds >= least if least is not None else (zero or seconds > 0)
        return above and seconds <= MAX_DURATION_S

    return Annotated[str, *checked(rule, message, ok, max_length=32, pattern=DURATION)]
