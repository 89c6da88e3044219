"""A model from registration to traffic on a real cluster: validation, serving, a zero-failure switch, a tampered
artifact that never serves, and clean deletion."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from .conftest import apply, condition, image, kget, kubectl, wait_for

pytestmark = pytest.mark.usefixtures("operator_installed")

MD = "cancer"


def register(trained: Path, version: str, base_url: str) -> dict[str, Any]:
    """`mlsteward register` as a user runs it, then the validation block a platform team adds."""
    artifact = trained / f"breast-cancer-{version}.skops"
    out = subprocess.run(
        [sys.executable, "-m", "mlsteward_runtime.cli", "register", str(artifact), "--model", "breast-cancer",
         "--version", version, "--data", str(trained / "train.csv"), "--target", "target",
         "--uri", f"{base_url}/{artifact.name}"],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    mv = yaml.safe_load(out)
    mv["metadata"]["name"] = f"breast-cancer-{version.replace('.', '-')}"
    mv["spec"].pop("reference", None)  # the profile was written locally; drift is not under test here
    mv["spec"]["validation"] = {"dataset": f"{base_url}/validation.csv", "target": "target",
                                "thresholds": ["accuracy >= 0.9"]}
    return mv


def phase(ns: str, name: str) -> str | None:
    return ((kget("modelversion", name, ns) or {}).get("status") or {}).get("phase")


def validation_rows(trained: Path) -> tuple[list[list[float]], np.ndarray]:
    with (trained / "validation.csv").open() as fh:
        rows = list(csv.reader(fh))
    X = [[float(v) for v in r[:-1]] for r in rows[1:]]
    y = np.array([int(r[-1]) for r in rows[1:]])
    return X, y


# A client inside the cluster: sends requests to the ModelDeployment's Service in a loop for a fixed time and
# prints one JSON line with what it saw. It runs as a pod so that it reaches the Service the way real clients do.
CLIENT = r"""
import json, sys, time, urllib.request, urllib.error
url, seconds, body = sys.argv[1], float(sys.argv[2]), sys.argv[3].encode()
ok = failed = 0; versions = {}; errors = []
end = time.time() + seconds
while time.time() < end:
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            v = r.headers.get("x-model-version"); versions[v] = versions.get(v, 0) + 1; ok += 1
    except urllib.error.HTTPError as exc:
        failed += 1; errors.append(repr(exc)[:100] + " " + str(time.time()) + " " + exc.read().decode()[:600])
    except Exception as exc:
        failed += 1; errors.append(repr(exc)[:200] + " " + str(time.time()))
    time.sleep(0.02)
