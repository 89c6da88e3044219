"""Copy the Argo CD health checks (charts/mlsteward/argocd/health/<Kind>.lua) into the argocd-cm patch of
docs/gitops.md: `python hack/argocd-health-doc.py`. A unit test (tests/unit/chart/test_argocd_health.py) fails
while the two differ.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("ModelVersion", "ModelDeployment", "Experiment", "DriftMonitor")
DOC = ROOT / "docs" / "gitops.md"


def patch() -> str:
    """argocd-cm with one key per kind; each script is a literal block, byte for byte."""
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata:", "  name: argocd-cm", "  namespace: argocd", "data:"]
    for kind in KINDS:
        lines.append(f"  resource.customizations.health.mlsteward.io_{kind}: |")
        body = (ROOT / "charts" / "mlsteward" / "argocd" / "health" / f"{kind}.lua").read_text()
        lines += [f"    {line}" if line else "" for line in body.rstrip("\n").split("\n")]
    return "\n".join(lines) + "\n"


def main() -> None:
    text = DOC.read_text()
    block = re.compile(r"```yaml\n(apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: argocd-cm\n.*?)```", re.S)
    assert len(block.findall(text)) == 1, f"{DOC}: one argocd-cm block expected"
    DOC.write_text(block.sub(lambda _: f"```yaml\n{patch()}```", text))


if __name__ == "__main__":
    main()
