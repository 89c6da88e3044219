"""The plain install YAML equals the chart's rendering, and the API server accepts all of it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bin_path() -> str:
    return subprocess.run([str(ROOT / "hack/build-bins.sh"), "--print-path"], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_manifests_equal_the_chart_rendering(tmp_path: Path):
    out = tmp_path / "mlsteward.yaml"
    subprocess.run([str(ROOT / "hack/manifests.sh"), str(out)], check=True, capture_output=True, timeout=120)
    committed = (ROOT / "manifests/mlsteward.yaml").read_text()
    assert out.read_text() == committed, "manifests/ is stale: run hack/manifests.sh and commit the result"


def test_api_server_accepts_the_manifests(control_plane: Path):
    env = {**os.environ, "KUBECONFIG": str(control_plane), "PATH": f"{_bin_path()}:{os.environ['PATH']}"}
    # A server-side dry run does not create the namespace the other objects go into; create it for real.
    subprocess.run(["kubectl", "create", "namespace", "mlsteward-system"], env=env, capture_output=True)
    proc = subprocess.run(["kubectl", "apply", "--dry-run=server", "-k", str(ROOT / "manifests")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    applied = proc.stdout.splitlines()
    assert any("deployment.apps/mlsteward-operator" in line for line in applied), proc.stdout
    assert any("clusterrole.rbac.authorization.k8s.io/mlsteward-operator " in line for line in applied), proc.stdout
