"""Shadow deployments on a real cluster: the router mirrors every request to the shadow version, scores both answers
against the labels clients send back, and the operator's promote gate decides from the paired numbers.

- A weaker shadow (a one-split decision tree, about 0.91 accurate where the served LogisticRegression is about 0.98)
  is never promoted: the gate fails on McNemar's test and the decision says why; nothing moves.
- The same two versions the other way round: the better shadow passes the gate and is handed to the canary, which
  completes its steps with no failed request.

The client is a pod that cycles through the validation rows, one row a request, and sends each row's true label as
feedback twenty requests later (so the mirror has long answered: pairs are scored when the label arrives). The
expected accuracies are computed here with scikit-learn's own predict on the same artifacts, over the same rows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import apply, condition, kget, kubectl, wait_for
from .test_rollout import events, predictors
from .test_serving import image, phase, register, validation_rows

pytestmark = pytest.mark.usefixtures("operator_installed")

WEAK = "0.9.0"

LABELLED_CLIENT = r"""
import json, sys, time, urllib.error, urllib.request
base, seconds, rows, labels = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4])
ok = failed = 0; served = {}; errors = []; pending = []; fed = 0; refused = []; cache = {}
def report(**extra):
    print(json.dumps({"ok": ok, "failed": failed, "versions": served, "feedback": fed, "errors": errors[:5],
                      "refused": refused[:20], "cache": cache, **extra}), flush=True)
end = time.time() + seconds; i = 0
while time.time() < end:
    k = i % len(rows); i += 1
    req = urllib.request.Request(base + "/predict", data=json.dumps({"instances": [rows[k]]}).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            v = r.headers.get("x-model-version"); served[v] = served.get(v, 0) + 1; ok += 1
            c = r.headers.get("x-cache") or "none"; cache[c] = cache.get(c, 0) + 1
            pending.append((r.headers.get("x-request-id"), labels[k]))
    except Exception as exc:
        failed += 1; errors.append(repr(exc)[:200])
    if len(pending) > 20:
        rid, label = pending.pop(0)
        fb = urllib.request.Request(base + "/v1/feedback", headers={"content-type": "application/json"},
                                    data=json.dumps({"request_id": rid, "label": label}).encode())
        try:
            with urllib.request.urlopen(fb, timeout=10):
                fed += 1
        except urllib.error.HTTPError as exc:
            refused.append({"status": exc.code, "body": exc.read().decode()[:200]})
        except Exception as exc:
            refused.append({"status": None, "body": repr(exc)[:200]})
    if (ok + failed) % 100 == 0:
        report()
    time.sleep(0.005)
report(done=True)
"""


@pytest.fixture(scope="module")
def weak(namespace: str, trained: Path, artifact_server: str) -> Path:
    """A deliberately weaker version of the same model, trained here, served by the artifact server."""
    path = trained / f"breast-cancer-{WEAK}.skops"
    subprocess.run([sys.executable, "-c", (
        "import csv, sys, numpy as np\n"
        "from sklearn.tree import DecisionTreeClassifier\n"
        "from mlsteward_runtime.models import dump_model\n"
        "rows = list(csv.reader(open(sys.argv[1])))[1:]\n"
        "X = np.array([[float(v) for v in r[:-1]] for r in rows]); y = np.array([int(r[-1]) for r in rows])\n"
        "dump_model(DecisionTreeClassifier(max_depth=1, random_state=0).fit(X, y), sys.argv[2])\n"),
        str(trained / "train.csv"), str(path)], check=True, capture_output=True, timeout=120)
    pod = kubectl("get", "pods", "-n", namespace, "-l", "app=artifacts", "-o", "jsonpath={.items[0].metadata.name}")
    kubectl("cp", str(path), f"{namespace}/{pod}:/data/{path.name}", timeout=120)
    return path


@pytest.fixture(scope="module")
def pair(namespace: str, trained: Path, artifact_server: str, weak: Path) -> tuple[str, str]:
    """(strong, weak) ModelVersion names, both Ready; the weak one validated against a threshold it meets."""
    strong_mv, weak_mv = register(trained, "1.0.0", artifact_server), register(trained, WEAK, artifact_server)
    weak_mv["spec"]["validation"]["thresholds"] = ["accuracy >= 0.8"]
    apply([strong_mv, weak_mv], namespace)
    names = strong_mv["metadata"]["name"], weak_mv["metadata"]["name"]
    for name in names:
        wait_for(lambda n=name: phase(namespace, n) == "Ready", timeout=240, what=f"ModelVersion {name} Ready")
    return names


def local_accuracy(trained: Path, version: str) -> tuple[np.ndarray, np.ndarray]:
    """(per-row correctness, predictions) of an artifact on the validation rows, with scikit-learn's predict."""
    from mlsteward_runtime.contracts import ArtifactRef
    from mlsteward_runtime.models import load_model, sha256_file

    path = trained / f"breast-cancer-{version}.skops"
    model = load_model(ArtifactRef(uri=str(path), format="skops", sha256=sha256_file(path)))
    X, y = validation_rows(trained)
    pred = np.asarray(model.predict(np.asarray(X)))
    return pred == y, pred


def start_client(ns: str, name: str, md: str, trained: Path, seconds: int) -> None:
    X, y = validation_rows(trained)
    apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "client", "image": image(), "imagePullPolicy": "IfNotPresent",
               "command": ["python3", "-c", LABELLED_CLIENT, f"http://{md}.{ns}.svc.cluster.local:8080",
                           str(seconds), json.dumps(X), json.dumps(y.tolist())]}]}}, ns)


