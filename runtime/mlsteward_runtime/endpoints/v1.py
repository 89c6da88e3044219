"""KServe V1 endpoints: model status and predict."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.convertors import Convertor, register_url_convertor
from fastapi.responses import Response

from mlsteward_runtime.endpoints.common import (
    NOT_FOUND, PREDICT_ERRORS, answer, body_doc, check_name, decode_body, json_response, plane_of, request_id,
)
from mlsteward_runtime.protocols import v1



class _ModelName(Convertor[str]):
    """A model name in /v1/models/{name}: no ':' so that GET /v1/models/iris:predict is not taken for the status of
    a model named "iris:predict", and a 405 there names POST, the only method that path serves."""

    regex = "[^/:]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# Registered before the routes below compile their paths.
register_url_convertor("v1name", _ModelName())
router = APIRouter()


@router.get("/v1/models/{name:v1name}", tags=["v1"], responses=NOT_FOUND)
async def v1_model(request: Request, name: str) -> Response:
    plane = plane_of(request)
    check_name(plane, name)
    return json_response(v1.model_info(name, plane.version, plane.ready))


@router.post("/v1/models/{name}:predict", tags=["v1"], openapi_extra=body_doc(v1.REQUEST_SCHEMA),
             responses=PREDICT_ERRORS)
async def v1_predict(request: Request, name: str) -> Response:
    plane = plane_of(request)
    check_name(plane, name)
    X = await decode_body(
        request, plane, lambda body, plain: v1.decode(body, plane.validator, plain))  # type: ignore[arg-type]
    pred, _ = await plane.infer(X)
    plane.observe(request_id(request), X, pred)
    return answer(plane, lambda: v1.encode(pred))
