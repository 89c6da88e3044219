"""The HTTP application: `create_app(settings)` builds a FastAPI app over one DataPlane.

Endpoints live in `endpoints/` by protocol (V2, V1, simple, operations) and do HTTP work only (body limits, content
type, JSON parsing, status codes), delegating to the data plane through the protocol codecs. Prediction endpoints
read the raw body and parse it with orjson instead of declaring pydantic bodies: the hand-written validator over
NumPy is much faster on large payloads. Their request schemas are still published in the OpenAPI document
(`openapi_extra`), so clients and schemathesis see them.

One exception handler turns the runtime's error hierarchy into JSON bodies naming the field and the rule; a small
ASGI layer (`edge.Edge`) stamps every response with x-request-id and x-model-version, counts it and times it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from mlsteward_runtime.dataplane import DataPlane
from mlsteward_runtime.edge import INTERNAL_ERROR, PREDICT_ENDPOINTS, Edge
from mlsteward_runtime.endpoints import ops, simple, v1, v2
from mlsteward_runtime.endpoints.common import ERROR_SCHEMA, json_response
from mlsteward_runtime.endpoints.direct import DirectRoutes
from mlsteward_runtime.errors import BadRequest, InvalidInput, ModelLoadError, NotFound, RuntimeErrorBase
from mlsteward_runtime.logs import LogBudget
from mlsteward_runtime.settings import ServeSettings

__all__ = ["create_app"]

log = logging.getLogger("mlsteward.app")


def create_app(settings: ServeSettings, plane: DataPlane | None = None) -> FastAPI:
    """Build the app. Pass a loaded `plane` (the server does, after verifying the model before forking); without
    one, the lifespan loads the model in a thread so liveness answers while readiness stays 503 until it is done.
    """
    cfg = settings.runtime
    if plane is None:
        plane = DataPlane.from_settings(settings)
    app = _ServingApp(
        title="mlsteward serve",
        version=cfg.version,
        description=f"Predictions from model {cfg.name} version {cfg.version} (scikit-learn) over V2, KServe V1 "
        "and a simple JSON protocol.",
        lifespan=_lifespan(plane),
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.plane = plane
    app.state.settings = settings
    app.add_exception_handler(RuntimeErrorBase, _runtime_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    for module in (v2, v1, simple, ops):
        app.include_router(module.router)
    _add_error_schema(app)
    return app


class _ServingApp(FastAPI):
    """FastAPI with the runtime's own ASGI layers outermost: `edge.Edge` (request id, version header, metrics,
    stats, the JSON 500) around `DirectRoutes` (predictions straight to their endpoints, endpoints/direct.py), around
    FastAPI's own stack. FastAPI's outer layers (its server-error page, native telemetry and body limit: about
    10 µs a request) then serve only the other routes; the prediction routes have their own body limits, and an
    unexpected error still gets the JSON 500 (from the Edge, or from the handler FastAPI's error layer calls)."""

    def build_middleware_stack(self) -> Any:
        inner = DirectRoutes(super().build_middleware_stack(), _prediction_routes(), self.exception_handlers)
        return Edge(inner, self.state.plane)


def _prediction_routes() -> list[APIRoute]:
    routes = [r for module in (v2, v1, simple) for r in module.router.routes
              if isinstance(r, APIRoute) and r.path in PREDICT_ENDPOINTS]
    assert {r.path for r in routes} == PREDICT_ENDPOINTS, "every prediction route is dispatched directly"
    return routes


def _lifespan(plane: DataPlane) -> Callable[[FastAPI], Any]:
    """Load the model in a thread when it is not loaded yet; close the prediction log on shutdown."""

    async def load() -> None:
        try:
            await asyncio.to_thread(plane.load)
            plane.start_worker()
        except ModelLoadError as exc:
            log.error("Failed to load model", extra={"model": plane.name, "version": plane.version,
                                                      "reason": exc.reason, "error": exc.message})
        except Exception as exc:  # noqa: BLE001 - report it through readiness instead of dying silently
            plane.load_error = ModelLoadError("LoadFailed", f"{type(exc).__name__}: {exc}")
            log.exception("Failed to load model", extra={"model": plane.name, "version": plane.version})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        if plane.model is None and plane.load_error is None:
            task = asyncio.create_task(load())
        elif plane.model is not None and not plane.ready:
            plane.start_worker()
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
            if plane.prediction_log is not None:
                await asyncio.to_thread(plane.prediction_log.close)

    return lifespan


# -- error handling (one handler for the hierarchy; framework errors mapped into the same shape) ------------------

# One line per refused request is what an operator wants to read, but a client decides how many there are: client
# errors are logged within a budget (5xx always), and the next line says how many were left out.
_CLIENT_ERROR_LOGS = LogBudget()


async def _runtime_error(request: Request, exc: RuntimeErrorBase) -> Response:
    if exc.status_code >= 500 or log.isEnabledFor(logging.INFO):
        suppressed = 0 if exc.status_code >= 500 else _CLIENT_ERROR_LOGS.take()
        if suppressed is not None:
            log.info("Rejected request", extra={"request_id": request.scope.get("state", {}).get("request_id"),
                                                 "version": request.app.state.plane.version,
                                                 "status": exc.status_code, "field": exc.field, "rule": exc.rule,
                                                 "path": request.url.path, "suppressed": suppressed})
    return json_response(exc.to_json(), exc.status_code, exc.headers or None)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """The body of a 500 from FastAPI's error layer (routes other than predictions); the Edge logs the error."""
    return json_response(INTERNAL_ERROR, 500)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 404:
        err: RuntimeErrorBase = NotFound(f"no endpoint at {request.url.path}", field="path", rule="route")
    elif exc.status_code == 405:
        err = BadRequest(f"{request.method} is not allowed on {request.url.path}", field="method",
                         rule="allowed")
        err.status_code = 405
        err.headers = {"Allow": _allowed_methods(request)}
    else:
        err = BadRequest(str(exc.detail), field="request", rule="http")
        err.status_code = exc.status_code
    return await _runtime_error(request, err)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (RFC 9110 requires Allow on a 405).

    Starlette's own Allow names only the first route whose path matched; /v1/models/{name} (GET) also matches
    /v1/models/iris:predict (POST), so it would name GET alone.
    """
    scope = {**request.scope, "method": "\0"}
    methods: set[str] = set()
    stack = list(request.app.router.routes)
    while stack:
        route = stack.pop()
        included = getattr(route, "original_router", None)  # an included APIRouter (no prefix here)
        if included is not None:
            stack.extend(included.routes)
        elif route.matches(scope)[0] != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {}
    loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "request"
    return await _runtime_error(request, InvalidInput(first.get("msg", "invalid request"), field=loc,
                                                      rule=str(first.get("type", "invalid"))))


def _add_error_schema(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