def totals(ns: str, name: str) -> dict[str, Any]:
    lines = kubectl("logs", name, "-n", ns, check=False).strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def shadow_deployment(ns: str, name: str, served: str, shadow: str, **extra: Any) -> None:
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"version": served, "replicas": 1,
                    "shadow": {"version": shadow, "percent": 100,
                               "promote": {"minRequests": 150, "minPairs": 150, "notWorse": True}},
                    **extra}}, ns)
    wait_for(lambda: (condition(kget("modeldeployment", name, ns), "Ready") or {}).get("status") == "True",
             timeout=300, what=f"ModelDeployment {name} Ready")


@pytest.mark.timeout(600)
def test_a_worse_shadow_is_scored_and_never_promoted(namespace: str, trained: Path, pair: tuple[str, str]):
    strong, weak_name = pair
    md = "shadow-worse"
    shadow_deployment(namespace, md, strong, weak_name)
    wait_for(lambda: predictors(namespace, md) == sorted([f"{md}-{strong}", f"{md}-{weak_name}"]), timeout=120,
             what="the shadow's predictor rendered beside the served one")
    start_client(namespace, "labelled-worse", md, trained, 240)

    obj = wait_for(lambda: (o := kget("modeldeployment", md, namespace)) and
                   ((o["status"].get("shadow") or {}).get("gate") or {}).get("result") in ("Passed", "Failed") and o,
                   timeout=300, what="the shadow gate to decide", interval=2)
    shadow = obj["status"]["shadow"]
    assert shadow["gate"]["result"] == "Failed", shadow
    assert shadow["version"] == weak_name and shadow["pairs"] >= 150 and shadow["compared"] >= 150, shadow
    # The paired numbers agree with scikit-learn on the same rows: the client cycles through them, so the observed
    # accuracies sit near the per-row means (a partial cycle moves them by at most a few points).
    right_strong, pred_strong = local_accuracy(trained, "1.0.0")
    right_weak, pred_weak = local_accuracy(trained, WEAK)
    assert abs(shadow["servedAccuracy"] - right_strong.mean()) < 0.05, shadow
    assert abs(shadow["shadowAccuracy"] - right_weak.mean()) < 0.05, shadow
    assert abs(shadow["agreement"] - (pred_strong == pred_weak).mean()) < 0.05, shadow
    assert shadow["accuracyDiff"] < 0 and shadow["accuracyDiffHigh"] < 0 and shadow["mcnemarP"] < 0.05, shadow
    assert shadow["errors"] == 0 and shadow["p99Ms"] > 0, shadow

    failed = [d for d in obj["status"]["decisions"] if d["reason"] == "ShadowFailed"]
    assert len(failed) == 1, obj["status"]["decisions"]
    assert failed[0]["kind"] == "Hold" and weak_name in failed[0]["message"], failed
    assert failed[0]["numbers"]["pairs"] >= 150 and failed[0]["numbers"]["mcnemarP"] < 0.05, failed
    # Nothing moved: the served version serves, nothing overrides the spec, no rollout began.
    st = obj["status"]
    assert st["servingVersion"] == strong and st.get("override") is None, st
    assert st["trafficSummary"] == f"{strong}=100", st
    assert not [d for d in st["decisions"] if d["kind"] == "Promote"], st["decisions"]
    result = totals(namespace, "labelled-worse")
    assert result["failed"] == 0 and result["versions"] == {"1.0.0": result["ok"]}, result
    assert not result["refused"], result
    # Recorded once: later reconciles keep the one decision.
    kubectl("annotate", "modeldeployment", md, "-n", namespace, "e2e/poke=1", "--overwrite")
    wait_for(lambda: (totals(namespace, "labelled-worse").get("ok", 0) > result["ok"] + 200), timeout=60,
             what="more mirrored traffic")
    later = kget("modeldeployment", md, namespace)["status"]
    assert [d["reason"] for d in later["decisions"]].count("ShadowFailed") == 1, later["decisions"]
    assert later["servingVersion"] == strong
    kubectl("delete", "pod", "labelled-worse", "-n", namespace, "--wait=false")
    kubectl("delete", "modeldeployment", md, "-n", namespace, "--wait=false")


