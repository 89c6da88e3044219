"""The DriftMonitor controller against a real API server (with the controller manager, without a node).

Without a node no pod runs, so the tests play the kubelet where one is needed: a predictor pod is created with the
labels the ModelDeployment's predictors carry and its status is reported Running and Ready at 127.0.0.1, where
the test serves `GET /v1/drift/window` with a real HTTP server (aiohttp) and the operator's predictor port points
at it; a retraining Job's pod runs its real command (`mlsteward train`) on this machine and its termination is
reported on the pod, as in test_controllers.py. A ModelDeployment's status (servingVersion) is written the way its
controller would, and the ModelVersion's verdict the way its validation would, since the tests that use them
call the DriftMonitor reconcile directly (no other controller running to overwrite them): once, twice, and with a
new client and empty caches, as a restarted operator would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import datetime as dt
import functools
import hashlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from .conftest import wait_for
from .test_controllers import GV, cond, custom, get

MD = "iris"
V1 = "iris-v1"


def now_s() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small labelled training set, its reference profile (a file with its sha256) and its columns."""
    from mlsteward_runtime.contracts import FeatureType
    from mlsteward_runtime.stats.profile import build_profile

    d = tmp_path_factory.mktemp("drift")
    rng = np.random.default_rng(7)
    n = 600
    x1, x2 = rng.normal(0, 1, n), rng.normal(5, 2, n)
    y = (x1 + 0.3 * (x2 - 5) + rng.normal(0, 0.5, n) > 0).astype(int)
    with open(d / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x1", "x2", "target"])
        w.writerows(zip(x1.tolist(), x2.tolist(), y.tolist(), strict=True))
    profile = build_profile({"x1": x1.tolist(), "x2": x2.tolist()},
                            types={"x1": FeatureType.number, "x2": FeatureType.number}, seed=0)
    body = json.dumps(profile.model_dump(mode="json", exclude_none=True)).encode()
    (d / "profile.json").write_bytes(body)
    return {"dir": d, "profile": str(d / "profile.json"), "sha256": hashlib.sha256(body).hexdigest()}


def create_version(kube: Any, ns: str, name: str, data: dict[str, Any], metrics: dict[str, float]) -> None:
    """A Ready ModelVersion with a reference profile (its verdict written as its validation would)."""
    custom(kube).create_namespaced_custom_object(*GV, ns, "modelversions", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name},
        "spec": {"model": "iris", "version": "1.0.0",
                 "artifact": {"uri": f"file:///models/{name}.skops", "sha256": "c" * 64, "format": "skops"},
                 "signature": {"inputs": [{"name": "x1"}, {"name": "x2"}]},
                 "reference": {"uri": data["profile"], "sha256": data["sha256"]},
                 "validation": {"dataset": str(data["dir"] / "train.csv"), "target": "target"}}})
    set_version_status(kube, ns, name, "Ready", metrics)


def set_version_status(kube: Any, ns: str, name: str, phase: str, metrics: dict[str, float]) -> None:
    custom(kube).patch_namespaced_custom_object_status(*GV, ns, "modelversions", name, {"status": {
        "phase": phase, "reason": "Validated" if phase == "Ready" else "BelowThreshold", "metrics": metrics,
        "observedGeneration": 1, "conditions": [{"type": "Ready", "status": str(phase == "Ready"),
                                                 "reason": "Validated", "message": "", "lastTransitionTime": now_s()}]}})


