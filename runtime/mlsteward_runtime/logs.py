"""Structured JSON logs: one object per line with time, level, logger, message and context fields.

Context (request id, model version, field, rule, inputs) travels in `extra=`. Input fields named in the runtime's
`pii_fields` are replaced by "[REDACTED]" wherever they appear in a record's `inputs`, so a debug log of a request
never carries them.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

__all__ = ["JsonFormatter", "LogBudget", "configure_logging", "redact"]

REDACTED = "[REDACTED]"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as context.
# uvicorn adds `color_message` (the message with terminal colours), which has no place in JSON logs.
_STANDARD = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None)).keys()) | {
    "message", "asctime", "color_message"}


def redact(value: Any, pii: frozenset[str]) -> Any:
    """Replace PII keys in dicts (recursively, also inside lists) with a marker."""
    if not pii:
        return value
    if isinstance(value, dict):
        return {k: (REDACTED if k in pii else redact(v, pii)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, pii) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, pii_fields: list[str] | None = None, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.pii = frozenset(pii_fields or ())
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(self.static)
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = redact(v, self.pii) if k in ("inputs", "body") else (REDACTED if k in self.pii else v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def configure_logging(level: str = "info", pii_fields: list[str] | None = None, static: dict[str, Any] | None = None,
                      stream: Any = None) -> None:
    """Route the runtime's and uvicorn's loggers to one JSON handler on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(pii_fields, static))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers = []
        lg.propagate = True


class LogBudget:
    """At most `rate` lines per second (bursts of `burst`) for a log line that a client can cause at will, such as
    one per refused request: without a bound, one client could fill the node's disk or drown the other lines. The
    lines left out are counted and the next line that passes reports how many (`suppressed`)."""

    def __init__(self, rate: float = 10.0, burst: float = 20.0, clock: Any = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.at = burst, clock()
        self.suppressed = 0

    def take(self) -> int | None:
        """None when this line is to be left out; otherwise the number of lines left out since the last one."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1.0:
            self.suppressed += 1
            return None
        self.tokens -= 1.0
        out, self.suppressed = self.suppressed, 0
        return out
