"""The two errors domain code raises (STYLE §7). Only the handlers map them to kopf errors.

- `InvalidSpec`: the object can never reconcile as written (a retry would fail the same way); the handler reports
  it in status and stops retrying until the spec changes (`kopf.PermanentError`).
- `NotReady`: something the reconcile depends on is not there yet (a ModelVersion still validating, pods
  starting); the handler retries after `delay` seconds (`kopf.TemporaryError(delay=...)`).
"""

from __future__ import annotations


class InvalidSpec(Exception):
    """The spec cannot be reconciled as written. `field` names the offending spec path, e.g. `spec.version`."""

    def __init__(self, message: str, *, field: str | None = None, reason: str = "InvalidSpec") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason


class NotReady(Exception):
    """A dependency is not ready yet; try again in `delay` seconds."""

    def __init__(self, message: str, *, delay: float = 10.0, reason: str = "NotReady") -> None:
        super().__init__(message)
        self.message = message
        self.delay = delay
        self.reason = reason
