"""Canary rollouts on a real cluster: the router splits traffic by step, the operator reads every router pod's
statistics and judges each step; a version that fails its gate is rolled back (status only, the spec stays as the
user wrote it) and a good one is promoted through every step, with no failed request either way.

How the failing version is made: a healthy version (the same model as the good one) with `maxP99LatencyMs: 0.001`
(one microsecond), below any real latency through the router, which is always at least tens of microseconds.
It is an honest failure of the latency gate on real measurements, without a model made broken or slow on purpose
(an erroring predictor never becomes ready, so it would never reach the gates; a client's 4xx are not errors).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import apply, condition, kget, kubectl, wait_for
from .test_serving import client_result, phase, register, run_client, validation_rows

pytestmark = pytest.mark.usefixtures("operator_installed")


@pytest.fixture(scope="module")
def versions(namespace: str, trained: Path, artifact_server: str) -> tuple[str, str]:
    mvs = [register(trained, v, artifact_server) for v in ("1.0.0", "1.1.0")]
    apply(mvs, namespace)
    for mv in mvs:
        name = mv["metadata"]["name"]
        wait_for(lambda n=name: phase(namespace, n) == "Ready", timeout=240, what=f"ModelVersion {name} Ready")
    return mvs[0]["metadata"]["name"], mvs[1]["metadata"]["name"]


def canary_deployment(ns: str, name: str, version: str, analysis: dict[str, Any], steps: list[int]) -> None:
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"version": version, "replicas": 1,
                    "rollout": {"strategy": "Canary", "steps": steps, "stepInterval": "10s", "analysis": analysis}}},
          ns)
    wait_for(lambda: (condition(kget("modeldeployment", name, ns), "Ready") or {}).get("status") == "True",
             timeout=300, what=f"ModelDeployment {name} Ready")


def set_version(ns: str, name: str, version: str) -> None:
    kubectl("patch", "modeldeployment", name, "-n", ns, "--type=merge", "-p",
            json.dumps({"spec": {"version": version}}))


def predictors(ns: str, md: str) -> list[str]:
    out = kubectl("get", "deployments", "-n", ns, "-l", f"mlsteward.io/deployment={md},"
                  "app.kubernetes.io/component=predictor", "-o", "name")
    return sorted(line.split("/", 1)[1] for line in out.split())


def events(ns: str, name: str) -> set[str]:
    out = kubectl("get", "events", "-n", ns, "--field-selector",
                  f"involvedObject.kind=ModelDeployment,involvedObject.name={name}", "-o", "json")
    return {e.get("reason") for e in json.loads(out)["items"]}


def test_canary_failing_its_latency_gate_is_rolled_back(namespace: str, trained: Path, versions: tuple[str, str]):
    v1, v2 = versions
    md = "canary-bad"
    canary_deployment(namespace, md, v1, {"maxP99LatencyMs": 0.001, "minRequests": 5}, [50, 100])
    X, _ = validation_rows(trained)
    url = f"http://{md}.{namespace}.svc.cluster.local:8080/predict"
    run_client(namespace, "load-bad", url, 100, {"instances": X[:1]})
    wait_for(lambda: (kget("pod", "load-bad", namespace) or {}).get("status", {}).get("phase") == "Running",
             timeout=60, what="load client running")

    set_version(namespace, md, v2)
    obj = wait_for(lambda: (o := kget("modeldeployment", md, namespace))["status"].get("rollout", {}).get("phase")
                   == "RolledBack" and o, timeout=180, what=f"{md} rolled back")
    status = obj["status"]
    assert obj["spec"]["version"] == v2  # the operator never writes the spec
    assert (status["servingVersion"], status["stableVersion"]) == (v1, v1)
    assert status["rollout"]["targetVersion"] == v2 and status["rollout"]["step"] == 0
    (rollback,) = [d for d in status["decisions"] if d["kind"] == "Rollback"]
    assert (rollback["from"], rollback["to"], rollback["reason"]) == (v2, v1, "AnalysisFailed")
    assert rollback["thresholds"] == {"maxP99LatencyMs": 0.001, "minRequests": 5}
    assert rollback["numbers"]["requests"] >= 5 and rollback["numbers"]["p99LatencyMs"] > 0.001
    assert rollback["numbers"]["weight"] == 50
    assert rollback["gitChange"] == f"set spec.version: {v1} in ModelDeployment {namespace}/{md}"
    degraded = condition(obj, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "AnalysisFailed")

    # The canary's predictor goes once no router pod sends it traffic; all traffic is on the stable version.
    wait_for(lambda: predictors(namespace, md) == [f"{md}-{v1}"], timeout=90, what="the canary's predictor removed")
    wait_for(lambda: kget("modeldeployment", md, namespace)["status"].get("trafficSummary") == f"{v1}=100",
             timeout=30, what="traffic back on the stable version")
    assert "AnalysisFailed" in events(namespace, md)
    result = client_result(namespace, "load-bad", timeout=200)
    assert result["failed"] == 0, result
    assert result["versions"].get("1.1.0", 0) > 0, result  # the canary did serve during its step

    # Remembered: the same spec.version is not tried again (no second Rollback, no canary predictor).
    kubectl("annotate", "modeldeployment", md, "-n", namespace, "e2e/poke=1", "--overwrite")
    time.sleep(8)  # several timer periods of the operator, each of which would retry a forgotten failure
    later = kget("modeldeployment", md, namespace)["status"]
    assert [d["kind"] for d in later["decisions"]].count("Rollback") == 1
    assert predictors(namespace, md) == [f"{md}-{v1}"]


def test_canary_with_generous_gates_completes_every_step(namespace: str, trained: Path, versions: tuple[str, str]):
    v1, v2 = versions
    md = "canary-good"
    canary_deployment(namespace, md, v1, {"maxErrorRate": 0.01, "maxP99LatencyMs": 2000, "minRequests": 5},
                      [20, 50, 100])
    X, _ = validation_rows(trained)
    url = f"http://{md}.{namespace}.svc.cluster.local:8080/predict"
    run_client(namespace, "load-good", url, 180, {"instances": X[:1]})
    wait_for(lambda: (kget("pod", "load-good", namespace) or {}).get("status", {}).get("phase") == "Running",
             timeout=60, what="load client running")

    set_version(namespace, md, v2)
    seen: set[str] = set()

    def promoted() -> dict[str, Any] | None:
        obj = kget("modeldeployment", md, namespace)
        seen.add(obj["status"].get("trafficSummary") or "")
        return obj if obj["status"].get("stableVersion") == v2 else None

    obj = wait_for(promoted, timeout=240, what=f"{md} promoted to {v2}", interval=0.5)
    status = obj["status"]
    assert status["servingVersion"] == v2 and status["rollout"]["phase"] == "Stable"
    assert {f"{v1}=80,{v2}=20", f"{v1}=50,{v2}=50"} <= seen, seen  # the steps' splits were in effect
    passed = [d for d in status["decisions"] if d["reason"] == "StepPassed"]
    assert [d["numbers"]["step"] for d in passed] == [0, 1, 2]
    assert [d["numbers"]["weight"] for d in passed] == [20, 50, 100]
    for d in passed:
        assert d["numbers"]["requests"] >= 5 and d["numbers"]["errorRate"] <= 0.01, d
        assert d["numbers"]["p99LatencyMs"] <= 2000, d
        assert d["thresholds"] == {"maxErrorRate": 0.01, "maxP99LatencyMs": 2000, "minRequests": 5}
    assert status["decisions"][-1]["reason"] == "RolloutComplete"
    assert not [d for d in status["decisions"] if d["kind"] == "Rollback"]
    wait_for(lambda: predictors(namespace, md) == [f"{md}-{v2}"], timeout=90, what=f"{v1} predictor retired")
    assert {"StepPassed", "RolloutComplete"} <= events(namespace, md)
    result = client_result(namespace, "load-good", timeout=240)
    assert result["failed"] == 0, result
    assert result["versions"].get("1.0.0", 0) > 0 and result["versions"].get("1.1.0", 0) > 0, result
