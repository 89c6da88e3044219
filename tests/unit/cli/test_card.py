"""`mlsteward card` on YAML fixtures: what the card says, computed from the objects, and its answers to bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlsteward_runtime.cluster.card import render_card, threshold_results
from mlsteward_runtime.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "card"
CLUSTER = str(FIXTURES / "cluster.yaml")
EXPERIMENTS = str(FIXTURES / "experiments.yaml")
MLSTEWARD = str(Path(sys.executable).with_name("mlsteward"))


def card(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["card", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def section(text: str, title: str) -> str:
    """The body of the `## title` section."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert m, f"no section {title!r} in:\n{text}"
    return m.group(1)


def table_rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("|---")]


def test_thresholds_are_judged_on_the_validated_metrics(capsys):
    text = card(capsys, "iris-1-1-0", "--file", CLUSTER, "--file", EXPERIMENTS)
    metrics = section(text, "Validation metrics")
    rows = {r[0]: r for r in table_rows(metrics)}
    # accuracy 0.95 >= 0.9; f1 (f1_macro) 0.91 < 0.93 although 0.96 as trained; roc_auc was not measured.
    assert rows["accuracy >= 0.9"][1:] == ["0.95", "pass", "0.97"]
    assert rows["f1_macro >= 0.93"][1:] == ["0.91", "**fail**", "0.96"]
    assert rows["roc_auc > 0.5"][1:] == ["-", "not measured", "-"]
    assert "1 of 3 thresholds met" in metrics


def test_threshold_results_flip_with_the_metric():
    mv = {"metadata": {"name": "m"}, "spec": {"validation": {"thresholds": ["rmse < 3.5", "r2 >= 0.8"]}},
          "status": {"metrics": {"rmse": 3.6, "r2": 0.8}}}
    assert [r[2] for r in threshold_results(mv)] == ["fail", "pass"]
    mv["status"]["metrics"]["rmse"] = 3.4
    assert [r[2] for r in threshold_results(mv)] == ["pass", "pass"]


def test_description_intended_use_and_signature(capsys):
    text = card(capsys, "iris-1-1-0", "--file", CLUSTER)
    assert "# Model card: iris 1.1.0" in text
    assert "A logistic regression on the four iris measurements." in section(text, "Description")
    use = section(text, "Intended use")
    assert "Classify iris flowers" in use and "Not trained on hybrids." in use
    sig = {r[0]: r[1:] for r in table_rows(section(text, "Signature"))}
    assert sig["sepal_length"] == ["number", "[4, 8]", "yes"]
    assert sig["sepal_width"] == ["number", ">= 2", "yes"]
    assert sig["site"] == ["categorical", "one of north, south", "no"]
    assert "Output: class, classes: setosa, versicolor, virginica." in text


def test_lineage_chain_is_followed_newest_first(capsys):
    text = card(capsys, "iris-r3f5a09c2e", "--file", CLUSTER, "--file", EXPERIMENTS)
    lineage = section(text, "Training data and lineage")
    chain = re.findall(r"^\d+\. `([^`]+)`", lineage, flags=re.M)
    assert chain == ["iris-r3f5a09c2e", "iris-1-1-0", "iris-1-0-0"]
    assert "trigger driftmonitor/iris-drift@2025-03-01T12:05:00Z" in lineage
    assert "data s3://data/iris-2024.csv" in lineage  # the grandparent's dataset
    assert "has no parent" in lineage


def test_a_missing_parent_ends_the_chain_and_says_so(capsys):
    # Without cluster.yaml, the parent iris-1-1-0 is not among the objects.
    text = card(capsys, "iris-r3f5a09c2e", "--file", EXPERIMENTS)
    lineage = section(text, "Training data and lineage")
    assert re.findall(r"^\d+\. `([^`]+)`", lineage, flags=re.M) == ["iris-r3f5a09c2e"]
    assert "parent iris-1-1-0 not found in namespace models" in lineage


