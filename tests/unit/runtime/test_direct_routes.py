"""The prediction routes are dispatched straight from the ASGI layer to their endpoints (endpoints/direct.py), and
answer exactly as they did through FastAPI: same statuses, bodies, headers, metrics labels and error mapping."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute
from starlette.testclient import TestClient

from mlsteward_runtime.contracts import RuntimeConfig
from mlsteward_runtime.edge import PREDICT_ENDPOINTS

from .helpers import loaded_app


@pytest.fixture()
def served(artifacts):
    path, digest = artifacts["lr.skops"]
    app, plane = loaded_app(RuntimeConfig(name="iris", version="1", artifact={"uri": str(path), "sha256": digest}))
    return app, plane


@pytest.fixture()
def fastapi_calls(monkeypatch):
    """The paths of the requests FastAPI's own route handling served."""
    seen: list[str] = []
    original = APIRoute.handle

    async def handle(self, scope, receive, send):  # type: ignore[no-untyped-def]
        seen.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", handle)
    return seen


def _v2(rows: list[list[float]]) -> dict:
    return {"inputs": [{"name": "x", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]}


def test_predictions_skip_fastapi_routing_and_other_routes_do_not(served, fastapi_calls, iris, iris_lr):
    app, _ = served
    client = TestClient(app)
    X = iris[0][:5]
    requests = [("/v2/models/iris/infer", _v2(X.tolist())), ("/v2/models/iris/versions/1/infer", _v2(X.tolist())),
                ("/v1/models/iris:predict", {"instances": X.tolist()}), ("/predict", {"instances": X.tolist()})]
    for path, body in requests:
        r = client.post(path, json=body)
        assert r.status_code == 200, r.text
        assert r.headers["x-model-version"] == "1" and r.headers["x-request-id"]
        out = r.json()
        preds = out["outputs"][0]["data"] if "outputs" in out else out["predictions"]
        assert preds == iris_lr.predict(X).tolist()
    assert fastapi_calls == []
    assert client.get("/v2/health/live").status_code == 200
    assert fastapi_calls == ["/v2/health/live"]
    paths = app.openapi()["paths"]  # still documented, with their parameters
    assert set(paths) >= PREDICT_ENDPOINTS
    assert [p["name"] for p in paths["/v2/models/{name}/infer"]["post"]["parameters"]] == ["name"]


def test_errors_on_the_direct_path_go_through_the_apps_handlers(served, iris):
    client = TestClient(served[0])
    bad = client.post("/v2/models/iris/infer", json=_v2([[1.0, 2.0, "x", 4.0]]))
    assert bad.status_code == 422 and bad.json()["field"].startswith("inputs[0]") and bad.headers["x-request-id"]
    assert client.post("/v2/models/nope/infer", json=_v2([[1.0] * 4])).json()["rule"] == "exists"
    wrong = client.post("/v2/models/iris/versions/2/infer", json=_v2([[1.0] * 4]))
    assert wrong.status_code == 404 and wrong.json()["field"] == "version"
    assert client.post("/predict", content=b"{", headers={"content-type": "application/json"}).json()["rule"] == "json"


def test_other_methods_and_paths_still_get_fastapis_answers(served, fastapi_calls):
    client = TestClient(served[0])
    r = client.get("/v2/models/iris/infer")
    assert r.status_code == 405 and "POST" in r.headers["allow"] and r.json()["rule"] == "allowed"
    assert client.post("/v2/models/iris/infer/extra", json={}).status_code == 404
    assert fastapi_calls == ["/v2/models/iris/infer"]  # the GET went to FastAPI's route (405); the 404 to no route


def test_a_root_path_leaves_the_request_to_fastapi(served, fastapi_calls, iris, iris_lr):
    client = TestClient(served[0], root_path="/serve")
    r = client.post("/serve/v2/models/iris/infer", json=_v2(iris[0][:3].tolist()))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == iris_lr.predict(iris[0][:3]).tolist()
    assert fastapi_calls == ["/serve/v2/models/iris/infer"]


def test_metrics_and_stats_count_direct_predictions_under_their_route(served, iris):
    app, plane = served
    client = TestClient(app)
    client.post("/v2/models/iris/infer", json=_v2(iris[0][:2].tolist()))
    client.post("/v2/models/iris/infer", json=_v2([[1.0, "x", 3.0, 4.0]]))
    text = client.get("/metrics").text
    assert 'endpoint="/v2/models/{name}/infer",status="200"' in text.replace(", ", ",")
    assert 'endpoint="/v2/models/{name}/infer",status="422"' in text.replace(", ", ",")
    snap = plane.stats.snapshot()
    assert snap["count"] == 2 and snap["client_errors"] == 1


def test_an_unexpected_error_is_a_json_500_on_either_path(served, monkeypatch):
    app, plane = served
    client = TestClient(app, raise_server_exceptions=False)

    def boom(*_a, **_k):
        raise RuntimeError("boom")

    monkeypatch.setattr(plane, "observe", boom)
    r = client.post("/v2/models/iris/infer", json=_v2([[5.1, 3.5, 1.4, 0.2]]))
    assert r.status_code == 500 and r.json()["error"] == "internal_error" and r.headers["x-request-id"]
    monkeypatch.setattr(plane, "stats", None)  # /v1/stats reads it: an error outside the prediction routes
    r = client.get("/v1/stats")
    assert r.status_code == 500 and r.json()["error"] == "internal_error" and r.headers["x-request-id"]
