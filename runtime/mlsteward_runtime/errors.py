"""Error hierarchy of the runtime. Each error carries the HTTP status it maps to at the edge (one handler in app)."""

from __future__ import annotations

from typing import Any


class UsageError(Exception):
    """Bad command-line input: the CLI prints the message and exits 2."""


class RuntimeErrorBase(Exception):
    """Base of errors that reach a client. `field` and `rule` name what was wrong, for the JSON body."""

    status_code: int = 500
    error: str = "internal_error"
    # Extra response headers, e.g. Retry-After on 503s.
    headers: dict[str, str] = {}

    def __init__(self, message: str, *, field: str | None = None, rule: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.rule = rule
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.rule is not None:
            body["rule"] = self.rule
        body.update(self.extra)
        return body


class BadRequest(RuntimeErrorBase):
    status_code = 400
    error = "bad_request"


class InvalidInput(RuntimeErrorBase):
    status_code = 422
    error = "invalid_input"


class NotFound(RuntimeErrorBase):
    status_code = 404
    error = "not_found"


class PayloadTooLarge(RuntimeErrorBase):
    status_code = 413
    error = "payload_too_large"
    # The rest of a refused body is never read: closing the connection stops the client from pushing megabytes
    # the server would otherwise have to receive and discard before the next request on it.
    headers = {"Connection": "close"}


class UnsupportedMediaType(RuntimeErrorBase):
    status_code = 415
    error = "unsupported_media_type"


class Overloaded(RuntimeErrorBase):
    status_code = 503
    error = "overloaded"
    headers = {"Retry-After": "1"}


class NotReady(RuntimeErrorBase):
    status_code = 503
    error = "not_ready"
    headers = {"Retry-After": "1"}


class ModelLoadError(Exception):
    """The artifact could not be fetched, verified or loaded. `reason` is a CamelCase status reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class UntrustedTypes(ModelLoadError):
    """A skops artifact names types or callables outside the reviewed list; nothing in it was built."""

    def __init__(self, uri: str, types: list[str]) -> None:
        self.types = sorted(types)
        super().__init__(
            "UntrustedTypes",
            f"refusing {uri}: it names types outside the reviewed list, and nothing in it was built: "
            f"{', '.join(self.types)}",
        )


class SklearnVersionSkew(ModelLoadError):
    """The artifact was saved by a scikit-learn whose major.minor differs from the installed one."""

    def __init__(self, uri: str, recorded: list[str], installed: str) -> None:
        self.recorded = sorted(recorded)
        self.installed = installed
        super().__init__(
            "SklearnVersionSkew",
            f"refusing {uri}: saved with scikit-learn {', '.join(self.recorded)} but {installed} is installed; a "
            "different major.minor can change predictions silently (retrain, or allow the skew explicitly)",
        )


class Conflict(RuntimeErrorBase):
    status_code = 409
    error = "conflict"
