"""Hostile input as an attacker would send it: every answer is a 4xx naming the field and the rule, and a client's
4xx never counts as the server's error in /v1/stats (which rollout gates and alerts read)."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from mlsteward_runtime.contracts import RuntimeConfig, RuntimeStats

from .helpers import loaded_app


@pytest.fixture(scope="module")
def iris_cfg(artifacts) -> RuntimeConfig:
    path, digest = artifacts["lr.skops"]
    return RuntimeConfig(name="iris", version="1", artifact={"uri": str(path), "sha256": digest},
                         limits={"max_rows": 50})


@pytest.fixture()
def app_plane(iris_cfg):
    return loaded_app(iris_cfg)


@pytest.fixture()
def client(app_plane):
    return TestClient(app_plane[0], raise_server_exceptions=False)


def _stats(client: TestClient) -> RuntimeStats:
    return RuntimeStats.model_validate(client.get("/v1/stats").json())


def test_client_errors_never_count_as_server_errors(client):
    bad = [b'{"instances": [[1, 2]]}', b"{nope", b'{"instances": []}', orjson.dumps({"instances": [[1] * 4] * 51})]
    for body in bad * 5:
        assert 400 <= client.post("/predict", content=body, headers={"content-type": "application/json"}).status_code < 500
    assert client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200
    s = _stats(client)
    # A client cannot fail a canary on purpose: twenty refusals and one success is an error rate of zero.
    assert (s.count, s.errors, s.error_rate, s.client_errors) == (21, 0, 0.0, 20)


def test_server_errors_still_count(app_plane):
    _, plane = app_plane
    for status in (200, 404, 422, 503, 500):
        plane.record_request(1.0, status)
    s = plane.runtime_stats()
    assert (s.count, s.errors, s.client_errors) == (5, 2, 2) and s.error_rate == pytest.approx(0.4)


def _v2(client, inputs, **extra):
    return client.post("/v2/models/iris/infer", content=json.dumps({"inputs": inputs, **extra}),
                       headers={"content-type": "application/json"})


@pytest.mark.parametrize("shape,data,field,rule", [
    # JSON integers up to 2**64 - 1 arrive as integers; larger ones arrive as floats and fail the type rule.
    ([0, 2**63 - 1], [], "inputs[0].shape", "min_items"),
    ([2**63 - 1, 0], [], "inputs[0].shape", "min_items"),
    ([0, 2**64 - 1], [], "inputs[0].shape", "min_items"),
    ([2**63, 2**63, 0], [], "inputs[0].shape", "min_items"),
    ([0, 10**30], [], "inputs[0].shape", "type"),
    ([2**63 - 1, 4], [1.0] * 4, "inputs[0].shape", "max_items"),
    ([2**62, 2**62], [1.0] * 4, "inputs[0].shape", "max_items"),
    ([51, 4], [1.0] * 204, "inputs[0].shape", "max_items"),
    ([1, 2**64 - 1], [1.0], "inputs[0].shape", "max_items"),
    ([2, 4], [1.0] * 7, "inputs[0].data", "shape"),
])
def test_v2_shapes_that_do_not_fit_are_422(client, shape, data, field, rule):
    r = _v2(client, [{"name": "input-0", "shape": shape, "datatype": "FP64", "data": data}])
    assert r.status_code == 422, r.text
    assert (r.json()["field"], r.json()["rule"]) == (field, rule)


@pytest.mark.parametrize("dtype,value", [("FP32", 1e308), ("FP32", -3.5e38), ("FP16", 65536.0), ("FP16", -1e5)])
def test_v2_floats_outside_their_declared_datatype_are_422(client, dtype, value):
    r = _v2(client, [{"name": "input-0", "shape": [1, 4], "datatype": dtype, "data": [value, 1.0, 2.0, 3.0]}])
    assert r.status_code == 422, r.text
    assert (r.json()["field"], r.json()["rule"]) == ("inputs[0].data", "range")


@pytest.mark.parametrize("shape", [[0], [0, 1], [2**63 - 1, 0], [0, 2**64 - 1]])
def test_v2_per_feature_zero_size_shapes_are_422(client, shape):
    inputs = [{"name": n, "shape": shape, "datatype": "FP64", "data": []} for n in ("x0", "x1", "x2", "x3")]
    r = _v2(client, inputs)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "inputs[0].shape"


def test_non_finite_outputs_are_422_not_200_with_nulls(client, iris_lr):
    # Finite inputs at the edge of float64 overflow inside the model: scikit-learn itself answers NaN.
    row = [1e308, -1e308, 1e308, 1e308]
    assert not np.isfinite(iris_lr.predict_proba(np.array([row]))).all()
    for path, body in [("/predict", {"instances": [row]}), ("/v1/models/iris:predict", {"instances": [row]}),
                       ("/v2/models/iris/infer", {"inputs": [{"name": "input-0", "shape": [1, 4],
                                                              "datatype": "FP64", "data": row}]})]:
        r = client.post(path, json=body)
        assert r.status_code == 422, (path, r.text)
        assert (r.json()["field"], r.json()["rule"]) == ("outputs", "finite_output"), path
    ok = client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert ok.status_code == 200 and None not in ok.json()["probabilities"][0]
    assert _stats(client).errors == 0


_dims = st.one_of(st.just(0), st.integers(0, 6), st.integers(0, 2**64 - 1), st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63]))
_leaf = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**63), 2**64 - 1),
                  st.sampled_from([1e308, -1e308, 5e-324]), st.booleans(), st.text(max_size=3), st.none())
_data = st.just([]) | st.recursive(st.lists(_leaf, max_size=12), lambda inner: st.lists(inner, max_size=4), max_leaves=40)
_tensor = st.fixed_dictionaries({
    "name": st.sampled_from(["input-0", "x0", "x1", "x2", "x3"]),
    "shape": st.lists(_dims, min_size=1, max_size=4),
    "datatype": st.sampled_from(["FP64", "FP32", "FP16", "INT64", "INT8", "UINT64", "BOOL", "BYTES"]),
    "data": _data,
})


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(tensors=st.lists(_tensor, min_size=1, max_size=5))
@example(tensors=[{"name": "input-0", "shape": [0, 2**63], "datatype": "FP32", "data": []}])
@example(tensors=[{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [1e308, -1e308, 1e308, 1e308]}])
def test_fuzz_v2_tensors_never_5xx(iris_cfg, tensors):
    client = _shared_client(iris_cfg)
    r = _v2(client, tensors)
    assert r.status_code in (200, 422), (r.status_code, r.text)
    if r.status_code == 422:
        assert r.json()["field"] and r.json()["rule"]
    else:
        assert b"null" not in r.content, r.text


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/predict", "/v1/models/iris:predict"]),
       rows=st.lists(st.one_of(st.lists(_leaf, min_size=0, max_size=6),
                               st.dictionaries(st.sampled_from(["x0", "x1", "x2", "x3", "zz"]), _leaf)),
                     min_size=0, max_size=8))
@example(path="/predict", rows=[[1e308, -1e308, 1e308, 1e308]])
def test_fuzz_v1_and_simple_rows_never_5xx(iris_cfg, path, rows):
    client = _shared_client(iris_cfg)
    r = client.post(path, content=json.dumps({"instances": rows}), headers={"content-type": "application/json"})
    assert r.status_code in (200, 422), (r.status_code, r.text)
    if r.status_code == 200:
        assert b"null" not in r.content, r.text


_CLIENTS: dict[str, TestClient] = {}


def _shared_client(cfg: RuntimeConfig) -> TestClient:
    # Hypothesis calls the test many times; one app for all examples keeps the run short.
    if "c" not in _CLIENTS:
        _CLIENTS["c"] = TestClient(loaded_app(cfg)[0], raise_server_exceptions=False)
    return _CLIENTS["c"]


def test_drift_window_leaves_out_pii_fields_like_the_logs(artifacts):
    path, digest = artifacts["lr.skops"]
    cfg = RuntimeConfig(name="iris", version="1", artifact={"uri": str(path), "sha256": digest},
                        signature={"inputs": [{"name": n} for n in ("sl", "sw", "ssn", "pw")]},
                        pii_fields=["ssn"], drift_window={"size": 16, "seed": 1})
    client = TestClient(loaded_app(cfg)[0])
    secret = 7.123456789
    assert client.post("/predict", json={"instances": [[5.1, 3.5, secret, 0.2]] * 3}).status_code == 200
    r = client.get("/v1/drift/window")
    assert r.status_code == 200
    window = r.json()
    assert set(window["features"]) == {"sl", "sw", "pw"} and window["seen"] == 3
    assert window["features"]["sl"]["values"] == [5.1] * 3
    assert str(secret) not in r.text
