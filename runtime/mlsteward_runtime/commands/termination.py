"""Results written to a Job's termination message, which Kubernetes caps at 4 KiB."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def shorten_message(result: M, dump: Callable[[M], str], limit: int) -> tuple[M, str]:
    """`result` with its `message` cut (marked " [truncated]") so that `dump(result)` fits in `limit` bytes when
    the message alone can make it fit; returns the result and its dump."""
    text = dump(result)
    over = len(text.encode()) - limit
    if over > 0:
        msg: str = result.message  # type: ignore[attr-defined]
        keep = max(0, len(msg.encode()) - over - 16)
        result = result.model_copy(update={"message": msg.encode()[:keep].decode(errors="ignore") + " [truncated]"})
        text = dump(result)
    return result, text
