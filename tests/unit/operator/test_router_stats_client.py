"""`k8s.Client.router_stats` against real HTTP servers on loopback: every ready router pod is asked, answers are
parsed as RouterStats, and a pod that does not answer is reported, never raised. Only the pod listing (the API
server's part) is a fake."""

from __future__ import annotations

import socket
from typing import Any

from aiohttp import web

from mlsteward_operator.kube import client as k8s
from mlsteward_runtime.contracts import RouterStats, VersionStats


class PodsOnly(k8s.Client):
    """The real client with the API server's pod listing replaced by a fixed answer."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.asked: list[tuple[str, str, str | None, dict[str, str] | None]] = []

    async def list(self, api_version: str, kind: str, namespace: str | None, *,
                   labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        self.asked.append((api_version, kind, namespace, labels))
        return self.pods


def pod(name: str, ip: str, *, ready: bool = True, phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": name},
            "status": {"phase": phase, "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_router_stats_reads_every_ready_pod_and_reports_failures():
    stats = RouterStats(deployment="iris", replica="iris-router-a", started=1700000000.5,
                        versions={"v2": VersionStats(version="v2", requests=7, errors=1,
                                                     latency_buckets={"5": 7, "+Inf": 7})})

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=stats.model_dump_json(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/router/stats", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        # Two ready pods answer (the same loopback server); 127.0.0.2 has nothing listening; the unready and the
        # pending pod are not asked at all.
        client = PodsOnly([pod("a", "127.0.0.1"), pod("b", "127.0.0.1"), pod("dead", "127.0.0.2"),
                           pod("unready", "127.0.0.1", ready=False), pod("pending", "", phase="Pending")])
        report = await client.router_stats("ns", {"mlsteward.io/deployment": "iris"}, port, timeout_s=1.0)
    finally:
        await runner.cleanup()
    assert client.asked == [("v1", "Pod", "ns", {"mlsteward.io/deployment": "iris"})]
    assert report.answers == [stats, stats]
    assert len(report.failures) == 1 and report.failures[0].startswith("dead: ")


async def test_router_stats_without_router_pods_is_empty():
    report = await PodsOnly([]).router_stats("ns", {}, 8080)
    assert (report.answers, report.failures) == ([], [])
