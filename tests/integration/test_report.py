"""`mlsteward report` against real parts.

- Prometheus: a real predictor (`mlsteward serve` on a tiny scikit-learn model) behind a real router
  (`mlsteward route`, one backend version served by that predictor and one whose address answers nothing), a real
  Prometheus server (built by hack/build-prometheus.sh) scraping both every second. The report's requests and
  errors per version must equal the router's own /v1/router/stats counters, over the whole run and over a range
  that starts between two batches; its latency percentiles must fall where the router's own histogram puts them.
- status: a ModelDeployment, a DriftMonitor and Experiments created in the real API server, statuses written through
  the status subresource as the controllers would; the report must match figures computed here with numpy from the
  samples of the range, and leave out what lies outside it.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from .conftest import ROOT, wait_for

MLSTEWARD = str(Path(sys.executable).with_name("mlsteward"))
GV = ("mlsteward.io", "v1alpha1")
# The router's latency buckets (seconds), as runtime/mlsteward_runtime/router/metrics.py declares them.
ROUTER_BUCKETS_MS = [b * 1000 for b in (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                        5.0, 10.0, 30.0)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Proc:
    """A process of this test in its own session, stopped by its id."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, log
        self.fh = open(log, "wb")
        self.p = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, **(env or {})})

    def alive(self) -> bool:
        if self.p.poll() is not None:
            pytest.fail(f"{self.name} exited with {self.p.returncode}:\n{self.log.read_text()[-3000:]}")
        return True

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(timeout=5)
        self.fh.close()


def get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def prometheus_binary() -> Path:
    build = subprocess.run([str(ROOT / "hack/build-prometheus.sh"), "--print-path"], capture_output=True, text=True,
                           timeout=3600)
    if build.returncode != 0:
        pytest.fail(f"hack/build-prometheus.sh failed:\n{build.stderr[-4000:]}")
    return Path(build.stdout.strip().splitlines()[-1]) / "prometheus"


class BrokenPredictor:
    """A predictor on 127.0.0.1 that is ready but fails every prediction (500)."""

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, code: int) -> None:
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                self._answer(200)

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self._answer(500)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def stack(tmp_path: Path, prometheus_binary: Path) -> Iterator[dict[str, Any]]:
    """Predictor iris-v1, router (iris-v1 and a broken iris-v2, no fallback) and Prometheus scraping both. The
    broken one passes the router's readiness probe (the router sends only to backends that do) and answers every
    prediction with a 500."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlsteward_runtime.models import dump_model

    X, y = load_iris(return_X_y=True)
    model = tmp_path / "iris.skops"
    sha = dump_model(LogisticRegression(max_iter=500).fit(X, y), model, "skops")
    pport, rport, prom_port = free_port(), free_port(), free_port()
    broken = BrokenPredictor()
    (tmp_path / "predictor.json").write_text(json.dumps(
        {"name": "iris", "version": "iris-v1", "artifact": {"uri": str(model), "sha256": sha, "format": "skops"}}))
    (tmp_path / "router.json").write_text(json.dumps({
        "deployment": "iris", "model": "iris", "fallback": False, "timeout_s": 2.0,
        "backends": [{"version": "iris-v1", "url": f"http://127.0.0.1:{pport}", "weight": 70},
                     {"version": "iris-v2", "url": broken.url, "weight": 30}]}))
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [
            {"job_name": "router", "static_configs": [{"targets": [f"127.0.0.1:{rport}"]}]},
            {"job_name": "predictor", "static_configs": [{"targets": [f"127.0.0.1:{pport}"]}]},
        ]}))
    started = dt.datetime.now(dt.timezone.utc)
    procs = [
        Proc("predictor", [sys.executable, "-m", "mlsteward_runtime.cli", "serve", "--config",
                           str(tmp_path / "predictor.json"), "--host", "127.0.0.1", "--port", str(pport),
                           "--workers", "1", "--log-level", "warning"], tmp_path / "predictor.log"),
        Proc("router", [sys.executable, "-m", "mlsteward_runtime.cli", "route", "--config",
                        str(tmp_path / "router.json"), "--host", "127.0.0.1", "--port", str(rport),
                        "--log-level", "warning"], tmp_path / "router.log"),
        Proc("prometheus", [str(prometheus_binary), f"--config.file={tmp_path / 'prometheus.yml'}",
                            f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                            "--log.level=warn"], tmp_path / "prometheus.log"),
    ]
    try:
        prom = f"http://127.0.0.1:{prom_port}"
        for name, url in (("predictor", f"http://127.0.0.1:{pport}/v2/health/ready"),
                          ("router", f"http://127.0.0.1:{rport}/healthz"), ("prometheus", f"{prom}/-/ready")):
            wait_for(lambda u=url: all(p.alive() for p in procs) and get_ok(u), timeout=120, what=f"{name} ready")
        # The router sends only to backends that passed its last readiness probe: one that probed the predictor
        # before it had loaded its model would send the first requests to iris-v2 alone.
        wait_for(lambda: backends_ready(f"http://127.0.0.1:{rport}") == {"iris-v1": True, "iris-v2": True},
                 timeout=60, what="the router's probes of both backends passing")
        wait_for(lambda: len([r for r in query(prom, "up == 1")]) == 2, timeout=60, what="both targets up")
        yield {"router": f"http://127.0.0.1:{rport}", "prometheus": prom, "started": started, "X": X,
               "procs": procs}
    finally:
        for p in procs:
            p.stop()
        broken.stop()


def backends_ready(router: str) -> dict[str, bool] | None:
    r = httpx.get(f"{router}/readyz", timeout=5)
    return r.json().get("backends") if r.status_code in (200, 503) else None


def query(prom: str, promql: str) -> list[dict[str, Any]]:
    body = httpx.post(f"{prom}/api/v1/query", data={"query": promql}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def send(router: str, X: np.ndarray, n: int, rng: np.random.Generator) -> dict[int, int]:
    """`n` predictions through the router, one in five with a wrong input (a 4xx from the predictor)."""
    codes: dict[int, int] = {}
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            row = X[int(rng.integers(len(X)))].tolist()
            body = {"instances": [["not a number", *row[1:]]]} if i % 5 == 4 else {"instances": [row]}
            code = client.post(f"{router}/predict", json=body).status_code
            codes[code] = codes.get(code, 0) + 1
    return codes


def router_stats(router: str) -> dict[str, Any]:
    return httpx.get(f"{router}/v1/router/stats", timeout=5).json()["versions"]


def scraped(prom: str, stats: dict[str, Any]) -> bool:
    """Prometheus holds the router's current attempt counts (a scrape after the last request)."""
    got = {r["metric"]["version"]: float(r["value"][1]) for r in query(
        prom, "sum by (version) (mlsteward_router_backend_latency_seconds_count)")}
    return got == {v: float(s["requests"]) for v, s in stats.items()}


