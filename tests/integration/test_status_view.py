"""`kubectl mlsteward status` against a real API server, run by the real kubectl through the console script that
pyproject.toml declares (kubectl finds it on PATH as `kubectl-mlsteward`).

ModelVersions, a ModelDeployment in the middle of a canary, an Experiment and a DriftMonitor are created and their
statuses written through the status subresource as the controllers would (built with the operator's status
models); the predictor and router Deployments carry the labels the operator renders, and the controller manager
fills their status (no nodes: nothing becomes ready). The view must show what is stored.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, wait_for

GV = ("mlsteward.io", "v1alpha1")
T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
SHA = {"iris-v1": "5a" * 32, "iris-v2": "c3" * 32}


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture()
def plugin_path(tmp_path: Path) -> str:
    """A PATH whose first directory holds `kubectl-mlsteward`, written as pip writes a console script from the
    entry of pyproject.toml, and then kubectl's directory."""
    kubectl = shutil.which("kubectl") or str(Path.home() / ".cache/mlsteward/bin/k8s-v1.34.4/kubectl")
    if not Path(kubectl).exists():
        pytest.fail("kubectl is needed on PATH (hack/cluster.sh builds one)")
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["kubectl-mlsteward"]
    module, _, attr = target.partition(":")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "kubectl-mlsteward"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom {module} import {attr}\nsys.exit({attr}())\n")
    script.chmod(0o755)
    return os.pathsep.join([str(bin_dir), str(Path(kubectl).parent), os.environ.get("PATH", "")])


