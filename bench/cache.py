"""Prediction cache: an answer from the router's cache (hit) against a call to the predictor (miss), side by side.

One router process (`mlsteward route --config`, with `cache` in its config) in front of a predictor, and one load
generator process whose workers each send a hit and a miss in turn: the hit body is the same document every time
(answered from the cache after the first request), every miss body a new document (one feature nudged by a counter,
so a new key, looked up, sent to the predictor and stored). Both paths thus run at the same time under the same load.
Every answer's `x-cache` header is checked: a hit that went to the predictor, or the reverse, stops the run.

Reported per predictor and concurrency: p50 and p99 latency of hits and of misses from the interleaved run, and the
ratio miss p50 / hit p50 (how many times faster a hit is). Then a hit-only and a miss-only run each give requests per
second and the router's CPU per request (utime + stime of its process from /proc, before and after). Last, in this
process, what the cache adds to every request it is on for: the canonical key of a 1-row and a 100-row body
(parse, sorted write, sha256), a lookup and a store (best of several timed loops).

Predictors: `standin`, the do-nothing backend of bench/router_overhead.py (the router's own cost: the smallest gain
a cache can show), and `lr`, `mlsteward serve` of the LogisticRegression bench/serve.py builds (a cheap real model:
1-row V2 requests of 30 features). All processes share the machine's cores (no pinning).

Reproduce:  python bench/cache.py [--quick] [--requests 3000] [--concurrency 1 8] [--backends standin lr]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import router_ha  # noqa: E402 - bench modules import each other from this folder
from router_ha import Proc, _free_port, cpu_seconds, quantile  # noqa: E402

CACHE = {"max_entries": 1_000_000, "max_bytes": 256 * 1024 * 1024, "ttl_s": 3600}


# ----------------------------------------------------------------------------------------------- load generator


def _bodies(template: dict[str, Any], salt: int, n: int) -> tuple[bytes, list[bytes]]:
    """The hit body, and `n` miss bodies each a new document (the first value nudged by a counter unique per run)."""
    data = template["inputs"][0]["data"]
    misses = []
    for i in range(n):
        doc = json.loads(json.dumps(template))
        doc["inputs"][0]["data"][0] = data[0] + (salt * 10_000_000 + i + 1) * 1e-9
        misses.append(json.dumps(doc).encode())
    return json.dumps(template).encode(), misses


async def _load(url: str, template: dict[str, Any], n: int, concurrency: int, mode: str, salt: int) -> dict[str, Any]:
    import aiohttp

    hit_body, miss_bodies = _bodies(template, salt, n if mode != "hit" else 0)
    plan: list[tuple[str, bytes]] = []
    for i in range(n):
        if mode in ("mixed", "hit"):
            plan.append(("hit", hit_body))
        if mode in ("mixed", "miss"):
            plan.append(("miss", miss_bodies[i]))
    lat: dict[str, list[float]] = {"hit": [], "miss": []}
    wrong: list[str] = []
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async with session.post(url, data=hit_body, headers=headers) as resp:  # fills the hit's entry
            await resp.read()
        queue = list(reversed(plan))

        async def worker() -> None:
            while queue:
                want, body = queue.pop()
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    got = resp.headers.get("x-cache")
                    status = resp.status
                t1 = time.perf_counter()
                if status != 200 or got != want:
                    wrong.append(f"{want}: status {status}, x-cache {got}")
                lat[want].append(t1 - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    out: dict[str, Any] = {"wall_s": wall, "wrong": wrong[:5], "wrong_count": len(wrong)}
    for k, v in lat.items():
        if v:
            out[k] = {"n": len(v), "p50_ms": quantile(v, 0.5) * 1000, "p99_ms": quantile(v, 0.99) * 1000,
                      "mean_ms": sum(v) / len(v) * 1000}
    return out


def run_load(url: str, body: Path, n: int, concurrency: int, mode: str, salt: int) -> None:
    template = json.loads(body.read_text())
    try:
        import uvloop

        result = uvloop.run(_load(url, template, n, concurrency, mode, salt))
    except ImportError:
        result = asyncio.run(_load(url, template, n, concurrency, mode, salt))
    print(json.dumps(result))


_SALT = iter(range(1, 1_000_000))


def load(url: str, body: Path, n: int, concurrency: int, mode: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--_load", url, "--_body", str(body), "--requests", str(n),
                          "--_concurrency", str(concurrency), "--_mode", mode, "--_salt", str(next(_SALT))],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["wrong_count"]:
        raise RuntimeError(f"{url}: {result['wrong_count']} answers not as expected, e.g. {result['wrong']}")
    return result


# --------------------------------------------------------------------------------------------------- measuring


def measure(name: str, backend_url: str, model: str, body: Path, args: argparse.Namespace, tmp: Path) -> list[dict]:
    rport = _free_port()
    config = tmp / f"router-{name}.json"
    config.write_text(json.dumps({"deployment": "bench", "model": model, "cache": CACHE,
                                  "backends": [{"version": "1.0.0", "url": backend_url, "weight": 100}]}))
    router = Proc(f"router-{name}", [sys.executable, "-m", "mlsteward_runtime.cli", "route", "--config", str(config),
                                     "--host", "127.0.0.1", "--port", str(rport), "--log-level", "warning"],
                  tmp / f"router-{name}.log", {**os.environ, "MLSTEWARD_ROUTER_READINESS_INTERVAL_S": "30"})
    rows = []
    try:
        router.wait_http(f"http://127.0.0.1:{rport}/readyz")
        url = f"http://127.0.0.1:{rport}/v2/models/{model}/infer"
        for c in args.concurrency:
            load(url, body, max(100, args.requests // 5), c, "mixed")  # warm-up
            mixed = load(url, body, args.requests, c, "mixed")
            alone = {}
            for mode in ("hit", "miss"):
                c0 = cpu_seconds(router.pid)
                r = load(url, body, args.requests, c, mode)
                cpu = cpu_seconds(router.pid) - c0
                alone[mode] = {"rps": args.requests / r["wall_s"], "cpu_us": cpu / args.requests * 1e6}
            rows.append({"backend": name, "concurrency": c, "mixed": mixed, "alone": alone,
                         "ratio": mixed["miss"]["p50_ms"] / mixed["hit"]["p50_ms"]})
            print(f"{name} c={c}: hit p50 {mixed['hit']['p50_ms']:.3f} ms, miss p50 {mixed['miss']['p50_ms']:.3f} "
                  f"ms, ratio {rows[-1]['ratio']:.2f}", file=sys.stderr, flush=True)
    finally:
        router.stop()
    return rows


def run(args: argparse.Namespace, tmp: Path) -> tuple[list[dict], dict[str, float]]:
    import serve

    (m,) = serve.build_models(["lr"], tmp).values()
    costs = key_costs(m)
    body = m.bodies[1]
    rows: list[dict] = []
    if "standin" in args.backends:
        port = _free_port()
        standin = Proc("standin", [sys.executable, str(HERE / "router_overhead.py"), "--_backend", str(port)],
                       tmp / "standin.log")
        try:
            standin.wait_http(f"http://127.0.0.1:{port}/v2/health/ready")
            rows += measure("standin", f"http://127.0.0.1:{port}", serve.MODEL_NAME, body, args, tmp)
        finally:
            standin.stop()
    if "lr" in args.backends:
        port = _free_port()
        lr = serve.start_mlsteward(m, tmp, port, None)
        try:
            url = f"http://127.0.0.1:{port}"
            serve.wait_ready(lr, f"{url}/v2/models/{serve.MODEL_NAME}/infer", body.read_bytes())
            serve.check_predictions("mlsteward", f"{url}/v2/models/{serve.MODEL_NAME}/infer", m)
            rows += measure("lr", url, serve.MODEL_NAME, body, args, tmp)
        finally:
            lr.stop()
    return rows, costs


def key_costs(m: Any) -> dict[str, float]:
    """Microseconds per call of the cache's own work, in this process (best of 5 loops of 2,000 calls)."""
    import timeit

    from mlsteward_runtime.contracts import CacheConfig
    from mlsteward_runtime.router.cache import PredictionCache, canonical_key

    X = m.X
    one = m.bodies[1].read_bytes()
    hundred = json.dumps({"inputs": [{"name": "input-0", "shape": [100, X.shape[1]], "datatype": "FP64",
                                      "data": X[:100].ravel().tolist()}]}).encode()
    cache = PredictionCache(CacheConfig(max_entries=10_000, max_bytes=64 << 20, ttl_s=60))
    k = canonical_key("1.0.0", "http://p:8080", "/v2/models/m/infer", one)
    assert k is not None
    body = b'{"model_name":"m","model_version":"1.0.0","outputs":[{"name":"predict","datatype":"INT64",' \
           b'"shape":[1],"data":[1]}]}'
    keys = [bytes([i % 256, i // 256]) * 16 for i in range(2000)]
    it = iter(keys * 100)

    def best(fn: Any) -> float:
        return min(timeit.repeat(fn, number=2000, repeat=5)) / 2000 * 1e6

    out = {
        "key_1_row_us": best(lambda: canonical_key("1.0.0", "http://p:8080", "/v2/models/m/infer", one)),
        "key_100_rows_us": best(lambda: canonical_key("1.0.0", "http://p:8080", "/v2/models/m/infer", hundred)),
        "store_us": best(lambda: cache.put(next(it), "1.0.0", 200, b"application/json", b"1.0.0", body)),
    }
    out["lookup_us"] = best(lambda: cache.get(keys[7]))
    out["bytes_1_row"], out["bytes_100_rows"] = len(one), len(hundred)
    return out


def render(args: argparse.Namespace, rows: list[dict], costs: dict[str, float]) -> str:
    names = {"standin": "do-nothing stand-in", "lr": "LogisticRegression (`mlsteward serve`)"}
    lines = [f"`{args.command}`, {os.cpu_count()} CPUs shared by every process (no pinning); {args.requests} "
             "hits and as many misses per cell, interleaved, after a warm-up; 1-row V2 requests of 30 features.", "",
             "| predictor | concurrency | hit p50 (ms) | hit p99 (ms) | miss p50 (ms) | miss p99 (ms) | miss p50 / hit p50 "
             "| hit-only req/s | miss-only req/s | router CPU per hit (µs) | per miss (µs) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        h, m, a = r["mixed"]["hit"], r["mixed"]["miss"], r["alone"]
        lines.append(f"| {names[r['backend']]} | {r['concurrency']} | {h['p50_ms']:.3f} | {h['p99_ms']:.3f} | "
                     f"{m['p50_ms']:.3f} | {m['p99_ms']:.3f} | {r['ratio']:.2f}x | {a['hit']['rps']:,.0f} | "
                     f"{a['miss']['rps']:,.0f} | {a['hit']['cpu_us']:.0f} | {a['miss']['cpu_us']:.0f} |")
    lines += ["", f"The cache's own work per request, in process: canonical key of a 1-row body ({costs['bytes_1_row']:,} "
              f"bytes) {costs['key_1_row_us']:.1f} µs, of a 100-row body ({costs['bytes_100_rows']:,} bytes) "
              f"{costs['key_100_rows_us']:.1f} µs; lookup {costs['lookup_us']:.2f} µs; store "
              f"{costs['store_us']:.2f} µs.", "", "Reproduce: " + args.command]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="500 requests of each kind per cell.")
    p.add_argument("--requests", type=int, default=None, help="Hits (and as many misses) per cell (default 3000).")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--backends", nargs="+", choices=["standin", "lr"], default=["standin", "lr"])
    p.add_argument("--_load", help=argparse.SUPPRESS)
    p.add_argument("--_body", help=argparse.SUPPRESS)
    p.add_argument("--_concurrency", type=int, help=argparse.SUPPRESS)
    p.add_argument("--_mode", help=argparse.SUPPRESS)
    p.add_argument("--_salt", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._load:
        run_load(args._load, Path(args._body), args.requests, args._concurrency, args._mode, args._salt)
        return 0
    router_ha._use_this_checkout()
    args.command = "python bench/cache.py" + ("" if len(sys.argv) < 2 else " " + shlex.join(sys.argv[1:]))
    args.requests = args.requests or (500 if args.quick else 3000)
    with tempfile.TemporaryDirectory(prefix="mlsteward-cache-bench-") as tmp:
        rows, costs = run(args, Path(tmp))
    print(render(args, rows, costs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
