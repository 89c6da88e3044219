"""Operations endpoints: Prometheus metrics, sliding-window stats, the drift window and feedback."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from mlsteward_runtime.endpoints.common import BODY_ERRORS, NOT_READY, body_doc, error_body, decode_body, json_response, plane_of
from mlsteward_runtime.errors import InvalidInput
from mlsteward_runtime.metrics import CONTENT_TYPE_LATEST

router = APIRouter()

FEEDBACK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["request_id"],
    "properties": {
        "request_id": {"type": "string", "minLength": 1},
        "label": {"description": "True label(s): one per predicted row, or a scalar for one row."},
        "reward": {"type": "number"},
    },
}


@router.get("/metrics", tags=["observability"], response_class=PlainTextResponse,
            responses={200: {"description": "Prometheus text exposition format",
                             "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
async def metrics(request: Request) -> Response:
    return Response(plane_of(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/stats", tags=["observability"])
async def stats(request: Request) -> Response:
    return json_response(plane_of(request).runtime_stats().model_dump(mode="json"))


@router.get("/v1/drift/window", tags=["observability"], responses=NOT_READY)
async def drift_window(request: Request) -> Response:
    return json_response(plane_of(request).drift_window().model_dump(mode="json"))


@router.post("/v1/feedback", tags=["feedback"], openapi_extra=body_doc(FEEDBACK_SCHEMA),
             responses={**BODY_ERRORS, 404: error_body("No recent prediction has this request id (rule exists)"),
                        409: error_body("Feedback for this request id was already recorded (rule unique)")})
async def feedback(request: Request) -> Response:
    plane = plane_of(request)
    body = await decode_body(request, plane, lambda body, _plain: body, ready=False)
    if type(body) is not dict:
        raise InvalidInput("the body must be a JSON object", field="body", rule="type")
    unknown = [k for k in body if k not in ("request_id", "label", "reward")]
    if unknown:
        # An empty key is still a key the client sent; name it visibly rather than with an empty string.
        raise InvalidInput(f"unknown key {unknown[0]!r}", field=unknown[0] or '""', rule="unknown_field")
    request_id = body.get("request_id")
    if type(request_id) is not str or not request_id:
        raise InvalidInput("request_id must be a non-empty string", field="request_id", rule="required")
    label, reward = body.get("label"), body.get("reward")
    if label is None and reward is None:
        raise InvalidInput("send a label or a reward", field="label", rule="required")
    return json_response(await plane.join_feedback(request_id, label, reward))
