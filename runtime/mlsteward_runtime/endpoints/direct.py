"""Direct dispatch of the prediction routes: the request goes from the ASGI layer straight to its endpoint.

FastAPI's route handling costs about 70 µs per request on this path: the app's router walks the included routers
(each a layer of scope bookkeeping), the route solves its dependencies and wraps the call in exception handling,
and the response goes through FastAPI's serialization checks. For a model whose call costs 100-150 µs that is a
third of a request. The prediction endpoints need none of it: they take the `Request` and their path parameters
(strings), read and validate the body themselves and return a finished Response.

`DirectRoutes` sits inside `edge.Edge` (which still stamps, times and counts every request). For a request whose
method and path match one of the given routes, with the route's own compiled regex and convertors (so exactly the
requests Starlette would send there), it calls the endpoint with the path parameters it declares, maps an
exception through the app's own exception handlers (looked up by class, as Starlette's ExceptionMiddleware does)
and sends the Response. Everything else (other paths and methods, a path under a root_path) goes to the app as
before. The routes stay declared in FastAPI, so the OpenAPI document and the docs describe them unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request

__all__ = ["DirectRoutes"]


class _Direct:
    __slots__ = ("route", "regex", "convertors", "endpoint", "params", "methods")

    def __init__(self, route: APIRoute) -> None:
        dep = route.dependant
        extra = (dep.query_params or dep.header_params or dep.cookie_params or dep.body_params or dep.dependencies
                 or dep.request_param_name is None)
        if extra:
            raise ValueError(f"route {route.path} cannot be dispatched directly: its endpoint must take the Request "
                             "and path parameters only")
        self.route = route
        self.regex = route.path_regex
        self.convertors = route.param_convertors
        self.endpoint = route.endpoint
        self.params = frozenset(p.name for p in dep.path_params)
        self.methods = route.methods or frozenset()


class DirectRoutes:
    """Pure ASGI: the given FastAPI routes dispatched without FastAPI's routing; see the module docstring."""

    def __init__(self, app: Any, routes: Sequence[APIRoute], handlers: Mapping[Any, Any]) -> None:
        self.app = app
        self.routes = [_Direct(r) for r in routes]
        self.handlers = handlers  # the app's exception handlers (a live mapping: handlers added later count)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path, method = scope["path"], scope["method"]
            for d in self.routes:
                if method in d.methods:
                    match = d.regex.match(path)
                    if match is not None:
                        await self._dispatch(d, match.groupdict(), scope, receive, send)
                        return
        await self.app(scope, receive, send)

    async def _dispatch(self, d: _Direct, raw: dict[str, str], scope: dict[str, Any], receive: Any,
                        send: Any) -> None:
        params = {k: d.convertors[k].convert(v) for k, v in raw.items()}
        scope["route"] = d.route
        scope["endpoint"] = d.endpoint
        scope["path_params"] = params
        request = Request(scope, receive, send)
        try:
            response = await d.endpoint(request, **{k: v for k, v in params.items() if k in d.params})
        except Exception as exc:  # noqa: BLE001 - mapped by the app's handlers, or raised on to the Edge's 500
            handler = self._handler(exc)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Any:
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None and cls is not Exception:
                return handler
        return None
