"""Request limits before work: bytes while receiving, value counts before parsing, nesting while walking."""

from __future__ import annotations

import time

import orjson
import pytest
from starlette.testclient import TestClient

from mlsteward_runtime.app import create_app
from mlsteward_runtime.contracts import RuntimeConfig
from mlsteward_runtime.dataplane import DataPlane
from mlsteward_runtime.settings import ServeSettings

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def cfg(artifacts) -> RuntimeConfig:
    path, digest = artifacts["lr.skops"]
    return RuntimeConfig(name="iris", version="1", artifact={"uri": str(path), "sha256": digest})


def _client(cfg: RuntimeConfig, **settings) -> TestClient:
    plane = DataPlane(cfg, replica="t")
    plane.load()
    plane.start_worker()
    return TestClient(create_app(ServeSettings(runtime=cfg, replica="t", **settings), plane),
                      raise_server_exceptions=False)


def test_chunked_body_past_the_limit_is_413_while_receiving(cfg):
    client = _client(cfg)
    sent = 0

    def chunks():
        nonlocal sent
        yield b'{"instances": ['
        for _ in range(200):  # up to 12.8 MB, past the 8 MiB limit; the server stops reading before the end
            sent += 1
            yield b"[1,2,3,4]," * 6400
    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and (r.json()["field"], r.json()["rule"]) == ("body", "max_bytes")
    assert "8388608" in r.json()["message"]


def test_maximal_body_of_tiny_values_is_refused_before_parsing(cfg):
    client = _client(cfg)
    body = orjson.dumps({"instances": [[1, 2, 3, 4]] * 900_000})[: 8 * 1024 * 1024 - 2] + b"]}"
    assert len(body) <= 8 * 1024 * 1024
    t0 = time.perf_counter()
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    elapsed = time.perf_counter() - t0
    assert r.status_code == 413, r.text
    assert (r.json()["field"], r.json()["rule"]) == ("body", "max_values")
    # Parsing these 3.6 million numbers takes seconds on a loaded core; counting commas takes milliseconds.
    t1 = time.perf_counter()
    orjson.loads(body[: body.rindex(b"],") + 1] + b"]}")
    parse = time.perf_counter() - t1
    assert elapsed < parse, (elapsed, parse)


def test_largest_accepted_request_still_predicts_through_the_thread(cfg, iris, iris_lr):
    client = _client(cfg, parse_offload_bytes=0)
    X = iris[0]
    rows = [X[i % len(X)].tolist() for i in range(10_000)]
    r = client.post("/predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][:150] == iris_lr.predict(X).tolist()
    r1 = client.post("/predict", json={"instances": rows + [ROW]})
    assert r1.status_code == 422 and (r1.json()["field"], r1.json()["rule"]) == ("instances", "max_items")


@pytest.mark.parametrize("data,rule", [
    ([[[[1.0, 2.0, 3.0, 4.0]]]], "max_depth"),
    ([[1.0, 2.0, [3.0, [4.0]]]], "max_depth"),
    ([[1.0, 2.0], [3.0, 4.0, 5.0, 6.0, 7.0]], "shape"),
])
def test_v2_data_nested_past_its_rank_is_422(cfg, data, rule):
    client = _client(cfg)
    r = client.post("/v2/models/iris/infer",
                    json={"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": data}]})
    assert r.status_code == 422, r.text
    assert (r.json()["field"], r.json()["rule"]) == ("inputs[0].data", rule)


def test_feedback_body_with_too_many_values_is_refused_before_parsing(cfg):
    client = _client(cfg)
    body = b'{"request_id": "x", "label": [' + b"1," * 3_000_000 + b"1]}"
    r = client.post("/v1/feedback", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["rule"] == "max_values"
