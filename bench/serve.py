"""Serving benchmark: `mlsteward serve` against an ideal FastAPI endpoint, MLServer, KServe and the in-process floor.

Servers, each started with one worker process pinned to one core (taskset), answering the same requests:
  mlsteward  `mlsteward serve` with the configuration the operator renders, every request-path feature on:
             digest check, signature validation, Prometheus metrics, /v1/stats sliding window, drift reservoir,
             feedback store, JSON logs at INFO, x-request-id on every response, adaptive micro-batching.
  mlsteward+predlog, mlsteward-nobatch
             the same plus the optional JSONL prediction log, or with batching off (only at 1 row x 64 and
             100 rows x 8): what those features cost or bring.
  ideal      bench/ideal_app.py: one FastAPI route, orjson in and out, `model.predict`, nothing else.
  mlserver   Seldon MLServer's scikit-learn runtime with its defaults, installed by this script into its own venv
             (~/.cache/mlsteward/bench/mlserver-venv, created once and reused, versions pinned below).
  kserve     KServe's Python model server (the kserve SDK, ModelServer with one worker) serving the joblib model
             as KServe's scikit-learn runtime does (bench/kserve_app.py), in its own venv
             (~/.cache/mlsteward/bench/kserve-venv, created once and reused).
  floor      `model.predict` called in this process (no HTTP), for 1 row and for 100 rows; and each step of the
             request path timed alone, with whole requests driven straight into each ASGI app.

Models: LogisticRegression and RandomForestClassifier(n_estimators=100), fit (seeded) on scikit-learn's bundled
breast_cancer data (30 features), saved with mlsteward's dump_model as skops (mlsteward) and as joblib (ideal,
MLServer, KServe). Every server receives identical bytes: a V2 (Open Inference Protocol) JSON body with one FP64
tensor of shape [rows, 30] and `outputs: [{"name": "predict"}]`, POSTed to /v2/models/bench/infer. Before a server is
measured its answers to the 1-row and the 100-row body are compared with scikit-learn's own predict.

Load: wrk (Debian's package) with a Lua POST script, one thread, pinned to the other core. Scenarios per model:
1-row requests at concurrency 1, 8 and 64, and 100-row requests at concurrency 1 and 8; each cell has an unmeasured
warm-up and reports requests/s (rows/s for 100-row requests) and wrk's p50/p99 latency. All servers of a model run
at once (idle ones wait on the same core) and each cell is measured on every server in turn, so that servers are
compared within the same minute of a shared machine's drifting load. For mlsteward, each cell also reports the
mean time of each step of the request path, server side, from the mlsteward_request_stage_seconds counters
scraped before and after it. The targets of the
serving issue are checked as ratios within one run (the machine is shared, absolute numbers are noisy).

Reproduce:  python bench/serve.py [--quick] [--duration 10] [--only floor,ideal,mlsteward,mlserver,kserve,...]
                                  [--models lr,forest] [--out bench/results/serve.md] [--baseline main]

--baseline GIT_REF adds `mlsteward serve` from that git revision's runtime (server mlsteward@GIT_REF), measured in
every cell next to this checkout's, so that a change's before/after ratios come from one run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL_NAME = "bench"
SEED = 0

MLSERVER_VERSION = "1.7.1"
MLSERVER_VENV = Path.home() / ".cache" / "mlsteward" / "bench" / "mlserver-venv"
KSERVE_VERSION = "0.21.0"
KSERVE_VENV = Path.home() / ".cache" / "mlsteward" / "bench" / "kserve-venv"

# mlsteward+predlog and mlsteward-nobatch are the production configuration with one feature added or removed; they
# run only the two cells where that feature matters, to keep the whole run under ten minutes.
SERVERS = ("mlsteward", "ideal", "mlserver", "kserve", "mlsteward+predlog", "mlsteward-nobatch")
MODELS = {"lr": "LogisticRegression", "forest": "RandomForest(100)"}
# (rows per request, concurrent connections). 100 x 1 sends large requests one at a time: nothing to batch, so it
# shows a single large request's own cost next to the ideal endpoint's.
SCENARIOS = ((1, 1), (1, 8), (1, 64), (100, 1), (100, 8))
VARIANT_SCENARIOS = ((1, 64), (100, 8))


# ---------------------------------------------------------------------------------------------------- the models


@dataclass
class BenchModel:
    key: str
    estimator: Any
    X: Any
    skops_path: Path
    skops_sha256: str
    joblib_path: Path
    bodies: dict[int, Path] = field(default_factory=dict)
    expected: dict[int, list[int]] = field(default_factory=dict)


def build_models(keys: list[str], tmp: Path) -> dict[str, BenchModel]:
    import joblib
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    from mlsteward_runtime.models import dump_model

    X, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(X))
    X, y = X[order], y[order]
    out: dict[str, BenchModel] = {}
    for key in keys:
        if key == "lr":
            # Unscaled features need many lbfgs iterations; a scaler in front would add its own cost to predict.
            est: Any = LogisticRegression(max_iter=10_000, random_state=SEED)
        else:
            est = RandomForestClassifier(n_estimators=100, random_state=SEED)
        est.fit(X, y)
        d = tmp / key
        m = BenchModel(key, est, X, d / "model.skops", "", d / "model.joblib")
        m.skops_sha256 = dump_model(est, m.skops_path, "skops")
        joblib.dump(est, m.joblib_path)
        for rows in sorted({r for r, _ in SCENARIOS}):
            Xr = X[:rows]
            body = {"inputs": [{"name": "input-0", "shape": [rows, X.shape[1]], "datatype": "FP64",
                                "data": Xr.ravel().tolist()}],
                    "outputs": [{"name": "predict"}]}
            m.bodies[rows] = d / f"body-{rows}.json"
            m.bodies[rows].write_text(json.dumps(body))
            m.expected[rows] = [int(v) for v in est.predict(Xr)]
        out[key] = m
    return out


def measure_floor(m: BenchModel, budget_s: float) -> dict[str, float]:
    """Median microseconds per `model.predict` call, in this process, pinned like the servers."""
    import statistics

    res: dict[str, float] = {}
    for rows in (1, 100):
        Xr = m.X[:rows]
        m.estimator.predict(Xr)
        timer = timeit.Timer(lambda: m.estimator.predict(Xr))  # noqa: B023 - used at once
        per_call = timer.timeit(3) / 3
        number = max(3, int(budget_s / 5 / per_call))
        res[f"{rows}"] = statistics.median(timer.repeat(5, number)) / number * 1e6
    return res


def _best_us(fn: Any, budget_s: float) -> float:
    fn()
    per_call = max(timeit.Timer(fn).timeit(3) / 3, 1e-7)
    number = max(3, int(budget_s / 5 / per_call))
    return min(timeit.Timer(fn).repeat(5, number)) / number * 1e6


def measure_hot_path(m: BenchModel, tmp: Path, budget_s: float) -> list[tuple[str, float, float]]:
    """Microseconds per request of each step on mlsteward's request path (and the ideal endpoint's), in process.

    Rows: (step, 1-row request, 100-row request). The whole-request rows drive each ASGI app directly (no sockets,
    no HTTP parsing), sequentially, so they show the framework and feature overhead without the machine's noise.
    """
    import asyncio
    import logging

    import numpy as np
    import orjson

    sys.path.insert(0, str(HERE))
    import ideal_app

    from mlsteward_runtime.app import create_app
    from mlsteward_runtime.contracts import RuntimeConfig
    from mlsteward_runtime.dataplane import DataPlane
    from mlsteward_runtime.endpoints.common import _PROVE_BOOLS_FROM, bools_absent
    from mlsteward_runtime.feedback import PredictionLog
    from mlsteward_runtime.logs import configure_logging
    from mlsteward_runtime.protocols import v2
    from mlsteward_runtime.settings import ServeSettings

    # The server logs JSON at INFO to stderr; here the same handler writes to /dev/null.
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    configure_logging("info", [], {"model": MODEL_NAME, "version": "1.0.0"}, stream=devnull)
    apps: dict[str, Any] = {"ideal": ideal_app.create_app(m.estimator, MODEL_NAME)}
    planes: dict[str, DataPlane] = {}
    for variant in ("mlsteward", "mlsteward-nobatch"):
        cfg = RuntimeConfig.model_validate(mlsteward_config(m, tmp, variant))
        plane = DataPlane(cfg, replica="bench")
        plane.load()
        planes[variant] = plane
        apps[variant] = create_app(ServeSettings(runtime=cfg, log_level="info", replica="bench"), plane)
    plane = planes["mlsteward"]
    plog = PredictionLog(os.devnull, plane.signature.names, ["x0"], "1.0.0")  # type: ignore[union-attr]

    async def drive(app: Any, body: bytes, n: int) -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": f"/v2/models/{MODEL_NAME}/infer",
                 "raw_path": f"/v2/models/{MODEL_NAME}/infer".encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}
        statuses: set[int] = set()

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                statuses.add(msg["status"])

        for _ in range(n):
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await asyncio.Event().wait()  # never: the body was sent whole
                raise AssertionError

            await app(dict(scope), receive, send)
        if statuses != {200}:
            raise RuntimeError(f"in-process request answered {statuses}")

    import sklearn

    async def whole_requests() -> dict[tuple[str, int], float]:
        out: dict[tuple[str, int], float] = {}
        for name, app in apps.items():
            # The ideal endpoint runs with scikit-learn's defaults; mlsteward's lifespan sets its own config.
            with sklearn.config_context(assume_finite=False, skip_parameter_validation=False):
                async with app.router.lifespan_context(app):
                    for rows, path in m.bodies.items():
                        body = path.read_bytes()
                        await drive(app, body, 50)
                        t0 = time.perf_counter()
                        await drive(app, body, 20)
                        per = (time.perf_counter() - t0) / 20
                        n = max(20, int(budget_s / 5 / per))
                        best = float("inf")
                        for _ in range(5):
                            t0 = time.perf_counter()
                            await drive(app, body, n)
                            best = min(best, (time.perf_counter() - t0) / n)
                        out[(name, rows)] = best * 1e6
        return out

    # The lifespans start the worker state (batcher, reservoir); the steps below then run with mlsteward's
    # scikit-learn config, except the ideal endpoint's predict, timed with scikit-learn's defaults.
    with sklearn.config_context():
        whole = asyncio.run(whole_requests())
        sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
        steps: dict[str, dict[int, float]] = {}
        # The feedback store as a long-running server has it: full, so that every prediction evicts the oldest.
        ids = (f"bench-{i:032x}" for i in itertools.count())
        for _ in range(plane.feedback.capacity):
            plane.feedback.put(next(ids), np.zeros(1, dtype=np.int64))
        for rows, path in m.bodies.items():
            raw = path.read_bytes()
            doc = orjson.loads(raw)
            tensor = doc["inputs"][0]
            req = v2.decode(doc, plane.validator)  # type: ignore[arg-type]
            pred, proba = plane._predict(req.X)
            X = req.X
            naive = {
                "JSON parse (orjson; both)": lambda: orjson.loads(raw),
                "ideal: np.asarray + reshape": lambda: np.asarray(tensor["data"], dtype=np.float64).reshape(
                    tensor["shape"]),
                "mlsteward: V2 decode + signature validation": lambda: v2.decode(
                    doc, plane.validator, len(raw) >= _PROVE_BOOLS_FROM and bools_absent(raw)),
                "ideal: model.predict (scikit-learn checks on)": lambda: m.estimator.predict(X),
                "mlsteward: predict_both (checks skipped after validation)": lambda: plane._predict(X),
                "mlsteward: drift reservoir + feedback store": lambda: plane.observe(next(ids), X, pred),
                "mlsteward: Prometheus metrics + /v1/stats window": lambda: (
                    plane.metrics.observe_request("/v2/models/{name}/infer", 200, 0.001),
                    plane.metrics.batch_rows.observe(rows), plane.record_request(1.0, False)),
                "mlsteward: V2 encode + orjson": lambda: orjson.dumps(
                    v2.encode(MODEL_NAME, "1.0.0", req, pred, proba), option=orjson.OPT_SERIALIZE_NUMPY),
                "mlsteward+predlog: prediction log record (background thread)": lambda: plog._encode(
                    0.0, "bench-id", X, pred),
            }
            for step, fn in naive.items():
                with sklearn.config_context(**({"assume_finite": False, "skip_parameter_validation": False}
                                               if step.startswith("ideal") else {})):
                    steps.setdefault(step, {})[rows] = _best_us(fn, budget_s / len(naive))
    plog.close()
    devnull.close()
    logging.getLogger().handlers.clear()
    rows_out = [(step, v[1], v[100]) for step, v in steps.items()]
    for name in apps:
        rows_out.append((f"whole request, ASGI in process: {name}", whole[(name, 1)], whole[(name, 100)]))
    return rows_out


# --------------------------------------------------------------------------------------------------- processes


def scenarios_of(server: str) -> tuple[tuple[int, int], ...]:
    return VARIANT_SCENARIOS if server in ("mlsteward+predlog", "mlsteward-nobatch") else SCENARIOS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process in its own process group (so that MLServer's worker processes are stopped with it)."""

    def __init__(self, name: str, cmd: list[str], log: Path, cpu: int | None, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        self.fh = open(log, "wb")
        self.proc = subprocess.Popen([*pin, *cmd], stdout=self.fh, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})}, cwd=cwd)

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        # Children that outlived the leader (MLServer's inference pool) share its process group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.fh.close()


