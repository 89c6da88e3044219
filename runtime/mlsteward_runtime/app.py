"""The HTTP application: `create_app(settings)` builds a FastAPI app over one DataPlane.

Endpoints do HTTP work only (body limits, content type, JSON parsing, status codes) and delegate to the data plane
through the protocol codecs. Prediction endpoints read the raw body and parse it with orjson instead of declaring
pydantic bodies: the hand-written validator over NumPy is much faster on large payloads. Their request schemas are
still published in the OpenAPI document (`openapi_extra`), so clients and schemathesis see them.

One exception handler turns the runtime's error hierarchy into JSON bodies naming the field and the rule; a small
ASGI layer (`_Edge`) stamps every response with x-request-id and x-model-version, counts it and times it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlsteward_runtime.dataplane import DataPlane
from mlsteward_runtime.errors import (
    BadRequest,
    InvalidInput,
    ModelLoadError,
    NotFound,
    NotReady,
    PayloadTooLarge,
    RuntimeErrorBase,
    UnsupportedMediaType,
)
from mlsteward_runtime.metrics import CONTENT_TYPE_LATEST
from mlsteward_runtime.protocols import simple, v1, v2
from mlsteward_runtime.settings import ServeSettings

__all__ = ["create_app"]

log = logging.getLogger("mlsteward.app")

_JSON = "application/json"
_ORJSON_OPTS = orjson.OPT_SERIALIZE_NUMPY
_PREDICT_ENDPOINTS = frozenset({"/predict", "/v1/models/{name}:predict", "/v2/models/{name}/infer",
                                "/v2/models/{name}/versions/{version}/infer"})


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content, option=_ORJSON_OPTS), status_code=status, media_type=_JSON,
                    headers=headers)


def _error_body(schema_ref: str) -> dict[str, Any]:
    return {"description": "Error naming the field and the rule",
            "content": {_JSON: {"schema": {"$ref": schema_ref}}}}


_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"},
                   "rule": {"type": "string"}},
}


def _body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {_JSON: {"schema": schema}}}}


class _Edge:
    """Pure ASGI layer: request id, version header, in-flight gauge, metrics and sliding-window stats.

    Written as raw ASGI rather than BaseHTTPMiddleware because it runs on every request and must stay cheap.
    It also turns an unexpected exception into a JSON 500 that still carries the headers.
    """

    def __init__(self, app: Any, plane: DataPlane) -> None:
        self.app = app
        self.plane = plane
        self.version_b = plane.version.encode()
        self.metrics = plane.metrics
        self.counter = 0
        self.prefix = f"{os.getpid():x}-{int(time.time()):x}-"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid: str | None = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                if 0 < len(v) <= 128 and v.isascii():
                    text = v.decode()
                    if text.isprintable():
                        rid = text
                break
        if rid is None:
            # Unique per process and cheap: pid and start time make it unique across workers and restarts.
            self.counter += 1
            rid = f"{self.prefix}{self.counter:x}"
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        state["request_id"] = rid
        extra = [(b"x-request-id", rid.encode()), (b"x-model-version", self.version_b)]
        status = 500
        started = False

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        gauge = self.metrics.in_flight_v
        gauge.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:  # noqa: BLE001 - last line of defence: answer, log, keep serving
            log.exception("Request failed", extra={"request_id": rid, "version": self.plane.version})
            if not started:
                body = orjson.dumps({"error": "internal_error", "message": "internal error; see the server log"})
                await send_wrapper({"type": "http.response.start", "status": 500,
                                    "headers": [(b"content-type", b"application/json"),
                                                (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            gauge.dec()
            dt = time.perf_counter() - t0
            route = scope.get("route")
            endpoint = route.path if route is not None else "unmatched"
            self.metrics.observe_request(endpoint, status, dt)
            if endpoint in _PREDICT_ENDPOINTS:
                self.plane.record_request(dt * 1000.0, status >= 400)


async def _read_json(request: Request, limit: int) -> Any:
    ctype = request.headers.get("content-type")
    if ctype is not None:
        base = ctype.split(";", 1)[0].strip().lower()
        if base != _JSON and not base.endswith("+json"):
            raise UnsupportedMediaType(f"content type {base!r} is not supported; send {_JSON}",
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


def create_app(settings: ServeSettings, plane: DataPlane | None = None) -> FastAPI:
    """Build the app. Pass a loaded `plane` (the server does, after verifying the model before forking); without
    one, the lifespan loads the model in a thread so liveness answers while readiness stays 503 until it is done.
    """
    cfg = settings.runtime
    if plane is None:
        plane = DataPlane(cfg, replica=settings.replica, executor_threads=settings.executor_threads)
    limit = cfg.limits.max_body_bytes
    name = cfg.name
    version = cfg.version

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        if plane.model is None and plane.load_error is None:

            async def load() -> None:
                try:
                    await asyncio.to_thread(plane.load)
                    plane.start_worker()
                except ModelLoadError as exc:
                    log.error("Failed to load model", extra={"model": name, "version": version,
                                                              "reason": exc.reason, "error": exc.message})
                except Exception as exc:  # noqa: BLE001 - report it through readiness instead of dying silently
                    plane.load_error = ModelLoadError("LoadFailed", f"{type(exc).__name__}: {exc}")
                    log.exception("Failed to load model", extra={"model": name, "version": version})

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

    app = FastAPI(
        title="mlsteward serve",
        version=version,
        description=f"Predictions from model {name} version {version} (scikit-learn) over V2, KServe V1 and a "
        "simple JSON protocol.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.plane = plane
    app.state.settings = settings

    # -- error handling (one handler for the hierarchy; framework errors mapped into the same shape) ----------

    @app.exception_handler(RuntimeErrorBase)
    async def _runtime_error(request: Request, exc: RuntimeErrorBase) -> Response:
        if exc.status_code >= 500 or log.isEnabledFor(logging.INFO):
            log.info("Rejected request", extra={"request_id": request.scope.get("state", {}).get("request_id"),
                                                 "version": version, "status": exc.status_code,
                                                 "field": exc.field, "rule": exc.rule, "path": request.url.path})
        return _json(exc.to_json(), exc.status_code, exc.headers or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            err: RuntimeErrorBase = NotFound(f"no endpoint at {request.url.path}", field="path", rule="route")
        elif exc.status_code == 405:
            err = BadRequest(f"{request.method} is not allowed on {request.url.path}", field="method",
                             rule="allowed")
            err.status_code = 405
        else:
            err = BadRequest(str(exc.detail), field="request", rule="http")
            err.status_code = exc.status_code
        return await _runtime_error(request, err)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "request"
        return await _runtime_error(request, InvalidInput(first.get("msg", "invalid request"), field=loc,
                                                          rule=str(first.get("type", "invalid"))))

    def check_name(model: str) -> None:
        if model != name:
            raise NotFound(f"no model named {model!r}; this server serves {name!r}", field="name", rule="exists")

    def check_ready() -> None:
        if not plane.ready:
            raise NotReady("the model is not ready yet", field="model", rule="ready")

    def rid(request: Request) -> str:
        return request.scope["state"]["request_id"]

    # -- health and metadata --------------------------------------------------------------------------------

    @app.get("/v2/health/live", tags=["health"])
    async def live() -> Response:
        return _json({"live": True})

    @app.get("/v2/health/ready", tags=["health"])
    async def ready() -> Response:
        if not plane.ready:
            body: dict[str, Any] = {"ready": False}
            if plane.load_error is not None:
                body["reason"] = plane.load_error.reason
                body["message"] = plane.load_error.message
            return _json(body, 503, {"Retry-After": "1"})
        return _json({"ready": True})

    @app.get("/v2", tags=["v2"])
    async def server_metadata() -> Response:
        return _json({"name": "mlsteward", "version": _package_version(), "extensions": []})

    @app.get("/v2/models/{name}", tags=["v2"])
    async def model_metadata(name: str) -> Response:
        check_name(name)
        check_ready()
        m = plane.model
        assert m is not None and plane.signature is not None
        return _json(v2.model_metadata(plane.name, version, plane.signature, m.classes, m.is_classifier))

    @app.get("/v2/models/{name}/ready", tags=["v2"])
    async def model_ready(name: str) -> Response:
        check_name(name)
        return _json({"name": name, "ready": plane.ready}, 200 if plane.ready else 503)

    # -- prediction endpoints -------------------------------------------------------------------------------

    async def v2_infer(request: Request, name: str) -> Response:
        check_name(name)
        body = await _read_json(request, limit)
        check_ready()
        req = v2.decode(body, plane.validator)  # type: ignore[arg-type]
        pred, proba = await plane.infer(req.X)
        plane.observe(rid(request), req.X, pred)
        return _json(v2.encode(name, version, req, pred, proba))

    @app.post("/v2/models/{name}/infer", tags=["v2"], openapi_extra=_body_doc(v2.REQUEST_SCHEMA),
              responses={422: _error_body("#/components/schemas/Error")})
    async def infer(request: Request, name: str) -> Response:
        return await v2_infer(request, name)

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["v2"],
              openapi_extra=_body_doc(v2.REQUEST_SCHEMA))
    async def infer_version(request: Request, name: str, version: str) -> Response:
        if version != cfg.version:
            raise NotFound(f"version {version!r} is not served here (this is {cfg.version!r})", field="version",
                           rule="exists")
        return await v2_infer(request, name)

    @app.get("/v1/models/{name}", tags=["v1"])
    async def v1_model(name: str) -> Response:
        check_name(name)
        return _json(v1.model_info(name, version, plane.ready))

    @app.post("/v1/models/{name}:predict", tags=["v1"], openapi_extra=_body_doc(v1.REQUEST_SCHEMA))
    async def v1_predict(request: Request, name: str) -> Response:
        check_name(name)
        body = await _read_json(request, limit)
        check_ready()
        X = v1.decode(body, plane.validator)  # type: ignore[arg-type]
        pred, _ = await plane.infer(X)
        plane.observe(rid(request), X, pred)
        return _json(v1.encode(pred))

    @app.post("/predict", tags=["simple"], openapi_extra=_body_doc(simple.REQUEST_SCHEMA))
    async def predict(request: Request) -> Response:
        body = await _read_json(request, limit)
        check_ready()
        X = simple.decode(body, plane.validator)  # type: ignore[arg-type]
        pred, proba = await plane.infer(X)
        request_id = rid(request)
        plane.observe(request_id, X, pred)
        return _json(simple.encode(pred, proba, version, request_id, time.time()))

    # -- observability and feedback -------------------------------------------------------------------------

    @app.get("/metrics", tags=["observability"])
    async def metrics() -> Response:
        return Response(plane.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/stats", tags=["observability"])
    async def stats() -> Response:
        return _json(plane.runtime_stats().model_dump(mode="json"))

    @app.get("/v1/drift/window", tags=["observability"])
    async def drift_window() -> Response:
        return _json(plane.drift_window().model_dump(mode="json"))

    feedback_schema = {
        "type": "object",
        "required": ["request_id"],
        "properties": {
            "request_id": {"type": "string", "minLength": 1},
            "label": {"description": "True label(s): one per predicted row, or a scalar for one row."},
            "reward": {"type": "number"},
        },
    }

    @app.post("/v1/feedback", tags=["feedback"], openapi_extra=_body_doc(feedback_schema))
    async def feedback(request: Request) -> Response:
        body = await _read_json(request, limit)
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
        return _json(await plane.join_feedback(request_id, label, reward))

    _add_error_schema(app)
    app.add_middleware(_Edge, plane=plane)
    return app


def _add_error_schema(app: FastAPI) -> None:
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlsteward")
    except Exception:  # noqa: BLE001 - metadata is missing when running from a source tree
        return "0+unknown"
