"""The API models as the operator uses them: wire names, defaults, the rules pydantic shares with CEL, settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from mlsteward_operator.api import KINDS, ModelDeploymentSpec, ModelVersionSpec
from mlsteward_operator.api.common import parse_duration
from mlsteward_operator.api.driftmonitor import DriftMonitorSpec
from mlsteward_operator.api.experiment import ExperimentSpec
from mlsteward_operator.api.modelversion import VALIDATED_METRICS
from mlsteward_operator.config import OperatorConfig

SHA = "ef" * 32
MV = {"model": "iris", "version": "1.0.0", "artifact": {"uri": "/m/a.skops", "sha256": SHA}}


def test_wire_names_are_kubernetes_style() -> None:
    spec = ModelDeploymentSpec.model_validate({
        "version": "iris-1",
        "autoscaling": {"maxReplicas": 4, "targetCPUUtilization": 50},
        "rollout": {"strategy": "Canary", "analysis": {"maxP99LatencyMs": 80.0, "maxErrorRate": 0.01}},
    })
    wire = spec.to_k8s()
    assert wire["autoscaling"] == {"minReplicas": 1, "maxReplicas": 4, "targetCPUUtilization": 50}
    assert wire["rollout"]["analysis"] == {"maxErrorRate": 0.01, "maxP99LatencyMs": 80.0, "minRequests": 0}
    assert wire["rollout"]["steps"] == [10, 50, 100] and wire["rollout"]["stepInterval"] == "1m"
    assert "replicas" not in wire  # unset stays unset: it is exclusive with autoscaling


def test_unknown_fields_from_a_newer_crd_are_ignored() -> None:
    spec = ModelVersionSpec.model_validate({
        "model": "iris", "version": "1.0.0", "artifact": {"uri": "/m/a.skops", "sha256": SHA}, "futureField": 1,
    })
    assert spec.artifact.format == "skops" and spec.framework.name == "sklearn"


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        (ModelDeploymentSpec, {"version": "v", "replicas": 1, "autoscaling": {"maxReplicas": 2}}, "not both"),
        (ModelDeploymentSpec, {"version": "v", "autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "must not exceed"),
        (ModelDeploymentSpec, {"version": "v", "rollout": {"steps": [10, 100, 100]}}, "strictly ascend"),
        (ModelDeploymentSpec, {"version": "v", "rollout": {"steps": [10, 60]}}, "end at 100"),
        (ModelDeploymentSpec, {"version": "v", "rollout": {"stepInterval": "soon"}}, "stepInterval"),
        (ModelVersionSpec, {"model": "iris", "version": "1.0", "artifact": {"uri": "/a", "sha256": SHA}}, "version"),
        (ModelVersionSpec, {"model": "iris", "version": "1.0.0", "artifact": {"uri": "/a", "sha256": SHA.upper()}},
         "64 lowercase hex"),
        (ModelVersionSpec, {"model": "iris", "version": "1.0.0", "artifact": {"uri": "/a", "sha256": SHA},
                            "validation": {"dataset": "/d.csv", "target": "y", "thresholds": ["accuracy = 1"]}},
         "thresholds"),
        (ExperimentSpec, {"deployment": "d", "variants": [{"name": "a", "version": "v1", "weight": 50},
                                                          {"name": "b", "version": "v2", "weight": 60}]}, "sum to 100"),
        (DriftMonitorSpec, {"deployment": "d", "actions": ["Retrain"]}, "retrain.template"),
    ],
)
def test_models_refuse_what_the_crd_refuses(model: type, body: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        model.model_validate(body)


def test_thresholds_accept_the_validate_syntax() -> None:
    spec = ModelVersionSpec.model_validate({
        "model": "iris", "version": "1.0.0-rc.1+build.7", "artifact": {"uri": "/a", "sha256": SHA},
        "validation": {"dataset": "/d.csv", "target": "y", "thresholds": ["accuracy >= 0.7", "rmse<3.5", "r2>-1e-3"]},
    })
    assert spec.validation is not None and len(spec.validation.thresholds) == 3


def test_parse_duration() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("5m") == 300
    assert parse_duration("1h30m") == 5400
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_every_kind_is_registered_once() -> None:
    assert [k.kind for k in KINDS] == ["ModelVersion", "ModelDeployment", "Experiment", "DriftMonitor"]
    assert len({k.plural for k in KINDS}) == 4


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSTEWARD_OPERATOR_IMAGE", "reg/mlsteward:9")
    monkeypatch.setenv("MLSTEWARD_OPERATOR_NAMESPACES", "team-a, team-b")
    monkeypatch.setenv("MLSTEWARD_OPERATOR_ARTIFACT_VOLUME_TYPE", "hostPath")
    monkeypatch.setenv("MLSTEWARD_OPERATOR_PREDICTOR_RESOURCES", '{"requests": {"cpu": "1"}}')
    cfg = OperatorConfig()
    assert cfg.image == "reg/mlsteward:9" and cfg.namespaces == ["team-a", "team-b"]
    assert cfg.artifact_volume_type == "hostPath" and cfg.predictor_resources == {"requests": {"cpu": "1"}}
    assert (cfg.predictor_port, cfg.router_port, cfg.image_pull_policy) == (8080, 8080, "IfNotPresent")


# --------------------------------------------------------------------------------------------------------------
# Admission edges (tests/fixtures/admission.yaml): the models agree with the API server on every case
# --------------------------------------------------------------------------------------------------------------

ADMISSION = yaml.safe_load((Path(__file__).resolve().parents[2] / "fixtures" / "admission.yaml").read_text())
SPECS = {info.kind: info.spec for info in KINDS}


@pytest.mark.parametrize("case", ADMISSION["accepted"], ids=[c["what"] for c in ADMISSION["accepted"]])
def test_models_accept_the_edge_values_the_crd_accepts(case: dict) -> None:
    spec = SPECS[case["kind"]].model_validate(case["spec"])
    assert spec.to_k8s()


@pytest.mark.parametrize("case", ADMISSION["refused"], ids=[c["what"] for c in ADMISSION["refused"]])
def test_models_refuse_the_values_the_crd_refuses(case: dict) -> None:
    with pytest.raises(ValidationError) as caught:
        SPECS[case["kind"]].model_validate(case["spec"])
    if not case.get("schema"):  # a CEL rule: pydantic answers with the same message
        assert case["expect"] in str(caught.value)


def test_threshold_metrics_are_those_validate_computes() -> None:
    from mlsteward_runtime.stats import evaluate

    computed = {*evaluate.CLASSIFIER_METRICS, *evaluate.REGRESSOR_METRICS, *evaluate._ALIASES}
    assert set(VALIDATED_METRICS) == computed
    # Every threshold the CRD accepts, the validate command parses to the same metric, operator and number.
    for text in ["accuracy >= 0.7", "AUC>0.8", "rmse < 3.5e1", "r2 > -1e-3", "f1<=1"]:
        ModelVersionSpec.model_validate({**MV, "validation": {"dataset": "/d.csv", "target": "y", "thresholds": [text]}})
        parsed = evaluate.parse_threshold(text)
        assert parsed.metric in computed


@pytest.mark.parametrize("uri", ["/m/a.skops", "file:///m/a.skops", "file://localhost/m/a.skops",
                                 "http://h/a", "https://h:8443/a?x=1", "s3://bucket/k", "s3://bucket/dir/k.skops"])
def test_uris_the_fetcher_reads_are_accepted(uri: str, tmp_path: Path) -> None:
    ModelVersionSpec.model_validate({**MV, "artifact": {"uri": uri, "sha256": SHA}})


@pytest.mark.parametrize("uri", ["m/a.skops", "./a.skops", "gs://b/k", "ftp://h/a", "file://host/m/a", "file:a",
                                 "s3://bucket", "s3://bucket/", "https://", " /m/a.skops", "/m/a.skops\n"])
def test_uris_the_fetcher_cannot_read_are_refused(uri: str) -> None:
    from mlsteward_runtime.artifacts import fetch_artifact
    from mlsteward_runtime.errors import ModelLoadError

    with pytest.raises(ValidationError, match="artifact.uri must be an absolute path"):
        ModelVersionSpec.model_validate({**MV, "artifact": {"uri": uri, "sha256": SHA}})
    if not uri.startswith(("http", "s3")):  # no network from a unit test; the rest fail before any I/O
        with pytest.raises(ModelLoadError):
            fetch_artifact(uri)


@pytest.mark.parametrize(("value", "ok"), [
    ("1ms", True), ("0.5s", True), ("1h30m", True), ("8760h", True), ("525600m", True), ("999999ms", True),
    ("0s", False), ("0.0h", False), ("8760h1ms", False), ("1000000ms", False), ("9999999999999999h", False),
    ("-1s", False), ("1d", False), ("", False),
])
def test_durations_are_above_zero_and_at_most_a_year(value: str, ok: bool) -> None:
    body = {"version": "v", "rollout": {"stepInterval": value}}
    if ok:
        assert ModelDeploymentSpec.model_validate(body).rollout.step_interval == value
    else:
        with pytest.raises(ValidationError, match="rollout.stepInterval"):
            ModelDeploymentSpec.model_validate(body)


def test_a_zero_cooldown_means_none_and_is_accepted() -> None:
    assert DriftMonitorSpec.model_validate({"deployment": "d", "cooldown": "0s"}).cooldown == "0s"
    with pytest.raises(ValidationError, match="spec.interval must be a duration"):
        DriftMonitorSpec.model_validate({"deployment": "d", "interval": "0s"})
