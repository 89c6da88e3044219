"""The simple JSON protocol: POST /predict."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlsteward_runtime.endpoints.common import SIMPLE_ERRORS, answer, body_doc, decode_body, plane_of, request_id
from mlsteward_runtime.protocols import simple

router = APIRouter()


@router.post("/predict", tags=["simple"], openapi_extra=body_doc(simple.REQUEST_SCHEMA), responses=SIMPLE_ERRORS)
async def predict(request: Request) -> Response:
    plane = plane_of(request)
    X = await decode_body(
        request, plane, lambda body, plain: simple.decode(body, plane.validator, plain))  # type: ignore[arg-type]
    pred, proba = await plane.infer(X)
    rid = request_id(request)
    plane.observe(rid, X, pred)
    return answer(plane, lambda: simple.encode(pred, proba, plane.version, rid, time.time()))
