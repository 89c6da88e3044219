"""Operations on a real cluster: health samples taken from real predictor pods, `mlsteward report` estimating the
traffic from them, and retention deleting an old version through the chart's policy while the served one stays.

The report's oracle is the load client's own count of answered requests. The status source estimates requests as
the predictors' sliding-window rate times the time between samples, so it agrees with the count only up to the
sampling: the test allows 20% and says so.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import OPERATOR_NS, ROOT, apply, condition, kget, kubectl, wait_for
from .test_serving import client_result, register, run_client, validation_rows

pytestmark = pytest.mark.usefixtures("operator_installed")

MD = "ops"
MODEL = "ops-model"
SAMPLE_INTERVAL = "5s"


def md_status(ns: str) -> dict[str, Any]:
    return (kget("modeldeployment", MD, ns) or {}).get("status") or {}


@pytest.fixture(scope="module")
def ops(namespace: str, trained: Path, artifact_server: str) -> dict[str, str]:
    """Three Ready versions of one model (1.2.0 reuses 1.1.0's artifact) and a deployment serving 1.1.0."""
    names: dict[str, str] = {}
    for version, artifact in (("1.0.0", "1.0.0"), ("1.1.0", "1.1.0"), ("1.2.0", "1.1.0")):
        mv = register(trained, artifact, artifact_server)
        mv["metadata"]["name"] = f"ops-{version.replace('.', '-')}"
        mv["spec"]["model"], mv["spec"]["version"] = MODEL, version
        apply(mv, namespace)
        names[version] = mv["metadata"]["name"]
    for name in names.values():
        wait_for(lambda n=name: (kget("modelversion", n, namespace) or {}).get("status", {}).get("phase") == "Ready",
                 timeout=300, what=f"ModelVersion {name} Ready")
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": MD},
           "spec": {"version": names["1.1.0"], "replicas": 1,
                    "alerts": {"interval": SAMPLE_INTERVAL, "minRequests": 5, "maxErrorRate": 0.5,
                               "maxP99LatencyMs": 5000}}}, namespace)
    wait_for(lambda: md_status(namespace).get("servingVersion") == names["1.1.0"]
             and (condition(kget("modeldeployment", MD, namespace), "Ready") or {}).get("status") == "True",
             timeout=300, what=f"{MD} serving {names['1.1.0']}")
    return names


def test_health_samples_from_real_pods_and_the_report_from_status(namespace: str, trained: Path,
                                                                  ops: dict[str, str]):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    X, _ = validation_rows(trained)
    run_client(namespace, "ops-load", f"http://{MD}.{namespace}.svc.cluster.local:8080/predict", 40,
               {"instances": X[:1]})
    answered = client_result(namespace, "ops-load", timeout=180)
    assert answered["failed"] == 0 and answered["ok"] > 200, answered

    # The predictors count over a 60 s sliding window: wait until it has drained, so the samples cover the load.
    def drained() -> list[dict[str, Any]] | None:
        samples = (md_status(namespace).get("health") or {}).get("samples") or []
        busy = [s for s in samples if s.get("requests", 0) > 0]
        return samples if busy and samples[-1].get("requests", 0) == 0 else None

    samples = wait_for(drained, timeout=180, interval=2, what="health samples covering the load and its end")
    busy = [s for s in samples if s["requests"] > 0]
    assert {s["version"] for s in busy} == {ops["1.1.0"]}
    assert all(s["replicas"] == 1 and s["errors"] == 0 and s["p99Ms"] > 0 for s in busy), busy
    alerting = condition(kget("modeldeployment", MD, namespace), "Alerting")
    assert alerting is not None and alerting["status"] == "False" and alerting["reason"] == "NoAlerts", alerting

    since = max(1, int((dt.datetime.now(dt.UTC) - start).total_seconds()) + 1)
    out = subprocess.run(
        [sys.executable, "-m", "mlsteward_runtime.cli", "report", MD, "-n", namespace, "--since", f"{since}s",
         "--prometheus", "", "--format", "json"],
        check=True, capture_output=True, text=True, timeout=60, cwd=ROOT,
    ).stdout
    report = json.loads(out)
    assert report["source"] == "status"
    [traffic] = [v for v in report["versions"] if v["version"] == ops["1.1.0"]]
    # Readiness probes replay the golden input too, so the predictors saw a few requests the client did not send.
    assert abs(traffic["requests"] - answered["ok"]) <= 0.2 * answered["ok"], (traffic, answered)
    assert traffic["errors"] == 0 and traffic["samples"] >= len(busy)


def test_retention_deletes_an_old_version_through_the_chart_policy(namespace: str, ops: dict[str, str]):
    # Keep the last Ready version of this model in this namespace: 1.2.0 stays as the newest, 1.1.0 as served, and
    # 1.0.0 (neither) goes. The namespaced key leaves every other model and namespace alone.
    subprocess.run(
        ["helm", "upgrade", "mlsteward", str(ROOT / "charts/mlsteward"), "-n", OPERATOR_NS, "--reuse-values",
         "--set-json", f"retention.models={json.dumps({f'{namespace}/{MODEL}': 1})}",
         "--wait", "--timeout", "180s"],
        check=True, capture_output=True, text=True, timeout=240,
    )
    wait_for(lambda: kget("modelversion", ops["1.0.0"], namespace) is None, timeout=120,
             what=f"retention to delete {ops['1.0.0']}")
    events = json.loads(kubectl("get", "events", "-n", namespace, "--field-selector", "reason=RetentionDeleted",
                                "-o", "json"))["items"]
    assert [e["involvedObject"]["name"] for e in events] == [ops["1.0.0"]], events
    assert f"version 1.0.0 of model {MODEL}" in events[0]["message"], events[0]["message"]
    time.sleep(5)  # a later pass (the startup pass and the Ready-event pass both ran) deletes nothing more
    for kept in (ops["1.1.0"], ops["1.2.0"]):
        assert kget("modelversion", kept, namespace) is not None, f"retention deleted {kept}"
    assert md_status(namespace).get("servingVersion") == ops["1.1.0"]