print(json.dumps({"ok": ok, "failed": failed, "versions": versions, "errors": errors[:5]}))
"""


def run_client(ns: str, name: str, url: str, seconds: int, body: dict[str, Any]) -> None:
    apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "client", "image": image(), "imagePullPolicy": "IfNotPresent",
               "command": ["python3", "-c", CLIENT, url, str(seconds), json.dumps(body)]}]}}, ns)


def client_result(ns: str, name: str, timeout: float) -> dict[str, Any]:
    wait_for(lambda: (kget("pod", name, ns) or {}).get("status", {}).get("phase") in ("Succeeded", "Failed"),
             timeout=timeout, what=f"client pod {name} to finish")
    return json.loads(kubectl("logs", name, "-n", ns).strip().splitlines()[-1])


@pytest.fixture(scope="module")
def versions(namespace: str, trained: Path, artifact_server: str) -> dict[str, dict[str, Any]]:
    mvs = {v: register(trained, v, artifact_server) for v in ("1.0.0", "1.1.0")}
    apply(list(mvs.values()), namespace)
    for mv in mvs.values():
        wait_for(lambda n=mv["metadata"]["name"]: phase(namespace, n) in ("Ready", "Failed"), timeout=240,
                 what=f"ModelVersion {mv['metadata']['name']} validated")
    return mvs


def test_versions_validate_ready_with_metrics(namespace: str, versions: dict[str, dict[str, Any]]):
    for mv in versions.values():
        obj = kget("modelversion", mv["metadata"]["name"], namespace)
        assert obj["status"]["phase"] == "Ready", obj["status"]
        assert obj["status"]["metrics"]["accuracy"] >= 0.9


def test_tampered_artifact_never_serves(namespace: str, trained: Path, artifact_server: str):
    mv = register(trained, "1.0.0", artifact_server)
    mv["metadata"]["name"] = "breast-cancer-tampered"
    mv["spec"]["version"] = "1.0.1"
    mv["spec"]["artifact"]["sha256"] = "0" * 64  # the bytes at the URI do not have this digest
    apply(mv, namespace)
    wait_for(lambda: phase(namespace, "breast-cancer-tampered") == "Failed", timeout=240,
             what="tampered ModelVersion to fail")
    status = kget("modelversion", "breast-cancer-tampered", namespace)["status"]
    assert status["reason"] == "DigestMismatch", status
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": "tampered", "namespace": namespace},
           "spec": {"version": "breast-cancer-tampered", "replicas": 1}}, namespace)
    md = wait_for(lambda: condition(kget("modeldeployment", "tampered", namespace), "Degraded"), timeout=60,
                  what="Degraded condition on a deployment of a failed version")
    assert md["status"] == "True" and md["reason"] == "VersionFailed"
    pods = kubectl("get", "pods", "-n", namespace, "-l", "mlsteward.io/deployment=tampered", "-o", "name")
    assert pods.strip() == "", f"a failed version got pods: {pods}"
    kubectl("delete", "modeldeployment", "tampered", "-n", namespace)


@pytest.mark.timeout(600)  # the missing version is waited for 2 minutes (REFERENCE_GRACE) before it is Degraded
def test_serves_correct_predictions_then_switches_with_zero_failures(
    namespace: str, trained: Path, versions: dict[str, dict[str, Any]]
):
    from mlsteward_runtime.models import load_model
    from mlsteward_runtime.contracts import ArtifactRef

    v1, v2 = (versions[v]["metadata"]["name"] for v in ("1.0.0", "1.1.0"))
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": MD, "namespace": namespace},
           "spec": {"version": v1, "replicas": 1}}, namespace)
    wait_for(lambda: (condition(kget("modeldeployment", MD, namespace), "Ready") or {}).get("status") == "True",
             timeout=300, what=f"ModelDeployment {MD} Ready")
    md = kget("modeldeployment", MD, namespace)
    assert md["status"]["servingVersion"] == v1

    # Predictions through the Service equal scikit-learn's own predict on the same artifact.
    X, _ = validation_rows(trained)
    rows = X[:20]
    local = load_model(ArtifactRef(uri=str(trained / "breast-cancer-1.0.0.skops"), format="skops",
                                   sha256=versions["1.0.0"]["spec"]["artifact"]["sha256"]))
    expected = local.predict(np.asarray(rows)).tolist()
    url = f"http://{MD}.{namespace}.svc.cluster.local:8080/predict"
    body = {"instances": rows}
    apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "one-shot", "namespace": namespace},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "c", "image": image(), "imagePullPolicy": "IfNotPresent",
               "command": ["python3", "-c",
                           "import sys,urllib.request;r=urllib.request.urlopen(urllib.request.Request(sys.argv[1],"
                           "data=sys.argv[2].encode(),headers={'content-type':'application/json'}),timeout=10);"
                           "print(r.read().decode())", url, json.dumps(body)]}]}}, namespace)
    wait_for(lambda: (kget("pod", "one-shot", namespace) or {}).get("status", {}).get("phase") == "Succeeded",
             timeout=120, what="one-shot prediction pod")
    answer = json.loads(kubectl("logs", "one-shot", "-n", namespace).strip().splitlines()[-1])
    assert answer["predictions"] == expected
    assert answer["version"] == "1.0.0"

    # Switch under steady load: count every request; none may fail.
    run_client(namespace, "load", url, 150, {"instances": rows[:1]})
    wait_for(lambda: (kget("pod", "load", namespace) or {}).get("status", {}).get("phase") == "Running",
             timeout=60, what="load client running")
    kubectl("patch", "modeldeployment", MD, "-n", namespace, "--type=merge", "-p",
            json.dumps({"spec": {"version": v2}}))
    wait_for(lambda: (kget("modeldeployment", MD, namespace) or {}).get("status", {}).get("servingVersion") == v2,
             timeout=140, what=f"{MD} serving {v2}")
    result = client_result(namespace, "load", timeout=200)
    assert result["failed"] == 0, result
    assert result["ok"] > 300, result
    assert result["versions"].get("1.1.0", 0) > 0 and result["versions"].get("1.0.0", 0) > 0, result
    # The previous version's predictor is retired once the switch completed.
    wait_for(lambda: kubectl("get", "deployments", "-n", namespace, "-l",
                             f"mlsteward.io/deployment={MD},mlsteward.io/version={v1}", "-o", "name").strip() == "",
             timeout=60, what=f"{v1} predictor removed")

    # A spec.version that does not exist keeps the serving version serving. It is first waited for (a GitOps sync
    # may apply the ModelVersion a moment later: Reconciling, not Degraded), then status says what Git should say.
    kubectl("patch", "modeldeployment", MD, "-n", namespace, "--type=merge", "-p",
            json.dumps({"spec": {"version": "breast-cancer-9-9-9"}}))
    waiting = wait_for(lambda: (c := condition(kget("modeldeployment", MD, namespace), "Reconciling"))
                       and c["reason"] == "WaitingForVersion" and c, timeout=60, what="the missing version waited for")
    assert "breast-cancer-9-9-9" in waiting["message"]
    assert (condition(kget("modeldeployment", MD, namespace), "Degraded") or {}).get("status") != "True"
    run_client(namespace, "after-hold", url, 5, {"instances": rows[:1]})
    after = client_result(namespace, "after-hold", timeout=120)
    assert after["failed"] == 0 and after["versions"] == {"1.1.0": after["ok"]}, after
    degraded = wait_for(lambda: (c := condition(kget("modeldeployment", MD, namespace), "Degraded"))
                        and c["status"] == "True" and c, timeout=200, what="Degraded for a missing version")
    assert degraded["reason"] == "VersionNotFound"
    md = kget("modeldeployment", MD, namespace)
    assert md["status"]["servingVersion"] == v2
    assert condition(md, "Stalled")["reason"] == "VersionNotFound" and condition(md, "Reconciling") is None
    hold = md["status"]["decisions"][-1]
    assert hold["kind"] == "Hold" and hold["reason"] == "VersionNotFound"
    assert f"spec.version: {v2}" in hold["gitChange"]


def test_deleting_the_deployment_removes_every_child(namespace: str, versions: dict[str, dict[str, Any]]):
    if kget("modeldeployment", MD, namespace) is None:
        pytest.fail("the serving test did not leave a ModelDeployment to delete")
    kubectl("delete", "modeldeployment", MD, "-n", namespace)
    for kind in ("deployments", "services", "configmaps", "poddisruptionbudgets"):
        wait_for(lambda k=kind: kubectl("get", k, "-n", namespace, "-l", f"mlsteward.io/deployment={MD}",
                                        "-o", "name").strip() == "",
                 timeout=90, what=f"{kind} of {MD} garbage-collected")