def serving_deployment(kube: Any, ns: str) -> None:
    """A ModelDeployment serving V1 (status as its controller writes it) and one ready predictor pod at 127.0.0.1."""
    from kubernetes import client

    from mlsteward_operator.kernel import names as render

    custom(kube).create_namespaced_custom_object(*GV, ns, "modeldeployments", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": MD},
        "spec": {"version": V1}})
    custom(kube).patch_namespaced_custom_object_status(*GV, ns, "modeldeployments", MD, {"status": {
        "servingVersion": V1, "stableVersion": V1}})
    core = client.CoreV1Api(kube)
    labels = render.deployment_labels(MD, "predictor", V1)
    core.create_namespaced_pod(ns, {"metadata": {"name": f"{MD}-{V1}-0", "labels": labels},
                                    "spec": {"containers": [{"name": "serve", "image": "mlsteward:0.1.0"}]}})
    core.patch_namespaced_pod_status(f"{MD}-{V1}-0", ns, {"status": {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True"}]}})


class PlayedPod:
    """The HTTP endpoints of a played predictor pod on 127.0.0.1: `routes()` maps a GET path to the JSON body (a
    pydantic model) it answers; `calls` counts the requests per path."""

    def __init__(self) -> None:
        self.port = free_port()
        self.calls: dict[str, int] = {}
        self.runner: web.AppRunner | None = None

    def routes(self) -> dict[str, Callable[[], Any]]:
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        app = web.Application()
        for path, body in self.routes().items():
            self.calls[path] = 0

            async def handler(_: web.Request, path: str = path, body: Callable[[], Any] = body) -> web.Response:
                self.calls[path] += 1
                return web.Response(body=body().model_dump_json(), content_type="application/json")

            app.router.add_get(path, handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@contextlib.asynccontextmanager
async def webhook_in_secret(kube: Any, ns: str, secret: str,
                            hook: Callable[[web.Request], Awaitable[web.Response]]) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 that answers POST /hook with `hook`; its URL is key `url` of Secret `secret`."""
    from kubernetes import client

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/hook"
    client.CoreV1Api(kube).create_namespaced_secret(ns, {
        "metadata": {"name": secret}, "data": {"url": base64.b64encode(url.encode()).decode()}})
    try:
        yield url
    finally:
        await runner.cleanup()


def drift_window(shift: float, rows: int, seed: int) -> Any:
    """A predictor's window as the runtime reports it (the model's name and its ModelVersion's spec.version, a
    semver): x1 shifted by `shift` reference standard deviations, x2 not."""
    from mlsteward_runtime.contracts import DriftWindow, FeatureType, FeatureWindow

    rng = np.random.default_rng(seed)
    return DriftWindow(name="iris", version="1.0.0", replica=f"{MD}-{V1}-0", seen=rows, features={
        "x1": FeatureWindow(type=FeatureType.number, values=rng.normal(shift, 1, rows).tolist()),
        "x2": FeatureWindow(type=FeatureType.number, values=rng.normal(5, 2, rows).tolist())})


class WindowServer(PlayedPod):
    """`GET /v1/drift/window` of the played predictor pod: x1 shifted by `shift` reference std, x2 not."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.window = drift_window(shift, 1200, seed=11)

    def routes(self) -> dict[str, Callable[[], Any]]:
        return {"/v1/drift/window": lambda: self.window}


def monitor(ns: str, kube: Any, **spec: Any) -> dict[str, Any]:
    body = {"apiVersion": "mlsteward.io/v1alpha1", "kind": "DriftMonitor", "metadata": {"name": "iris-drift"},
            "spec": {"deployment": MD, "interval": "1s", "consecutive": 1, "window": {"minSamples": 200},
                     **spec}}
    return custom(kube).create_namespaced_custom_object(*GV, ns, "driftmonitors", body)


@functools.cache
def controller() -> Any:
    """The DriftMonitor controller, one for the session as the operator keeps one (its alert deliveries stay
    referenced while they run)."""
    from mlsteward_operator.driftmonitor.reconcile import DriftMonitors

    return DriftMonitors()


async def reconcile(kube: Any, ns: str, cfg: Any, client: Any, *, at: dt.datetime) -> dict[str, Any]:
    """One call of the reconcile on the object as the API server has it, its returned status patched as kopf
    would; returns the object afterwards."""
    body = get(kube, ns, "driftmonitors", "iris-drift")
    out = await controller().reconcile(body, client, cfg, now=at)
    if out is not None:
        custom(kube).patch_namespaced_custom_object_status(*GV, ns, "driftmonitors", "iris-drift", {"status": out})
    return get(kube, ns, "driftmonitors", "iris-drift")


def events(kube: Any, ns: str, name: str = "iris-drift") -> list[tuple[str, str]]:
    from kubernetes import client

    return [(e.reason, e.message) for e in client.CoreV1Api(kube).list_namespaced_event(ns).items
            if e.involved_object.name == name]


def operator_config(port: int) -> Any:
    from mlsteward_operator.config import OperatorConfig

    return OperatorConfig(predictor_port=port, webhook_backoff_seconds=0.05, drift_poll_timeout_seconds=2.0)


T0 = dt.datetime.now(dt.UTC).replace(microsecond=0)


# --------------------------------------------------------------------------------------------------------------


def test_monitor_of_a_deployment_that_serves_nothing_waits_and_says_why(kube, namespace, operator):
    """Through the operator's handlers: no ModelDeployment, then one without pods: Ready False with the reason."""
    monitor(namespace, kube)
    obj = wait_for(lambda: (o := get(kube, namespace, "driftmonitors", "iris-drift"))
                   and cond(o, "Ready").get("reason") == "DeploymentNotFound" and o, timeout=30,
                   what="Ready False DeploymentNotFound")
    assert cond(obj, "Ready")["status"] == "False" and MD in cond(obj, "Ready")["message"]
    assert obj["status"]["observedGeneration"] == 1 and "lastReport" not in obj["status"]

    custom(kube).create_namespaced_custom_object(*GV, namespace, "modeldeployments", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": MD},
        "spec": {"version": "missing-version"}})
    obj = wait_for(lambda: (o := get(kube, namespace, "driftmonitors", "iris-drift"))
                   and cond(o, "Ready").get("reason") == "NotServing" and o, timeout=30, what="Ready False NotServing")
    assert cond(obj, "Ready")["status"] == "False"
    assert obj["status"].get("driftDetected") is None and "lastAction" not in obj["status"]
    assert {"DeploymentNotFound", "NotServing"} <= {r for r, _ in events(kube, namespace)}


async def test_rollback_writes_a_serving_request_for_the_deployment(kube, namespace, data):
    from mlsteward_operator.kube import client as k8s

    create_version(kube, namespace, V1, data, {"accuracy": 0.9})
    serving_deployment(kube, namespace)
    monitor(namespace, kube, actions=["Rollback"])
    async with WindowServer(shift=1.5) as server:
        cfg = operator_config(server.port)
        obj = await reconcile(kube, namespace, cfg, k8s.Client(), at=T0)
    st = obj["status"]
    assert server.calls["/v1/drift/window"] == 1
    assert st["driftDetected"] is True and st["lastReport"]["windowSize"] == 1200
    drifted = {f["name"]: f["drifted"] for f in st["lastReport"]["features"]}
    assert drifted == {"x1": True, "x2": False}
    req = st["servingRequest"]
    assert (req["kind"], req["fromVersion"], req["reason"]) == ("Rollback", V1, "DriftDetected")
    assert "version" not in req and req["numbers"]["windowSize"] == 1200
    assert req["thresholds"]["pValue"] == 0.01
    assert st["lastAction"]["type"] == "Rollback"
    assert cond(obj, "Degraded")["reason"] == "DriftConfirmed"
    reasons = [r for r, _ in events(kube, namespace)]
    assert "DriftDetected" in reasons and "RollbackRequested" in reasons

    # Not due again within the interval: no second poll, nothing changes.
    async with WindowServer(shift=1.5) as server:
        again = await reconcile(kube, namespace, operator_config(server.port), k8s.Client(), at=T0)
    assert server.calls["/v1/drift/window"] == 0 and again["status"]["servingRequest"] == req


async def test_alert_posts_to_the_webhook_in_the_secret(kube, namespace, data):
    from kubernetes import client

    from mlsteward_operator.kube import client as k8s

    create_version(kube, namespace, V1, data, {"accuracy": 0.9})
    serving_deployment(kube, namespace)
    received: list[dict[str, Any]] = []
    got = asyncio.Event()
    attempts = {"n": 0}

    async def hook(request: web.Request) -> web.Response:
        attempts["n"] += 1
        if attempts["n"] == 1:
            return web.Response(status=503)  # the first attempt fails: the alert is retried
        received.append(await request.json())
        got.set()
        return web.Response(text="ok")

    async with webhook_in_secret(kube, namespace, "slack", hook):
        monitor(namespace, kube, actions=["Alert"], notify={"webhookSecretRef": {"name": "slack", "key": "url"}})
        async with WindowServer(shift=1.5) as server:
            obj = await reconcile(kube, namespace, operator_config(server.port), k8s.Client(), at=T0)
            await asyncio.wait_for(got.wait(), timeout=20)
    assert obj["status"]["lastAction"]["type"] == "Alert" and "servingRequest" not in obj["status"]
    (payload,) = received
    assert attempts["n"] == 2
    assert f"{namespace}/iris-drift" in payload["text"] and "x1 drifted" in payload["text"]
    assert payload["deployment"] == MD and payload["version"] == V1 and payload["driftedFeatures"] == ["x1"]
    assert payload["evidence"]["features"]["x1"]["drifted"] is True
    wait_for(lambda: "AlertSent" in [r for r, _ in events(kube, namespace)], timeout=10, what="AlertSent Event")


def job_pod(kube: Any, ns: str, job_name: str) -> Any:
    from kubernetes import client

    core = client.CoreV1Api(kube)
    return wait_for(lambda: (core.list_namespaced_pod(ns, label_selector=f"job-name={job_name}").items or [None])[0],
                    timeout=30, what=f"pod of Job {job_name}")


def report_termination(kube: Any, ns: str, pod: Any, code: int, message: str) -> None:
    """Writes the pod's one container as terminated with `code` and termination message `message`, as a kubelet would."""
    from kubernetes import client

    container = pod.spec.containers[0]
    terminated = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "message": message,
                  "startedAt": now_s(), "finishedAt": now_s()}
    client.CoreV1Api(kube).patch_namespaced_pod_status(pod.metadata.name, ns, {"status": {
        "phase": "Succeeded" if code == 0 else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
        "containerStatuses": [{"name": container.name, "image": container.image, "imageID": "", "ready": False,
                               "restartCount": 0, "state": {"terminated": terminated}}]}})


def play_train_job(kube: Any, ns: str, job_name: str, tmp: Path) -> dict[str, Any]:
    """Runs the Job's pod command here and reports its termination on the pod, as a kubelet would."""
    pod = job_pod(kube, ns, job_name)
    container = pod.spec.containers[0]
    env = {e.name: e.value for e in container.env or []}
    result_file = tmp / f"{job_name}.termination"
    args = [str(result_file) if a == container.termination_message_path else a for a in container.args]
    proc = subprocess.run([sys.executable, "-m", "mlsteward_runtime.cli", *args], capture_output=True, text=True,
                          timeout=180)
    report_termination(kube, ns, pod, proc.returncode, result_file.read_text() if result_file.exists() else "")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return env


def retrain_template(data: dict[str, Any]) -> dict[str, Any]:
    d = data["dir"]
    return {"backoffLimit": 0, "template": {"spec": {"containers": [{
        "name": "train", "image": "mlsteward:0.1.0", "command": ["mlsteward"],
        "args": ["train", "--estimator", "sklearn.linear_model.LogisticRegression", "--data", str(d / "train.csv"),
                 "--target", "target", "--output", str(d / "retrained.skops"),
                 "--result-file", "/dev/termination-log"]}]}}}


async def test_retrain_makes_one_job_one_version_with_lineage_then_an_experiment(kube, namespace, data, tmp_path):
    from kubernetes import client

    from mlsteward_operator.kube import client as k8s

    create_version(kube, namespace, V1, data, {"accuracy": 0.5})
    serving_deployment(kube, namespace)
    monitor(namespace, kube, actions=["Retrain"], retrain={"template": retrain_template(data)},
            onRetrained="Experiment", cooldown="1h")
    batch = client.BatchV1Api(kube)
    async with WindowServer(shift=1.5) as server:
        cfg = operator_config(server.port)
        obj = await reconcile(kube, namespace, cfg, k8s.Client(), at=T0)
        # The same moment again, and later with a fresh client (a restarted operator): still one Job.
        await reconcile(kube, namespace, cfg, k8s.Client(), at=T0)
        obj = await reconcile(kube, namespace, cfg, k8s.Client(), at=T0 + dt.timedelta(seconds=5))
    retrain = obj["status"]["retrain"]
    jobs = batch.list_namespaced_job(namespace).items
    assert [j.metadata.name for j in jobs] == [retrain["job"]]
    assert retrain["job"].startswith("iris-drift-retrain-") and retrain["parent"] == V1
    assert retrain["phase"] == "Running" and [s["step"] for s in retrain["steps"]] == ["JobCreated"]
    assert retrain["trigger"].startswith("driftmonitor/iris-drift@")
    assert obj["status"]["lastAction"]["job"] == retrain["job"]
    assert jobs[0].metadata.owner_references[0].name == "iris-drift"

    env = play_train_job(kube, namespace, retrain["job"], tmp_path)
    assert env["MLSTEWARD_PARENT_VERSION"] == V1 and env["MLSTEWARD_TRIGGER"] == retrain["trigger"]
    assert json.loads(env["MLSTEWARD_DRIFT_REPORT"])["report"]["drifted"] is True
    wait_for(lambda: batch.read_namespaced_job_status(retrain["job"], namespace).status.succeeded, timeout=60,
             what="the Job controller marks the Job succeeded")

    async with WindowServer(shift=1.5) as server:
        cfg = operator_config(server.port)
        obj = await reconcile(kube, namespace, cfg, k8s.Client(), at=T0 + dt.timedelta(seconds=6))
        await reconcile(kube, namespace, cfg, k8s.Client(), at=T0 + dt.timedelta(seconds=7))
    retrain = obj["status"]["retrain"]
    assert retrain["phase"] == "Validating"
    mvs = [m for m in custom(kube).list_namespaced_custom_object(*GV, namespace, "modelversions")["items"]
           if m["metadata"]["name"] != V1]
    assert [m["metadata"]["name"] for m in mvs] == [retrain["modelVersion"]]
    (mv,) = mvs
    result = json.loads((tmp_path / f"{retrain['job']}.termination").read_text())
    assert mv["spec"]["artifact"]["sha256"] == result["artifact"]["sha256"]
    assert mv["spec"]["reference"] == result["reference"] and mv["spec"]["metrics"] == result["metrics"]
    assert mv["spec"]["lineage"]["parent"] == V1 and mv["spec"]["lineage"]["trigger"] == retrain["trigger"]
    assert mv["spec"]["signature"]["inputs"] == [{"name": "x1", "type": "number", "required": True},
                                                 {"name": "x2", "type": "number", "required": True}]

    # The validation verdict arrives (written here as its Job would): onRetrained Experiment.
    set_version_status(kube, namespace, mv["metadata"]["name"], "Ready", result["metrics"])
    async with WindowServer(shift=1.5) as server:
        obj = await reconcile(kube, namespace, operator_config(server.port), k8s.Client(),
                              at=T0 + dt.timedelta(seconds=8))
    retrain = obj["status"]["retrain"]
    assert retrain["phase"] == "Succeeded"
    assert [s["step"] for s in retrain["steps"]] == ["JobCreated", "JobSucceeded", "VersionRegistered",
                                                     "VersionReady", "ExperimentCreated"]
    exp = get(kube, namespace, "experiments", retrain["experiment"])
    assert [(v["name"], v["version"], v["weight"]) for v in exp["spec"]["variants"]] == [
        ("champion", V1, 50), ("challenger", mv["metadata"]["name"], 50)]
    assert exp["spec"]["deployment"] == MD and exp["spec"]["onSuccess"] == "Promote"
    assert len(batch.list_namespaced_job(namespace).items) == 1
    reasons = [r for r, _ in events(kube, namespace)]
    for step in ("RetrainDecided", "JobCreated", "JobSucceeded", "VersionRegistered", "ExperimentCreated"):
        assert reasons.count(step) == 1, (step, reasons)


async def test_a_retrained_version_admission_refuses_fails_the_retraining_once(kube, namespace, data):
    """A training image that reports an artifact location no ModelVersion may hold (a relative path): the API server
    refuses the ModelVersion, and the retraining ends Failed saying why, instead of asking again on every pass."""
    from kubernetes import client

    from mlsteward_operator.kube import client as k8s

    create_version(kube, namespace, V1, data, {"accuracy": 0.5})
    serving_deployment(kube, namespace)
    monitor(namespace, kube, actions=["Retrain"], retrain={"template": retrain_template(data)}, cooldown="1h")
    async with WindowServer(shift=1.5) as server:
        obj = await reconcile(kube, namespace, operator_config(server.port), k8s.Client(), at=T0)
    job = obj["status"]["retrain"]["job"]
    result = {"phase": "Succeeded", "reason": "Trained", "message": "trained",
              "artifact": {"uri": "models/retrained.skops", "sha256": "d" * 64, "format": "skops"},
              "metrics": {"accuracy": 0.9}}
    report_termination(kube, namespace, job_pod(kube, namespace, job), 0, json.dumps(result))
    batch = client.BatchV1Api(kube)
    wait_for(lambda: batch.read_namespaced_job_status(job, namespace).status.succeeded, timeout=60,
             what="the Job controller marks the Job succeeded")
    async with WindowServer(shift=1.5) as server:
        cfg = operator_config(server.port)
        obj = await reconcile(kube, namespace, cfg, k8s.Client(), at=T0 + dt.timedelta(seconds=6))
        again = await reconcile(kube, namespace, cfg, k8s.Client(), at=T0 + dt.timedelta(seconds=7))
    retrain = again["status"]["retrain"]
    assert retrain["phase"] == "Failed"
    assert [s["step"] for s in retrain["steps"]] == ["JobCreated", "JobSucceeded", "VersionRefused"]
    refused = retrain["steps"][-1]["message"]
    assert "artifact" in refused and "uri" in refused, refused
    assert [m["metadata"]["name"] for m in custom(kube).list_namespaced_custom_object(
        *GV, namespace, "modelversions")["items"]] == [V1]
    assert [r for r, _ in events(kube, namespace)].count("VersionRefused") == 1


async def test_retrained_version_is_promoted_only_when_it_beats_the_champion(kube, namespace, data, tmp_path):
    from mlsteward_operator.kube import client as k8s

    # The champion's validated accuracy is far below anything the trainer reaches on this data.
    create_version(kube, namespace, V1, data, {"accuracy": 0.1, "f1_macro": 0.1})
    serving_deployment(kube, namespace)
    monitor(namespace, kube, actions=["Retrain"], retrain={"template": retrain_template(data)}, onRetrained="Promote")
    async with WindowServer(shift=1.5) as server:
        obj = await reconcile(kube, namespace, operator_config(server.port), k8s.Client(), at=T0)
    job = obj["status"]["retrain"]["job"]
    play_train_job(kube, namespace, job, tmp_path)
    from kubernetes import client

    wait_for(lambda: client.BatchV1Api(kube).read_namespaced_job_status(job, namespace).status.succeeded,
             timeout=60, what="Job succeeded")
    async with WindowServer(shift=1.5) as server:
        obj = await reconcile(kube, namespace, operator_config(server.port), k8s.Client(),
                              at=T0 + dt.timedelta(seconds=1))
    name = obj["status"]["retrain"]["modelVersion"]
    result = json.loads((tmp_path / f"{job}.termination").read_text())
    set_version_status(kube, namespace, name, "Ready", result["metrics"])
    async with WindowServer(shift=1.5) as server:
        obj = await reconcile(kube, namespace, operator_config(server.port), k8s.Client(),
                              at=T0 + dt.timedelta(seconds=2))
    st = obj["status"]
    assert st["retrain"]["steps"][-1]["step"] == "PromotionRequested"
    req = st["servingRequest"]
    assert (req["kind"], req["version"], req["fromVersion"]) == ("Promote", name, V1)
    assert req["numbers"]["new.accuracy"] == result["metrics"]["accuracy"] and req["numbers"]["champion.accuracy"] == 0.1
