"""Request ids of `mlsteward serve` cannot be guessed, and a client-sent x-request-id never takes over another
request's id: a label sent for one prediction is never joined to a prediction someone else made."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
from starlette.testclient import TestClient

from mlsteward_runtime.contracts import RuntimeConfig

from .helpers import loaded_app


@pytest.fixture()
def client(artifacts, iris, iris_lr):
    path, digest = artifacts["lr.skops"]
    app, _ = loaded_app(RuntimeConfig(name="iris", version="1", artifact={"uri": str(path), "sha256": digest}))
    return TestClient(app, raise_server_exceptions=False)


def _rows(iris, iris_lr, cls: int) -> list[list[float]]:
    X = iris[0]
    return [X[int(np.flatnonzero(iris_lr.predict(X) == cls)[0])].tolist()]


def test_request_ids_are_128_bit_random(client, iris):
    ids = [client.post("/predict", json={"instances": [iris[0][0].tolist()]}).headers["x-request-id"]
           for _ in range(50)]
    # The worker's pid, then 128 random bits.
    assert all(re.fullmatch(r"[0-9a-f]+-[0-9a-f]{32}", i) for i in ids), ids[:3]
    random = [i.split("-", 1)[1] for i in ids]
    assert len(set(random)) == 50
    # Not a counter: consecutive ids share no long common prefix.
    assert max(len(_common(a, b)) for a, b in zip(random, random[1:])) < 12


def _common(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def test_a_client_sent_id_of_another_prediction_is_not_taken_over(client, iris, iris_lr):
    victim = client.post("/predict", json={"instances": _rows(iris, iris_lr, 0)})
    rid = victim.headers["x-request-id"]
    attacker = client.post("/predict", json={"instances": _rows(iris, iris_lr, 2)}, headers={"x-request-id": rid})
    assert attacker.status_code == 200
    assert attacker.headers["x-request-id"] != rid and attacker.headers["x-correlation-id"] == rid
    joined = client.post("/v1/feedback", json={"request_id": rid, "label": 0}).json()
    assert joined["correct"] == 1  # the victim's prediction (class 0), not the attacker's (class 2)


def test_a_fresh_client_id_is_kept_for_its_own_feedback(client, iris, iris_lr):
    r = client.post("/predict", json={"instances": _rows(iris, iris_lr, 1)}, headers={"x-request-id": "order-17"})
    assert r.headers["x-request-id"] == "order-17" and "x-correlation-id" not in r.headers
    assert client.post("/v1/feedback", json={"request_id": "order-17", "label": 1}).json()["correct"] == 1


def test_ids_stay_unique_across_refills_and_in_a_forked_worker():
    from mlsteward_runtime.edge import _IDS

    # 600 ids span several reads of the random buffer (256 ids each).
    mine = [_IDS.next() for _ in range(600)]
    assert len(set(mine)) == 600
    # A forked worker starts with a buffer of its own: a buffer copied from the parent would repeat its ids.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its ids and leave at once
        try:
            os.write(write, "\n".join(_IDS.next() for _ in range(300)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        theirs = f.read().split("\n")
    os.waitpid(pid, 0)
    after = [_IDS.next() for _ in range(300)]
    assert len(theirs) == 300 and theirs[0].split("-")[0] == f"{pid:x}"
    assert not {i.split("-", 1)[1] for i in theirs} & {i.split("-", 1)[1] for i in mine + after}
