"""A client cannot flood the predictor's logs: refused requests are logged within a budget, the rest counted."""

from __future__ import annotations

import time

import httpx
import orjson

from mlsteward_runtime.app import _CLIENT_ERROR_LOGS
from mlsteward_runtime.logs import LogBudget

from .helpers import ServerProcess


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_budget_passes_a_burst_then_the_rate_and_counts_what_it_left_out():
    clock = _Clock()
    budget = LogBudget(rate=2.0, burst=3.0, clock=clock)
    assert [budget.take() for _ in range(5)] == [0, 0, 0, None, None]
    clock.t = 0.5  # one token back at 2 per second
    assert budget.take() == 2 and budget.take() is None
    clock.t = 10.0  # refilled to the burst, not beyond
    assert [budget.take() for _ in range(4)] == [1, 0, 0, None]


def test_a_flood_of_bad_requests_writes_a_bounded_number_of_log_lines(artifacts):
    path, digest = artifacts["lr.skops"]
    server = ServerProcess(["--model", str(path), "--name", "iris", "--sha256", digest])
    sent: list[str] = []  # request ids in the order the refusals were answered
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=10) as client:
            started = time.monotonic()
            for _ in range(400):
                r = client.post("/predict", json={"instances": [[1.0, 2.0]]})
                assert r.status_code == 422
                sent.append(r.headers["x-request-id"])
            flood_s = time.monotonic() - started
            # A later refusal of another kind, once the budget has refilled, is logged and says how many lines
            # were left out since the last one.
            time.sleep(0.5)
            r = client.post("/predict", json={"rows": [[1.0]]})
            assert r.status_code == 422
            sent.append(r.headers["x-request-id"])
    finally:
        log = server.stop()
    lines = [orjson.loads(line) for line in log.splitlines() if line.startswith("{")]
    rejected = [line for line in lines if line.get("msg") == "Rejected request"]
    # The bound is the budget's own: its burst, plus its rate over however long this machine took for the flood,
    # plus the later line.
    budget = _CLIENT_ERROR_LOGS
    assert budget.burst <= len(rejected) <= budget.burst + budget.rate * flood_s + 1, (len(rejected), flood_s)
    # The oracle is the client's own list: each logged line reports exactly the refusals answered between the
    # previous logged line and itself, none counted twice, none lost. Which requests the budget passes depends on
    # how fast this machine answers; the accounting does not.
    position = {rid: i for i, rid in enumerate(sent)}
    logged = [position[line["request_id"]] for line in rejected]
    assert logged == sorted(logged) and logged[0] == 0
    previous = -1
    for line, at in zip(rejected, logged):
        assert line["suppressed"] == at - previous - 1, (line, at, previous)
        previous = at
    assert logged[-1] == len(sent) - 1 and rejected[-1]["rule"] == "required"
    assert any(line["suppressed"] > 0 for line in rejected)