def run_report(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLSTEWARD, "report", *args], capture_output=True, text=True, timeout=120)


def shared_edge_interval(q: float, router_buckets: dict[str, int]) -> tuple[float, float]:
    """Where the q-quantile lies by the router's own cumulative histogram (/v1/router/stats latency_buckets, ms):
    between the edges it shares with the Prometheus histogram around the rank-th observation."""
    cum = {float(k): n for k, n in router_buckets.items()}
    edges = [e for e in sorted(cum) if e in ROUTER_BUCKETS_MS or e == float("inf")]
    rank = q * cum[float("inf")]
    i = next(i for i, e in enumerate(edges) if cum[e] >= rank)
    return (0.0 if i == 0 else edges[i - 1]), edges[i]


def test_report_from_prometheus_matches_the_router_counters(stack, tmp_path):
    router, prom = stack["router"], stack["prometheus"]
    rng = np.random.default_rng(0)
    md = {"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment",
          "metadata": {"name": "iris", "namespace": "models"}, "spec": {"version": "iris-v1"},
          "status": {"servingVersion": "iris-v1", "traffic": [{"version": "iris-v1", "weight": 70},
                                                              {"version": "iris-v2", "weight": 30}]}}
    objects = tmp_path / "md.yaml"
    objects.write_text(yaml.safe_dump(md))

    codes = send(router, stack["X"], 150, rng)
    first = router_stats(router)
    assert first["iris-v1"]["requests"] > 0 and first["iris-v2"]["errors"] > 0, first
    assert codes.get(422, 0) + codes.get(400, 0) > 0, codes  # the wrong inputs reached the predictor
    wait_for(lambda: scraped(prom, first), timeout=30, what="Prometheus to scrape the first batch")
    # A scrape after the first batch lies before `middle`: it is the baseline of the second range.
    middle = dt.datetime.now(dt.timezone.utc)
    time.sleep(1.5)
    send(router, stack["X"], 90, rng)
    second = router_stats(router)
    wait_for(lambda: scraped(prom, second), timeout=30, what="Prometheus to scrape the second batch")
    until = dt.datetime.now(dt.timezone.utc)

    whole = until - stack["started"] + dt.timedelta(seconds=5)
    proc = run_report(["iris", "-f", str(objects), "--prometheus", prom, "--format", "json",
                       "--since", f"{whole.total_seconds():.3f}s", "--until", iso(until)])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["source"] == "prometheus"
    by = {t["version"]: t for t in report["versions"]}
    assert sorted(by) == ["iris-v1", "iris-v2"]
    for v in by:
        assert by[v]["requests"] == second[v]["requests"], (v, by[v], second[v])
        assert by[v]["errors"] == second[v]["errors"], (v, by[v], second[v])
    assert by["iris-v1"]["errors"] == 0 and by["iris-v2"]["errors"] == by["iris-v2"]["requests"]
    assert report["total"]["requests"] == sum(s["requests"] for s in second.values())
    for v in by:
        for q in ("p50", "p95", "p99"):
            lo, hi = shared_edge_interval(float(q[1:]) / 100, second[v]["latency_buckets"])
            assert lo <= by[v][f"{q}_ms"] <= hi, (v, q, by[v][f"{q}_ms"], second[v]["latency_buckets"])

    # From `middle` on: the second batch only, counted from the last sample before it.
    proc = run_report(["iris", "-f", str(objects), "--prometheus", prom, "--format", "json",
                       "--since", f"{(until - middle).total_seconds():.3f}s", "--until", iso(until)])
    assert proc.returncode == 0, proc.stderr
    by = {t["version"]: t for t in json.loads(proc.stdout)["versions"]}
    for v in by:
        assert by[v]["requests"] == second[v]["requests"] - first[v]["requests"], (v, by[v], first[v], second[v])
        assert by[v]["errors"] == second[v]["errors"] - first[v]["errors"], (v, by[v], first[v], second[v])

    text = run_report(["iris", "-f", str(objects), "--prometheus", prom, "--since", "10m"])
    assert text.returncode == 0, text.stderr
    assert "traffic figures from prometheus" in text.stdout

    refused = run_report(["iris", "-f", str(objects), "--prometheus", prom, "--selector", 'namespace=~"("'])
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"--prometheus: Prometheus at {prom} refused the query (bad_data" in refused.stderr