@pytest.mark.timeout(600)
def test_a_better_shadow_passes_the_gate_and_is_promoted_through_a_canary(
        namespace: str, trained: Path, pair: tuple[str, str]):
    strong, weak_name = pair
    md = "shadow-better"
    shadow_deployment(namespace, md, weak_name, strong,
                      rollout={"strategy": "Canary", "steps": [50, 100], "stepInterval": "10s",
                               "analysis": {"maxErrorRate": 0.01, "minRequests": 5}})
    start_client(namespace, "labelled-better", md, trained, 360)
    seen: set[str] = set()

    def promoted() -> dict[str, Any] | None:
        o = kget("modeldeployment", md, namespace)
        seen.add(o["status"].get("trafficSummary") or "")
        return o if o["status"].get("stableVersion") == strong else None

    obj = wait_for(promoted, timeout=420, what=f"{md} promoted to {strong}", interval=0.5)
    st = obj["status"]
    assert obj["spec"]["version"] == weak_name  # the operator never writes the spec
    (passed,) = [d for d in st["decisions"] if d["reason"] == "ShadowPassed"]
    assert passed["kind"] == "Promote" and (passed["from"], passed["to"]) == (weak_name, strong), passed
    assert passed["numbers"]["pairs"] >= 150 and passed["numbers"]["accuracyDiffLow"] >= 0, passed
    assert passed["gitChange"] == f"set spec.version: {strong} in ModelDeployment {namespace}/{md}", passed
    # Through the canary: its split was in effect and each step passed its gates.
    assert f"{weak_name}=50,{strong}=50" in seen, seen
    steps = [d for d in st["decisions"] if d["reason"] == "StepPassed"]
    assert [d["numbers"]["weight"] for d in steps] == [50, 100], st["decisions"]
    assert st["decisions"][-1]["reason"] == "RolloutComplete", st["decisions"]
    assert st["servingVersion"] == strong and st["rollout"]["phase"] == "Stable"
    # The promoted version is served, so nothing is mirrored any more: its former predictor is retired.
    wait_for(lambda: predictors(namespace, md) == [f"{md}-{strong}"], timeout=120,
             what="only the promoted version's predictor left")
    assert {"ShadowPassed", "RolloutComplete"} <= events(namespace, md)
    before = totals(namespace, "labelled-better")
    after = wait_for(lambda: (r := totals(namespace, "labelled-better")).get("ok", 0) > before["ok"] + 200 and r,
                     timeout=60, what="traffic after the promotion")
    assert after["failed"] == 0, after
    assert after["versions"].get(WEAK, 0) > 0 and after["versions"].get("1.0.0", 0) > 0, after
    assert not after["refused"], after
    kubectl("delete", "pod", "labelled-better", "-n", namespace, "--wait=false")
