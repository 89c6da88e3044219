"""ASGI plumbing shared by the router's endpoints: the error a client gets, sending responses, reading bodies."""

from __future__ import annotations

from typing import Any

import orjson

# Hop-by-hop headers (RFC 9110 §7.6.1) and the ones this hop recomputes are never copied between client and backend.
HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authorization", "proxy-authenticate", "host", "content-length", "server", "date",
    }
)
JSON = [(b"content-type", b"application/json")]


class ClientError(Exception):
    """A 4xx the router itself answers; `field` and `rule` name what was wrong."""

    def __init__(self, status: int, error: str, message: str, field: str | None = None, rule: str | None = None,
                 *, headers: list[tuple[bytes, bytes]] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or []
        self.body: dict[str, Any] = {"error": error, "message": message}
        if field is not None:
            self.body["field"] = field
        if rule is not None:
            self.body["rule"] = rule
        self.body.update(extra)


def too_large(limit: int) -> ClientError:
    return ClientError(413, "payload_too_large", f"the body is larger than {limit} bytes", field="body",
                       rule=f"at most {limit} bytes")


async def send_raw(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": headers + [(b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Any, status: int, obj: dict[str, Any],
                    headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_raw(send, status, orjson.dumps(obj), JSON + (headers or []))


async def read_body(scope: dict[str, Any], receive: Any, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it (or its declared length) passes `limit` bytes."""
    for k, v in scope["headers"]:
        if k == b"content-length":
            try:
                declared = int(v)
            except ValueError:
                raise ClientError(400, "bad_request", "content-length is not a number",
                                  field="content-length", rule="integer") from None
            if declared > limit:
                raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)

