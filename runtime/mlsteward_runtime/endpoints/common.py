"""Helpers shared by the endpoint modules: JSON responses, OpenAPI fragments, body reading, common checks."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from mlsteward_runtime.dataplane import DataPlane
from mlsteward_runtime.errors import BadRequest, NotFound, NotReady, PayloadTooLarge, UnsupportedMediaType

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


def error_body(schema_ref: str = "#/components/schemas/Error") -> dict[str, Any]:
    return {"description": "Error naming the field and the rule",
            "content": {JSON: {"schema": {"$ref": schema_ref}}}}


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


async def read_json(request: Request, limit: int) -> Any:
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
        body = await request.body()
    else:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes", field="body", rule="max_bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
    if not body:
        raise BadRequest("the request body is empty; send JSON", field="body", rule="required")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", field="body", rule="json") from None
