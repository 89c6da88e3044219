"""Open Inference Protocol (V2) endpoints: health, server and model metadata, inference."""

from __future__ import annotations

import importlib.metadata
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mlsteward_runtime.endpoints.common import (
    NOT_FOUND, NOT_READY, PREDICT_ERRORS, answer, body_doc, check_name, check_ready, decode_body, json_response,
    plane_of, request_id,
)
from mlsteward_runtime.errors import NotFound
from mlsteward_runtime.protocols import v2

router = APIRouter()

# The inference routes come first: the router tries routes in order, and these carry the traffic.


async def _infer(request: Request, name: str) -> Response:
    plane = plane_of(request)
    check_name(plane, name)
    req = await decode_body(
        request, plane, lambda body, plain: v2.decode(body, plane.validator, plain))  # type: ignore[arg-type]
    pred, proba = await plane.infer(req.X)
    plane.observe(request_id(request), req.X, pred)
    return answer(plane, lambda: v2.encode(name, plane.version, req, pred, proba))


# The inference routes are dispatched directly (endpoints/direct.py): FastAPI calls them only under a root_path.
@router.post("/v2/models/{name}/infer", tags=["v2"], openapi_extra=body_doc(v2.REQUEST_SCHEMA),
             responses=PREDICT_ERRORS)
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name)


@router.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"], openapi_extra=body_doc(v2.REQUEST_SCHEMA),
             responses=PREDICT_ERRORS)
async def infer_version(request: Request, name: str, version: str) -> Response:
    served = plane_of(request).version
    if version != served:
        raise NotFound(f"version {version!r} is not served here (this is {served!r})", field="version",
                       rule="exists")
    return await _infer(request, name)


@router.get("/v2/health/live", tags=["health"])
async def live() -> Response:
    return json_response({"live": True})


@router.get("/v2/health/ready", tags=["health"],
            responses={503: {"description": "Not ready; reason and message say why the model failed to load, or "
                                            "reason Draining while the server drains before shutdown",
                             "headers": {"Retry-After": {"schema": {"type": "string"}}}}})
async def ready(request: Request) -> Response:
    plane = plane_of(request)
    if plane.draining:
        return json_response({"ready": False, "reason": "Draining", "message": "the server is shutting down"}, 503)
    if not plane.ready:
        body: dict[str, Any] = {"ready": False}
        if plane.load_error is not None:
            body["reason"] = plane.load_error.reason
            body["message"] = plane.load_error.message
        return json_response(body, 503, {"Retry-After": "1"})
    return json_response({"ready": True})


@router.get("/v2", tags=["v2"])
async def server_metadata() -> Response:
    return json_response({"name": "mlsteward", "version": _package_version(), "extensions": []})


@router.get("/v2/models/{name}", tags=["v2"], responses={**NOT_FOUND, **NOT_READY})
async def model_metadata(request: Request, name: str) -> Response:
    plane = plane_of(request)
    check_name(plane, name)
    check_ready(plane)
    m = plane.model
    assert m is not None and plane.signature is not None
    return json_response(v2.model_metadata(plane.name, plane.version, plane.signature, m.classes, m.is_classifier))


@router.get("/v2/models/{name}/ready", tags=["v2"],
            responses={**NOT_FOUND, 503: {"description": "The model is not ready: {name, ready: false}"}})
async def model_ready(request: Request, name: str) -> Response:
    plane = plane_of(request)
    check_name(plane, name)
    return json_response({"name": name, "ready": plane.ready}, 200 if plane.ready else 503)


def _package_version() -> str:
    try:
        return importlib.metadata.version("mlsteward")
    except Exception:  # noqa: BLE001 - metadata is missing when running from a source tree
        return "0+unknown"
