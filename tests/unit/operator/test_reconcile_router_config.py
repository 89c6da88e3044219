"""Every router configuration the operator renders along a switch is one the router itself accepts."""

from __future__ import annotations

from mlsteward_operator.modeldeployment import render
from mlsteward_operator.api.modeldeployment import ModelDeployment
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.modeldeployment.rollout.base import Observed, VersionFacts
from mlsteward_operator.modeldeployment.rollout.immediate import plan_deployment
from mlsteward_operator.modeldeployment.reconcile import desired_children
from mlsteward_runtime.router.config import parse_config


def _mv(name: str) -> ModelVersion:
    return ModelVersion.model_validate({
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": "ns", "uid": "u-" + name},
        "spec": {"model": "iris", "version": "1.0.0",
                 "artifact": {"uri": f"http://a/{name}.skops", "sha256": "a" * 64}},
        "status": {"phase": "Ready"},
    })


def test_router_config_is_valid_at_every_stage_of_a_switch():
    md = ModelDeployment.model_validate({
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "iris", "namespace": "ns", "uid": "u-md", "generation": 2},
        "spec": {"version": "v2"}, "status": {"servingVersion": "v1"},
    })
    versions = {"v1": _mv("v1"), "v2": _mv("v2")}
    facts = {n: VersionFacts(n, exists=True, model="iris", phase="Ready") for n in versions}
    stages = [
        Observed(predictor_ready={"v1": True, "v2": False}, router_on="v1"),  # warming v2
        Observed(predictor_ready={"v1": True, "v2": True}, router_on="v1"),   # switching
        Observed(predictor_ready={"v2": True}, router_on="v2"),               # done
    ]
    targets = []
    for observed in stages:
        plan = plan_deployment(facts["v2"], facts["v1"], observed)
        children = desired_children(md, versions, plan, OperatorConfig())
        (cm,) = [c for c in children if c["kind"] == "ConfigMap" and c["metadata"]["name"] == "iris-router"]
        config = parse_config(cm["data"][render.ROUTER_CONFIG_FILE], "router.json")
        assert config.stable_version == plan.router_target
        assert [b.version for b in config.backends if b.weight == 100] == [plan.router_target]
        targets.append(plan.router_target)
    assert targets == ["v1", "v2", "v2"]
