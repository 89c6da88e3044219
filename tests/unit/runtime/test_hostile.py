"""Hostile input as an attacker would send it: every answer is a 4xx naming the field and the rule, and a client's
4xx never counts as the server's error in /v1/stats (which rollout gates and alerts read)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
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
