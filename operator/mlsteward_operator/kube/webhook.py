"""Posting an alert to a webhook (a DriftMonitor's or a metric alert's `notify.webhookSecretRef`), with retries.

The URL is a credential (receivers put their token in it), so nothing here ever logs, raises or returns it: a
failure is described by its kind only."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp


def _webhook_failure(exc: BaseException, timeout_s: float) -> str:
    """What went wrong with a webhook POST, in words that contain no part of the URL (see post_webhook)."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return f"timed out after {timeout_s:g}s"
    if isinstance(exc, aiohttp.InvalidURL | ValueError):
        return "the value is not an http(s) URL"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name did not resolve"
    if isinstance(exc, aiohttp.ClientConnectorError):
        errno = getattr(exc.os_error, "errno", None)
        return f"connection failed: {os.strerror(errno)}" if errno else "connection failed"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    return type(exc).__name__



async def post_webhook(url: str, payload: dict[str, Any], *, attempts: int = 5, backoff_s: float = 1.0,
                       timeout_s: float = 10.0) -> str | None:
    """POST `payload` as JSON to `url`, retrying connection errors and 5xx/429 answers up to `attempts` times,
    waiting `backoff_s`, then twice as long after each failure. Returns None on a 2xx, else the last failure in
    words (never raises). A 4xx other than 429 is not retried: the receiver refused this payload.

    The URL is a credential (receivers put their token in it), so a failure is described by its kind only:
    aiohttp's own messages embed the URL, the host or the port and are never passed on."""
    failure = "not attempted"
    delay = backoff_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for attempt in range(1, attempts + 1):
            try:
                async with session.post(url, json=payload) as resp:
                    if 200 <= resp.status < 300:
                        return None
                    failure = f"HTTP {resp.status} on attempt {attempt}"
                    if 400 <= resp.status < 500 and resp.status != 429:
                        return failure
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                failure = f"{_webhook_failure(exc, timeout_s)} on attempt {attempt}"
                if isinstance(exc, (aiohttp.InvalidURL, ValueError)):
                    return failure  # the URL will not parse on the next attempt either
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay *= 2
    return failure
