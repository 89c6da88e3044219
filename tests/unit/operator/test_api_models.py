"""The API models as the operator uses them: wire names, defaults, the rules pydantic shares with CEL, settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mlsteward_operator.api import KINDS, ModelDeploymentSpec, ModelVersionSpec
from mlsteward_operator.api.common import parse_duration
from mlsteward_operator.api.driftmonitor import DriftMonitorSpec
from mlsteward_operator.api.experiment import ExperimentSpec
from mlsteward_operator.config import OperatorConfig

SHA = "ef" * 32


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
