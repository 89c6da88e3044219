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


def _helm_template(*sets: str) -> list[dict]:
    import yaml

    helm = next(Path(p) / "helm" for p in _bin_path().split(":") if (Path(p) / "helm").exists())
    args = [str(helm), "template", "mlsteward", str(ROOT / "charts/mlsteward"), "--namespace", "mlsteward-system",
            "--kube-version", "1.34.0"]
    for s in sets:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_dashboard_and_alert_rules_render_from_their_files():
    import json

    import yaml

    default = _helm_template()
    assert not [d for d in default if d["kind"] == "PrometheusRule" or
                d["metadata"].get("labels", {}).get("grafana_dashboard")], "both are off by default"

    docs = _helm_template("grafana.dashboard.enabled=true", "prometheusRule.enabled=true",
                          "prometheusRule.labels.release=prometheus", "grafana.dashboard.namespace=monitoring")
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["spec"] == yaml.safe_load((ROOT / "charts/mlsteward/rules/mlsteward.rules.yaml").read_text())
    # Prometheus templates in annotations reach the object untouched by helm.
    assert "{{ $labels.version }}" in rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]

    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1")
    assert cm["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(cm["data"]["mlsteward.json"])
    assert dashboard == json.loads((ROOT / "charts/mlsteward/dashboards/mlsteward.json").read_text())


KINDS = ("ModelVersion", "ModelDeployment", "Experiment", "DriftMonitor")
HEALTH = ROOT / "charts/mlsteward/argocd/health"


def test_argocd_health_checks_render_from_their_files():
    assert not [d for d in _helm_template() if d["metadata"]["name"].endswith("-argocd-health")], "off by default"
    docs = _helm_template("argocd.healthChecks.enabled=true", "argocd.healthChecks.namespace=argocd")
    (cm,) = [d for d in docs if d["metadata"]["name"] == "mlsteward-operator-argocd-health"]
    assert (cm["kind"], cm["metadata"]["namespace"]) == ("ConfigMap", "argocd")
    assert cm["data"] == {f"resource.customizations.health.mlsteward.io_{kind}": (HEALTH / f"{kind}.lua").read_text()
                          .strip() for kind in KINDS}


def test_the_documented_argocd_cm_patches_merge_the_health_checks(control_plane: Path, tmp_path: Path):
    """Both ways docs/gitops.md gives (its argocd-cm patch file, and the chart's ConfigMap merged by its kubectl
    command) leave argocd-cm with the four scripts next to what it held."""
    import re

    import yaml

    env = {**os.environ, "KUBECONFIG": str(control_plane), "PATH": f"{_bin_path()}:{os.environ['PATH']}"}

    def kubectl(*args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(["kubectl", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def fresh_argocd_cm() -> None:
        subprocess.run(["kubectl", "create", "namespace", "argocd"], env=env, capture_output=True)
        kubectl("delete", "configmap", "argocd-cm", "-n", "argocd", "--ignore-not-found")
        kubectl("create", "configmap", "argocd-cm", "-n", "argocd", "--from-literal=url=https://argocd.example")

    def merged() -> dict[str, str]:
        return yaml.safe_load(kubectl("get", "configmap", "argocd-cm", "-n", "argocd", "-o", "yaml"))["data"]

    scripts = {f"resource.customizations.health.mlsteward.io_{kind}": (HEALTH / f"{kind}.lua").read_text()
               for kind in KINDS}
    text = (ROOT / "docs/gitops.md").read_text()
    (patch,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "resource.customizations.health." in b]
    (command,) = [b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "-argocd-health" in b]

    fresh_argocd_cm()
    (tmp_path / "argocd-cm-mlsteward.yaml").write_text(patch)
    kubectl("patch", "configmap", "argocd-cm", "-n", "argocd", "--type", "merge", "--patch-file",
            str(tmp_path / "argocd-cm-mlsteward.yaml"))
    assert merged() == {"url": "https://argocd.example", **scripts}

    fresh_argocd_cm()
    subprocess.run(["kubectl", "create", "namespace", "mlsteward-system"], env=env, capture_output=True)
    rendered = [d for d in _helm_template("argocd.healthChecks.enabled=true") if d["kind"] == "ConfigMap"
                and d["metadata"]["name"].endswith("-argocd-health")]
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(rendered[0]))
    proc = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert merged() == {"url": "https://argocd.example", **{k: v.strip() for k, v in scripts.items()}}
