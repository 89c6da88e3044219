"""Drift on a real cluster: serve a version, send it shifted traffic, see drift reported, and each action on its own:
Alert (to a webhook receiver this test runs in the cluster), Rollback (status.servingRequest, and the
ModelDeployment serving its previous version again), and Retrain (a Job running `mlsteward train` from our image,
a new ModelVersion with lineage that validates, then an Experiment), with the operator restarted in the middle of
the retraining and no duplicate Job or ModelVersion afterwards.

Where the retrained model goes: the trainer writes to a path, file:// or s3://, and this cluster has no object
store, so the Job's container runs `mlsteward train` to local files and then PUTs the artifact and the profile to a
small store in the cluster (python's http.server with PUT), rewrites the URIs in the result to http:// and writes
it to the termination log: exactly what a user's own training image would do to be a drop-in.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import OPERATOR_NS, apply, condition, image, kget, kubectl, wait_for
from .test_serving import register, run_client

pytestmark = pytest.mark.usefixtures("operator_installed")

STORE = r"""
import http.server, os
class H(http.server.SimpleHTTPRequestHandler):
    def do_PUT(self):
        path = self.translate_path(self.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(201); self.end_headers()
    def do_POST(self):  # the webhook receiver: every POST body is kept under /data/hooks/
        body = self.rfile.read(int(self.headers["content-length"]))
        os.makedirs("/data/hooks", exist_ok=True)
        with open(f"/data/hooks/{len(os.listdir('/data/hooks')):04d}.json", "wb") as fh:
            fh.write(body)
        self.send_response(200); self.end_headers()
http.server.ThreadingHTTPServer(("", 8000), lambda *a: H(*a, directory="/data")).serve_forever()
"""

# The retraining container: `mlsteward train` to local files, upload, then the result with http:// URIs.
TRAIN = r"""
import json, os, subprocess, sys, urllib.request
store, data = sys.argv[1], sys.argv[2]
prefix = os.environ["HOSTNAME"]
proc = subprocess.run(["mlsteward", "train", "--estimator", "sklearn.ensemble.RandomForestClassifier",
                       "--params", '{"n_estimators": 30, "max_depth": 5}', "--data", data, "--target", "target",
                       "--output", "/tmp/out/model.skops", "--result-file", "/tmp/out/result.json"])
result = json.load(open("/tmp/out/result.json"))
for key, local in (("artifact", "/tmp/out/model.skops"), ("reference", "/tmp/out/model.profile.json")):
    if result.get(key):
        url = f"{store}/retrained/{prefix}/{os.path.basename(local)}"
        req = urllib.request.Request(url, data=open(local, "rb").read(), method="PUT")
        urllib.request.urlopen(req, timeout=30).read()
        result[key]["uri"] = url
open("/dev/termination-log", "w").write(json.dumps(result))
sys.exit(proc.returncode)
"""


@pytest.fixture(scope="module")
def store(namespace: str) -> str:
    labels = {"app": "store"}
    apply([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "store", "namespace": namespace},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {"containers": [{
                 "name": "http", "image": image(), "imagePullPolicy": "IfNotPresent",
                 "command": ["python3", "-c", STORE], "ports": [{"containerPort": 8000}],
                 "readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1},
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                 "volumes": [{"name": "data", "emptyDir": {}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "store", "namespace": namespace},
         "spec": {"selector": labels, "ports": [{"port": 8000, "targetPort": 8000}]}},
    ])
    kubectl("rollout", "status", "deployment/store", "-n", namespace, "--timeout=120s", timeout=150)
    return f"http://store.{namespace}.svc.cluster.local:8000"


def store_files(ns: str, path: str) -> list[str]:
    out = kubectl("exec", "-n", ns, "deploy/store", "--", "sh", "-c", f"ls {path} 2>/dev/null || true")
    return sorted(out.split())


@pytest.fixture(scope="module")
def drift_versions(namespace: str, trained: Path, artifact_server: str) -> tuple[str, str]:
    """Two Ready versions with a reference profile of the training data, reachable from the operator."""
    profile = trained / "train.profile.json"
    subprocess.run([sys.executable, "-m", "mlsteward_runtime.cli", "profile", str(trained / "train.csv"),
                    "--target", "target", "--out", str(profile)], check=True, capture_output=True, timeout=120)
    pod = kubectl("get", "pods", "-n", namespace, "-l", "app=artifacts", "-o", "jsonpath={.items[0].metadata.name}")
    kubectl("cp", str(profile), f"{namespace}/{pod}:/data/{profile.name}", timeout=120)
    import hashlib

    sha = hashlib.sha256(profile.read_bytes()).hexdigest()
    names = []
    for v in ("1.0.0", "1.1.0"):
        mv = register(trained, v, artifact_server)
        mv["metadata"]["name"] = f"drift-{mv['metadata']['name']}"
        mv["spec"]["reference"] = {"uri": f"{artifact_server}/{profile.name}", "sha256": sha}
        apply(mv, namespace)
        names.append(mv["metadata"]["name"])
    for name in names:
        wait_for(lambda n=name: (kget("modelversion", n, namespace) or {}).get("status", {}).get("phase") == "Ready",
                 timeout=240, what=f"ModelVersion {name} Ready")
    return names[0], names[1]


def serve(ns: str, md: str, version: str) -> None:
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": md},
           "spec": {"version": version, "replicas": 1}}, ns)
    wait_for(lambda: (kget("modeldeployment", md, ns) or {}).get("status", {}).get("servingVersion") == version
             and (condition(kget("modeldeployment", md, ns), "Ready") or {}).get("status") == "True",
             timeout=300, what=f"{md} serving {version}")


def shifted_traffic(ns: str, trained: Path, md: str, seconds: int) -> None:
    with (trained / "shifted.csv").open() as fh:
        rows = [[float(v) for v in r] for r in list(csv.reader(fh))[1:]]
    run_client(ns, f"{md}-shifted", f"http://{md}.{ns}.svc.cluster.local:8080/predict", seconds,
               {"instances": rows[:50]})


def monitor(ns: str, name: str, md: str, **spec: Any) -> None:
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "DriftMonitor", "metadata": {"name": name},
           "spec": {"deployment": md, "interval": "10s", "consecutive": 2, "cooldown": "1h",
                    "window": {"minSamples": 200, "maxSamples": 2000}, **spec}}, ns)


def dm_status(ns: str, name: str) -> dict[str, Any]:
    return (kget("driftmonitor", name, ns) or {}).get("status") or {}


def event_reasons(ns: str, name: str) -> list[str]:
    out = kubectl("get", "events", "-n", ns, "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return [e.get("reason") for e in json.loads(out)["items"]]


def test_alert_posts_to_a_webhook_receiver(namespace: str, trained: Path, drift_versions: tuple[str, str],
                                           store: str):
    v1, _ = drift_versions
    md = "drift-alert"
    serve(namespace, md, v1)
    kubectl("create", "secret", "generic", "hook", "-n", namespace, f"--from-literal=url={store}/hook")
    monitor(namespace, "alert", md, actions=["Alert"], notify={"webhookSecretRef": {"name": "hook", "key": "url"}})
    shifted_traffic(namespace, trained, md, 120)
    st = wait_for(lambda: (s := dm_status(namespace, "alert")).get("lastAction", {}).get("type") == "Alert" and s,
                  timeout=240, what="an Alert")
    assert st["driftDetected"] is True and st["consecutiveBreaches"] >= 2
    assert any(f["drifted"] for f in st["lastReport"]["features"] if "radius" in f["name"] or "area" in f["name"])
    hooks = wait_for(lambda: store_files(namespace, "/data/hooks"), timeout=60, what="a webhook POST received")
    body = json.loads(kubectl("exec", "-n", namespace, "deploy/store", "--", "cat", f"/data/hooks/{hooks[0]}"))
    assert f"{namespace}/alert" in body["text"] and body["deployment"] == md and body["version"] == v1
    assert "AlertSent" in event_reasons(namespace, "alert") and "DriftConfirmed" in event_reasons(namespace, "alert")
    assert "servingRequest" not in st


def test_rollback_asks_the_deployment_to_serve_its_previous_version(namespace: str, trained: Path,
                                                                    drift_versions: tuple[str, str]):
    v1, v2 = drift_versions
    md = "drift-rollback"
    serve(namespace, md, v1)
    kubectl("patch", "modeldeployment", md, "-n", namespace, "--type=merge", "-p",
            json.dumps({"spec": {"version": v2}}))
    wait_for(lambda: kget("modeldeployment", md, namespace)["status"].get("stableVersion") == v2, timeout=300,
             what=f"{md} serving {v2}")
    monitor(namespace, "rollback", md, actions=["Rollback"])
    shifted_traffic(namespace, trained, md, 120)
    st = wait_for(lambda: (s := dm_status(namespace, "rollback")).get("servingRequest") and s, timeout=240,
                  what="a Rollback request")
    req = st["servingRequest"]
    assert (req["kind"], req["fromVersion"], req["reason"]) == ("Rollback", v2, "DriftDetected")
    assert req["numbers"]["windowSize"] >= 200 and req["thresholds"]["consecutive"] == 2
    # The ModelDeployment's side of the contract: it applies the request once and records the decision.
    obj = wait_for(lambda: (o := kget("modeldeployment", md, namespace))["status"].get("servingVersion") == v1 and o,
                   timeout=180, what=f"{md} back on {v1}")
    assert obj["spec"]["version"] == v2  # never the spec
    assert any(d["kind"] == "Rollback" and d["to"] == v1 for d in obj["status"]["decisions"])


@pytest.mark.timeout(600)
def test_retrain_registers_validates_and_experiments_across_an_operator_restart(
        namespace: str, trained: Path, artifact_server: str, drift_versions: tuple[str, str], store: str):
    v1, _ = drift_versions
    md = "drift-retrain"
    serve(namespace, md, v1)
    template = {"backoffLimit": 0, "template": {"spec": {"containers": [{
        "name": "train", "image": image(), "imagePullPolicy": "IfNotPresent", "command": ["python3", "-c"],
        "args": [TRAIN, store, f"{artifact_server}/train.csv"]}]}}}
    monitor(namespace, "retrain", md, actions=["Retrain"], retrain={"template": template},
            onRetrained="Experiment")
    shifted_traffic(namespace, trained, md, 150)
    st = wait_for(lambda: (s := dm_status(namespace, "retrain")).get("retrain") and s, timeout=240,
                  what="a retraining decided")
    job = st["retrain"]["job"]

    # Restart the operator while the retraining is under way.
    kubectl("delete", "pod", "-n", OPERATOR_NS, "-l", "app.kubernetes.io/name=mlsteward", "--wait=true")
    kubectl("rollout", "status", "deployment/mlsteward-operator", "-n", OPERATOR_NS, "--timeout=180s", timeout=200)

    st = wait_for(lambda: (s := dm_status(namespace, "retrain"))["retrain"]["phase"] in ("Succeeded", "Failed")
                  and s, timeout=600, what="the retraining to finish")
    r = st["retrain"]
    assert r["phase"] == "Succeeded", r["steps"]
    assert [s["step"] for s in r["steps"]] == ["JobCreated", "JobSucceeded", "VersionRegistered", "VersionReady",
                                               "ExperimentCreated"]
    mv = kget("modelversion", r["modelVersion"], namespace)
    assert mv["status"]["phase"] == "Ready"
    assert mv["spec"]["lineage"]["parent"] == v1 and mv["spec"]["lineage"]["trigger"] == r["trigger"]
    assert mv["spec"]["artifact"]["uri"].startswith(store)
    exp = kget("experiment", r["experiment"], namespace)
    assert [(v["version"], v["weight"]) for v in exp["spec"]["variants"]] == [(v1, 50), (r["modelVersion"], 50)]

    time.sleep(15)  # more than one interval and several timer periods after the restart: nothing is repeated
    jobs = json.loads(kubectl("get", "jobs", "-n", namespace, "-l", "mlsteward.io/driftmonitor=retrain",
                              "-o", "json"))["items"]
    assert [j["metadata"]["name"] for j in jobs] == [job]
    retrained = json.loads(kubectl("get", "modelversions", "-n", namespace, "-l", "mlsteward.io/driftmonitor=retrain",
                                   "-o", "json"))["items"]
    assert [m["metadata"]["name"] for m in retrained] == [r["modelVersion"]]
    # The loop closes: the ModelDeployment runs the Experiment between the champion and the retrained version.
    wait_for(lambda: (kget("experiment", r["experiment"], namespace).get("status") or {}).get("phase") == "Running",
             timeout=180, what="the Experiment running")
    assert kget("modeldeployment", md, namespace)["status"]["experiment"] == r["experiment"]
    print(kubectl("get", "dm,mv,exp", "-n", namespace))
