"""KServe V1 endpoints: model status and predict."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlsteward_runtime.endpoints.common import (
    body_doc, check_name, decode_body, json_response, plane_of, request_id,
)
from mlsteward_runtime.protocols import v1

router = APIRouter()


@router.get("/v1/models/{name}", tags=["v1"])
async def v1_model(request: Request, name: str) -> Response:
    plane = plane_of(request)
    check_name(plane, name)
    return json_response(v1.model_info(name, plane.version, plane.ready))


@router.post("/v1/models/{name}:predict", tags=["v1"], openapi_extra=body_doc(v1.REQUEST_SCHEMA))
async def v1_predict(request: Request, name: str) -> Response:
    plane = plane_of(request)
    check_name(plane, name)
    X = await decode_body(request, plane, lambda body: v1.decode(body, plane.validator))  # type: ignore[arg-type]
    pred, _ = await plane.infer(X)
    plane.observe(request_id(request), X, pred)
    return json_response(v1.encode(pred))
