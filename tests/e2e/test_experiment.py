"""An Experiment on a real cluster: the router splits live traffic between two versions, clients send feedback,
the operator merges the router's statistics, concludes with the right winner and promotes it (status only), and
killing the operator in the middle changes no result.

The rewards are simulated by the client, from the version that answered each request (the `x-model-version`
header): 0.3 for 1.0.0 (control) and 0.7 for 1.1.0 (treatment), each a Bernoulli draw. The client counts every
feedback the router accepted, per version, so the test can check that the operator never counted an outcome twice
(across its own restart) and never invented one.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from .conftest import OPERATOR_NS, apply, condition, kget, kubectl, wait_for
from .test_rollout import versions  # noqa: F401  (module fixture: two Ready ModelVersions)
from .test_serving import image, validation_rows

pytestmark = pytest.mark.usefixtures("operator_installed")

REWARD = {"1.0.0": 0.3, "1.1.0": 0.7}

FEEDBACK_CLIENT = r"""
import json, random, sys, time, urllib.error, urllib.request, uuid
base, seconds, body, rates = sys.argv[1], float(sys.argv[2]), sys.argv[3].encode(), json.loads(sys.argv[4])
rng = random.Random(7)
ok = failed = 0; served = {}; feedback = {}; errors = []; feedback_refused = []
def report(**extra):
    print(json.dumps({"ok": ok, "failed": failed, "versions": served, "feedback": feedback, "errors": errors[:5],
                      "feedback_refused": feedback_refused[:50], **extra}), flush=True)
end = time.time() + seconds
while time.time() < end:
    # The router's own id (random, 128 bits) is the one feedback joins by; a client-sent id is only a correlation id.
    req = urllib.request.Request(base + "/predict", data=body,
                                 headers={"content-type": "application/json", "x-request-id": uuid.uuid4().hex})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            v = r.headers.get("x-model-version"); served[v] = served.get(v, 0) + 1; ok += 1
            rid = r.headers.get("x-request-id")
    except Exception as exc:
        failed += 1; errors.append(repr(exc)[:200]); v = None
    if v is not None:
        reward = 1.0 if rng.random() < rates.get(v, 0.0) else 0.0
        fb = urllib.request.Request(base + "/v1/feedback", headers={"content-type": "application/json"},
                                    data=json.dumps({"request_id": rid, "reward": reward}).encode())
        try:
            with urllib.request.urlopen(fb, timeout=10) as r:
                feedback[v] = feedback.get(v, 0) + 1
        except urllib.error.HTTPError as exc:
            feedback_refused.append({"status": exc.code, "time": time.time(), "body": exc.read().decode()[:200]})
        except Exception as exc:
            feedback_refused.append({"status": None, "time": time.time(), "body": repr(exc)[:200]})
    if (ok + failed) % 100 == 0:  # a running total the test can read at any time
        report()
    time.sleep(0.01)
report(done=True)
"""


def run_feedback_client(ns: str, name: str, base: str, seconds: int, body: dict[str, Any]) -> None:
    apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "client", "image": image(), "imagePullPolicy": "IfNotPresent",
               "command": ["python3", "-c", FEEDBACK_CLIENT, base, str(seconds), json.dumps(body),
                           json.dumps(REWARD)]}]}}, ns)


def client_totals(ns: str, name: str) -> dict[str, Any]:
    """The client's latest running totals (it prints them every 100 requests)."""
    return json.loads(kubectl("logs", name, "-n", ns).strip().splitlines()[-1])


def operator_pod() -> str | None:
    out = json.loads(kubectl("get", "pods", "-n", OPERATOR_NS, "-l",
                             "app.kubernetes.io/name=mlsteward,app.kubernetes.io/component=operator", "-o", "json"))
    running = [p for p in out["items"] if p["status"].get("phase") == "Running"
               and not p["metadata"].get("deletionTimestamp")
               and all(c.get("ready") for c in p["status"].get("containerStatuses", []))]
    return running[0]["metadata"]["name"] if running else None