# ---- status, from the real API server ----


def samples_around(start: dt.datetime, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    out, t = [], start
    for i in range(n):
        t += dt.timedelta(seconds=float(rng.uniform(50, 70)))
        fb, requests = int(rng.integers(1, 40)), int(rng.integers(60, 1800))
        out.append({"time": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "version": "iris-v1" if i < n // 2 else "iris-v2",
                    "windowSeconds": 60.0, "replicas": 2, "requests": requests,
                    "errors": int(rng.integers(0, requests // 10 + 1)),
                    "requestRate": round(float(rng.uniform(1, 30)), 3),
                    "errorRate": round(float(rng.uniform(0, 0.1)), 4), "p50Ms": round(float(rng.uniform(1, 4)), 3),
                    "p95Ms": round(float(rng.uniform(4, 30)), 3), "p99Ms": round(float(rng.uniform(30, 90)), 3),
                    "feedback": fb, "accuracy": round(float(rng.uniform(0.7, 1)), 4)})
    return out


def test_report_from_status_in_the_cluster(kube, namespace, control_plane):
    from kubernetes import client

    api = client.CustomObjectsApi(kube)
    rng = np.random.default_rng(42)
    until = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    since = until - dt.timedelta(hours=2)
    samples = samples_around(since - dt.timedelta(minutes=20), 160, rng)  # 20 minutes before, ~20 after

    def at(minutes: float) -> str:
        return (until - dt.timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def create(plural: str, body: dict[str, Any], status: dict[str, Any]) -> None:
        api.create_namespaced_custom_object(*GV, namespace, plural, {"apiVersion": "mlsteward.io/v1alpha1", **body})
        api.patch_namespaced_custom_object_status(*GV, namespace, plural, body["metadata"]["name"],
                                                  {"status": status})

    create("modeldeployments", {"kind": "ModelDeployment", "metadata": {"name": "iris"},
                                "spec": {"version": "iris-v2"}},
           {"servingVersion": "iris-v2", "health": {"samples": samples, "alerts": [
               {"rule": "ErrorRate", "metric": "errorRate", "reason": "ErrorRateAbove", "value": 0.09,
                "threshold": 0.05, "since": at(2)}]},
            "decisions": [{"time": at(150), "kind": "Rollout", "to": "iris-v1", "reason": "SpecChanged"},
                          {"time": at(60), "kind": "Rollout", "from": "iris-v1", "to": "iris-v2",
                           "reason": "StepPassed", "numbers": {"errorRate": 0.01}}]})
    create("driftmonitors", {"kind": "DriftMonitor", "metadata": {"name": "iris-drift"},
                             "spec": {"deployment": "iris"}},
           {"history": [{"time": at(m), "windowSize": 400, "driftedFeatures": d, "drifted": d > 0}
                        for m, d in ((180, 4), (100, 0), (50, 2), (10, 0))],
            "lastAction": {"type": "Alert", "time": at(50)}})
    for name, started, concluded in (("before", 300, 200), ("during", 90, 30)):
        create("experiments", {"kind": "Experiment", "metadata": {"name": name}, "spec": {
            "deployment": "iris", "variants": [{"name": "control", "version": "iris-v1", "weight": 50},
                                               {"name": "treatment", "version": "iris-v2", "weight": 50}]}},
               {"phase": "Concluded", "startedAt": at(started), "concludedAt": at(concluded), "winner": "treatment"})
    stored = api.get_namespaced_custom_object(*GV, namespace, "modeldeployments", "iris")
    assert len(stored["status"]["health"]["samples"]) == len(samples)

    proc = run_report(["iris", "-n", namespace, "--kubeconfig", str(control_plane), "--format", "json",
                       "--since", "2h", "--until", iso(until), "--prometheus", ""])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)

    # The oracle: the samples of the range, window count / window length x seconds since the previous sample in the
    # range, with numpy.
    times = np.array([dt.datetime.strptime(s["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
                      .timestamp() for s in samples])
    keep = (times >= since.timestamp()) & (times <= until.timestamp())
    assert 0 < keep.sum() < len(samples)
    kept = [s for s, k in zip(samples, keep) if k]
    gaps = np.concatenate([[0.0], np.diff(times[keep])])
    rate = np.array([s["requests"] / s["windowSeconds"] for s in kept])
    err = np.array([s["errors"] / s["windowSeconds"] for s in kept])
    version = np.array([s["version"] for s in kept])
    by = {t["version"]: t for t in report["versions"]}
    assert sorted(by) == ["iris-v1", "iris-v2"]
    for v in by:
        m = version == v
        assert by[v]["requests"] == pytest.approx(float(rate[m] @ gaps[m]))
        assert by[v]["errors"] == pytest.approx(float(err[m] @ gaps[m]))
        assert by[v]["p50_ms"] == pytest.approx(float(np.median([s["p50Ms"] for s, mm in zip(kept, m) if mm])))
        assert by[v]["p99_ms"] == pytest.approx(max(s["p99Ms"] for s, mm in zip(kept, m) if mm))
        assert by[v]["accuracy"] == pytest.approx(float(np.average(
            [s["accuracy"] for s, mm in zip(kept, m) if mm], weights=[s["feedback"] for s, mm in zip(kept, m) if mm])))
        assert by[v]["samples"] == int(m.sum())
    assert report["total"]["requests"] == pytest.approx(float(rate @ gaps))
    assert (report["covered_since"], report["covered_until"]) == (kept[0]["time"], kept[-1]["time"])
    # Out of range: the first decision, the drift check at 180 minutes, the experiment "before".
    assert [d["to"] for d in report["decisions"]] == ["iris-v2"]
    (drift,) = report["drift"]
    assert (drift["checks"], drift["drifted"], drift["max_drifted_features"]) == (3, 1, 2)
    assert drift["last_action"]["type"] == "Alert"
    assert [e["name"] for e in report["experiments"]] == ["during"]
    assert [a["rule"] for a in report["alerts"]] == ["ErrorRate"]

    md = run_report(["iris", "-n", namespace, "--kubeconfig", str(control_plane), "--format", "markdown",
                     "--since", "2h", "--until", iso(until), "--prometheus", ""])
    assert md.returncode == 0, md.stderr
    assert f"| iris-v2 | ~{by['iris-v2']['requests']:.0f} |" in md.stdout

    missing = run_report(["nope", "-n", namespace, "--kubeconfig", str(control_plane), "--prometheus", ""])
    assert missing.returncode == 2 and "no ModelDeployment nope in namespace" in missing.stderr
    assert "Traceback" not in missing.stderr

