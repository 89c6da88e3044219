"""Router overhead: the same requests sent to a predictor directly and through `mlsteward route`.

For each concurrency (1, 8, 64 by default) a load generator in its own process sends POST /predict for a fixed
time, first straight to the backend, then through the router, and this script reports the added p50 latency
and the throughput ratio (through-router requests per second over direct). Targets: added p50 under 1 ms and
a ratio of at least 0.70.

By default the backend is a minimal ASGI app answering like a predictor (so the numbers are the router's cost,
not the model's); pass --backend-url to measure in front of a running `mlsteward serve` instead. The backend,
the router and the load generator are separate processes, as they would be in a cluster; on a machine with
fewer cores than processes, they compete for CPU and the ratio understates what separate pods get.

Reproduce:  python bench/router_overhead.py [--duration 5] [--concurrency 1 8 64] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


# ------------------------------------------------------------------------------------------------ stand-in backend


async def _backend_app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (m := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    rid = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"none")
    status = 200
    body = b'{"predictions": [0]}'
    if scope["path"] == "/v2/health/ready":
        body = b'{"ready": true}'
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"x-request-id", rid), (b"x-model-version", b"1.0.0"),
    ]})
    await send({"type": "http.response.body", "body": body})


def run_backend(port: int) -> None:
    import uvicorn

    uvicorn.run(_backend_app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools", server_header=False)


# ----------------------------------------------------------------------------------------------- load generator


async def _load(url: str, concurrency: int, duration: float, warmup: float) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        start = time.perf_counter()
        measure_from = start + warmup
        stop = measure_from + duration

        async def worker() -> None:
            nonlocal errors
            headers = {"content-type": "application/json"}
            while True:
                t0 = time.perf_counter()
                if t0 >= stop:
                    return
                try:
                    async with session.post(url, data=BODY, headers=headers) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "errors": errors,
        "rps": n / duration,
        "p50_ms": latencies[n // 2] * 1000 if n else float("nan"),
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000 if n else float("nan"),
    }


def run_load(url: str, concurrency: int, duration: float, warmup: float) -> None:
    try:
        import uvloop

        result = uvloop.run(_load(url, concurrency, duration, warmup))
    except ImportError:
        result = asyncio.run(_load(url, concurrency, duration, warmup))
    print(json.dumps(result))


# --------------------------------------------------------------------------------------------------- orchestration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, deadline_s: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {deadline_s} s: {last}")


def _measure(url: str, concurrency: int, duration: float, warmup: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--_load", url, "--concurrency", str(concurrency),
         "--duration", str(duration), "--warmup", str(warmup)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="Measured seconds per run.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Unmeasured seconds before each run.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--backend-url", help="A running predictor to measure against (default: a stand-in).")
    parser.add_argument("--path", default="/predict", help="Prediction path (default: /predict).")
    parser.add_argument("--json", action="store_true", help="Print the results as JSON.")
    parser.add_argument("--_load", help=argparse.SUPPRESS)
    parser.add_argument("--_backend", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._backend:
        run_backend(args._backend)
        return 0
    if args._load:
        run_load(args._load, args.concurrency[0], args.duration, args.warmup)
        return 0

    procs: list[subprocess.Popen[bytes]] = []
    try:
        backend = args.backend_url
        if backend is None:
            port = _free_port()
            procs.append(subprocess.Popen([sys.executable, __file__, "--_backend", str(port)]))
            backend = f"http://127.0.0.1:{port}"
        _wait_http(backend + "/v2/health/ready")
        rport = _free_port()
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "router.json"
            cfg.write_text(json.dumps({"deployment": "bench", "model": "bench",
                                       "backends": [{"version": "1.0.0", "url": backend, "weight": 100}]}))
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "mlsteward_runtime.cli", "route", "--config", str(cfg), "--host",
                 "127.0.0.1", "--port", str(rport), "--log-level", "warning"],
                env={**os.environ, "MLSTEWARD_ROUTER_READINESS_INTERVAL_S": "30"},
            ))
            router = f"http://127.0.0.1:{rport}"
            _wait_http(router + "/healthz")
            rows = []
            for c in args.concurrency:
                direct = _measure(backend + args.path, c, args.duration, args.warmup)
                routed = _measure(router + args.path, c, args.duration, args.warmup)
                rows.append({
                    "concurrency": c,
                    "direct": direct,
                    "router": routed,
                    "added_p50_ms": routed["p50_ms"] - direct["p50_ms"],
                    "throughput_ratio": routed["rps"] / direct["rps"] if direct["rps"] else float("nan"),
                })
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)

    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "results": rows}, indent=2))
    else:
        print(f"router overhead, {os.cpu_count()} CPUs, {args.duration:g} s per run, POST {args.path}")
        print(f"{'conc':>5} {'direct p50':>11} {'router p50':>11} {'added p50':>10} "
              f"{'direct rps':>11} {'router rps':>11} {'ratio':>6}")
        for r in rows:
            print(f"{r['concurrency']:>5} {r['direct']['p50_ms']:>9.3f}ms {r['router']['p50_ms']:>9.3f}ms "
                  f"{r['added_p50_ms']:>8.3f}ms {r['direct']['rps']:>11.0f} {r['router']['rps']:>11.0f} "
                  f"{r['throughput_ratio']:>6.2f}")
    print("reproduce: python bench/router_overhead.py " + " ".join(
        [f"--duration {args.duration:g}", "--concurrency", *map(str, args.concurrency)]
        + ([f"--backend-url {args.backend_url}"] if args.backend_url else [])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