@pytest.mark.timeout(600)
def test_experiment_concludes_for_the_better_version_and_promotes_it_across_an_operator_restart(
        namespace: str, trained, versions: tuple[str, str]):  # noqa: F811
    v1, v2 = versions
    md, exp = "ab", "ab-test"
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": md, "namespace": namespace}, "spec": {"version": v1, "replicas": 1}}, namespace)
    wait_for(lambda: (condition(kget("modeldeployment", md, namespace), "Ready") or {}).get("status") == "True",
             timeout=300, what=f"ModelDeployment {md} Ready")
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "Experiment",
           "metadata": {"name": exp, "namespace": namespace},
           "spec": {"deployment": md, "onSuccess": "Promote",
                    "metric": {"name": "reward", "kind": "binary", "goal": "maximize"},
                    "stopping": {"confidence": 0.95, "minSamplesPerVariant": 300, "sequential": True},
                    "variants": [{"name": "control", "version": v1, "weight": 50},
                                 {"name": "treatment", "version": v2, "weight": 50}]}}, namespace)
    running = wait_for(lambda: (o := kget("experiment", exp, namespace)) and
                       (o.get("status") or {}).get("phase") == "Running" and o, timeout=240, what="Running")
    assert running["status"]["startedAt"]
    assert kget("modeldeployment", md, namespace)["status"]["experiment"] == exp

    X, _ = validation_rows(trained)
    run_feedback_client(namespace, "ab-client", f"http://{md}.{namespace}.svc.cluster.local:8080", 500,
                        {"instances": X[:1]})

    # Mid-experiment: some outcomes on both arms, far from the 300 each needs. Kill the operator there.
    def some_outcomes() -> dict[str, Any] | None:
        o = kget("experiment", exp, namespace)
        arms = {v["name"]: v.get("outcomes", 0) for v in o["status"].get("variants", [])}
        return o if arms and 30 <= min(arms.values()) and max(arms.values()) < 300 else None

    before = wait_for(some_outcomes, timeout=180, what="outcomes on both arms", interval=0.5)
    old = operator_pod()
    assert old is not None
    kubectl("delete", "pod", old, "-n", OPERATOR_NS, "--wait=false")
    wait_for(lambda: (p := operator_pod()) is not None and p != old, timeout=180, what="a new operator pod")

    concluded = wait_for(lambda: (o := kget("experiment", exp, namespace)) and
                         o["status"].get("phase") in ("Concluded", "Stopped") and o, timeout=300, what="concluded")
    status = concluded["status"]
    assert status["phase"] == "Concluded", status
    assert status["winner"] == "treatment", status
    arms = {v["name"]: v for v in status["variants"]}
    # Totals only grew across the restart.
    for v in before["status"]["variants"]:
        assert arms[v["name"]]["outcomes"] >= v["outcomes"]
    assert min(a["outcomes"] for a in arms.values()) >= 300
    assert arms["treatment"]["mean"] > arms["control"]["mean"]
    assert status["test"].startswith("msprt") and status["pValue"] < 0.05
    assert status["servingRequest"]["version"] == v2 and status["servingRequest"]["fromVersion"] == v1

    # Promotion: the ModelDeployment serves the winner, spec untouched, decision recorded.
    promoted = wait_for(lambda: (o := kget("modeldeployment", md, namespace)) and
                        o["status"].get("servingVersion") == v2 and o, timeout=180, what=f"{md} serves {v2}")
    assert promoted["spec"]["version"] == v1
    assert promoted["status"]["override"]["source"] == f"Experiment/{exp}"
    (promote,) = [d for d in promoted["status"]["decisions"] if d["kind"] == "Promote"]
    assert (promote["from"], promote["to"]) == (v1, v2)
    assert promote["gitChange"] == f"set spec.version: {v2} in ModelDeployment {namespace}/{md}"
    assert promote["numbers"]["pValue"] < 0.05

    # Every router replica serves the winner alone (they take it up in place, without a restart). The client prints
    # its totals every 100 requests: the first line printed after that is the baseline the later requests count from.
    wait_for(lambda: (r := kget("modeldeployment", md, namespace)["status"].get("router") or {})
             .get("traffic") == f"{v2}=100" and r.get("current") == r.get("replicas"), timeout=60,
             what="every router replica on the winner")
    seen = client_totals(namespace, "ab-client")
    result = wait_for(lambda: (r := client_totals(namespace, "ab-client"))["ok"] > seen["ok"] and r, timeout=60,
                      what="a client report after the switch")
    assert result["failed"] == 0, result  # no prediction failed, through the split and the promotion
    # No outcome was counted twice or invented: the operator's totals are at most what the router accepted.
    fed = result["feedback"]
    assert arms["control"]["outcomes"] <= fed.get("1.0.0", 0), (arms, fed)
    assert arms["treatment"]["outcomes"] <= fed.get("1.1.0", 0), (arms, fed)
    # And the requests after the promotion go to the winner, none failing.
    later = wait_for(lambda: (r := client_totals(namespace, "ab-client"))["ok"] >= result["ok"] + 200 and r,
                     timeout=60, what="200 more requests")
    assert later["failed"] == 0, later
    # Feedback is attributed by any router replica from the signed request id, and the routers never restart: no
    # feedback is refused, during the experiment or after it.
    assert not later["feedback_refused"], later["feedback_refused"]
    assert later["versions"].get("1.1.0", 0) - result["versions"].get("1.1.0", 0) >= 200, (result, later)
    kubectl("delete", "pod", "ab-client", "-n", namespace, "--wait=false")
    time.sleep(1)
    reasons = {e.get("reason") for e in json.loads(kubectl(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={exp}", "-o", "json"))["items"]}
    assert {"ExperimentStarted", "WinnerFound"} <= reasons, reasons
