"""Which paths the router answers or forwards: an explicit allow-list, matched on whole segments.

The router forwards only the predictor endpoints a client needs (prediction, model metadata, health). Everything
else the predictor serves (`/v1/stats`, `/v1/drift/window`, `/v1/feedback` without the router's join, its
`/metrics`) is internal: it is read by the operator from the pods directly, so through the router it is a 404.

A path is matched after the server has percent-decoded it, and refused outright when any segment is empty, `.`
or `..`, or carries a backslash or a control character: a dot segment (also `%2e%2e`) or a doubled slash would
otherwise be normalized away by the HTTP client on the way to the backend and land on an endpoint the allow-list
never granted. The forwarded path is the decoded, checked path, percent-encoded again, never the client's raw
bytes.
"""

from __future__ import annotations

import re
from enum import Enum
from urllib.parse import quote

from mlsteward_runtime.router.asgi import ClientError


class Kind(str, Enum):
    predict = "predict"  # POST, forwarded to the chosen arm and counted
    metadata = "metadata"  # GET, forwarded to the primary backend, not counted
    feedback = "feedback"
    healthz = "healthz"
    readyz = "readyz"
    stats = "stats"
    metrics = "metrics"
    openapi = "openapi"


_NAME = r"[^/]+"  # one segment; dot segments and empty ones are refused before matching
_ROUTES: tuple[tuple[re.Pattern[str], Kind, str], ...] = tuple(
    (re.compile(pattern), kind, method)
    for pattern, kind, method in (
        (r"/predict", Kind.predict, "POST"),
        (rf"/v1/models/{_NAME}:predict", Kind.predict, "POST"),
        (rf"/v2/models/{_NAME}/infer", Kind.predict, "POST"),
        (rf"/v2/models/{_NAME}/versions/{_NAME}/infer", Kind.predict, "POST"),
        (r"/v1/feedback", Kind.feedback, "POST"),
        (r"/v2", Kind.metadata, "GET"),
        (r"/v2/health/live", Kind.metadata, "GET"),
        (r"/v2/health/ready", Kind.metadata, "GET"),
        (rf"/v2/models/{_NAME}", Kind.metadata, "GET"),
        (rf"/v2/models/{_NAME}/ready", Kind.metadata, "GET"),
        (rf"/v1/models/{_NAME}", Kind.metadata, "GET"),
        (r"/healthz", Kind.healthz, "GET"),
        (r"/readyz", Kind.readyz, "GET"),
        (r"/v1/router/stats", Kind.stats, "GET"),
        (r"/metrics", Kind.metrics, "GET"),
        (r"/openapi.json", Kind.openapi, "GET"),
    )
)
# Endpoints that never ask for a token: probes, scrapes, the operator's stats poll and the API's description.
OPEN = frozenset({Kind.healthz, Kind.readyz, Kind.stats, Kind.metrics, Kind.openapi})
ROUTES_RULE = (
    "one of POST /predict, /v1/models/{name}:predict, /v2/models/{name}[/versions/{v}]/infer, /v1/feedback; "
    "GET /v2, /v2/health/live|ready, /v2/models/{name}[/ready], /v1/models/{name}, /healthz, /readyz, "
    "/v1/router/stats, /metrics, /openapi.json"
)
_BAD_CHARS = re.compile(r"[\\\x00-\x1f\x7f]")


def _not_found(path: str, rule: str) -> ClientError:
    shown = path if len(path) <= 200 else path[:200] + "..."
    return ClientError(404, "not_found", f"no route for {shown!r}", field="path", rule=rule)


def classify(method: str, path: str) -> Kind:
    """The endpoint of a request; 404 for a path off the list, 405 (with Allow) for a wrong method."""
    segments = path.split("/")
    if not path.startswith("/") or _BAD_CHARS.search(path) is not None \
            or any(s in ("", ".", "..") for s in segments[1:]):
        raise _not_found(path, "no empty, '.' or '..' path segments (also percent-encoded), no backslash")
    for pattern, kind, allowed in _ROUTES:
        if pattern.fullmatch(path):
            if method != allowed:
                raise ClientError(
                    405, "method_not_allowed", f"{path} takes {allowed}", field="method", rule=allowed,
                    headers=[(b"allow", allowed.encode())],
                )
            return kind
    raise _not_found(path, ROUTES_RULE)


def forward_path(path: str, query: bytes | None) -> str:
    """The checked path, percent-encoded again for the backend, with the client's query string."""
    encoded = quote(path, safe="/:@!$&'()*+,;=-._~")
    return f"{encoded}?{query.decode('latin-1')}" if query else encoded