def run(args: list[str], path: str, kubeconfig: Path | str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


def create_objects(kube: Any, namespace: str) -> None:
    from kubernetes import client

    from mlsteward_operator.api import DriftMonitor, Experiment, ModelDeployment, ModelVersion
    from mlsteward_operator.kernel import names
    from mlsteward_operator.kernel.conditions import set_condition, set_kstatus

    api = client.CustomObjectsApi(kube)

    def create(plural: str, model: Any, obj: dict[str, Any]) -> None:
        wire = model.model_validate({"metadata": {"name": obj["metadata"]["name"]}, **obj}).to_k8s()
        body = {"apiVersion": "mlsteward.io/v1alpha1", "kind": wire["kind"], "metadata": obj["metadata"],
                "spec": wire["spec"]}
        api.create_namespaced_custom_object(*GV, namespace, plural, body)
        api.patch_namespaced_custom_object_status(*GV, namespace, plural, obj["metadata"]["name"],
                                                  {"status": wire["status"]})

    for name, acc in (("iris-v1", 0.931), ("iris-v2", 0.962)):
        create("modelversions", ModelVersion, {
            "metadata": {"name": name},
            "spec": {"model": "iris", "version": f"1.{name[-1]}.0",
                     "artifact": {"uri": f"s3://models/{name}.skops", "sha256": SHA[name]}},
            "status": {"phase": "Ready", "reason": "Validated", "metrics": {"accuracy": acc}, "sha256": SHA[name]}})
    conds = set_condition([], "Ready", True, "Serving", "iris-v1 serves", generation=1, now=T0)
    conds = set_kstatus(conds, reconciling=("Analysing", "step 1/3 (10% to iris-v2) began"), stalled=None,
                        generation=1, now=T0)
    create("modeldeployments", ModelDeployment, {
        "metadata": {"name": "iris"},
        "spec": {"version": "iris-v2", "rollout": {"strategy": "Canary", "steps": [10, 50, 100]}},
        "status": {"observedGeneration": 1, "conditions": [c.to_k8s() for c in conds], "model": "iris",
                   "servingVersion": "iris-v1", "stableVersion": "iris-v1",
                   "traffic": [{"version": "iris-v1", "weight": 90}, {"version": "iris-v2", "weight": 10}],
                   "rollout": {"phase": "Progressing", "step": 0, "targetVersion": "iris-v2",
                               "stepStartedAt": iso(T0)},
                   "router": {"generation": "g-4f1c", "traffic": "iris-v1=90,iris-v2=10", "replicas": 1,
                              "current": 1},
                   "decisions": [{"time": iso(T0 - dt.timedelta(hours=1)), "kind": "Rollout", "to": "iris-v1",
                                  "reason": "RolloutComplete", "message": "iris-v1 serves all traffic"}]}})
    create("experiments", Experiment, {
        "metadata": {"name": "iris-ab"},
        "spec": {"deployment": "iris", "variants": [{"name": "control", "version": "iris-v1", "weight": 50},
                                                    {"name": "treatment", "version": "iris-v2", "weight": 50}]},
        "status": {"phase": "Running", "test": "two-proportion z", "pValue": 0.0421, "leader": "treatment",
                   "probabilityBest": 0.93, "variants": [
                       {"name": "control", "version": "iris-v1", "requests": 800, "outcomes": 500, "mean": 0.8},
                       {"name": "treatment", "version": "iris-v2", "requests": 810, "outcomes": 520, "mean": 0.85}]}})
    create("driftmonitors", DriftMonitor, {
        "metadata": {"name": "iris-drift"},
        "spec": {"deployment": "iris"},
        "status": {"driftDetected": True, "consecutiveBreaches": 1, "lastReport": {
            "time": iso(T0), "windowSize": 640, "version": "iris-v1", "drifted": True,
            "features": [{"name": "petal_width", "method": "ks", "drifted": True},
                         {"name": "sepal_width", "method": "ks", "drifted": False}]}}})

    apps = client.AppsV1Api(kube)
    for component, version, name in (("predictor", "iris-v1", names.predictor_name("iris", "iris-v1")),
                                     ("router", None, names.router_name("iris"))):
        labels = names.deployment_labels("iris", component, version)
        selector = names.selector_labels("iris", component, version)
        apps.create_namespaced_deployment(namespace, {
            "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": 1, "selector": {"matchLabels": selector}, "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "registry.invalid/mlsteward:none"}]}}}})
    # The controller manager has seen both (their status says so): what the plugin reads is what a cluster shows.
    wait_for(lambda: all((d.status.replicas or 0) == 1 for d in apps.list_namespaced_deployment(namespace).items),
             timeout=60, what="the controller manager to count the Deployments' pods")


def test_kubectl_mlsteward_status_shows_what_the_cluster_holds(kube, namespace, control_plane, plugin_path,
                                                               tmp_path):
    from kubernetes import client

    create_objects(kube, namespace)

    proc = run(["kubectl", "mlsteward", "status", "iris", "-n", namespace], plugin_path, control_plane)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.startswith(f"ModelDeployment {namespace}/iris\n")
    for line in ("Wanted:     iris-v2  (spec.version)", "Serving:    iris-v1  (stable iris-v1)",
                 "Traffic:    iris-v1 90% (stable, arm control), iris-v2 10% (canary, arm treatment)",
                 "Rollout:    Canary, Progressing to iris-v2, step 1 of 3 (10/50/100%)",
                 "iris-ab: Running, Weighted on reward; p=0.0421 (two-proportion z); leader treatment P(best)=0.930",
                 "iris-drift: drift detected, 1 of 3 windows in breach before Alert",
                 "640 rows on iris-v1, 1 of 2 features drifted (petal_width)"):
        assert line in text, f"{line!r} not in:\n{text}"
    lines = text.splitlines()
    assert any(ln.split()[:5] == ["iris-v1", "serving,", "stable,", "arm", "control"] and SHA["iris-v1"][:12] in ln
               and "accuracy=0.931" in ln for ln in lines), text
    assert any(ln.split()[:4] == ["iris-v2", "wanted,", "canary,", "arm"] and "Ready" in ln and SHA["iris-v2"][:12]
               in ln for ln in lines), text
    assert any(ln.split()[:4] == ["predictor", "iris-v1", "0/1", "ready"] for ln in lines), text
    assert any(ln.split()[:8] == ["router", "-", "0/1", "ready", "1/1", "replicas", "serve", "configuration"]
               for ln in lines), text
    assert any(ln.split()[:3] == ["Ready", "True", "Serving"] for ln in lines), text
    assert any(ln.split()[:3] == ["Reconciling", "True", "Analysing"] for ln in lines), text
    assert any(ln.split()[1:5] == ["Rollout", "-", "iris-v1", "RolloutComplete"] for ln in lines), text

    # `mlsteward status -o json` (the same verb without kubectl) against the objects read back from the server.
    api = client.CustomObjectsApi(kube)
    stored = api.get_namespaced_custom_object(*GV, namespace, "modeldeployments", "iris")
    proc = run([sys.executable, "-m", "mlsteward_runtime.cli", "status", "iris", "-n", namespace, "-o", "json",
                "--kubeconfig", str(control_plane)], plugin_path, "/nonexistent")
    assert proc.returncode == 0, proc.stderr
    view = json.loads(proc.stdout)
    assert [{k: t[k] for k in ("version", "weight")} for t in view["traffic"]] == stored["status"]["traffic"]
    assert view["conditions"] == [{k: c[k] for k in ("type", "status", "reason", "message", "lastTransitionTime")}
                                  for c in stored["status"]["conditions"]]
    assert view["decisions"] == stored["status"]["decisions"]
    for v in view["versions"]:
        mv = api.get_namespaced_custom_object(*GV, namespace, "modelversions", v["name"])
        assert (v["phase"], v["sha256"], v["metrics"]) == (mv["status"]["phase"], mv["status"]["sha256"],
                                                           mv["status"]["metrics"])

    # --context: the namespace comes from the chosen context, as with kubectl; flags may precede the verb.
    config = yaml.safe_load(control_plane.read_text())
    base = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    config["contexts"].append({"name": "it", "context": {**base["context"], "namespace": namespace}})
    with_context = tmp_path / "kubeconfig"
    with_context.write_text(yaml.safe_dump(config))
    proc = run(["kubectl", "mlsteward", "--context", "it", "status", "iris", "-o", "yaml"], plugin_path, with_context)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["namespace"] == namespace

    missing = run(["kubectl", "mlsteward", "status", "nope", "-n", namespace], plugin_path, control_plane)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == (f"kubectl mlsteward status: error: no ModelDeployment nope in namespace "
                                      f"{namespace} (ModelDeployments: iris)")


def test_kubectl_mlsteward_without_a_reachable_cluster_says_so(control_plane, plugin_path, tmp_path):
    config = yaml.safe_load(control_plane.read_text())
    for c in config["clusters"]:
        c["cluster"]["server"] = "https://127.0.0.1:9"  # nothing listens on the discard port
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(yaml.safe_dump(config))
    for verb in (["status", "iris"], ["report", "iris"], ["card", "iris-v1"]):
        proc = run(["kubectl", "mlsteward", *verb, "-n", "models"], plugin_path, unreachable)
        assert proc.returncode == 2, (verb, proc.stdout, proc.stderr)
        assert proc.stderr.startswith(f"kubectl mlsteward {verb[0]}: error: cannot reach the API server at "
                                      "https://127.0.0.1:9"), proc.stderr
        assert "Traceback" not in proc.stderr
