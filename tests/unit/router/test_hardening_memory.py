"""Bounded memory by bytes: the router's map of served requests (kept for feedback) stays within its byte budget,
evicting oldest first and counting evictions, and a real `mlsteward route` process keeps a flat RSS under a
stream of the largest requests it accepts (max_body_bytes) whose responses are the largest it keeps
(feedback_max_body_bytes)."""

from __future__ import annotations

import json
import re
import secrets
import time
import tracemalloc
from pathlib import Path

from mlsteward_runtime.router.feedback import ENTRY_OVERHEAD, Served, ServedMap

from router_harness import client, config, wait_for
from test_route_command import free_port, route

KEPT = 64 * 1024  # the default feedback_max_body_bytes: the largest response the router keeps


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))


def test_the_byte_estimate_covers_what_an_entry_really_takes():
    served = ServedMap(capacity=10**9)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(20_000):
        # Ids and bodies are made here, as the router makes them per request, so they are traced too.
        served.put(secrets.token_hex(16), Served("v1", "http://v1", b"x" * (100 + i % 50)))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert used <= served.bytes, (used, served.bytes)
    assert served.bytes <= 2 * used  # an estimate, not a wild overcharge


def test_the_budget_evicts_oldest_first_and_counts():
    evictions = []
    served = ServedMap(capacity=1_000, max_bytes=10 * (ENTRY_OVERHEAD + 32 + 1000), on_evict=lambda: evictions.append(1))
    ids = [secrets.token_hex(16) for _ in range(25)]
    for rid in ids:
        served.put(rid, Served("v1", "http://v1", b"x" * 1000))
    assert len(served) == 10 and served.evicted == len(evictions) == 15
    assert [served.get(r) is not None for r in ids] == [False] * 15 + [True] * 10
    assert served.bytes <= served.max_bytes


def test_rss_stays_flat_under_a_stream_of_the_largest_requests(backends, tmp_path: Path):
    # Each answer is as large as the router keeps (just under 64 KiB): the map's worst case per request.
    big = backends("v1", label="x" * (KEPT - 200))
    cfg = tmp_path / "router.json"
    cfg.write_text(json.dumps(config(("v1", big.url, 100))))
    port = free_port()
    budget = 8 * 1024 * 1024
    max_body = 128 * 1024
    proc = route("--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                 env={"MLSTEWARD_ROUTER_SERVED_MAX_BYTES": str(budget),
                      "MLSTEWARD_ROUTER_MAX_BODY_BYTES": str(max_body)})
    try:
        with client(f"http://127.0.0.1:{port}") as c:
            def up() -> bool:
                try:
                    return c.get("/readyz").status_code == 200
                except Exception:  # noqa: BLE001 - not listening yet
                    assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                    return False

            wait_for(up, timeout=20, what="router ready")
            # The largest body the router accepts (one wide row, so one prediction of KEPT - 200 characters).
            body = b'{"instances": [[' + b",".join([b"0.123456"] * ((max_body - 64) // 9)) + b"]]}"
            assert max_body - 64 < len(body) <= max_body
            assert c.post("/predict", content=body + b" " * 64).status_code == 413
            sent, samples = 0, []
            start = time.monotonic()
            while time.monotonic() - start < 18 and sent < 8_000:
                r = c.post("/predict", content=body, headers={"content-type": "application/json"})
                assert r.status_code == 200 and KEPT - 200 < len(r.content) <= KEPT
                sent += 1
                if sent % 200 == 0:
                    samples.append((sent, rss_kib(proc.pid)))
                    big.received.clear()  # the test backend's own record, not the router's memory
                    big.hits.clear()
                    big.served.clear()
            metrics = c.get("/metrics").text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # The budget is reached after about 130 requests; from then on RSS must not follow the stream. Without the
    # bound each request adds ~64 KiB: 300 requests past the warm-up alone would be +19 MiB (with it: +0.2 MiB).
    assert sent >= 500, sent
    warm = [kib for n, kib in samples if n >= 200]
    growth_kib = max(warm) - warm[0]
    assert growth_kib < 6 * 1024, (sent, samples)
    evicted = float(re.search(r"^mlsteward_router_served_evictions_total (\S+)$", metrics, re.M).group(1))
    held = float(re.search(r"^mlsteward_router_served_bytes (\S+)$", metrics, re.M).group(1))
    assert evicted >= sent - budget // KEPT and held <= budget


def test_mirrors_in_flight_are_bounded_by_bytes(backends, router_factory):
    # The shadow holds each mirror 8 s: far longer than the five requests take even on a loaded machine.
    served, slow = backends("v1"), backends("v2", delay_s=8.0)
    rr = router_factory(config(("v1", served.url, 100), shadow={"version": "v2", "url": slow.url, "percent": 100}),
                        shadow_max_inflight_bytes=100_000)
    body = {"instances": [["x" * 40_000]]}  # ~40 kB a request, plus the small served answer
    for _ in range(5):
        assert rr.predict(body).status_code == 200
    # Two mirrors fit in 100 kB; the other three are dropped rather than held in memory behind the slow shadow.
    assert rr.stats()["shadow"]["v2"]["dropped"] == 3
    s = wait_for(lambda: (x := rr.stats()["shadow"]["v2"])["mirrored"] == 2 and x, timeout=20, what="mirrors done")
    assert rr.router._mirror_bytes == 0 and s["dropped"] == 3
