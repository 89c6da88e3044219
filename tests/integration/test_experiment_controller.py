"""Experiments and serving requests against a real API server (tier A: no node, so no pod runs).

What this tier can show: an Experiment waits (phase Pending) with the reason its ModelDeployment cannot split the
traffic yet, and a ServingRequest in an Experiment's status is applied by the ModelDeployment's reconcile exactly
once: status.override, a Promote decision with the numbers and the gitChange, the router pointed at the winner, and
the user's spec untouched (managedFields). Without router pods there are no statistics, so the analysis of a running
experiment on real traffic is the e2e tier's `tests/e2e/test_experiment.py`.
"""

from __future__ import annotations

import datetime as dt

from .conftest import wait_for
from .test_controllers import GV, cond, custom, get, ready_version
from .test_rollout import router_config


def _experiment(name: str, control: str, treatment: str) -> dict:
    return {"apiVersion": "mlsteward.io/v1alpha1", "kind": "Experiment", "metadata": {"name": name},
            "spec": {"deployment": "iris", "onSuccess": "Promote",
                     "variants": [{"name": "control", "version": control, "weight": 50},
                                  {"name": "treatment", "version": treatment, "weight": 50}]}}


def test_experiment_waits_and_a_promotion_request_is_applied_once(kube, namespace):
    from mlsteward_operator.main import OperatorThread

    ready_version(kube, namespace, "iris-1", "iris", "1.0.0")
    ready_version(kube, namespace, "iris-2", "iris", "2.0.0")
    operator = OperatorThread(namespaces=[namespace]).start()
    try:
        run(kube, namespace)
    finally:
        operator.stop()
    assert operator.error is None, f"operator failed: {operator.error!r}"


def run(kube, namespace: str) -> None:
    api = custom(kube)
    api.create_namespaced_custom_object(*GV, namespace, "modeldeployments", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
        "spec": {"version": "iris-1", "replicas": 0}})
    wait_for(lambda: (get(kube, namespace, "modeldeployments", "iris").get("status") or {}).get(
        "observedGeneration") == 1, timeout=30, what="status of generation 1")

    # Nothing is served yet (no router pod can become ready here): the Experiment says why it waits.
    api.create_namespaced_custom_object(*GV, namespace, "experiments", _experiment("ab", "iris-1", "iris-2"))
    pending = wait_for(lambda: (o := get(kube, namespace, "experiments", "ab")) and
                       (o.get("status") or {}).get("phase") == "Pending" and o, timeout=30, what="Pending")
    assert cond(pending, "Ready")["reason"] == "ControlNotServed"
    assert "control version iris-1" in cond(pending, "Ready")["message"]
    assert not pending["status"].get("startedAt") and not pending["status"].get("variants")

    # As if iris-1 served and the experiment had concluded: its status asks for the winner.
    api.patch_namespaced_custom_object_status(*GV, namespace, "modeldeployments", "iris", {
        "status": {"servingVersion": "iris-1", "stableVersion": "iris-1"}})
    decided = dt.datetime.now(dt.UTC).replace(microsecond=0)
    api.create_namespaced_custom_object(*GV, namespace, "experiments", _experiment("done", "iris-1", "iris-2"))
    api.patch_namespaced_custom_object_status(*GV, namespace, "experiments", "done", {"status": {
        "phase": "Concluded", "winner": "treatment",
        "servingRequest": {"kind": "Promote", "version": "iris-2", "fromVersion": "iris-1",
                           "time": decided.strftime("%Y-%m-%dT%H:%M:%SZ"), "reason": "ExperimentConcluded",
                           "message": "treatment beats control", "numbers": {"pValue": 0.001},
                           "thresholds": {"alpha": 0.05}}}})

    def promoted() -> dict | None:
        md = get(kube, namespace, "modeldeployments", "iris") or {}
        return md if (md.get("status") or {}).get("override") else None

    md = wait_for(promoted, timeout=30, what="status.override")
    status = md["status"]
    assert status["override"] == {"version": "iris-2", "specVersion": "iris-1", "kind": "Promote",
                                  "source": "Experiment/done", "time": decided.strftime("%Y-%m-%dT%H:%M:%SZ")}
    promotes = [d for d in status["decisions"] if d["kind"] == "Promote"]
    assert len(promotes) == 1
    (p,) = promotes
    assert (p["from"], p["to"], p["reason"]) == ("iris-1", "iris-2", "ExperimentConcluded")
    assert p["numbers"] == {"pValue": 0.001} and p["thresholds"] == {"alpha": 0.05}
    assert p["gitChange"] == f"set spec.version: iris-2 in ModelDeployment {namespace}/iris"
    assert md["spec"]["version"] == "iris-1"  # never written
    assert not any(f.get("manager") == "mlsteward" and "f:spec" in (f.get("fieldsV1") or {})
                   for f in md["metadata"]["managedFields"])
    # The router is moving all traffic to the winner (its predictor with 0 replicas counts as warm here).
    config = wait_for(lambda: (c := router_config(kube, namespace, "iris")) and
                      [b["version"] for b in c["backends"]] == ["iris-2"] and c, timeout=30, what="router on iris-2")
    assert config["backends"][0]["weight"] == 100
    degraded = cond(md, "Degraded")
    assert degraded["status"] == "False" and degraded["reason"] == "Promoted"
    assert "set spec.version: iris-2" in degraded["message"]

    # Later reconciles (the timer runs every 3 s) apply nothing twice.
    import time

    time.sleep(7)
    md = get(kube, namespace, "modeldeployments", "iris")
    assert len([d for d in md["status"]["decisions"] if d["kind"] == "Promote"]) == 1

    # Git catches up: spec.version iris-2 ends the override; what is served does not change.
    api.patch_namespaced_custom_object(*GV, namespace, "modeldeployments", "iris", {"spec": {"version": "iris-2"}})
    ended = wait_for(lambda: (o := get(kube, namespace, "modeldeployments", "iris")) and
                     ((o["status"].get("override") or {}).get("endedAt")) and o, timeout=30, what="override ended")
    assert cond(ended, "Degraded")["reason"] == "AsExpected"
    assert [b["version"] for b in router_config(kube, namespace, "iris")["backends"]] == ["iris-2"]
