"""Router replicas: how fast a new configuration reaches every replica, and what the router costs per request.

1. Propagation. Against a real API server (tier A of `hack/cluster.sh`, in its own directory and ports, torn down
   at the end) the operator's builder renders the router objects of one ModelDeployment (ConfigMap, ServiceAccount,
   Role, RoleBinding) and the operator's client applies them. 1 and then 3 `mlsteward route --config-map
   <md>-router` processes run as that ServiceAccount (a TokenRequest token, the API server's CA and the namespace
   written where a pod has them). The ConfigMap is then changed `--changes` times, each time to a new weight table
   (so a new generation), with the operator's server-side apply; the time from the apply returning to every
   replica reporting the new generation in GET /v1/router/stats (each replica polled every 20 ms) is one sample.
   Reported: p50, p99 and max per replica count (target: p99 under 5 s). The changes follow one another at once
   unless `--pause` spaces them; `--watch-timeout` shortens the routers' watches so that renewals fall among them.

2. CPU per request. A do-nothing backend (bench/router_overhead.py's stand-in) is loaded directly and through one
   router process (`--config` file), and an `mlsteward serve` of LogisticRegression (as bench/serve.py builds it)
   directly; `--requests` 1-row V2 requests at concurrency 1 and 64 from a load generator in its own process,
   after an unmeasured warm-up. Reported: CPU seconds per request of the process under load (utime + stime from
   /proc/<pid>/stat before and after), p50 latency, and the p50 the router adds at concurrency 1 (through the router
   minus the backend alone), and each process's CPU while idle (its background loops, over 5 s before any load;
   one clock tick, 10 ms, is 2 ms/s).

All processes share the machine's cores (no pinning); the figures include that contention.

Reproduce:  python bench/router_ha.py [--quick] [--changes 50] [--replicas 1 3] [--requests 3000]
                                      [--pause S] [--watch-timeout S] [--api-port 27443] [--etcd-port 23379]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

MD = "bench"
ROUTER = f"{MD}-router"
POLL_S = 0.020
TARGET_P99_S = 5.0
IDLE_S = 5.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 1)) - 1))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _use_this_checkout() -> None:
    """This checkout's code, in this process and in every process it starts (bench/serve.py's servers too)."""
    paths = [str(ROOT / "runtime"), str(ROOT / "operator")]
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path[:0] = [str(HERE), *paths]


def _env() -> dict[str, str]:
    return dict(os.environ)


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, log
        self.fh = open(log, "wb")  # noqa: SIM115 - closed in stop
        self.proc = subprocess.Popen(cmd, stdout=self.fh, stderr=subprocess.STDOUT, env=env or _env())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_http(self, url: str, deadline_s: float = 60.0) -> None:
        import urllib.request

        deadline, last = time.monotonic() + deadline_s, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: {url} did not answer within {deadline_s:g} s: {last}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.fh.close()


# ------------------------------------------------------------------------------------------------- 1. propagation


@contextlib.contextmanager
def control_plane(api_port: int, etcd_port: int) -> Iterator[Path]:
    """Tier A in a temporary directory of its own; yields the admin kubeconfig, and tears it down."""
    run_dir = Path(tempfile.mkdtemp(prefix="mlsteward-router-ha-"))
    cluster = str(ROOT / "hack/cluster.sh")
    args = ["--tier", "A", "--dir", str(run_dir), "--api-port", str(api_port), "--etcd-port", str(etcd_port)]
    try:
        up = subprocess.run([cluster, "up", *args], capture_output=True, text=True, timeout=300, check=False)
        if up.returncode != 0:
            raise RuntimeError(f"the control plane did not start:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
        env = subprocess.run([cluster, "env", "--dir", str(run_dir)], capture_output=True, text=True,
                             check=True).stdout
        yield Path(env.strip().split("KUBECONFIG=", 1)[1].strip().strip("'\""))
    finally:
        subprocess.run([cluster, "down", "--dir", str(run_dir)], capture_output=True, timeout=120, check=False)


class Deployment:
    """The router objects of ModelDeployment `MD` in a namespace of their own, written as the operator writes them."""

    def __init__(self, kubeconfig: Path, namespace: str = "router-ha") -> None:
        import yaml
        from kubernetes import client, config

        from mlsteward_operator.kube.client import Client

        config.load_kube_config(config_file=str(kubeconfig))
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.operator = Client(self.api)
        self.namespace = namespace
        self.host = self.api.configuration.host
        self.ca = base64.b64decode(yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"][
            "certificate-authority-data"])
        self.md: Any = None

    def install(self) -> None:
        """The CRDs, the namespace, and the ModelDeployment (a real object: the router objects' owner reference
        must name one, or the garbage collector deletes them)."""
        import yaml
        from kubernetes import client

        from mlsteward_operator.api.modeldeployment import ModelDeployment

        ext = client.ApiextensionsV1Api(self.api)
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        self.core.create_namespace({"metadata": {"name": self.namespace}})
        body = {"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": MD},
                "spec": {"version": "v-1"}}
        deadline = time.monotonic() + 60
        while True:
            try:
                created = self.custom.create_namespaced_custom_object("mlsteward.io", "v1alpha1", self.namespace,
                                                                      "modeldeployments", body)
                break
            except client.ApiException as exc:
                if exc.status != 404 or time.monotonic() > deadline:  # 404: the CRD is not served yet
                    raise
            time.sleep(0.5)
        self.md = ModelDeployment.model_validate(created)

    def render(self, table: dict[str, int]) -> list[dict[str, Any]]:
        from mlsteward_operator.api.modeldeployment import TrafficEntry
        from mlsteward_operator.config import OperatorConfig
        from mlsteward_operator.modeldeployment.render import render_router

        traffic = [TrafficEntry(version=v, weight=w) for v, w in table.items()]
        objects = render_router(self.md, MD, traffic, next(iter(table)), OperatorConfig())
        return [o for o in objects if o["kind"] in ("ConfigMap", "ServiceAccount", "Role", "RoleBinding")]

    async def apply(self, objects: list[dict[str, Any]]) -> str:
        """Applies `objects`; returns the generation of the ConfigMap among them."""
        from mlsteward_operator.kernel.names import ANNOTATION_ROUTER_GENERATION

        generation = ""
        for obj in objects:
            await self.operator.apply(obj)
            if obj["kind"] == "ConfigMap":
                generation = obj["metadata"]["annotations"][ANNOTATION_ROUTER_GENERATION]
        return generation

    def service_account_dir(self, where: Path) -> Path:
        token = self.core.create_namespaced_service_account_token(
            ROUTER, self.namespace, {"spec": {"expirationSeconds": 3600}}).status.token
        where.mkdir(parents=True, exist_ok=True)
        (where / "token").write_text(token)
        (where / "ca.crt").write_bytes(self.ca)
        (where / "namespace").write_text(self.namespace)
        return where


def table_of(i: int) -> dict[str, int]:
    """The i-th weight table: a different one from the previous at every step."""
    k = i % 99 + 1
    return {"v-1": 100 - k, "v-2": k}


def start_routers(n: int, host: str, sa_dir: Path, logs: Path, watch_timeout_s: float | None) -> list[tuple[Proc, str]]:
    routers = []
    for i in range(n):
        port = _free_port()
        env = {**_env(), "MLSTEWARD_ROUTER_KUBE_API_URL": host, "MLSTEWARD_ROUTER_KUBE_SERVICEACCOUNT_DIR": str(sa_dir),
               "MLSTEWARD_ROUTER_REPLICA": f"router-{i}"}
        if watch_timeout_s is not None:
            env["MLSTEWARD_ROUTER_KUBE_WATCH_TIMEOUT_S"] = str(watch_timeout_s)
        env.pop("POD_NAMESPACE", None)
        proc = Proc(f"router-{i}", [sys.executable, "-m", "mlsteward_runtime.cli", "route", "--config-map", ROUTER,
                                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                    logs / f"router-{n}-{i}.log", env)
        routers.append((proc, f"http://127.0.0.1:{port}"))
    for proc, url in routers:
        proc.wait_http(f"{url}/healthz")
    return routers


async def _served(session: Any, url: str) -> str | None:
    async with session.get(f"{url}/v1/router/stats") as resp:
        return (await resp.json()).get("generation")


async def _until(session: Any, url: str, generation: str, start: float, deadline_s: float) -> float:
    """Seconds from `start` to the first answer of `url` reporting `generation`, polled every POLL_S."""
    while True:
        tick = time.monotonic()
        if await _served(session, url) == generation:
            return time.monotonic() - start
        if tick - start > deadline_s:
            raise TimeoutError(f"{url} still serves another generation {deadline_s:g} s after the write")
        await asyncio.sleep(max(0.0, tick + POLL_S - time.monotonic()))


async def propagation(deployment: Deployment, urls: list[str], changes: int, first: int,
                      pause_s: float) -> dict[str, Any]:
    import aiohttp

    samples: list[float] = []
    writes: list[float] = []
    rng = random.Random(first)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for i in range(first, first + changes):
            await asyncio.sleep(rng.uniform(0, pause_s))
            (config_map,) = [o for o in deployment.render(table_of(i)) if o["kind"] == "ConfigMap"]
            t0 = time.monotonic()
            generation = await deployment.apply([config_map])
            written = time.monotonic()
            writes.append(written - t0)
            per_replica = await asyncio.gather(*(_until(session, u, generation, written, 60.0) for u in urls))
            samples.append(max(per_replica))
    return {"samples": samples, "writes": writes, "generation": generation}


def measure_propagation(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    with control_plane(args.api_port, args.etcd_port) as kubeconfig:
        deployment = Deployment(kubeconfig)
        deployment.install()
        objects = deployment.render(table_of(0))
        generation = asyncio.run(deployment.apply(objects))
        sa_dir = deployment.service_account_dir(tmp / "serviceaccount")
        done = 1
        for n in args.replicas:
            routers = start_routers(n, deployment.host, sa_dir, tmp, args.watch_timeout)
            try:
                import urllib.request

                for _, url in routers:  # every replica starts on the ConfigMap as it is
                    with urllib.request.urlopen(f"{url}/v1/router/stats", timeout=5) as r:
                        served = json.loads(r.read())["generation"]
                    if served != generation:
                        raise RuntimeError(f"{url} started on generation {served}, not {generation}")
                result = asyncio.run(propagation(deployment, [u for _, u in routers], args.changes, done,
                                                 args.pause))
            finally:
                for proc, _ in routers:
                    proc.stop()
            done += args.changes
            generation = result["generation"]
            rows.append({"replicas": n, **result})
            s = result["samples"]
            print(f"replicas={n}: {len(s)} changes, p50 {quantile(s, 0.5):.3f} s, p99 {quantile(s, 0.99):.3f} s, "
                  f"max {max(s):.3f} s; apply took p50 {quantile(result['writes'], 0.5) * 1000:.0f} ms",
                  file=sys.stderr, flush=True)
    return rows


# ------------------------------------------------------------------------------------------ 2. CPU per request


async def _load(url: str, body: bytes, n: int, concurrency: int) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    left = n
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        headers = {"content-type": "application/json"}

        async def worker() -> None:
            nonlocal left, errors
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    latencies.sort()
    k = len(latencies)
    return {"requests": k, "errors": errors, "wall_s": wall, "rps": k / wall,
            "p50_ms": latencies[k // 2] * 1000 if k else float("nan"),
            "p99_ms": latencies[min(k - 1, int(k * 0.99))] * 1000 if k else float("nan")}


def run_load(url: str, body: Path, n: int, concurrency: int) -> None:
    try:
        import uvloop

        result = uvloop.run(_load(url, body.read_bytes(), n, concurrency))
    except ImportError:
        result = asyncio.run(_load(url, body.read_bytes(), n, concurrency))
    print(json.dumps(result))


def load(url: str, body: Path, n: int, concurrency: int) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, "--_load", url, "--_body", str(body), "--requests", str(n),
                          "--_concurrency", str(concurrency)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured(pid: int, url: str, body: Path, n: int, concurrency: int) -> dict[str, float]:
    """`n` requests after an unmeasured warm-up, with the CPU seconds process `pid` spent on them."""
    load(url, body, max(100, n // 5), concurrency)
    c0 = cpu_seconds(pid)
    result = load(url, body, n, concurrency)
    cpu = cpu_seconds(pid) - c0
    if result["errors"] or result["requests"] != n:
        raise RuntimeError(f"{url}: {result['errors']} errors in {n} requests")
    return {**result, "cpu_per_request_us": cpu / n * 1e6}


def measure_cpu(args: argparse.Namespace, tmp: Path) -> dict[tuple[str, int], dict[str, float]]:
    import serve

    (model,) = serve.build_models(["lr"], tmp).values()
    body = model.bodies[1]
    path = f"/v2/models/{serve.MODEL_NAME}/infer"
    procs: list[Proc] = []
    out: dict[tuple[str, int], dict[str, float]] = {}
    try:
        bport, rport, lport = _free_port(), _free_port(), _free_port()
        backend = Proc("backend", [sys.executable, str(HERE / "router_overhead.py"), "--_backend", str(bport)],
                       tmp / "backend.log")
        procs.append(backend)
        backend_url = f"http://127.0.0.1:{bport}"
        backend.wait_http(f"{backend_url}/v2/health/ready")
        config = tmp / "router.json"
        config.write_text(json.dumps({"deployment": MD, "model": serve.MODEL_NAME, "generation": "cpu",
                                      "backends": [{"version": "1.0.0", "url": backend_url, "weight": 100}]}))
        router = Proc("router", [sys.executable, "-m", "mlsteward_runtime.cli", "route", "--config", str(config),
                                 "--host", "127.0.0.1", "--port", str(rport), "--log-level", "warning"],
                      tmp / "router.log", {**_env(), "MLSTEWARD_ROUTER_READINESS_INTERVAL_S": "30"})
        procs.append(router)
        router.wait_http(f"http://127.0.0.1:{rport}/readyz")
        lr = serve.start_mlsteward(model, tmp, lport, None)
        try:
            serve.wait_ready(lr, f"http://127.0.0.1:{lport}{path}", body.read_bytes())
            serve.check_predictions("mlsteward", f"http://127.0.0.1:{lport}{path}", model)
            # What each process spends with no request at all (its background loops), for reading the figures.
            pids = {"backend": backend.pid, "router": router.pid, "lr": lr.proc.pid}
            c0, t0 = {k: cpu_seconds(v) for k, v in pids.items()}, time.monotonic()
            time.sleep(IDLE_S)
            idle = {k: (cpu_seconds(v) - c0[k]) / (time.monotonic() - t0) for k, v in pids.items()}
            for c in args.concurrency:
                out[("backend", c)] = measured(backend.pid, backend_url + path, body, args.requests, c)
                out[("router", c)] = measured(router.pid, f"http://127.0.0.1:{rport}{path}", body, args.requests, c)
                out[("lr", c)] = measured(lr.proc.pid, f"http://127.0.0.1:{lport}{path}", body, args.requests, c)
            for (who, _), r in out.items():
                r["idle_ms_per_s"] = idle[who] * 1000
        finally:
            lr.stop()
    finally:
        for p in procs:
            p.stop()
    return out


# ---------------------------------------------------------------------------------------------------------- main


def render(args: argparse.Namespace, prop: list[dict[str, Any]], cpu: dict[tuple[str, int], dict[str, float]]) -> str:
    lines = [f"`{args.command}`, {os.cpu_count()} CPUs shared by every process of the run (no pinning).", ""]
    if prop:
        lines += [(f"ConfigMap change (operator's server-side apply returned) -> every replica reports the new "
                   f"generation in /v1/router/stats (polled every {POLL_S * 1000:.0f} ms), {args.changes} changes "
                   f"per row; target p99 under {TARGET_P99_S:g} s:"), "",
                  "| router replicas | changes | p50 (s) | p99 (s) | max (s) | apply itself, p50 (ms) | p99 target |",
                  "|---:|---:|---:|---:|---:|---:|---|"]
        for r in prop:
            s = r["samples"]
            p99 = quantile(s, 0.99)
            lines.append(f"| {r['replicas']} | {len(s)} | {quantile(s, 0.5):.3f} | {p99:.3f} | {max(s):.3f} | "
                         f"{quantile(r['writes'], 0.5) * 1000:.0f} | {'met' if p99 < TARGET_P99_S else 'not met'} |")
        lines.append("")
    if cpu:
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        lines += [(f"CPU per request ({args.requests} 1-row V2 requests per cell after a warm-up; CPU of the "
                   f"process named, utime + stime; idle CPU over {IDLE_S:g} s before any load, in steps of "
                   f"{tick_ms / IDLE_S:g} ms/s):"), "",
                  "| process | concurrency | CPU per request (µs) | req/s | p50 (ms) | p99 (ms) | idle CPU (ms/s) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        names = {"router": "router (`mlsteward route`, do-nothing backend)", "backend": "do-nothing backend alone",
                 "lr": "LogisticRegression predictor (`mlsteward serve`)"}
        for who in ("router", "lr", "backend"):
            for c in args.concurrency:
                r = cpu[(who, c)]
                lines.append(f"| {names[who]} | {c} | {r['cpu_per_request_us']:.0f} | {r['rps']:,.0f} | "
                             f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['idle_ms_per_s']:.1f} |")
        if 1 in args.concurrency:
            added = cpu[("router", 1)]["p50_ms"] - cpu[("backend", 1)]["p50_ms"]
            lines += ["", f"Added p50 at concurrency 1 (router + backend minus backend alone): {added:.2f} ms."]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="10 changes and 500 requests per cell.")
    p.add_argument("--changes", type=int, default=None, help="ConfigMap changes per replica count (default 50).")
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    p.add_argument("--requests", type=int, default=None, help="Measured requests per cell (default 3000).")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    p.add_argument("--only", choices=["propagation", "cpu"], help="Run one of the two parts.")
    p.add_argument("--pause", type=float, default=0.0,
                   help="Wait a random time up to this many seconds before each change (default: none).")
    p.add_argument("--watch-timeout", type=float, help="MLSTEWARD_ROUTER_KUBE_WATCH_TIMEOUT_S of the routers (default: "
                   "theirs, 300 s); a short one puts watch renewals among the changes.")
    p.add_argument("--api-port", type=int, default=27443)
    p.add_argument("--etcd-port", type=int, default=23379)
    p.add_argument("--_load", help=argparse.SUPPRESS)
    p.add_argument("--_body", help=argparse.SUPPRESS)
    p.add_argument("--_concurrency", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._load:
        run_load(args._load, Path(args._body), args.requests, args._concurrency)
        return 0
    _use_this_checkout()
    args.command = "python bench/router_ha.py" + ("" if len(sys.argv) < 2 else " " + shlex.join(sys.argv[1:]))
    args.changes = args.changes or (10 if args.quick else 50)
    args.requests = args.requests or (500 if args.quick else 3000)
    with tempfile.TemporaryDirectory(prefix="mlsteward-router-ha-") as tmp:
        prop = measure_propagation(args, Path(tmp)) if args.only in (None, "propagation") else []
        cpu = measure_cpu(args, Path(tmp)) if args.only in (None, "cpu") else {}
    print(render(args, prop, cpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
