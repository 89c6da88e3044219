"""The HTTP app in-process: protocols, headers, bad input, readiness, stats, window, feedback, metrics."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from mlsteward_runtime.app import create_app
from mlsteward_runtime.contracts import DriftWindow, RuntimeConfig, RuntimeStats
from mlsteward_runtime.settings import ServeSettings

from .helpers import loaded_app

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def iris_cfg(artifacts) -> RuntimeConfig:
    path, digest = artifacts["lr.skops"]
    return RuntimeConfig(
        name="iris", version="1.2.3", artifact={"uri": str(path), "sha256": digest},
        signature={"inputs": [{"name": n, "min": 0, "max": 100} for n in ("sl", "sw", "pl", "pw")],
                   "output": {"kind": "class", "classes": [0, 1, 2]}},
        limits={"max_body_bytes": 4096, "max_rows": 50},
        drift_window={"size": 16, "seed": 1},
    )


@pytest.fixture(scope="module")
def client(iris_cfg):
    app, _ = loaded_app(iris_cfg)
    return TestClient(app, raise_server_exceptions=False)


def test_simple_predict_matches_sklearn(client, iris, iris_lr):
    X = iris[0][:7]
    r = client.post("/predict", json={"instances": X.tolist()}, headers={"x-request-id": "req-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == iris_lr.predict(X).tolist()
    np.testing.assert_allclose(body["probabilities"], iris_lr.predict_proba(X))
    assert body["version"] == "1.2.3" and body["request_id"] == "req-1" and abs(body["timestamp"] - time.time()) < 60
    assert r.headers["x-request-id"] == "req-1" and r.headers["x-model-version"] == "1.2.3"
    named = client.post("/predict", json=[dict(zip(("sl", "sw", "pl", "pw"), row)) for row in X.tolist()])
    assert named.json()["predictions"] == body["predictions"]
    assert named.headers["x-request-id"] and named.headers["x-request-id"] != "req-1"


def test_v1(client, iris, iris_lr):
    r = client.post("/v1/models/iris:predict", json={"instances": iris[0][:3].tolist()})
    assert r.json() == {"predictions": iris_lr.predict(iris[0][:3]).tolist()}
    assert client.get("/v1/models/iris").json() == {"name": "iris", "version": "1.2.3", "ready": True}
    assert client.post("/v1/models/other:predict", json={"instances": [ROW]}).status_code == 404


def test_v2_infer_metadata_and_outputs(client, iris, iris_lr):
    X = iris[0][:5]
    req = {"id": "abc", "parameters": {"trace": True},
           "inputs": [{"name": "input-0", "shape": [5, 4], "datatype": "FP64", "data": X.ravel().tolist()}]}
    r = client.post("/v2/models/iris/infer", json=req).json()
    assert r["id"] == "abc" and r["parameters"] == {"trace": True} and r["model_name"] == "iris"
    outs = {o["name"]: o for o in r["outputs"]}
    assert outs["predict"]["data"] == iris_lr.predict(X).tolist() and outs["predict"]["datatype"] == "INT64"
    assert outs["predict_proba"]["shape"] == [5, 3]
    np.testing.assert_allclose(np.reshape(outs["predict_proba"]["data"], (5, 3)), iris_lr.predict_proba(X))
    only = client.post("/v2/models/iris/infer", json={**req, "outputs": [{"name": "predict_proba"}]}).json()
    assert [o["name"] for o in only["outputs"]] == ["predict_proba"]
    # One tensor per feature, nested data.
    per_feature = {"inputs": [{"name": n, "shape": [5, 1], "datatype": "FP32", "data": [[v] for v in X[:, j]]}
                              for j, n in enumerate(("sl", "sw", "pl", "pw"))]}
    r2 = client.post("/v2/models/iris/infer", json=per_feature).json()
    assert r2["outputs"][0]["data"] == iris_lr.predict(X).tolist()
    meta = client.get("/v2/models/iris").json()
    assert meta["inputs"][0]["shape"] == [-1, 4] and meta["versions"] == ["1.2.3"]
    assert client.get("/v2/models/iris/ready").status_code == 200
    assert client.get("/v2/health/live").status_code == 200 and client.get("/v2").json()["name"] == "mlsteward"


@pytest.mark.parametrize(
    "path,body,ctype,status,field,rule",
    [
        ("/predict", b"{nope", "application/json", 400, "body", "json"),
        ("/predict", b'{"instances": [[1,2,3,4]]}', "text/plain", 415, "content-type", "media_type"),
        ("/predict", b'{"instances": [[1,2,3]]}', None, 422, "instances[0]", "feature_count"),
        ("/predict", b'{"instances": [[1,2,3,"x"]]}', None, 422, "instances[0].pw", "type"),
        ("/predict", b'{"instances": [[1,2,3,1e999]]}', None, 400, "body", "json"),
        ("/predict", b'{"instances": [[1,2,3,500]]}', None, 422, "instances[0].pw", "maximum"),
        ("/predict", b'{"instances": []}', None, 422, "instances", "min_items"),
        ("/predict", orjson.dumps({"instances": [ROW] * 51}), None, 422, "instances", "max_items"),
        ("/predict", b'{"instances": [' + b"[1,2,3,4]," * 600 + b"[1,2,3,4]]}", None, 413, "body", "max_bytes"),
        ("/predict", b"", None, 400, "body", "required"),
        ("/v2/models/iris/infer", b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", '
         b'"data": [1, 2, 3]}]}', None, 422, "inputs[0].data", "shape"),
        ("/v2/models/iris/infer", b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT8", '
         b'"data": [1, 2, 3, 999]}]}', None, 422, "inputs[0].data", "range"),
        ("/v2/models/iris/infer", b'{"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", '
         b'"data": [1, 2, 3, 4]}], "outputs": [{"name": "nope"}]}', None, 422, "outputs[0].name", "allowed"),
        ("/v2/models/zzz/infer", b"{}", None, 404, "name", "exists"),
        ("/no/such/path", b"{}", None, 404, "path", "route"),
    ],
)
def test_bad_input_is_4xx_naming_field_and_rule(client, path, body, ctype, status, field, rule):
    headers = {"content-type": ctype} if ctype else {"content-type": "application/json"}
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == status, r.text
    j = r.json()
    assert (j["field"], j["rule"]) == (field, rule)
    assert r.headers["x-model-version"] == "1.2.3"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/predict", "/v1/models/iris:predict", "/v2/models/iris/infer", "/v1/feedback"]),
       body=st.one_of(json_values, st.fixed_dictionaries({"instances": json_values}),
                      st.fixed_dictionaries({"inputs": st.lists(st.fixed_dictionaries({
                          "name": st.sampled_from(["input-0", "sl", "zz"]),
                          "shape": st.lists(st.integers(-1, 5), max_size=3),
                          "datatype": st.sampled_from(["FP32", "INT64", "BOOL", "BYTES", "UINT8", "X"]),
                          "data": json_values}), max_size=3)})))
def test_no_client_input_produces_5xx(client, path, body):
    r = client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code < 500, (r.status_code, r.text)
    if r.status_code >= 400:
        j = r.json()
        assert j["field"] and j["rule"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_5xx(client, raw):
    r = client.post("/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500


def test_feedback_joins_and_stats_report(iris_cfg, iris, iris_lr):
    app, plane = loaded_app(iris_cfg)
    c = TestClient(app)
    X = iris[0][:20]
    y = iris_lr.predict(X)
    for i, row in enumerate(X.tolist()):
        assert c.post("/predict", json={"instances": [row]}, headers={"x-request-id": f"id{i}"}).status_code == 200
    c.post("/predict", json={"instances": [[1, 2]]})  # a client error: counted apart, never as the server's
    for i in range(10):
        label = int(y[i]) if i < 8 else int((y[i] + 1) % 3)  # 8 right, 2 wrong
        assert c.post("/v1/feedback", json={"request_id": f"id{i}", "label": label}).status_code == 200
    assert c.post("/v1/feedback", json={"request_id": "id12", "reward": 0.5}).status_code == 200
    assert c.post("/v1/feedback", json={"request_id": "id0", "label": 0}).status_code == 409
    r = c.post("/v1/feedback", json={"request_id": "never", "label": 0})
    assert r.status_code == 404 and r.json()["field"] == "request_id"
    s = RuntimeStats.model_validate(c.get("/v1/stats").json())
    assert s.count == 21 and s.errors == 0 and s.error_rate == 0.0 and s.client_errors == 1
    assert s.feedback == 11 and math.isclose(s.accuracy, 0.8) and s.mean_reward == 0.5
    assert s.latency_ms.p50 is not None and s.latency_ms.p50 <= s.latency_ms.p99
    w = DriftWindow.model_validate(c.get("/v1/drift/window").json())
    assert w.seen == 20 and len(w.features["sl"].values) == 16 and w.replica == "test-0"
    assert set(w.features["sl"].values) <= set(X[:, 0].tolist())
    metrics = c.get("/metrics").text
    assert 'mlsteward_requests_total{endpoint="/predict",status="200",version="1.2.3"} 20.0' in metrics
    assert 'mlsteward_requests_total{endpoint="/predict",status="422",version="1.2.3"} 1.0' in metrics
    assert "mlsteward_batch_rows_bucket" in metrics and "mlsteward_model_load_seconds" in metrics


def test_readiness_waits_for_load_and_golden(artifacts):
    path, digest = artifacts["lr.skops"]
    good = RuntimeConfig(name="iris", artifact={"uri": str(path), "sha256": digest},
                         golden={"inputs": [ROW], "outputs": [0]})
    with TestClient(create_app(ServeSettings(runtime=good))) as c:
        deadline = time.monotonic() + 30
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(c.get("/v2/health/ready").status_code)
            if statuses[-1] == 200:
                break
            assert c.get("/v2/health/live").status_code == 200
            time.sleep(0.02)
        assert statuses[-1] == 200
    wrong = RuntimeConfig.model_validate({**good.model_dump(), "golden": {"inputs": [ROW], "outputs": [2]}})
    with TestClient(create_app(ServeSettings(runtime=wrong))) as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            body = c.get("/v2/health/ready").json()
            if body.get("reason"):
                break
            time.sleep(0.02)
        r = c.get("/v2/health/ready")
        assert r.status_code == 503 and r.json()["reason"] == "GoldenMismatch"
        p = c.post("/predict", json={"instances": [ROW]})
        assert p.status_code == 503 and p.headers["retry-after"] == "1"
    bad_digest = RuntimeConfig.model_validate({**good.model_dump(), "artifact": {"uri": str(path), "sha256": "1" * 64}})
    with TestClient(create_app(ServeSettings(runtime=bad_digest))) as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not c.get("/v2/health/ready").json().get("reason"):
            time.sleep(0.02)
        assert c.get("/v2/health/ready").json()["reason"] == "DigestMismatch"
        assert "mlsteward_digest_failures_total" in c.get("/metrics").text


def test_prediction_log_redacts_pii(tmp_path, artifacts):
    path, digest = artifacts["lr.skops"]
    log = tmp_path / "preds.jsonl"
    cfg = RuntimeConfig(name="iris", artifact={"uri": str(path), "sha256": digest}, pii_fields=["x1"],
                        prediction_log=str(log))
    app, plane = loaded_app(cfg)
    c = TestClient(app)
    c.post("/predict", json={"instances": [ROW, ROW]}, headers={"x-request-id": "p1"})
    plane.prediction_log.flush()
    rec = orjson.loads(log.read_bytes().splitlines()[0])
    assert rec["request_id"] == "p1" and rec["predictions"] == [0, 0]
    assert rec["inputs"][0] == {"x0": 5.1, "x1": "[REDACTED]", "x2": 1.4, "x3": 0.2}


def test_json_logs_redact(capsys):
    import io
    import logging

    from mlsteward_runtime.logs import configure_logging

    buf = io.StringIO()
    configure_logging("debug", ["ssn"], {"version": "9"}, stream=buf)
    logging.getLogger("mlsteward.test").info("Served request", extra={"request_id": "r", "inputs": [{"ssn": 1, "a": 2}]})
    rec = orjson.loads(buf.getvalue().splitlines()[-1])
    assert rec["inputs"] == [{"ssn": "[REDACTED]", "a": 2}] and rec["request_id"] == "r" and rec["version"] == "9"
