"""The router's OpenAPI 3.1 document (GET /openapi.json): every endpoint of the allow-list and every status.

Written by hand because the router is a bare ASGI app (see `app`); a unit test runs schemathesis against it over
real HTTP and fails on any undocumented status, content type, body shape or 5xx. Prediction and metadata bodies
are the predictor's (its own /openapi.json documents them); the router passes them through, with the predictor's
4xx (the client's fault, never counted as the arm's error) and its own statuses:

- 400 body not JSON (feedback) or a bad content-length; 401 no token; 403 token not accepted, or feedback with
  another client's token; 404 path not on the list (or dot segments), unknown (unsigned, altered) request id; 405
  wrong method (with Allow); 409 feedback already recorded; 410 request id older than the feedback window; 413 body
  too large; 422 feedback body invalid (field and rule named, e.g. a reward outside [reward_min, reward_max]); 429
  rate limit or failed authentications (Retry-After); 502 every backend attempt failed (the arms are named, never
  their URLs); 503 /readyz with no backend ready or while the router drains before shutdown.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from mlsteward_runtime.router.ids import MAX_ID_CHARS


_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "Machine-readable kind, e.g. not_found, invalid_input."},
        "message": {"type": "string"},
        "field": {"type": "string", "description": "The field, header or path part that was wrong."},
        "rule": {"type": "string", "description": "The rule it broke."},
        "retry_after": {"type": "integer", "description": "Seconds to wait (429)."},
    },
}
_BAD_GATEWAY = {
    "type": "object",
    "required": ["error", "message", "backend", "attempts"],
    "properties": {
        "error": {"const": "bad_gateway"},
        "message": {"type": "string"},
        "backend": {"type": "string", "description": "The version (arm) of the last attempt."},
        "attempts": {"type": "array", "items": {
            "type": "object", "required": ["version", "reason"],
            "properties": {"version": {"type": "string"}, "reason": {"type": "string"}, "status": {"type": "integer"}},
        }},
        "request_id": {"type": "string"},
    },
}
_ANY = {"description": "Any JSON value: the predictor validates it and answers 4xx when it is wrong."}
_ID_HEADERS = {
    "x-request-id": {"description": "The router's 128-bit random request id (32 hex digits); feedback joins by it.",
                     "schema": {"type": "string"}},
}
_PREDICT_HEADERS = {
    **_ID_HEADERS,
    "x-cache": {"description": "With the deployment's prediction cache on: hit (answered from the router's cache, "
                               "see router.cache), miss (looked up, answered by the predictor) or bypass (not looked "
                               "up: a body that is not JSON or over 1 MiB, or Cache-Control: no-cache).",
                "schema": {"enum": ["hit", "miss", "bypass"]}},
}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _errors(*codes: str) -> dict[str, Any]:
    text = {
        "400": "Malformed request (body not JSON, bad content-length).",
        "401": "No token (with auth on).",
        "403": "Token not accepted (or, for feedback, not the token of the prediction).",
        "404": "Not on the router's allow-list (dot segments included), or an unknown request id.",
        "405": "Wrong method; the Allow header names the right one.",
        "409": "Feedback for this request id was already recorded.",
        "410": "The request id is older than the feedback window (MLSTEWARD_ROUTER_FEEDBACK_WINDOW_S).",
        "413": "Body larger than MLSTEWARD_ROUTER_MAX_BODY_BYTES.",
        "422": "Invalid body; `field` and `rule` say what and why.",
        "429": "Rate limit or failed-authentication limit; retry after Retry-After seconds.",
    }
    out = {c: _json(_ERROR, text[c]) for c in codes}
    if "405" in out:
        out["405"]["headers"] = {"allow": {"schema": {"type": "string"}, "required": True}}
    if "429" in out:
        out["429"]["headers"] = {"retry-after": {"schema": {"type": "string"}, "required": True}}
    return out


def _forwarded(method: str, summary: str, body: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": _json({}, "The predictor's answer (or the cached one, see x-cache).",
                         _PREDICT_HEADERS if body else None),
            **_errors("400", "401", "403", "404", "405", "413", "429"),
            "4XX": _json({}, "A client error of the predictor, passed through (never counted as the arm's error)."),
            "502": _json(_BAD_GATEWAY, "Every backend attempt failed (connect error, timeout, 5xx)."),
            "5XX": _json({}, "A server error of the predictor, after the fallback (if any) also failed."),
        },
    }
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ANY}}}
    return {method: op}


def _name(param: str = "name") -> dict[str, Any]:
    return {"name": param, "in": "path", "required": True,
            "schema": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"}}


def _feedback(reward_min: float, reward_max: float) -> dict[str, Any]:
    common = {"request_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS,
                             "description": "The x-request-id the router returned with the prediction."}}
    reward = {"type": "number", "minimum": reward_min, "maximum": reward_max,
              "description": "Finite, within [reward_min, reward_max] (settings; default [-1e9, 1e9])."}
    body = {"oneOf": [
        {"type": "object", "required": ["request_id", "reward"], "not": {"required": ["label"]},
         "properties": {**common, "reward": reward}},
        {"type": "object", "required": ["request_id", "label"], "not": {"required": ["reward"]},
         "properties": {**common, "label": {"description": "The true label, scored against the served prediction."}}},
    ]}
    ok = {"type": "object", "required": ["request_id", "version", "outcome", "forwarded"],
          "properties": {"request_id": {"type": "string"}, "version": {"type": "string"},
                         "outcome": {"type": "number"}, "forwarded": {"type": "boolean"},
                         "backend_status": {"type": ["integer", "null"]}}}
    return {"post": {
        "summary": "Join a label or reward to the arm that served request_id, and pass it on to that predictor.",
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {"200": _json(ok, "Recorded."),
                      **_errors("400", "401", "403", "404", "405", "409", "410", "413", "422", "429")},
    }}


def _open(summary: str, ok: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"get": {"summary": summary, "responses": {"200": ok, **(extra or {}), **_errors("405")}}}


def _version() -> str:
    try:
        return version("mlsteward")
    except PackageNotFoundError:
        return "0.0.0"


def document(reward_min: float = -1e9, reward_max: float = 1e9) -> dict[str, Any]:
    """The OpenAPI document of the router (the reward range is that of its settings)."""
    name, version = _name(), _name("version")
    ready = _json({"type": "object", "required": ["ready", "backends"]}, "Ready (200) or not (503).")
    paths: dict[str, Any] = {
        "/predict": _forwarded("post", "Predict (simple protocol) on the arm the strategy picks.", True),
        "/v1/models/{name}:predict": {**_forwarded("post", "Predict (V1 protocol).", True), "parameters": [name]},
        "/v2/models/{name}/infer": {**_forwarded("post", "Infer (V2 protocol).", True), "parameters": [name]},
        "/v2/models/{name}/versions/{version}/infer": {
            **_forwarded("post", "Infer (V2 protocol), version in the path.", True), "parameters": [name, version]},
        "/v2": _forwarded("get", "Server metadata of the primary backend.", False),
        "/v2/health/live": _forwarded("get", "Liveness of the primary backend.", False),
        "/v2/health/ready": _forwarded("get", "Readiness of the primary backend.", False),
        "/v2/models/{name}": {**_forwarded("get", "Model metadata (V2).", False), "parameters": [name]},
        "/v2/models/{name}/ready": {**_forwarded("get", "Model readiness (V2).", False), "parameters": [name]},
        "/v1/models/{name}": {**_forwarded("get", "Model status (V1).", False), "parameters": [name]},
        "/v1/feedback": _feedback(reward_min, reward_max),
        "/healthz": _open("The router process is live.", _json({"type": "object"}, "Live.")),
        "/readyz": _open("At least one backend passed its last readiness probe and the router is not draining "
                         "before shutdown.", ready, {"503": ready}),
        "/v1/router/stats": _open("Per-version counters of this replica (RouterStats).",
                                  _json({"type": "object", "required": ["deployment", "replica", "versions"]},
                                        "The counters.")),
        "/metrics": _open("Prometheus metrics of the router.",
                          {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {}}}}),
        "/openapi.json": _open("This document.", _json({"type": "object"}, "OpenAPI 3.1.")),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlsteward router", "version": _version(),
                 "description": "The stable entry point of a ModelDeployment (`mlsteward route`)."},
        "paths": paths,
    }