def test_experiment_arms_outcomes_and_winner(capsys):
    text = card(capsys, "iris-r3f5a09c2e", "--file", CLUSTER, "--file", EXPERIMENTS)
    exp = section(text, "Experiments")
    assert "### Experiment `iris-ab`" in exp
    assert "**Winner: `treatment`** (this version won)." in exp
    arms = {r[0]: r[1:] for r in table_rows(exp)}
    assert arms["`treatment` (this)"][:5] == ["iris-r3f5a09c2e", "50", "1190", "1080", "0.73"]
    assert arms["`control`"][:5] == ["iris-1-1-0", "50", "1210", "1100", "0.61"]
    # The loser's card names the same winner; the other namespace's experiment stays out.
    loser = card(capsys, "iris-1-1-0", "--file", CLUSTER, "--file", EXPERIMENTS)
    assert "**Winner: `treatment`** (this version lost)." in loser
    assert "staging-ab" not in loser


def test_drift_of_the_monitors_of_its_deployments(capsys):
    text = card(capsys, "iris-1-1-0", "--file", CLUSTER)
    drift = section(text, "Drift")
    assert "### DriftMonitor `iris-drift` (ModelDeployment `iris`)" in drift
    assert "on this version: drift detected, 1800 rows" in drift
    feats = {r[0]: r for r in table_rows(drift) if r[0] in ("petal_length", "sepal_width")}
    assert feats["petal_length"][1:] == ["psi", "0.41", "1e-05", "0.52", "**yes**"]
    assert feats["sepal_width"][-1] == "no"
    assert "3 checks from 2025-03-01T12:00:00Z to 2025-03-01T12:10:00Z, 2 in breach" in drift
    assert "Last action: Retrain" in drift
    # A monitor of a deployment that does not serve this version is not on its card...
    assert "unrelated-drift" not in drift and "zzz_unrelated" not in drift
    # ...but is on the card of the version it watches.
    assert "zzz_unrelated" in section(card(capsys, "iris-1-0-0", "--file", CLUSTER), "Drift")


def test_a_version_without_deployments_drift_or_experiments(capsys):
    text = render_card("lonely", [{"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelVersion",
                                   "metadata": {"name": "lonely"},
                                   "spec": {"model": "m", "version": "0.1.0", "artifact": {"uri": "/m.skops"}}}])
    assert "No ModelDeployment wants, serves or shadows this version." in text
    assert "No DriftMonitor watches" in text
    assert "took part in no Experiment" in text
    assert "No thresholds" in text and "No signature" in text


def test_output_file(tmp_path, capsys):
    out = tmp_path / "CARD.md"
    assert main(["card", "iris-1-1-0", "--file", CLUSTER, "--output", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert out.read_text().startswith("# Model card: iris 1.1.0\n")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLSTEWARD, "card", *args], capture_output=True, text=True, timeout=120)


def assert_usage_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    assert_usage_error(run("iris-9-9-9", "--file", CLUSTER), "ModelVersion iris-9-9-9 not found",
                       "iris-1-1-0")
    assert_usage_error(run("iris-1-1-0", "--file", str(tmp_path / "missing.yaml")), "missing.yaml: file not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: ModelVersion\nmetadata: {name: x\n")
    assert_usage_error(run("x", "--file", str(bad)), "bad.yaml: invalid YAML at line")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    assert_usage_error(run("x", "--file", str(scalar)), "scalar.yaml: document 1 is not a Kubernetes object")
    unreadable = tmp_path / "dir.yaml"
    unreadable.mkdir()
    assert_usage_error(run("x", "--file", str(unreadable)), "dir.yaml: cannot read")
    assert_usage_error(run("x", "--kubeconfig", str(tmp_path / "nokubeconfig")), "kubeconfig")


def test_same_name_in_two_namespaces_needs_n(tmp_path, capsys):
    docs = tmp_path / "two.yaml"
    docs.write_text("\n---\n".join(
        f"apiVersion: mlsteward.io/v1alpha1\nkind: ModelVersion\nmetadata: {{name: m, namespace: {ns}}}\n"
        f"spec: {{model: m, version: {v}, artifact: {{uri: /m}}}}" for ns, v in (("a", "1.0.0"), ("b", "2.0.0"))))
    assert main(["card", "m", "--file", str(docs)]) == 2
    assert "several namespaces (a, b): choose one with -n" in capsys.readouterr().err
    assert "# Model card: m 2.0.0" in card(capsys, "m", "--file", str(docs), "-n", "b")