def _post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:300]


def wait_ready(server: Server, url: str, body: bytes, deadline_s: float = 120.0) -> None:
    """Until `url` answers the body with 200 (a prediction, not only a health check)."""
    deadline = time.monotonic() + deadline_s
    last: Any = None
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n{server.tail()}")
        try:
            status, last = _post(url, body, timeout=5)
            if status == 200:
                return
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{server.name} did not answer {url} within {deadline_s:g} s (last: {last}):\n{server.tail()}")


def check_predictions(server: str, url: str, m: BenchModel) -> None:
    """The server's `predict` output for the benchmark bodies equals scikit-learn's own."""
    for rows, path in m.bodies.items():
        status, doc = _post(url, path.read_bytes())
        if status != 200:
            raise RuntimeError(f"{server} answered {status} to the {rows}-row body: {doc!r}")
        outs = {o["name"]: o for o in doc.get("outputs", [])}
        got = [int(v) for v in outs["predict"]["data"]] if "predict" in outs else None
        if got != m.expected[rows]:
            raise RuntimeError(f"{server} predicted {got} for the {rows}-row body; scikit-learn says "
                               f"{m.expected[rows]}")


STAGES = ("read", "parse", "validate", "queue", "predict", "observe", "encode", "total")


def scrape_stages(base: str) -> dict[str, float]:
    """mlsteward's per-step request times so far (seconds summed over requests) and the request count, from
    /metrics (mlsteward_request_stage_seconds_total and mlsteward_request_stage_requests_total)."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out = dict.fromkeys((*STAGES, "requests"), 0.0)
    for line in text.splitlines():
        if line.startswith("mlsteward_request_stage_seconds_total{"):
            stage = line.split('stage="', 1)[1].split('"', 1)[0]
            out[stage] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("mlsteward_request_stage_requests_total{"):
            out["requests"] = float(line.rsplit(" ", 1)[1])
    return out


def stage_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float] | None:
    """Mean microseconds per request of each step between two scrapes; `other` is the rest of the time inside the
    app (routing, FastAPI, the ASGI layer with request id, metrics and stats)."""
    n = after["requests"] - before["requests"]
    if n <= 0:
        return None
    means = {k: (after[k] - before[k]) / n * 1e6 for k in STAGES}
    means["other"] = means["total"] - sum(means[k] for k in STAGES if k != "total")
    means["requests"] = n
    return means


# ------------------------------------------------------------------------------------------------------ servers


def mlsteward_config(m: BenchModel, tmp: Path, variant: str) -> dict[str, Any]:
    """The RuntimeConfig the operator renders (artifact and digest; every other field at its default), plus the
    variant's change."""
    config: dict[str, Any] = {
        "name": MODEL_NAME,
        "version": "1.0.0",
        "artifact": {"uri": str(m.skops_path), "sha256": m.skops_sha256, "format": "skops"},
    }
    if variant == "mlsteward+predlog":
        config["prediction_log"] = str(tmp / f"predictions-{m.key}.jsonl")
        config["pii_fields"] = ["x0"]
    elif variant == "mlsteward-nobatch":
        config["batching"] = {"enabled": False}
    return config


