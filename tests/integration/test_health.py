"""Metric alerts and anomaly detection of a ModelDeployment: the operator, in-process, against a real API server.

As in test_drift_controller.py the test plays the kubelet: one predictor pod of the served version is reported Ready
at 127.0.0.1, where a real HTTP server answers `GET /v1/stats` with what the test sets (error rate, p99 latency),
and the operator's predictor port points at it. A second real HTTP server is the webhook in the Secret that
spec.alerts.notify names. The served version is written to status as test_rollout.py does (no node runs the
predictors). Everything else is the real operator: the health timer samples every second, and the main reconcile
derives the Alerting condition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from aiohttp import web

from .conftest import wait_for_async
from .test_controllers import GV, cond, custom, get, ready_version
from .test_drift_controller import PlayedPod, events, webhook_in_secret

MD, V1 = "iris", "iris-1"


class StatsServer(PlayedPod):
    """`GET /v1/stats` of the played predictor: 200 requests in the window, `errors` of them failed, p99 around
    `p99` ms with a little noise (so that the history has a spread)."""

    def __init__(self) -> None:
        super().__init__()
        self.errors, self.p99 = 0, 10.0
        self.rng = np.random.default_rng(1)

    def routes(self) -> dict[str, Callable[[], Any]]:
        from mlsteward_runtime.contracts import Quantiles, RuntimeStats

        def stats() -> RuntimeStats:
            p99 = self.p99 + float(self.rng.normal(0, 0.5))
            return RuntimeStats(name="iris", version="1.0.0", window_s=60, count=200, errors=self.errors,
                                error_rate=self.errors / 200, throughput_rps=3.3,
                                latency_ms=Quantiles(p50=4.0, p95=p99 * 0.8, p99=p99))

        return {"/v1/stats": stats}


def play_predictor_pod(kube: Any, ns: str) -> None:
    """A pod with the served version's predictor labels, reported Running and Ready at 127.0.0.1."""
    from kubernetes import client

    from mlsteward_operator.kernel import names as render

    core = client.CoreV1Api(kube)
    name = f"{MD}-{V1}-played"
    core.create_namespaced_pod(ns, {"metadata": {"name": name, "labels": render.deployment_labels(MD, "predictor", V1)},
                                    "spec": {"containers": [{"name": "serve", "image": "mlsteward:0.1.0"}]}})
    core.patch_namespaced_pod_status(name, ns, {"status": {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True"}]}})


def health_of(kube: Any, ns: str) -> dict[str, Any]:
    return ((get(kube, ns, "modeldeployments", MD) or {}).get("status") or {}).get("health") or {}


def firing(kube: Any, ns: str, rule: str) -> dict[str, Any] | None:
    return next((a for a in health_of(kube, ns).get("alerts", []) if a["rule"] == rule), None)


async def test_alerts_fire_notify_and_resolve(kube, namespace, monkeypatch):
    from mlsteward_operator.main import OperatorThread

    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    ready_version(kube, namespace, V1, "iris", "1.0.0")
    server = StatsServer()
    monkeypatch.setenv("MLSTEWARD_OPERATOR_PREDICTOR_PORT", str(server.port))
    monkeypatch.setenv("MLSTEWARD_OPERATOR_WEBHOOK_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("MLSTEWARD_OPERATOR_DRIFT_POLL_TIMEOUT_SECONDS", "2")
    async with webhook_in_secret(kube, namespace, "pager", hook):
        operator = OperatorThread(namespaces=[namespace]).start()
        try:
            async with server:
                await run_alerts(kube, namespace, server, received)
        finally:
            operator.stop()
    assert operator.error is None, f"operator failed: {operator.error!r}"


async def run_alerts(kube: Any, ns: str, server: StatsServer, received: list[dict[str, Any]]) -> None:
    api = custom(kube)
    api.create_namespaced_custom_object(*GV, ns, "modeldeployments", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": MD},
        "spec": {"version": V1, "replicas": 0, "alerts": {
            "interval": "1s", "history": 30, "consecutive": 2, "minRequests": 20, "maxErrorRate": 0.05,
            "anomaly": {"method": "ZScore", "minHistory": 8, "metrics": ["p99Ms"]},
            "notify": {"webhookSecretRef": {"name": "pager", "key": "url"}}}}})
    await wait_for_async(lambda: (get(kube, ns, "modeldeployments", MD).get("status") or {}).get("observedGeneration") == 1,
                timeout=30, what="status of generation 1")
    api.patch_namespaced_custom_object_status(*GV, ns, "modeldeployments", MD, {
        "status": {"servingVersion": V1, "stableVersion": V1}})
    play_predictor_pod(kube, ns)

    # Samples of the served version's pod appear; nothing fires on steady traffic.
    h = await wait_for_async(lambda: (h := health_of(kube, ns)) and len(h.get("samples", [])) >= 3 and h, timeout=30,
                    what="three health samples")
    latest = h["samples"][-1]
    assert (latest["version"], latest["replicas"], latest["requests"], latest["errorRate"]) == (V1, 1, 200, 0.0)
    assert h["alerts"] == [] and server.calls["/v1/stats"] >= 3
    await wait_for_async(lambda: cond(get(kube, ns, "modeldeployments", MD), "Alerting").get("reason") == "NoAlerts",
                timeout=20, what="Alerting False NoAlerts")

    # Errors past maxErrorRate: the alert fires after two samples in breach.
    server.errors = 30
    alert = await wait_for_async(lambda: firing(kube, ns, "ErrorRate"), timeout=30, what="the ErrorRate alert")
    samples = health_of(kube, ns)["samples"]
    breaching = [s["time"] for s in samples if s["errorRate"] > 0.05]
    assert len(breaching) >= 2 and alert["since"] == breaching[0]
    assert (alert["reason"], alert["metric"], alert["value"], alert["threshold"]) == (
        "ErrorRateAbove", "errorRate", 0.15, 0.05)
    md = await wait_for_async(lambda: (o := get(kube, ns, "modeldeployments", MD)) and cond(o, "Alerting").get("status")
                     == "True" and o, timeout=20, what="Alerting True")
    assert cond(md, "Alerting")["reason"] == "ErrorRateAbove" and "errorRate 0.15" in cond(md, "Alerting")["message"]
    await wait_for_async(lambda: any(r == "ErrorRateAbove" for r, _ in events(kube, ns, MD)), timeout=10,
                what="the ErrorRateAbove Event")
    hook = await wait_for_async(lambda: [p for p in received if p["rule"] == "ErrorRate" and p["state"] == "firing"],
                       timeout=10, what="the firing webhook")
    assert hook[0]["deployment"] == MD and hook[0]["namespace"] == ns and hook[0]["version"] == V1
    assert hook[0]["since"] == alert["since"] and f"{ns}/{MD}" in hook[0]["text"]

    # Back to normal: resolved on the first good sample.
    server.errors = 0
    await wait_for_async(lambda: not health_of(kube, ns)["alerts"], timeout=20, what="the alert resolved")
    md = await wait_for_async(lambda: (o := get(kube, ns, "modeldeployments", MD)) and cond(o, "Alerting").get("status")
                     == "False" and o, timeout=20, what="Alerting False")
    assert cond(md, "Alerting")["reason"] == "NoAlerts"
    await wait_for_async(lambda: any(r == "AlertResolved" for r, _ in events(kube, ns, MD)), timeout=10,
                what="the AlertResolved Event")
    await wait_for_async(lambda: [p for p in received if p["rule"] == "ErrorRate" and p["state"] == "resolved"], timeout=10,
                what="the resolved webhook")
    assert "ErrorRate/errorRate" not in health_of(kube, ns)["breaches"]

    # A spec change runs the main reconcile: status.health is the health timer's and survives it.
    before = health_of(kube, ns)
    api.patch_namespaced_custom_object(*GV, ns, "modeldeployments", MD, {"spec": {"fallback": False}})
    md = await wait_for_async(lambda: (o := get(kube, ns, "modeldeployments", MD))["status"].get("observedGeneration") == 2
                     and o, timeout=20, what="status of generation 2")
    after = md["status"]["health"]
    assert len(after["samples"]) >= len(before["samples"])
    kept = {s["time"] for s in after["samples"]}
    assert {s["time"] for s in before["samples"][-10:]} <= kept

    # A p99 spike after the steady history: an Anomaly alert, though no threshold is set on latency. A lasting
    # spike becomes part of the history within a few samples, so the alert is checked where it stays: its Event
    # and its webhook.
    await wait_for_async(lambda: len(health_of(kube, ns)["samples"]) >= 20, timeout=30, what="twenty samples of history")
    server.p99 = 100.0
    await wait_for_async(lambda: any(r == "AnomalyDetected" for r, _ in events(kube, ns, MD)), timeout=30,
                what="the AnomalyDetected Event")
    (anomaly,) = await wait_for_async(lambda: [p for p in received if p["rule"] == "Anomaly" and p["state"] == "firing"],
                             timeout=10, what="the anomaly webhook")
    assert (anomaly["metric"], anomaly["reason"]) == ("p99Ms", "AnomalyDetected")
    assert anomaly["value"] > 90 and anomaly["threshold"] < anomaly["value"]
    assert "standard deviations above" in anomaly["message"]
    spike = [s["time"] for s in health_of(kube, ns)["samples"] if s["p99Ms"] > 50]
    assert anomaly["since"] == spike[0]
