"""Large numeric requests are converted in one NumPy pass, and that pass never changes an answer: whatever a body
holds, the vectorised decoders return the same matrix, or refuse with the same field and rule, as the value-by-value
path (the reference implementation of the rules)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from mlsteward_runtime.contracts import RuntimeConfig
from mlsteward_runtime.endpoints.common import bools_absent
from mlsteward_runtime.errors import InvalidInput
from mlsteward_runtime.protocols import simple, v1, v2
from mlsteward_runtime.signature import RowValidator

from .helpers import loaded_app

ROWS = 120


@pytest.fixture(scope="module")
def plane_app(artifacts):
    path, digest = artifacts["lr.skops"]
    return loaded_app(RuntimeConfig(name="iris", version="1", artifact={"uri": str(path), "sha256": digest}))


@pytest.fixture(scope="module")
def matrix(iris) -> np.ndarray:
    # Long fractions, so that the bodies are well past the size from which the fast path runs.
    rng = np.random.default_rng(0)
    return iris[0][:ROWS] + rng.normal(0, 1e-3, (ROWS, 4))


def _contains_bool(x: Any) -> bool:
    if type(x) is bool:
        return True
    if type(x) is list:
        return any(_contains_bool(v) for v in x)
    if type(x) is dict:
        return any(_contains_bool(v) for v in x.values())
    return False


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet="tfrueals\"\\ x", max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(alphabet="tfrueals", max_size=6), inner,
                                                                max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(doc=_json)
def test_bools_absent_is_never_wrong(doc):
    """The oracle walks the parsed document: a body said to hold no boolean never holds one."""
    body = orjson.dumps(doc)
    if bools_absent(body):
        assert not _contains_bool(orjson.loads(body))


def test_bools_absent_proves_numeric_bodies_and_refuses_literals():
    numeric = orjson.dumps({"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64",
                                        "data": [1.5, 2, 3.25, 4.0]}], "outputs": [{"name": "predict"}]})
    assert bools_absent(numeric)
    assert not bools_absent(numeric.replace(b"3.25", b"true"))
    assert not bools_absent(numeric.replace(b"3.25", b"false"))
    # Too many letters to check one by one: not proven, which is safe.
    assert not bools_absent(b'{"t": "' + b"t" * 100 + b'"}')


HOSTILE = [True, False, "1.5", None, {"a": 1}, [1.0], 2**70, -0.0, 10**30, 1e308]


def _v2_doc(m: np.ndarray, value: Any, nested: bool) -> dict[str, Any]:
    data: list[Any] = m.tolist()
    data[7][2] = value
    if not nested:
        data = [v for row in data for v in row]
    return {"inputs": [{"name": "input-0", "shape": list(m.shape), "datatype": "FP64", "data": data}]}


def _outcome(fn, *args) -> Any:
    try:
        out = fn(*args)
    except InvalidInput as exc:
        return ("refused", exc.field, exc.rule)
    X = out.X if isinstance(out, v2.V2Request) else out
    return ("accepted", X.dtype.str, X.tolist())


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_v2_fast_path_answers_as_the_value_by_value_path(plane_app, matrix, value, nested):
    validator = plane_app[1].validator
    body = json.dumps(_v2_doc(matrix, value, nested)).encode()
    doc = orjson.loads(body)
    assert _outcome(v2.decode, doc, validator, bools_absent(body)) == _outcome(v2.decode, doc, validator, False)


@pytest.mark.parametrize("value", HOSTILE, ids=repr)
def test_rows_fast_path_answers_as_the_value_by_value_path(plane_app, matrix, value):
    validator = plane_app[1].validator
    rows = matrix.tolist()
    rows[7][2] = value
    body = json.dumps({"instances": rows}).encode()
    doc = orjson.loads(body)
    for decode in (v1.decode, simple.decode):
        assert _outcome(decode, doc, validator, bools_absent(body)) == _outcome(decode, doc, validator, False)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.integers(1, 30), width=st.integers(1, 6), ragged=st.booleans(),
       fill=st.sampled_from([1.25, 3, 2**64 - 1, 2**64, "x", None]), seed=st.integers(0, 2**16))
def test_random_shapes_and_values_answer_alike(plane_app, rows, width, ragged, fill, seed):
    """Random widths, ragged rows, integers at and past 64 bits, strings and nulls: both paths agree."""
    validator: RowValidator = plane_app[1].validator
    rng = np.random.default_rng(seed)
    data: list[list[Any]] = [list(rng.normal(5, 2, width)) for _ in range(rows)]
    if ragged and rows > 1:
        data[rng.integers(rows)].append(1.0)
    data[rng.integers(rows)][rng.integers(width)] = fill
    # No booleans in these bodies, so the fast path runs whatever else they hold.
    rows_doc = orjson.loads(json.dumps({"instances": data}))
    assert _outcome(v1.decode, rows_doc, validator, True) == _outcome(v1.decode, rows_doc, validator, False)
    tensor = {"inputs": [{"name": "input-0", "shape": [rows, width], "datatype": "FP32", "data": data}]}
    t_doc = orjson.loads(json.dumps(tensor))
    assert _outcome(v2.decode, t_doc, validator, True) == _outcome(v2.decode, t_doc, validator, False)


def test_a_large_numeric_tensor_takes_one_numpy_pass(plane_app, matrix, monkeypatch):
    """With the body proven free of booleans, no per-value walk runs (it would raise here)."""
    def walk(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("per-value path ran")

    monkeypatch.setattr(v2, "_flatten", walk)
    monkeypatch.setattr(RowValidator, "_fast_rows", walk)
    monkeypatch.setattr(RowValidator, "_slow_rows", walk)
    validator = plane_app[1].validator
    doc = orjson.loads(orjson.dumps(_v2_doc(matrix, 1.0, nested=False)))
    X = v2.decode(doc, validator, True).X
    expected = matrix.copy()
    expected[7, 2] = 1.0
    assert np.array_equal(X, expected)
    assert np.array_equal(v1.decode({"instances": expected.tolist()}, validator, True), expected)


@pytest.mark.parametrize("value,rule", [(True, "type"), (False, "type"), ("1.5", "type"), (None, "type")],
                         ids=repr)
def test_large_bodies_with_hostile_values_are_422_over_http(plane_app, matrix, value, rule):
    client = TestClient(plane_app[0], raise_server_exceptions=False)
    body = json.dumps(_v2_doc(matrix, value, nested=False)).encode()
    assert len(body) > 4096
    r = client.post("/v2/models/iris/infer", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert (r.json()["field"], r.json()["rule"]) == ("inputs[0].data", rule)
    rows = matrix.tolist()
    rows[7][2] = value
    r = client.post("/v1/models/iris:predict", json={"instances": rows})
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "instances[7].x2"


def test_large_numeric_bodies_answer_as_sklearn(plane_app, matrix, iris_lr):
    client = TestClient(plane_app[0], raise_server_exceptions=False)
    body = json.dumps(_v2_doc(matrix, float(matrix[7, 2]), nested=True)).encode()
    r = client.post("/v2/models/iris/infer", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == iris_lr.predict(matrix).tolist()
