"""`mlsteward serve` as a real process on loopback: one and several workers, http artifacts, clean failures."""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import threading
from functools import partial

import httpx
import numpy as np
import pytest

from mlsteward_runtime.cli import main

from .helpers import ServerProcess

ROW = [5.1, 3.5, 1.4, 0.2]


def test_digest_mismatch_exits_with_both_digests(artifacts, capsys):
    path, digest = artifacts["lr.skops"]
    code = main(["serve", "--model", str(path), "--name", "iris", "--sha256", "f" * 64, "--port", "0"])
    err = capsys.readouterr().err
    assert code != 0 and "DigestMismatch" in err and "f" * 64 in err and digest in err
    assert "Traceback" not in err


def test_usage_errors_exit_2(artifacts, capsys, tmp_path):
    assert main(["serve", "--name", "iris"]) == 2
    assert "--model" in capsys.readouterr().err
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"name": "x", "artifact": {"uri": "m"}, "typo": 1}))
    assert main(["serve", "--config", str(bad)]) == 2
    assert "typo" in capsys.readouterr().err


def test_pickle_without_digest_refused(artifacts, capsys):
    path, _ = artifacts["lr.pkl"]
    code = main(["serve", "--model", str(path), "--name", "iris", "--format", "pickle", "--port", "0"])
    assert code != 0 and "UnverifiedRefused" in capsys.readouterr().err


def test_single_worker_over_http_artifact(artifacts, tmp_path, iris, iris_lr):
    path, digest = artifacts["lr.skops"]
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(path.parent))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    sig = tmp_path / "sig.yaml"
    sig.write_text("spec:\n  signature:\n    inputs:\n" + "".join(
        f"      - name: {n}\n        min: 0\n" for n in ("sl", "sw", "pl", "pw")))
    server = ServerProcess(["--model", f"http://127.0.0.1:{srv.server_address[1]}/{path.name}", "--name", "iris",
                            "--sha256", digest, "--signature", str(sig), "--version", "2.0.0"])
    try:
        server.wait_ready()
        X = iris[0][::10]
        r = httpx.post(f"{server.url}/predict", json={"instances": X.tolist()})
        assert r.json()["predictions"] == iris_lr.predict(X).tolist()
        assert r.headers["x-model-version"] == "2.0.0"
        bad = httpx.post(f"{server.url}/predict", json=[{"sl": -1, "sw": 1, "pl": 1, "pw": 1}])
        assert bad.status_code == 422 and bad.json()["field"] == "instances[0].sl" and bad.json()["rule"] == "minimum"
        # The server survives garbage on the socket.
        assert httpx.post(f"{server.url}/predict", content=b"\x00\xff" * 100).status_code in (400, 415)
        assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    finally:
        err = server.stop()
        srv.shutdown()
    assert '"msg":"Loaded model"' in err


def test_several_workers_share_metrics_stats_window_and_feedback(artifacts, iris, iris_lr):
    path, digest = artifacts["lr.skops"]
    server = ServerProcess(["--model", str(path), "--name", "iris", "--sha256", digest, "--workers", "2"])
    try:
        server.wait_ready()
        X = iris[0]
        y = iris_lr.predict(X)

        def one(i: int) -> httpx.Response:
            with httpx.Client() as c:  # a new connection per request spreads requests across workers
                return c.post(f"{server.url}/predict", json={"instances": [X[i].tolist()]},
                              headers={"x-request-id": f"r{i}"})

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(one, range(60)))
        assert [r.json()["predictions"][0] for r in responses] == y[:60].tolist()
        # Generated request ids start with the worker's pid: both workers must have answered some requests.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            anon = list(pool.map(lambda _: httpx.post(f"{server.url}/predict", json={"instances": [ROW]}), range(40)))
        assert len({r.headers["x-request-id"].split("-")[0] for r in anon}) == 2
        # Every outcome joins, whichever worker answered the prediction or receives the feedback.
        for i in range(60):
            fb = httpx.post(f"{server.url}/v1/feedback", json={"request_id": f"r{i}", "label": int(y[i])})
            assert fb.status_code == 200, fb.text
        metrics = httpx.get(f"{server.url}/metrics").text
        line = next(l for l in metrics.splitlines()
                    if l.startswith('mlsteward_requests_total{endpoint="/predict",status="200"'))
        assert float(line.rsplit(" ", 1)[1]) == 100.0
        import time

        deadline = time.monotonic() + 10
        while True:  # snapshots are published every second
            stats = httpx.get(f"{server.url}/v1/stats").json()
            window = httpx.get(f"{server.url}/v1/drift/window").json()
            if (stats["count"], stats["feedback"], window["seen"]) == (100, 60, 100) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (stats["count"], stats["feedback"], stats["accuracy"]) == (100, 60, 1.0), stats
        assert window["seen"] == 100
    finally:
        server.stop()