def start_mlsteward(m: BenchModel, tmp: Path, port: int, cpu: int | None, variant: str = "mlsteward",
                    runtime: Path | None = None) -> Server:
    """`runtime`: the runtime package directory to import instead of this checkout's (the baseline's)."""
    cfg = tmp / f"{variant}-{m.key}.json"
    cfg.write_text(json.dumps(mlsteward_config(m, tmp, variant)))
    cmd = [sys.executable, "-m", "mlsteward_runtime.cli", "serve", "--config", str(cfg), "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1", "--log-level", "info"]
    env = {"PYTHONPATH": str(runtime)} if runtime is not None else None
    return Server(variant, cmd, tmp / f"{variant.replace('/', '_')}-{m.key}.log", cpu, env=env)


def export_baseline(ref: str, dest: Path) -> Path:
    """The runtime package of git revision `ref`, written under `dest`; returns the directory to import it from."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "runtime"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "runtime"


def start_ideal(m: BenchModel, tmp: Path, port: int, cpu: int | None) -> Server:
    cmd = [sys.executable, str(HERE / "ideal_app.py"), "--model", str(m.joblib_path), "--name", MODEL_NAME,
           "--port", str(port)]
    return Server("ideal", cmd, tmp / f"ideal-{m.key}.log", cpu)


def mlserver_pins() -> list[str]:
    import sklearn

    # scikit-learn pinned to this project's version so that MLServer loads the very same joblib artifact. uvloop
    # pinned to the release current when MLServer 1.7 came out: from uvloop 0.22 on, asyncio.get_event_loop()
    # without a running loop raises, and MLServer's inference-pool workers call it at start and die.
    return [f"mlserver=={MLSERVER_VERSION}", f"mlserver-sklearn=={MLSERVER_VERSION}",
            f"scikit-learn=={sklearn.__version__}", "uvloop==0.21.0"]


def kserve_pins() -> list[str]:
    import sklearn

    return [f"kserve=={KSERVE_VERSION}", f"scikit-learn=={sklearn.__version__}"]


def ensure_mlserver() -> tuple[Path | None, str]:
    return ensure_venv(MLSERVER_VENV, mlserver_pins(), "mlserver")


def ensure_kserve() -> tuple[Path | None, str]:
    return ensure_venv(KSERVE_VENV, kserve_pins(), "python")


def ensure_venv(venv: Path, pins: list[str], exe_name: str) -> tuple[Path | None, str]:
    """The executable `exe_name` of a venv holding `pins` (created once, reused while the pins match), or None and
    the reason it could not be installed."""
    exe = venv / "bin" / exe_name
    stamp = venv / "mlsteward-bench-pins.txt"
    if exe.exists() and stamp.exists() and stamp.read_text().split() == pins:
        return exe, "reused " + " ".join(pins)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing {' '.join(pins)} into ~/{venv.relative_to(Path.home())} ...", file=sys.stderr, flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [[base, "-m", "venv", str(venv)],
             [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins]]
    for step in steps:
        r = subprocess.run(step, capture_output=True, text=True)
        if r.returncode != 0:
            why = (r.stderr or r.stdout).strip().splitlines()[-5:]
            return None, f"`{' '.join(step[-len(pins):]) if 'pip' in step else 'python -m venv'}` failed: " + \
                " | ".join(why)
    if not exe.exists():
        return None, f"the install finished but left no {exe_name} executable"
    stamp.write_text("\n".join(pins) + "\n")
    return exe, "installed " + " ".join(pins)


def start_mlserver(m: BenchModel, tmp: Path, port: int, cpu: int | None, exe: Path) -> Server:
    repo = tmp / f"mlserver-{m.key}"
    model_dir = repo / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(m.joblib_path, model_dir / "model.joblib")
    # Defaults except the ports (the gRPC and metrics servers would otherwise clash with other runs).
    (repo / "settings.json").write_text(json.dumps({
        "http_port": port, "grpc_port": _free_port(), "metrics_port": _free_port(), "host": "127.0.0.1"}))
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": MODEL_NAME, "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"}}))
    return Server("mlserver", [str(exe), "start", str(repo)], tmp / f"mlserver-{m.key}.log", cpu,
                  env={"PATH": f"{exe.parent}:{os.environ.get('PATH', '')}"}, cwd=repo)


def install_peer(server: str, label: str, ensure: Any, servers: list[str], notes: list[str],
                 about: str) -> Path | None:
    """The peer's executable when it is among `servers` and installs; otherwise None, with the reason in the notes
    and the peer taken out of `servers`."""
    if server not in servers:
        return None
    exe, how = ensure()
    if exe is None:
        notes.append(f"{label} not measured: {how}")
        servers.remove(server)
    else:
        notes.append(f"{label}: {how} (own venv under ~/.cache/mlsteward/bench); {about}")
    return exe  # type: ignore[no-any-return]


def start_kserve(m: BenchModel, tmp: Path, port: int, cpu: int | None, python: Path) -> Server:
    cmd = [str(python), str(HERE / "kserve_app.py"), "--model", str(m.joblib_path), "--model_name", MODEL_NAME,
           "--http_port", str(port), "--grpc_port", str(_free_port()), "--workers", "1"]
    return Server("kserve", cmd, tmp / f"kserve-{m.key}.log", cpu)


# ---------------------------------------------------------------------------------------------------------- wrk

_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open("{body}", "rb"))
wrk.body = f:read("*a")
f:close()

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH {{\\"requests\\": %d, \\"duration_us\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d, \\"mean_us\\": %.1f, " ..
    "\\"connect\\": %d, \\"read\\": %d, \\"write\\": %d, \\"status\\": %d, \\"timeout\\": %d}}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk(url: str, script: Path, concurrency: int, duration: float, cpu: int | None) -> dict[str, float]:
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    cmd = [*pin, "wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "10s",
           "-s", str(script), url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if r.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    d = json.loads(line[6:])
    errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
    ok = d["requests"] - d["status"]
    secs = d["duration_us"] / 1e6
    return {"rps": ok / secs, "p50_ms": d["p50_us"] / 1000, "p99_ms": d["p99_us"] / 1000, "errors": errors,
            "requests": d["requests"]}


# ------------------------------------------------------------------------------------------------------- report


def machine_facts() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sklearn

    return {"nproc": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(),
            "scikit-learn": sklearn.__version__, "kernel": platform.release()}


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def targets(results: dict[tuple[str, str, int, int], dict[str, float]], models: list[str]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for each of the serving issue's targets that this run can check."""
    def get(server: str, model: str, rows: int, conc: int) -> dict[str, float] | None:
        return results.get((server, model, rows, conc))

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "NOT MET")

    out: list[tuple[str, str, str]] = []
    for model in models:
        label = "LR" if model == "lr" else "Forest"
        s, i, ms = get("mlsteward", model, 1, 64), get("ideal", model, 1, 64), get("mlserver", model, 1, 64)
        if s and i:
            r = s["rps"] / i["rps"]
            out.append((f"{label}, c=64: throughput >= 1.2x ideal", f"{r:.2f}x", verdict(r >= 1.2)))
            if model == "forest":
                out.append((f"{label}, c=64: throughput >= 10x ideal (batching)", f"{r:.2f}x", verdict(r >= 10)))
            out.append((f"{label}, c=64: p99 <= ideal's", f"{s['p99_ms']:.1f} ms vs {i['p99_ms']:.1f} ms",
                        verdict(s["p99_ms"] <= i["p99_ms"])))
        if s and ms:
            r = s["rps"] / ms["rps"]
            out.append((f"{label}, c=64: throughput vs MLServer", f"{r:.2f}x", "info"))
        ks = get("kserve", model, 1, 64)
        if s and ks:
            r = s["rps"] / ks["rps"]
            out.append((f"{label}, c=64: throughput vs KServe", f"{r:.2f}x", "info"))
    for model in models:
        label = "LR" if model == "lr" else "Forest"
        s, i = get("mlsteward", model, 1, 1), get("ideal", model, 1, 1)
        if s and i:
            r = s["p50_ms"] / i["p50_ms"]
            out.append((f"{label}, c=1: p50 within 1.5x of ideal", f"{r:.2f}x ({s['p50_ms']:.2f} vs "
                        f"{i['p50_ms']:.2f} ms)", verdict(r <= 1.5)))
        s, i = get("mlsteward", model, 100, 8), get("ideal", model, 100, 8)
        if s and i:
            r = s["rps"] / i["rps"]
            out.append((f"{label}, 100-row c=8: rows/s >= ideal", f"{r:.2f}x ({s['rps'] * 100:,.0f} vs "
                        f"{i['rps'] * 100:,.0f} rows/s)", verdict(r >= 1.0)))
        s, i = get("mlsteward", model, 100, 1), get("ideal", model, 100, 1)
        if s and i:
            r = s["rps"] / i["rps"]
            out.append((f"{label}, 100-row c=1 (one at a time, nothing to batch): rows/s vs ideal",
                        f"{r:.2f}x ({s['rps'] * 100:,.0f} vs {i['rps'] * 100:,.0f} rows/s)", "info"))
    return out


