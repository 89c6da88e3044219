"""`mlsteward card` against a real API server: the objects are created there, statuses written as the controllers
would (no operator runs here), and the verb reads them through a kubeconfig, read only."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

GV = ("mlsteward.io", "v1alpha1")
MLSTEWARD = str(Path(sys.executable).with_name("mlsteward"))


def _create(kube: Any, ns: str, plural: str, body: dict[str, Any], status: dict[str, Any] | None = None) -> None:
    from kubernetes import client

    api = client.CustomObjectsApi(kube)
    api.create_namespaced_custom_object(*GV, ns, plural, {"apiVersion": "mlsteward.io/v1alpha1", **body})
    if status is not None:
        api.patch_namespaced_custom_object_status(*GV, ns, plural, body["metadata"]["name"], {"status": status})


def _version(name: str, version: str, parent: str | None, accuracy: float) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": "iris", "version": version,
        "artifact": {"uri": f"file:///models/{name}.skops", "sha256": "a" * 64},
        "validation": {"dataset": "file:///models/validation.csv", "target": "species",
                       "thresholds": ["accuracy >= 0.9"]},
        "lineage": {"dataset": f"file:///data/{name}.csv", "trigger": "Manual" if parent is None else "Drift"},
    }
    if parent:
        spec["lineage"]["parent"] = parent
    return {"kind": "ModelVersion", "metadata": {"name": name, "annotations": {
        "mlsteward.io/intended-use": "Sorting iris flowers."}}, "spec": spec}


def test_card_from_the_cluster(kube, namespace, control_plane, tmp_path):
    ns = namespace
    _create(kube, ns, "modelversions", _version("iris-1-0-0", "1.0.0", None, 0.93),
            {"phase": "Ready", "reason": "Validated", "metrics": {"accuracy": 0.93}})
    _create(kube, ns, "modelversions", _version("iris-1-1-0", "1.1.0", "iris-1-0-0", 0.88),
            {"phase": "Failed", "reason": "BelowThreshold", "metrics": {"accuracy": 0.88}})
    _create(kube, ns, "modeldeployments", {"kind": "ModelDeployment", "metadata": {"name": "iris"},
                                           "spec": {"version": "iris-1-0-0"}},
            {"servingVersion": "iris-1-0-0", "traffic": [{"version": "iris-1-0-0", "weight": 100}]})
    _create(kube, ns, "driftmonitors", {"kind": "DriftMonitor", "metadata": {"name": "iris-drift"},
                                        "spec": {"deployment": "iris"}},
            {"driftDetected": True, "lastReport": {
                "time": "2025-03-01T12:00:00Z", "windowSize": 600, "version": "iris-1-0-0", "drifted": True,
                "features": [{"name": "petal_width", "method": "psi", "statistic": 0.3, "pValue": 0.001,
                              "effectSize": 0.35, "drifted": True}]},
             "history": [{"time": "2025-03-01T12:00:00Z", "windowSize": 600, "driftedFeatures": 1,
                          "drifted": True}]})
    _create(kube, ns, "experiments", {"kind": "Experiment", "metadata": {"name": "iris-ab"}, "spec": {
        "deployment": "iris", "variants": [{"name": "control", "version": "iris-1-0-0", "weight": 50},
                                           {"name": "treatment", "version": "iris-1-1-0", "weight": 50}]}},
            {"phase": "Concluded", "winner": "control", "variants": [
                {"name": "control", "version": "iris-1-0-0", "requests": 500, "outcomes": 480, "mean": 0.7},
                {"name": "treatment", "version": "iris-1-1-0", "requests": 510, "outcomes": 470, "mean": 0.5}]})

    out = tmp_path / "card.md"
    proc = subprocess.run([MLSTEWARD, "card", "iris-1-1-0", "-n", ns, "--kubeconfig", str(control_plane),
                           "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert text.startswith("# Model card: iris 1.1.0\n")
    assert "Sorting iris flowers." in text
    assert re.findall(r"^\d+\. `([^`]+)`", text, flags=re.M) == ["iris-1-1-0", "iris-1-0-0"]
    assert "| accuracy >= 0.9 | 0.88 | **fail** | - |" in text
    assert "**Winner: `control`** (this version lost)." in text
    # It serves nothing, so the monitor of the deployment that serves its parent is not on its card.
    assert "No DriftMonitor watches" in text

    parent = subprocess.run([MLSTEWARD, "card", "iris-1-0-0", "-n", ns, "--kubeconfig", str(control_plane)],
                            capture_output=True, text=True, timeout=120)
    assert parent.returncode == 0, parent.stderr
    assert "| accuracy >= 0.9 | 0.93 | pass | - |" in parent.stdout
    assert "| petal_width | psi | 0.3 | 0.001 | 0.35 | **yes** |" in parent.stdout
    assert "Retrained into: `iris-1-1-0`." in parent.stdout

    missing = subprocess.run([MLSTEWARD, "card", "iris-7-0-0", "-n", ns, "--kubeconfig", str(control_plane)],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"ModelVersion iris-7-0-0 not found in namespace {ns}" in missing.stderr
