"""The tool verbs through the installed console script: output, files written and exit codes."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as st

from mlsteward_runtime.contracts import Profile, ValidationResult

MLSTEWARD = str(Path(sys.executable).with_name("mlsteward"))


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLSTEWARD, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def assert_usage_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)

    def table(n: int, shift: float, probs: list[float]) -> list[list[object]]:
        x = rng.normal(shift, 1.0, size=n)
        z = rng.normal(size=n)
        seg = rng.choice(["a", "b", "c"], size=n, p=probs)
        label = ((x - shift) + 0.5 * z + rng.normal(0, 0.5, size=n) > 0).astype(int)
        return [[round(a, 5), round(b, 5), s, int(lab)] for a, b, s, lab in zip(x, z, seg, label)]

    header = ["x", "z", "segment", "label"]
    out = {
        "ref": write_csv(d / "ref.csv", header, table(3000, 0.0, [0.5, 0.3, 0.2])),
        "same": write_csv(d / "same.csv", header, table(2000, 0.0, [0.5, 0.3, 0.2])),
        "shifted": write_csv(d / "shifted.csv", header, table(2000, 0.5, [0.2, 0.3, 0.5])),
    }
    numeric = [[r[0], r[1], r[3]] for r in csv.reader(out["ref"].open())][1:]
    out["train"] = write_csv(d / "train.csv", ["x", "z", "label"], numeric)
    out["dir"] = d
    return out


# ---------------------------------------------------------------------------------------------------------------
# profile and drift
# ---------------------------------------------------------------------------------------------------------------


def test_profile_writes_a_profile_without_the_target(data, tmp_path):
    out = tmp_path / "p.json"
    proc = run("profile", str(data["ref"]), "--out", str(out), "--target", "label", "--sample-size", "500")
    assert proc.returncode == 0, proc.stderr
    prof = Profile.model_validate_json(out.read_text())
    assert prof.rows == 3000 and set(prof.features) == {"x", "z", "segment"}
    assert len(prof.features["x"].sample) == 500 and len(prof.features["x"].bin_fractions) == 10
    assert sum(prof.features["segment"].categories.values()) == 3000


def test_drift_json_shape_and_verdicts(data):
    proc = run("drift", str(data["ref"]), str(data["shifted"]), "--target", "label")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert set(rep) == {"drift_detected", "n_reference", "n_current", "features"}
    assert rep["drift_detected"] is True and rep["n_reference"] == 3000 and rep["n_current"] == 2000
    x, seg, z = rep["features"]["x"], rep["features"]["segment"], rep["features"]["z"]
    assert x["type"] == "numeric" and x["drift"] is True
    assert set(x["tests"]) == {"ks", "wasserstein", "psi"}
    assert seg["type"] == "categorical" and seg["drift"] is True
    assert set(seg["tests"]) == {"chi2", "jensen_shannon", "psi"}
    assert z["drift"] is False
    # KS as scipy computes it on the raw columns.
    ref = [float(r["x"]) for r in csv.DictReader(data["ref"].open())]
    cur = [float(r["x"]) for r in csv.DictReader(data["shifted"].open())]
    assert x["tests"]["ks"]["statistic"] == pytest.approx(st.ks_2samp(ref, cur).statistic)


def test_drift_against_a_profile_and_table_format(data, tmp_path):
    prof = tmp_path / "p.json"
    assert run("profile", str(data["ref"]), "--out", str(prof), "--target", "label").returncode == 0
    same = run("drift", str(prof), str(data["same"]), "--format", "table", "--exit-code")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "no drift" in same.stdout.splitlines()[-1]
    shifted = run("drift", str(prof), str(data["shifted"]), "--format", "table", "--exit-code")
    assert shifted.returncode == 1
    assert "drift detected in x, segment" in shifted.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["missing.csv", "{same}"], ["missing.csv", "not found"]),
        (["{ref}", "{same}", "--features", "nope"], ["no feature 'nope'"]),
        (["{ref}", "{same}", "--alpha", "2"], ["alpha"]),
        (["{ref}", "{same}", "--categorical", "bogus"], ["--categorical", "bogus"]),
        (["{bad}", "{same}"], ["line 3 has 1 fields"]),
    ],
)
def test_drift_bad_input_is_one_line_exit_2(data, args, needles):
    bad = data["dir"] / "bad.csv"
    bad.write_text("a,b\n1,2\n3\n")
    argv = [a.format(ref=data["ref"], same=data["same"], bad=bad) for a in args]
    assert_usage_error(run("drift", *argv), *needles)


# ---------------------------------------------------------------------------------------------------------------
# ab
# ---------------------------------------------------------------------------------------------------------------


def test_ab_binary_json_matches_statsmodels(tmp_path):
    from statsmodels.stats.proportion import proportions_ztest

    c = write_csv(tmp_path / "c.csv", ["value"], [[1]] * 100 + [[0]] * 900)
    t = write_csv(tmp_path / "t.csv", ["value"], [[1]] * 140 + [[0]] * 860)
    proc = run("ab", str(c), str(t), "--metric", "binary")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"test", "control", "treatment", "lift", "p_value", "ci95", "prob_treatment_better",
                        "significant"}
    assert out["test"] == "two_proportion_z"
    assert out["control"] == {"n": 1000, "mean": 0.1} and out["treatment"] == {"n": 1000, "mean": 0.14}
    assert out["p_value"] == pytest.approx(proportions_ztest([140, 100], [1000, 1000])[1])
    assert out["lift"] == pytest.approx(0.4) and out["significant"] is True
    assert out["ci95"][0] < 0.04 < out["ci95"][1] and out["prob_treatment_better"] > 0.99


def test_ab_continuous_uses_welch_and_the_column(tmp_path):
    rng = np.random.default_rng(1)
    a, b = rng.normal(10, 2, 200), rng.normal(10.2, 4, 150)
    c = write_csv(tmp_path / "c.csv", ["id", "revenue"], [[i, v] for i, v in enumerate(a)])
    t = write_csv(tmp_path / "t.csv", ["id", "revenue"], [[i, v] for i, v in enumerate(b)])
    out = json.loads(run("ab", str(c), str(t), "--metric", "continuous", "--column", "revenue").stdout)
    oracle = st.ttest_ind(b, a, equal_var=False)
    assert out["test"] == "welch_t" and out["p_value"] == pytest.approx(oracle.pvalue, rel=1e-6)
    ci = oracle.confidence_interval()
    assert out["ci95"] == pytest.approx([ci.low, ci.high], rel=1e-6)
    table = run("ab", str(c), str(t), "--metric", "continuous", "--column", "revenue", "--format", "table")
    assert table.returncode == 0 and "welch_t" in table.stdout and "P(treatment better)" in table.stdout


def test_ab_bad_input(tmp_path):
    c = write_csv(tmp_path / "c.csv", ["value"], [[1], [0], [2]])
    t = write_csv(tmp_path / "t.csv", ["value"], [[1], [0]])
    assert_usage_error(run("ab", str(c), str(t), "--metric", "binary"), "c.csv", "0 or 1")
    assert_usage_error(run("ab", str(t), str(t), "--metric", "binary", "--column", "clicks"), "no column 'clicks'")
    assert run("ab", str(t), str(t)).returncode == 2  # --metric is required


# ---------------------------------------------------------------------------------------------------------------
# train, register, validate
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(data) -> dict[str, object]:
    out = data["dir"] / "models" / "m.skops"
    res = data["dir"] / "train-result.json"
    proc = run("train", "--estimator", "sklearn.linear_model.LogisticRegression", "--params", '{"max_iter": 300}',
               "--data", str(data["train"]), "--target", "label", "--output", str(out), "--result-file", str(res))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"path": out, "stdout": json.loads(proc.stdout), "file": json.loads(res.read_text())}


def test_train_writes_artifact_profile_and_result(trained):
    result = trained["stdout"]
    assert result == trained["file"]
    assert result["phase"] == "Succeeded" and result["reason"] == "Trained"
    path = trained["path"]
    assert result["artifact"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    profile = path.with_name("m.profile.json")
    assert result["reference"] == {"uri": str(profile), "sha256": hashlib.sha256(profile.read_bytes()).hexdigest()}
    assert set(result["metrics"]) == {"accuracy", "f1_macro", "roc_auc"} and result["metrics"]["accuracy"] > 0.7
    assert result["rows"] == {"train": 2250, "test": 750}
    assert [i["name"] for i in result["signature"]["inputs"]] == ["x", "z"]


def test_train_failures(data, tmp_path):
    failed = run("train", "--estimator", "sklearn.linear_model.LogisticRegression", "--data", str(data["ref"]),
                 "--target", "label", "--output", str(tmp_path / "m.skops"))
    assert failed.returncode == 1
    res = json.loads(failed.stdout)
    assert res["phase"] == "Failed" and res["reason"] == "TrainingFailed" and "segment" in res["message"]
    missing = run("train", "--estimator", "sklearn.linear_model.LogisticRegression", "--data",
                  str(tmp_path / "none.csv"), "--target", "label", "--output", str(tmp_path / "m.skops"))
    assert missing.returncode == 1 and json.loads(missing.stdout)["reason"] == "FetchFailed"
    assert_usage_error(run("train", "--estimator", "sklearn.linear_model.Nope", "--data", str(data["train"]),
                           "--target", "label", "--output", "m.skops"), "--estimator", "cannot import")
    assert_usage_error(run("train", "--estimator", "sklearn.linear_model.LogisticRegression", "--params", "[1]",
                           "--data", str(data["train"]), "--target", "label", "--output", "m.skops"), "--params")


def test_register_prints_a_model_version(trained, data, tmp_path):
    prof = tmp_path / "ref.json"
    proc = run("register", str(trained["path"]), "--model", "churn", "--version", "1.2.0", "--data",
               str(data["train"]), "--target", "label", "--profile-out", str(prof), "--uri", "s3://m/churn/m.skops")
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load(proc.stdout)
    assert doc["apiVersion"] == "mlsteward.io/v1alpha1" and doc["kind"] == "ModelVersion"
    assert doc["metadata"]["name"] == "churn-1-2-0"
    spec = doc["spec"]
    assert spec["model"] == "churn" and spec["version"] == "1.2.0"
    assert spec["artifact"] == {"uri": "s3://m/churn/m.skops", "format": "skops",
                                "sha256": hashlib.sha256(trained["path"].read_bytes()).hexdigest()}
    assert spec["framework"]["name"] == "sklearn"
    assert [i["name"] for i in spec["signature"]["inputs"]] == ["x", "z"]
    assert spec["signature"]["output"] == {"kind": "class", "classes": [0, 1]}
    assert spec["reference"] == {"uri": str(prof), "sha256": hashlib.sha256(prof.read_bytes()).hexdigest()}
    assert spec["metrics"]["accuracy"] > 0.7
    assert_usage_error(run("register", str(trained["path"]), "--model", "m", "--version", "one"), "semantic version")
    assert_usage_error(run("register", str(tmp_path / "nope.skops"), "--model", "m", "--version", "1.0.0"),
                       "no such file")


def _validate(trained, data, tmp_path, *extra: str) -> tuple[subprocess.CompletedProcess[str], ValidationResult]:
    res = tmp_path / "result.json"
    proc = run("validate", "--uri", str(trained["path"]), "--result-file", str(res), *extra)
    return proc, ValidationResult.model_validate_json(res.read_text())


def test_validate_ready_writes_metrics_golden_and_reference(trained, data, tmp_path):
    sha = trained["stdout"]["artifact"]["sha256"]
    ref = tmp_path / "reference.json"
    proc, result = _validate(trained, data, tmp_path, "--sha256", sha, "--validation-data", str(data["train"]),
                             "--target", "label", "--threshold", "accuracy>=0.7", "--threshold", "roc_auc > 0.75",
                             "--reference-out", str(ref),
                             "--signature-json", json.dumps(trained["stdout"]["signature"]))
    assert proc.returncode == 0, proc.stdout
    assert result.phase == "Ready" and result.reason == "Validated" and result.sha256 == sha
    assert result.metrics["accuracy"] >= 0.7
    assert result.golden is not None and len(result.golden.inputs[0]) == 2 and result.golden.outputs[0] in (0, 1)
    assert result.reference.uri == str(ref)
    assert result.reference.sha256 == hashlib.sha256(ref.read_bytes()).hexdigest()
    assert len((tmp_path / "result.json").read_bytes()) < 4096


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--sha256", "0" * 64], "DigestMismatch"),
        (["--signature-json", '{"inputs": [{"name": "only"}]}'], "SignatureMismatch"),
        (["--validation-data", "{train}", "--target", "label", "--threshold", "accuracy>=0.999"], "BelowThreshold"),
        (["--validation-data", "{train}", "--target", "label", "--threshold", "rmse<=1"], "BelowThreshold"),
        (["--validation-data", "{missing}", "--target", "label"], "FetchFailed"),
        (["--format", "joblib", "--allow-unverified"], "LoadFailed"),
    ],
)
def test_validate_failures_have_reasons_and_exit_1(trained, data, tmp_path, extra, reason):
    argv = [a.replace("{train}", str(data["train"])).replace("{missing}", str(tmp_path / "none.csv")) for a in extra]
    proc, result = _validate(trained, data, tmp_path, *argv)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert result.phase == "Failed" and result.reason == reason, result
    assert "Traceback" not in proc.stderr


def test_validate_fetch_failure_of_the_artifact(tmp_path):
    res = tmp_path / "r.json"
    proc = run("validate", "--uri", str(tmp_path / "none.skops"), "--result-file", str(res))
    assert proc.returncode == 1 and ValidationResult.model_validate_json(res.read_text()).reason == "FetchFailed"


def test_validate_bad_flags_exit_2(trained):
    assert_usage_error(run("validate", "--uri", str(trained["path"]), "--threshold", "accuracy=>0.7",
                           "--validation-data", "x.csv", "--target", "y"), "--threshold", "accuracy=>0.7")
    assert_usage_error(run("validate", "--uri", str(trained["path"]), "--signature-json", "{"),
                       "--signature-json")


@pytest.mark.parametrize("verb", ["profile", "drift", "ab", "register", "validate", "train"])
def test_help_teaches_the_verb_with_examples(verb):
    proc = run(verb, "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout and f"mlsteward {verb}" in proc.stdout
