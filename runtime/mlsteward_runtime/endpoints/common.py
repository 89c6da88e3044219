"""Helpers shared by the endpoint modules: JSON responses, OpenAPI fragments, body reading, common checks."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, TypeVar

import orjson
from fastapi import Request
from fastapi.responses import Response

from mlsteward_runtime.dataplane import DataPlane
from mlsteward_runtime.errors import BadRequest, NotFound, NotReady, PayloadTooLarge, UnsupportedMediaType

T = TypeVar("T")

JSON = "application/json"
_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"},
                   "rule": {"type": "string"}},
}


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content, option=_ORJSON_OPTS), status_code=status, media_type=JSON,
                    headers=headers)


def answer(plane: DataPlane, encode: Callable[[], Any]) -> Response:
    """A prediction's 200 response: `encode()` builds the document (NumPy arrays stay arrays) and one orjson call
    serializes it; the time is counted as the encode step."""
    t0 = time.perf_counter()
    resp = json_response(encode())
    plane.stages.add("encode", time.perf_counter() - t0)
    return resp


def error_body(description: str = "Error naming the field and the rule") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}}
_CLOSE = {"Connection": {"description": "close: the rest of the body is not read.", "schema": {"type": "string"}}}
NOT_FOUND = {404: error_body("No such model, version or request id (rule exists)")}
NOT_READY = {503: {**error_body("The model is not loaded and checked yet (rule ready)"),
                   "headers": _RETRY_AFTER}}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: error_body("Empty or malformed JSON body (rules required, json) or bad Content-Length"),
    413: {**error_body("Body over max_body_bytes (rule max_bytes) or with more values than max_rows rows "
                       "(rule max_values)"), "headers": _CLOSE},
    415: error_body("Content type other than application/json (rule media_type)"),
    422: error_body("Input that breaks a rule of the signature or the protocol; field and rule name it"),
}
SIMPLE_ERRORS: dict[int | str, dict[str, Any]] = {
    **BODY_ERRORS,
    503: {**error_body("Not ready (rule ready) or the batch queue is full (field queue; rules max_queue, "
                       "max_queue_bytes, max_queue_delay)"),
          "headers": _RETRY_AFTER},
}
PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {**SIMPLE_ERRORS, **NOT_FOUND}


def body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {JSON: {"schema": schema}}}}


def plane_of(request: Request) -> DataPlane:
    return request.app.state.plane  # type: ignore[no-any-return]


def request_id(request: Request) -> str:
    return request.scope["state"]["request_id"]  # type: ignore[no-any-return]


def check_name(plane: DataPlane, model: str) -> None:
    if model != plane.name:
        raise NotFound(f"no model named {model!r}; this server serves {plane.name!r}", field="name", rule="exists")


def check_ready(plane: DataPlane) -> None:
    if not plane.ready:
        raise NotReady("the model is not ready yet", field="model", rule="ready")


async def read_body(request: Request, limit: int, most_values: int | None = None) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed `limit` bytes or `most_values` values.

    Content-Length is checked before anything is read; the receive loop then counts the bytes that actually arrive
    (chunked bodies have no length, and a body must never be buffered past the limit) and the commas in them.
    orjson holds the GIL for a whole parse (about a second for 8 MiB of small numbers on a loaded core), so a body
    with more values than any acceptable request could carry is refused from that count, a C-speed scan of each
    chunk, and usually long before it has all arrived.
    """
    ctype = request.headers.get("content-type")
    if ctype is not None:
        base = ctype.split(";", 1)[0].strip().lower()
        if base != JSON and not base.endswith("+json"):
            raise UnsupportedMediaType(f"content type {base!r} is not supported; send {JSON}",
                                       field="content-type", rule="media_type")
    clen = request.headers.get("content-length")
    if clen is not None:
        try:
            n = int(clen)
        except ValueError:
            raise BadRequest("content-length is not a number", field="content-length", rule="type") from None
        if n > limit:
            raise PayloadTooLarge(f"body of {n} bytes exceeds the limit of {limit}", field="body",
                                  rule="max_bytes")
    chunks: list[bytes] = []
    size = commas = 0
    most = most_values if most_values is not None else limit
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", field="body", rule="max_bytes")
        # A body holds fewer commas than bytes: until it reaches `most` bytes it cannot hold `most` values, and the
        # count (about 1 µs per kilobyte) starts only then, over what arrived so far.
        if size >= most:
            commas += chunk.count(b",") + (sum(c.count(b",") for c in chunks) if size - len(chunk) < most else 0)
            if commas >= most:
                raise PayloadTooLarge(f"body holds more than {most} values, the most max_rows rows of all features "
                                      "could need", field="body", rule="max_values")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise BadRequest("the request body is empty; send JSON", field="body", rule="required")
    return body


def max_values(plane: DataPlane) -> int | None:
    """The most JSON values a body may hold: max_rows rows of all features, twice over for keys and framing.
    None until the model is loaded (the feature count is known then); such requests get 503 not ready."""
    if plane.validator is None:
        return None
    return 2 * plane.config.limits.max_rows * max(plane.validator.n, 1) + 1024


# Below this size a body's values are few and their type check costs less than the proof that none is a boolean.
_PROVE_BOOLS_FROM = 2048
# Occurrences of a literal's first letter checked before giving up: JSON keys such as "inputs" and "datatype" hold
# a few; a body with many (text features, say) is simply not proven free of booleans.
_LETTERS_CHECKED = 64


def bools_absent(body: bytes) -> bool:
    """True when the JSON text `body` holds neither `true` nor `false`, so no value parsed from it is a boolean.

    Outside strings, the letters t and f of a JSON document occur only in those two literals, and a numeric body
    holds few of them inside its strings (keys): each is found with memchr and checked, a few microseconds for a
    large body, against about 0.5 µs per value for a type check of every value. False means "not proven", never
    "has booleans".
    """
    for literal in (b"true", b"false"):
        first = literal[:1]
        i = body.find(first)
        seen = 0
        while i != -1:
            seen += 1
            if seen > _LETTERS_CHECKED or body.startswith(literal, i):
                return False
            i = body.find(first, i + 1)
    return True


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", field="body", rule="json") from None


async def decode_body(request: Request, plane: DataPlane, decode: Callable[[Any, bool], T], ready: bool = True) -> T:
    """Read, parse and decode a request body; parsing and validating a large one runs in a thread.

    `decode(doc, bools_absent)` gets the parsed document and whether the body text proves it holds no JSON boolean
    (`bools_absent`), which lets a decoder convert a numeric matrix in one NumPy pass without a type check per value.

    The thread keeps the per-row Python validation of a large request from holding the event loop: other clients'
    requests are served in between. Small bodies are decoded in place, where a thread hop would cost more than it
    saves. `ready` checks readiness after the body arrived and before any parsing.
    """
    t0 = time.perf_counter()
    body = await read_body(request, plane.config.limits.max_body_bytes, max_values(plane))
    stages = plane.stages
    stages.add("read", time.perf_counter() - t0)
    if ready:
        check_ready(plane)

    def run() -> T:
        t1 = time.perf_counter()
        doc = parse_json(body)
        t2 = time.perf_counter()
        stages.add("parse", t2 - t1)
        out = decode(doc, len(body) >= _PROVE_BOOLS_FROM and bools_absent(body))
        stages.add("validate", time.perf_counter() - t2)
        return out

    if len(body) < request.app.state.settings.parse_offload_bytes:
        return run()
    return await asyncio.to_thread(run)