def render(results: dict[tuple[str, str, int, int], dict[str, float]], floors: dict[str, dict[str, float]],
           hot: dict[str, list[tuple[str, float, float]]], notes: list[str], facts: dict[str, str], command: str, args: argparse.Namespace,
           models: list[str], servers: list[str],
           stages: dict[tuple[str, str, int, int], dict[str, float]] | None = None) -> str:
    lines = [
        "# Serving benchmark",
        "",
        f"Machine: {facts['nproc']} CPUs ({facts['cpu']}), Linux {facts['kernel']}, Python {facts['python']}, "
        f"scikit-learn {facts['scikit-learn']}.",
        f"Each server: one worker process pinned to CPU {args.server_cpu}; wrk (1 thread) pinned to CPU "
        f"{args.client_cpu}. {args.duration:g} s measured per cell after {args.warmup:g} s of warm-up. Every "
        "server gets the same V2 JSON body (one FP64 tensor [rows, 30], `outputs: [predict]`) at "
        f"/v2/models/{MODEL_NAME}/infer; answers checked against scikit-learn before measuring.",
        "",
        f"Reproduce: `{command}`",
        "",
    ]
    if floors:
        lines += ["## In-process floor (`model.predict`, no HTTP)", "",
                  "| model | 1 row | 100 rows |", "|---|---:|---:|"]
        for model, f in floors.items():
            lines.append(f"| {MODELS[model]} | {f['1']:.0f} µs | {f['100']:.0f} µs |")
        lines.append("")
    if hot:
        lines += ["## Where a request's time goes (in process, one core, no network)", "",
                  "Each step of the request path timed alone (best of 5), and whole requests driven straight into "
                  "each ASGI app. Steps are per request; the prediction log record is built on a background thread "
                  "but on one core it still takes CPU from the server.", "",
                  "| model | step | 1-row request | 100-row request |", "|---|---|---:|---:|"]
        for model, steps in hot.items():
            for step, one, hundred in steps:
                lines.append(f"| {MODELS[model]} | {step} | {one:.1f} µs | {hundred:.1f} µs |")
        lines.append("")
    baseline = next((s for s in servers if s.startswith("mlsteward@")), None)
    lines += ["## Throughput and latency", "",
              "| model | rows x conc | server | req/s | rows/s | p50 ms | p99 ms | vs ideal | vs MLServer | vs KServe |"
              + (f" vs {baseline} |" if baseline else ""),
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if baseline else "")]
    for model in models:
        for rows, conc in SCENARIOS:
            ideal = results.get(("ideal", model, rows, conc))
            mls = results.get(("mlserver", model, rows, conc))
            ksv = results.get(("kserve", model, rows, conc))
            base = results.get((baseline, model, rows, conc)) if baseline else None
            for server in servers:
                r = results.get((server, model, rows, conc))
                if r is None:
                    continue
                lines.append(
                    f"| {MODELS[model]} | {rows} x {conc} | {server} | {r['rps']:,.0f} | {r['rps'] * rows:,.0f} | "
                    f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                    f"{_ratio(r['rps'], ideal['rps'] if ideal else None)} | "
                    f"{_ratio(r['rps'], mls['rps'] if mls else None)} | "
                    f"{_ratio(r['rps'], ksv['rps'] if ksv else None)} |"
                    + (f" {_ratio(r['rps'], base['rps'] if base else None)} |" if baseline else "")
                    + (f" {int(r['errors'])} errors" if r["errors"] else ""))
    lines.append("")
    lines.append("Ratios are of requests per second (rows per second for 100-row requests, the same ratio).")
    lines.append("")
    if stages:
        lines += ["## Step by step under load (mlsteward, server side, mean µs per request)", "",
                  "From `mlsteward_request_stage_seconds` scraped before and after each measured cell. queue is the "
                  "wait for a batch; predict is the request's share of its model call (the call's time divided by "
                  "the requests in the batch), against the in-process floor (`model.predict` alone, one call per "
                  "request); other is the rest of the time inside the app (the ASGI layer with request id, "
                  "metrics and stats, the dispatch to the endpoint, sending the answer); in app is the whole request "
                  "inside the app. The rest of wrk's latency is outside the app: HTTP parsing in uvicorn and requests "
                  "waiting for the event loop.", "",
                  "| model | rows x conc | server | read | parse | validate | queue | predict | floor | observe | "
                  "encode | other | in app | wrk p50 |",
                  "|---|---|---|" + "---:|" * 11]
        for model in models:
            for rows, conc in SCENARIOS:
                for server in servers:
                    st = stages.get((server, model, rows, conc))
                    if st is None:
                        continue
                    floor = floors.get(model, {}).get(str(rows))
                    p50 = results[(server, model, rows, conc)]["p50_ms"] * 1000
                    cells = " | ".join(f"{st[k]:.1f}" for k in ("read", "parse", "validate", "queue", "predict"))
                    lines.append(f"| {MODELS[model]} | {rows} x {conc} | {server} | {cells} | "
                                 f"{_fmt(floor, '.1f')} | {st['observe']:.1f} | {st['encode']:.1f} | "
                                 f"{st['other']:.1f} | {st['total']:.1f} | {p50:.0f} |")
        lines.append("")
    t = targets(results, models)
    if t:
        lines += ["## Targets (serving issue, ratios within this run)", "", "| target | measured | verdict |",
                  "|---|---|---|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in t]
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Default: every server, both models, 10 s per cell (about 8 minutes).")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 s per cell, 0.5 s warm-up")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per cell (default 10)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per cell (default 1)")
    parser.add_argument("--only", default=",".join(("floor", *SERVERS)),
                        help=f"comma-separated subset of {','.join(('floor', *SERVERS))} (default: all)")
    parser.add_argument("--models", default="lr,forest", help="comma-separated subset of lr,forest")
    parser.add_argument("--out", help="write the Markdown report here (default bench/results/serve.md, "
                        "not written by --quick unless given)")
    parser.add_argument("--baseline", metavar="GIT_REF",
                        help="also measure `mlsteward serve` from this git revision's runtime (e.g. main), as server "
                        "mlsteward@GIT_REF in every cell, interleaved with this checkout's: before/after ratios "
                        "from one run")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    args.duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    models = [s.strip() for s in args.models.split(",") if s.strip()]
    bad = [s for s in only if s not in (*SERVERS, "floor")] + [m for m in models if m not in MODELS]
    if bad:
        parser.error(f"unknown name(s): {', '.join(bad)}")
    out = args.out if args.out is not None else (None if args.quick else str(ROOT / "bench" / "results" / "serve.md"))

    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    if args.server_cpu not in cpus or args.client_cpu not in cpus or args.server_cpu == args.client_cpu:
        print(f"cannot pin the server to CPU {args.server_cpu} and wrk to CPU {args.client_cpu} (available: "
              f"{cpus}); pass --server-cpu/--client-cpu", file=sys.stderr)
        return 2

    sys.path.insert(0, str(ROOT / "runtime"))
    argv = [a for a in sys.argv[1:]]
    command = "python bench/serve.py" + ("" if not argv else " " + shlex.join(argv))
    facts = machine_facts()
    notes: list[str] = []
    servers = [s for s in SERVERS if s in only]
    baseline = f"mlsteward@{args.baseline}" if args.baseline else None
    if baseline is not None:
        servers.insert(1 if "mlsteward" in servers else 0, baseline)
    results: dict[tuple[str, str, int, int], dict[str, float]] = {}
    floors: dict[str, dict[str, float]] = {}
    hot: dict[str, list[tuple[str, float, float]]] = {}
    stages: dict[tuple[str, str, int, int], dict[str, float]] = {}
    started = time.monotonic()

    mlserver_exe = install_peer("mlserver", "MLServer", ensure_mlserver, servers, notes,
                                "default settings (its inference pool: `parallel_workers` default), same core.")
    kserve_python = install_peer("kserve", "KServe", ensure_kserve, servers, notes,
                                 "bench/kserve_app.py, the SDK's ModelServer with one worker serving a kserve.Model "
                                 "that answers with the joblib model's predict through the SDK's request and "
                                 "response helpers, as KServe's scikit-learn runtime does; same core.")
    notes.append("mlsteward: the configuration the operator renders (artifact and sha256; all else default): "
                 "`--workers 1`, skops trusted-types load after the digest check, signature validation, Prometheus "
                 "metrics, /v1/stats window, drift reservoir (2,048 rows), feedback store (100,000 predictions), "
                 "JSON logs at INFO, x-request-id, adaptive micro-batching (1,024 rows, at most 1 ms; requests of "
                 "1,024 rows or more skip the queue), the collector frozen after loading. With one worker there is no "
                 "cross-worker journal; the feedback store is in memory. mlsteward+predlog adds the JSONL prediction "
                 "log with one PII field redacted; mlsteward-nobatch turns batching off.")
    notes.append("ideal: uvicorn with uvloop and httptools, one process, no validation, metrics or logs.")

    live: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-") as tmpdir:
        tmp = Path(tmpdir)
        bench_models = build_models(models, tmp)
        baseline_runtime = export_baseline(args.baseline, tmp / "baseline") if args.baseline else None
        if baseline is not None:
            notes.append(f"{baseline}: `mlsteward serve` from git revision {args.baseline}'s runtime, same "
                         "configuration as mlsteward.")
        try:
            if "floor" in only:
                before = os.sched_getaffinity(0)
                os.sched_setaffinity(0, {args.server_cpu})
                try:
                    for key, m in bench_models.items():
                        floors[key] = measure_floor(m, 1.0 if args.quick else 3.0)
                        hot[key] = measure_hot_path(m, tmp, 1.5 if args.quick else 3.0)
                finally:
                    os.sched_setaffinity(0, before)
            for key, m in bench_models.items():
                scripts = {}
                for rows, body in m.bodies.items():
                    scripts[rows] = tmp / f"{key}-{rows}.lua"
                    scripts[rows].write_text(_LUA.format(body=body))
                # Every server of this model is started and checked first, then each cell is measured on each
                # server in turn: on a shared machine the load drifts over minutes, and the ratios compare
                # servers measured within the same minute. The idle servers wait on the same core, using nothing.
                urls: dict[str, str] = {}
                for server in servers:
                    port = _free_port()
                    if server == baseline:
                        srv = start_mlsteward(m, tmp, port, args.server_cpu, server, baseline_runtime)
                    elif server.startswith("mlsteward"):
                        srv = start_mlsteward(m, tmp, port, args.server_cpu, server)
                    elif server == "ideal":
                        srv = start_ideal(m, tmp, port, args.server_cpu)
                    elif server == "kserve":
                        assert kserve_python is not None
                        srv = start_kserve(m, tmp, port, args.server_cpu, kserve_python)
                    else:
                        assert mlserver_exe is not None
                        srv = start_mlserver(m, tmp, port, args.server_cpu, mlserver_exe)
                    live.append(srv)
                    url = f"http://127.0.0.1:{port}/v2/models/{MODEL_NAME}/infer"
                    try:
                        wait_ready(srv, url, m.bodies[1].read_bytes())
                        check_predictions(server, url, m)
                        urls[server] = url
                    except RuntimeError as exc:
                        notes.append(f"{server} on {MODELS[key]} not measured: {str(exc).splitlines()[0]}")
                        print(f"{server} on {key}: {exc}", file=sys.stderr)
                        srv.stop()
                        live.remove(srv)
                for rows, conc in SCENARIOS:
                    for server, url in urls.items():
                        if (rows, conc) not in scenarios_of(server):
                            continue
                        try:
                            if args.warmup > 0:
                                wrk(url, scripts[rows], conc, args.warmup, args.client_cpu)
                            base = url.split("/v2/", 1)[0]
                            before = scrape_stages(base) if server.startswith("mlsteward") else None
                            r = wrk(url, scripts[rows], conc, args.duration, args.client_cpu)
                            results[(server, key, rows, conc)] = r
                            if before is not None:
                                means = stage_means(before, scrape_stages(base))
                                if means is not None:
                                    stages[(server, key, rows, conc)] = means
                            print(f"{MODELS[key]:>18} {rows:>3} rows x c{conc:<3} {server:>17}: {r['rps']:7.0f} req/s"
                                  f"  p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms"
                                  + (f"  {int(r['errors'])} errors" if r["errors"] else ""),
                                  file=sys.stderr, flush=True)
                        except (RuntimeError, OSError) as exc:
                            notes.append(f"{server} on {MODELS[key]}, {rows} x {conc} not measured: "
                                         f"{str(exc).splitlines()[0]}")
                            print(f"{server} on {key}: {exc}", file=sys.stderr)
                for srv in list(live):
                    srv.stop()
                    live.remove(srv)
        finally:
            for srv in live:
                srv.stop()

    notes.append(f"Whole run: {time.monotonic() - started:.0f} s.")
    report = render(results, floors, hot, notes, facts, command, args, models, servers, stages)
    print(report)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(report + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
