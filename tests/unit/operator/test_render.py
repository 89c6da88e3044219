"""The builders, field by field: names, labels, owner references, pods, probes, configs, the validation Job."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mlsteward_runtime.contracts import RouterConfig, RuntimeConfig

from mlsteward_operator.kernel import names
from mlsteward_operator.modeldeployment import render
from mlsteward_operator.modelversion import render as mv_render
from mlsteward_operator.api import ModelDeployment, ModelVersion
from mlsteward_operator.api.modeldeployment import TrafficEntry
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.errors import InvalidSpec, NotReady

SHA = "ab" * 32
CFG = OperatorConfig(image="registry.local/mlsteward:1.2.3")


def mv(name: str = "iris-1-0-0", version: str = "1.0.0", **spec: Any) -> ModelVersion:
    body = {
        "apiVersion": "mlsteward.io/v1alpha1",
        "kind": "ModelVersion",
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "model": "iris",
            "version": version,
            "artifact": {"uri": f"file:///models/{name}.skops", "sha256": SHA, "format": "skops"},
            **spec,
        },
    }
    return ModelVersion.model_validate(body)


def ready(m: ModelVersion) -> ModelVersion:
    return m.model_copy(update={"status": m.status.model_copy(update={
        "phase": "Ready",
        "golden": {"inputs": [[5.1, 3.5, 1.4, 0.2]], "outputs": [0]},
        "signature": {"inputs": [{"name": "sepal_length"}], "output": {"kind": "class", "classes": [0, 1, 2]}},
    })})


def md(name: str = "iris", **spec: Any) -> ModelDeployment:
    return ModelDeployment.model_validate({
        "metadata": {"name": name, "namespace": "ml", "uid": "uid-md", "generation": 3},
        "spec": {"version": "iris-1-0-0", **spec},
    })


def by_kind(children: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(c["kind"], c["metadata"]["name"]): c for c in children}


V1 = ready(mv())
V2 = ready(mv("iris-1-1-0", "1.1.0"))
VERSIONS = {"iris-1-0-0": V1, "iris-1-1-0": V2}
TRAFFIC = [TrafficEntry(version="iris-1-0-0", weight=100)]


# ---- names and labels ----------------------------------------------------------------------------------------


def test_names_are_plain_when_possible_and_hashed_when_not() -> None:
    assert names.predictor_name("iris", "iris-1-0-0") == "iris-iris-1-0-0"
    assert names.router_name("iris") == "iris-router"
    assert names.service_name("iris") == "iris"
    dotted = names.predictor_name("iris", "iris.v1")
    assert dotted.startswith("iris-iris-v1-") and len(dotted) == len("iris-iris-v1-") + 8
    assert dotted != names.predictor_name("iris", "iris-v1")  # cleaning never makes two names collide
    long = names.predictor_name("a" * 60, "b" * 60)
    assert len(long) == 63 and long == names.predictor_name("a" * 60, "b" * 60)
    assert long[:-9] == "a" * 54 and long[-9] == "-"
    # A version called "router" does not take the router's name.
    assert names.predictor_name("iris", "router") != names.router_name("iris")


def test_label_values_are_valid_and_stable() -> None:
    assert names.label_value("iris-1-0-0") == "iris-1-0-0"
    long = names.label_value("v" * 100)
    assert len(long) <= 63 and long == names.label_value("v" * 100)
    plus = names.label_value("1.0.0+build.5")
    assert "+" not in plus and plus.startswith("1.0.0-build.5-")


def test_owner_reference_from_parent_metadata() -> None:
    ref = names.owner_reference(md().metadata, "ModelDeployment")
    assert ref == {
        "apiVersion": "mlsteward.io/v1alpha1",
        "kind": "ModelDeployment",
        "name": "iris",
        "uid": "uid-md",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    orphan = md().model_copy(update={"metadata": md().metadata.model_copy(update={"uid": None})})
    with pytest.raises(InvalidSpec):
        names.owner_reference(orphan.metadata, "ModelDeployment")


# ---- ModelDeployment children ---------------------------------------------------------------------------------


def test_one_version_renders_predictor_and_router_children() -> None:
    children = render.render_deployment(md(), VERSIONS, ["iris-1-0-0"], TRAFFIC, "iris-1-0-0", CFG)
    assert [names.child_key(c) for c in children] == [
        ("v1", "ConfigMap", "iris-iris-1-0-0"),
        ("apps/v1", "Deployment", "iris-iris-1-0-0"),
        ("v1", "Service", "iris-iris-1-0-0"),
        ("policy/v1", "PodDisruptionBudget", "iris-iris-1-0-0"),
        ("networking.k8s.io/v1", "NetworkPolicy", "iris-predictors"),
        ("v1", "ConfigMap", "iris-router"),
        ("v1", "ServiceAccount", "iris-router"),
        ("rbac.authorization.k8s.io/v1", "Role", "iris-router"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding", "iris-router"),
        ("apps/v1", "Deployment", "iris-router"),
        ("v1", "Service", "iris"),
        ("policy/v1", "PodDisruptionBudget", "iris-router"),
    ]
    for child in children:
        meta = child["metadata"]
        assert meta["namespace"] == "ml"
        assert meta["ownerReferences"] == [names.owner_reference(md().metadata, "ModelDeployment")]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "mlsteward"
        assert meta["labels"]["app.kubernetes.io/name"] == "mlsteward"
        assert meta["labels"]["mlsteward.io/deployment"] == "iris"


def test_predictor_deployment_pod_spec() -> None:
    children = by_kind(render.render_predictor(md(replicas=2), V1, CFG))
    deploy = children[("Deployment", "iris-iris-1-0-0")]
    spec = deploy["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"] == {
        "mlsteward.io/deployment": "iris", "app.kubernetes.io/component": "predictor",
        "mlsteward.io/version": "iris-1-0-0",
    }
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    labels = spec["template"]["metadata"]["labels"]
    assert labels["mlsteward.io/version"] == "iris-1-0-0" and labels["mlsteward.io/model"] == "iris"
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (c,) = pod["containers"]
    assert c["image"] == "registry.local/mlsteward:1.2.3" and c["imagePullPolicy"] == "IfNotPresent"
    assert c["command"] == ["mlsteward"]
    assert c["args"] == ["serve", "--config", "/etc/mlsteward/config.json", "--port", "8080"]
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert c["resources"] == CFG.predictor_resources
    assert {m["mountPath"]: m["name"] for m in c["volumeMounts"]} == {"/tmp": "tmp", "/etc/mlsteward": "config"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"] == {"name": "iris-iris-1-0-0"}
    assert "emptyDir" in volumes["tmp"]


def test_predictor_runtime_config_is_a_valid_runtime_config() -> None:
    children = by_kind(render.render_predictor(md(), V1, CFG))
    data = children[("ConfigMap", "iris-iris-1-0-0")]["data"]
    config = RuntimeConfig.model_validate_json(data["config.json"])
    assert config.name == "iris" and config.version == "1.0.0"
    assert config.artifact.uri == "file:///models/iris-1-0-0.skops" and config.artifact.sha256 == SHA
    assert config.golden is not None and config.golden.inputs == [[5.1, 3.5, 1.4, 0.2]]
    assert config.signature is not None and config.signature.names == ["sepal_length"]


def test_config_hash_changes_with_config_only() -> None:
    def hash_of(version: ModelVersion, deployment: ModelDeployment) -> str:
        children = by_kind(render.render_predictor(deployment, version, CFG))
        deploy = children[("Deployment", f"iris-{version.metadata.name}")]
        return deploy["spec"]["template"]["metadata"]["annotations"]["mlsteward.io/config-hash"]

    assert hash_of(V1, md()) == hash_of(V1, md(replicas=5))
    other_golden = V1.model_copy(update={"status": V1.status.model_copy(update={"golden": {"inputs": [[1, 2, 3, 4]]}})})
    assert hash_of(V1, md()) != hash_of(other_golden, md())


def test_predictor_service_and_pdb() -> None:
    children = by_kind(render.render_predictor(md(), V1, CFG))
    svc = children[("Service", "iris-iris-1-0-0")]["spec"]
    assert svc["selector"] == children[("Deployment", "iris-iris-1-0-0")]["spec"]["selector"]["matchLabels"]
    assert svc["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    pdb = children[("PodDisruptionBudget", "iris-iris-1-0-0")]["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": svc["selector"]}}


def test_autoscaling_renders_hpa_and_leaves_replicas_to_it() -> None:
    children = by_kind(render.render_predictor(
        md(autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": 60}), V1, CFG
    ))
    assert "replicas" not in children[("Deployment", "iris-iris-1-0-0")]["spec"]
    hpa = children[("HorizontalPodAutoscaler", "iris-iris-1-0-0")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iris-iris-1-0-0"},
        "minReplicas": 2,
        "maxReplicas": 5,
        "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}],
    }
    assert ("HorizontalPodAutoscaler", "iris-iris-1-0-0") not in by_kind(render.render_predictor(md(), V1, CFG))


def test_spec_resources_override_defaults() -> None:
    resources = {"requests": {"cpu": "2", "memory": "1Gi"}, "limits": {"memory": "2Gi", "cpu": 4}}
    children = by_kind(render.render_predictor(md(resources=resources), V1, CFG))
    (c,) = children[("Deployment", "iris-iris-1-0-0")]["spec"]["template"]["spec"]["containers"]
    assert c["resources"] == resources


def test_router_config_points_at_version_services_with_weights() -> None:
    traffic = [TrafficEntry(version="iris-1-0-0", weight=90), TrafficEntry(version="iris-1-1-0", weight=10)]
    children = by_kind(render.render_deployment(
        md(fallback=False), VERSIONS, ["iris-1-0-0", "iris-1-1-0"], traffic, "iris-1-0-0", CFG
    ))
    config = RouterConfig.model_validate_json(children[("ConfigMap", "iris-router")]["data"]["router.json"])
    assert config.deployment == "iris" and config.model == "iris"
    assert [(b.version, b.url, b.weight) for b in config.backends] == [
        ("iris-1-0-0", "http://iris-iris-1-0-0.ml.svc.cluster.local:8080", 90),
        ("iris-1-1-0", "http://iris-iris-1-1-0.ml.svc.cluster.local:8080", 10),
    ]
    assert config.stable_version == "iris-1-0-0" and config.fallback is False
    annotations = children[("ConfigMap", "iris-router")]["metadata"]["annotations"]
    assert annotations["mlsteward.io/traffic"] == "iris-1-0-0=90,iris-1-1-0=10"
    assert annotations["mlsteward.io/router-generation"] == config.generation and config.generation
    router = children[("Deployment", "iris-router")]
    assert "annotations" not in router["spec"]["template"]["metadata"]  # nothing of the config on the pods
    (c,) = router["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["route", "--config", "/etc/mlsteward/router.json", "--config-map", "iris-router",
                         "--port", "8080"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert router["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert router["spec"]["replicas"] == 1
    service = children[("Service", "iris")]["spec"]
    assert service["selector"] == {"mlsteward.io/deployment": "iris", "app.kubernetes.io/component": "router"}


def test_shadow_gets_a_predictor_and_a_router_entry() -> None:
    children = by_kind(render.render_deployment(
        md(shadow={"version": "iris-1-1-0", "percent": 20}), VERSIONS, ["iris-1-0-0"], TRAFFIC, "iris-1-0-0", CFG,
        shadow="iris-1-1-0",
    ))
    assert ("Deployment", "iris-iris-1-1-0") in children
    config = json.loads(children[("ConfigMap", "iris-router")]["data"]["router.json"])
    assert config["shadow"] == {
        "version": "iris-1-1-0", "url": "http://iris-iris-1-1-0.ml.svc.cluster.local:8080", "percent": 20,
    }


def test_nothing_servable_renders_no_router() -> None:
    assert render.render_deployment(md(), VERSIONS, [], [], None, CFG) == []


def test_missing_version_is_not_ready() -> None:
    with pytest.raises(NotReady) as caught:
        render.render_deployment(md(), {}, ["iris-1-0-0"], TRAFFIC, None, CFG)
    assert caught.value.reason == "VersionNotFound"


def test_rendering_is_deterministic() -> None:
    one = render.render_deployment(md(), VERSIONS, ["iris-1-0-0", "iris-1-1-0"], TRAFFIC, "iris-1-0-0", CFG)
    two = render.render_deployment(md(), VERSIONS, ["iris-1-0-0", "iris-1-1-0"], TRAFFIC, "iris-1-0-0", CFG)
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)


def test_artifact_volume_hostpath_and_pvc() -> None:
    host = OperatorConfig(artifact_volume_type="hostPath", artifact_mount_path="/models", artifact_host_path="/srv/m")
    pod = by_kind(render.render_predictor(md(), V1, host))[("Deployment", "iris-iris-1-0-0")]["spec"]["template"]["spec"]
    assert {"name": "artifacts", "hostPath": {"path": "/srv/m", "type": "Directory"}} in pod["volumes"]
    assert {"name": "artifacts", "mountPath": "/models", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    pvc = OperatorConfig(artifact_volume_type="pvc", artifact_claim_name="models", artifact_env_secret="s3-creds")
    job = mv_render.render_validation_job(V1, pvc)["spec"]["template"]["spec"]
    assert {"name": "artifacts", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in job["volumes"]
    assert job["containers"][0]["envFrom"] == [{"secretRef": {"name": "s3-creds", "optional": True}}]
    with pytest.raises(ValueError):
        OperatorConfig(artifact_volume_type="pvc")


def test_url() -> None:
    assert render.deployment_url(md(), CFG) == "http://iris.ml.svc.cluster.local:8080"


# ---- validation Job --------------------------------------------------------------------------------------------


def test_validation_job() -> None:
    version = mv(
        signature={"inputs": [{"name": "x", "type": "number"}], "output": {"kind": "class"}},
        validation={"dataset": "s3://data/iris.csv", "target": "species",
                    "thresholds": ["accuracy >= 0.9", "f1_macro>=0.8"]},
    )
    job = mv_render.render_validation_job(version, CFG)
    name = job["metadata"]["name"]
    assert name.startswith("iris-1-0-0-validate-") and len(name) == len("iris-1-0-0-validate-") + 10
    assert name == mv_render.validation_job_name(version)
    assert job["metadata"]["ownerReferences"] == [names.owner_reference(version.metadata, "ModelVersion")]
    assert job["metadata"]["labels"]["mlsteward.io/modelversion"] == "iris-1-0-0"
    spec = job["spec"]
    assert spec["backoffLimit"] == 0 and "ttlSecondsAfterFinished" not in spec
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert c["terminationMessagePolicy"] == "File" and c["terminationMessagePath"] == "/dev/termination-log"
    assert c["args"] == [
        "validate", "--uri", "file:///models/iris-1-0-0.skops", "--sha256", SHA, "--format", "skops",
        "--signature-json", '{"inputs":[{"name":"x","required":true,"type":"number"}],"output":{"kind":"class"}}',
        "--validation-data", "s3://data/iris.csv", "--target", "species",
        "--threshold", "accuracy>=0.9", "--threshold", "f1_macro>=0.8",
        "--result-file", "/dev/termination-log",
    ]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_validation_job_name_follows_the_spec() -> None:
    assert mv_render.validation_job_name(mv()) == mv_render.validation_job_name(mv())
    assert mv_render.validation_job_name(mv()) != mv_render.validation_job_name(mv(version="1.0.1"))


# ---- an Experiment on the router -----------------------------------------------------------------------------

def _experiment(strategy: str = "ThompsonSampling", variants: list[dict[str, Any]] | None = None) -> Any:
    from mlsteward_operator.api import Experiment

    return Experiment.model_validate({
        "metadata": {"name": "iris-ab", "namespace": "ml", "generation": 1},
        "spec": {"deployment": "iris", "strategy": {"type": strategy, "epsilon": 0.2},
                 "sticky": {"header": "x-user"},
                 "metric": {"name": "reward", "kind": "continuous", "goal": "minimize"},
                 "variants": [{"name": "control", "version": "iris-1-0-0", "weight": 70},
                              {"name": "treatment", "version": "iris-1-1-0", "weight": 30}]},
        "status": {"variants": variants or []},
    })


def _router(exp: Any) -> tuple[RouterConfig, dict[str, Any]]:
    traffic = [TrafficEntry(version="iris-1-0-0", weight=70), TrafficEntry(version="iris-1-1-0", weight=30)]
    children = by_kind(render.render_deployment(md(), VERSIONS, ["iris-1-0-0", "iris-1-1-0"], traffic,
                                                "iris-1-0-0", CFG, experiment=exp))
    config = RouterConfig.model_validate_json(children[("ConfigMap", "iris-router")]["data"]["router.json"])
    return config, children[("Deployment", "iris-router")]


def test_experiment_configures_strategy_sticky_metric_and_priors() -> None:
    exp = _experiment(variants=[
        {"name": "control", "version": "iris-1-0-0", "outcomes": 40, "outcomeSum": 12.5, "outcomeSumsq": 9.0},
        {"name": "treatment", "version": "iris-1-1-0", "outcomes": 0},
    ])
    config, _ = _router(exp)
    assert config.experiment == "iris-ab"
    assert config.strategy.value == "ThompsonSampling" and config.epsilon == 0.2
    assert config.sticky is not None and config.sticky.header == "x-user"
    assert (config.metric_kind, config.goal) == ("continuous", "minimize")
    # Only arms with outcomes have priors; they are the merged totals from status, as recorded.
    assert {v: (p.n, p.sum, p.sumsq) for v, p in config.outcome_priors.items()} == {"iris-1-0-0": (40, 12.5, 9.0)}
    assert [(b.version, b.weight) for b in config.backends] == [("iris-1-0-0", 70), ("iris-1-1-0", 30)]


def test_no_config_change_rolls_the_router_and_only_routing_changes_move_the_generation() -> None:
    before, router_before = _router(_experiment(variants=[
        {"name": "control", "version": "iris-1-0-0", "outcomes": 10, "outcomeSum": 4, "outcomeSumsq": 4}]))
    after, router_after = _router(_experiment(variants=[
        {"name": "control", "version": "iris-1-0-0", "outcomes": 50, "outcomeSum": 30, "outcomeSumsq": 30}]))
    assert before.outcome_priors != after.outcome_priors
    # New priors: the same generation (a canary step or an experiment start never waits on them).
    assert before.generation == after.generation
    other, router_other = _router(_experiment(strategy="EpsilonGreedy"))
    assert other.generation != before.generation
    # The configuration reaches the replicas through their ConfigMap: the pod template never changes with it.
    assert router_before["spec"]["template"] == router_after["spec"]["template"] == router_other["spec"]["template"]


# ---- access control --------------------------------------------------------------------------------------------


def _routed(m: ModelDeployment, cfg: OperatorConfig = CFG) -> tuple[dict[str, Any], RouterConfig]:
    children = by_kind(render.render_deployment(m, VERSIONS, ["iris-1-0-0"], TRAFFIC, "iris-1-0-0", cfg))
    cm = children[("ConfigMap", "iris-router")]
    return children[("Deployment", "iris-router")], RouterConfig.model_validate_json(cm["data"]["router.json"])


def test_auth_secret_is_mounted_read_only_as_the_tokens_file() -> None:
    deployment, config = _routed(md(auth={"secretRef": {"name": "iris-tokens", "key": "tokens.txt"}}))
    pod = deployment["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "auth")
    assert volume["secret"] == {"secretName": "iris-tokens", "items": [{"key": "tokens.txt", "path": "tokens"}],
                                "defaultMode": 0o440}
    container = pod["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "auth")
    assert mount == {"name": "auth", "mountPath": "/etc/mlsteward-auth", "readOnly": True}
    assert "subPath" not in mount  # a subPath mount would never see a rotated Secret
    # Tokens never in the environment.
    assert "envFrom" not in container and all("valueFrom" not in e or "secretKeyRef" not in e["valueFrom"]
                                              for e in container["env"])
    assert config.auth is not None and config.auth.tokens_file == "/etc/mlsteward-auth/tokens"
    assert config.auth.header == "x-api-key" and config.rate_limit is None
    # The router also watches the Secret itself (seconds, not the kubelet's sync), allowed for that one name.
    assert (config.auth.secret_name, config.auth.secret_key) == ("iris-tokens", "tokens.txt")
    role = by_kind(render.render_deployment(md(auth={"secretRef": {"name": "iris-tokens", "key": "t"}}), VERSIONS,
                                            ["iris-1-0-0"], TRAFFIC, "iris-1-0-0", CFG))[("Role", "iris-router")]
    assert role["rules"][1] == {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["iris-tokens"],
                                "verbs": ["get", "list", "watch"]}
    # Predictors get no token.
    children = render.render_deployment(md(auth={"secretRef": {"name": "iris-tokens", "key": "t"}}), VERSIONS,
                                        ["iris-1-0-0"], TRAFFIC, "iris-1-0-0", CFG)
    predictor = by_kind(children)[("Deployment", "iris-iris-1-0-0")]
    assert all(v["name"] != "auth" for v in predictor["spec"]["template"]["spec"]["volumes"])


def test_no_auth_renders_no_volume_and_no_auth_config() -> None:
    deployment, config = _routed(md())
    assert all(v["name"] != "auth" for v in deployment["spec"]["template"]["spec"]["volumes"])
    assert config.auth is None and config.rate_limit is None


def test_rate_limit_defaults_follow_the_crd() -> None:
    _, with_tokens = _routed(md(auth={"secretRef": {"name": "s", "key": "k"}, "header": "X-Key",
                                      "rateLimit": {"requestsPerSecond": 2.5}}))
    assert with_tokens.auth is not None and with_tokens.auth.header == "X-Key"
    assert with_tokens.rate_limit is not None
    assert (with_tokens.rate_limit.requests_per_second, with_tokens.rate_limit.burst,
            with_tokens.rate_limit.by) == (2.5, 3, "token")
    deployment, by_source = _routed(md(auth={"rateLimit": {"requestsPerSecond": 10, "burst": 50}}))
    assert by_source.auth is None
    assert by_source.rate_limit is not None and (by_source.rate_limit.burst, by_source.rate_limit.by) == (50, "source")
    assert all(v["name"] != "auth" for v in deployment["spec"]["template"]["spec"]["volumes"])


def test_a_change_of_auth_moves_the_generation_and_only_a_new_secret_changes_the_pods() -> None:
    def generation(m: ModelDeployment) -> str | None:
        return _routed(m)[1].generation

    def template(m: ModelDeployment) -> dict[str, Any]:
        return _routed(m)[0]["spec"]["template"]

    plain = generation(md())
    tokens = generation(md(auth={"secretRef": {"name": "s", "key": "k"}}))
    limited = generation(md(auth={"secretRef": {"name": "s", "key": "k"}, "rateLimit": {"requestsPerSecond": 5}}))
    assert len({plain, tokens, limited}) == 3
    # A rate limit reaches running replicas in place; a token Secret is a volume, so naming another one rolls them.
    assert template(md(auth={"secretRef": {"name": "s", "key": "k"}})) == \
        template(md(auth={"secretRef": {"name": "s", "key": "k"}, "rateLimit": {"requestsPerSecond": 5}}))
    assert template(md(auth={"secretRef": {"name": "other", "key": "k"}})) != \
        template(md(auth={"secretRef": {"name": "s", "key": "k"}}))


def test_the_router_may_read_its_own_configmap_and_nothing_else() -> None:
    children = by_kind(render.render_deployment(md(), VERSIONS, ["iris-1-0-0"], TRAFFIC, "iris-1-0-0", CFG))
    role = children[("Role", "iris-router")]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["iris-router"],
                              "verbs": ["get", "list", "watch"]}]
    binding = children[("RoleBinding", "iris-router")]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "iris-router"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "iris-router", "namespace": "ml"}]
    pod = children[("Deployment", "iris-router")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "iris-router" and pod["automountServiceAccountToken"] is True
    assert children[("ServiceAccount", "iris-router")]["automountServiceAccountToken"] is False
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The request-id key: mounted from the Secret the reconcile makes once, never rendered with a value.
    key = next(v for v in pod["volumes"] if v["name"] == "router-key")
    assert key["secret"]["secretName"] == "iris-router-key"
    assert env["MLSTEWARD_ROUTER_ID_KEY_FILE"]["value"] == f"{render.ROUTER_KEY_DIR}/{render.ROUTER_KEY}"
    assert all(c["kind"] != "Secret" for c in children.values())
    # Replicas spread over nodes when there are several, without becoming unschedulable on one.
    assert pod["topologySpreadConstraints"] == [{
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"mlsteward.io/deployment": "iris", "app.kubernetes.io/component": "router"}}}]
    # Predictors call no API.
    predictor = children[("Deployment", "iris-iris-1-0-0")]["spec"]["template"]["spec"]
    assert predictor["automountServiceAccountToken"] is False and "serviceAccountName" not in predictor


def test_network_policy_admits_only_this_router_and_the_operator() -> None:
    cfg = OperatorConfig(operator_namespace="mlsteward-system", predictor_port=8081)
    children = render.render_deployment(md(), VERSIONS, ["iris-1-0-0", "iris-1-1-0"], TRAFFIC, "iris-1-0-0", cfg)
    policies = [c for c in children if c["kind"] == "NetworkPolicy"]
    assert len(policies) == 1  # one per deployment, whatever the number of versions
    policy = policies[0]
    assert policy["metadata"]["name"] == "iris-predictors"
    assert policy["metadata"]["ownerReferences"] == [names.owner_reference(md().metadata, "ModelDeployment")]
    assert policy["metadata"]["labels"]["mlsteward.io/deployment"] == "iris"
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"mlsteward.io/deployment": "iris",
                                                   "app.kubernetes.io/component": "predictor"}}
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8081}]
    router_peer, operator_peer = rule["from"]
    router = by_kind(children)[("Deployment", "iris-router")]
    # The router peer selects exactly the router's pods, in the deployment's namespace (no namespaceSelector).
    assert router_peer == {"podSelector": {"matchLabels": router["spec"]["selector"]["matchLabels"]}}
    predictor_pod_labels = by_kind(children)[("Deployment", "iris-iris-1-0-0")]["spec"]["template"]["metadata"]
    assert all(predictor_pod_labels["labels"][k] == v for k, v in spec["podSelector"]["matchLabels"].items())
    assert operator_peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mlsteward-system"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "mlsteward",
                                        "app.kubernetes.io/component": "operator"}},
    }


def test_network_policy_settings() -> None:
    extra = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    cfg = OperatorConfig(operator_pod_labels={"app": "op"}, network_policy_extra_peers=[extra])
    policy = by_kind(render.render_deployment(md(), VERSIONS, ["iris-1-0-0"], TRAFFIC, "iris-1-0-0", cfg))[
        ("NetworkPolicy", "iris-predictors")]
    peers = policy["spec"]["ingress"][0]["from"]
    assert peers[1] == {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "op"}}}
    assert peers[2] == extra
    off = render.render_deployment(md(), VERSIONS, ["iris-1-0-0"], TRAFFIC, "iris-1-0-0",
                                   OperatorConfig(network_policy=False))
    assert all(c["kind"] != "NetworkPolicy" for c in off)
    assert render.render_deployment(md(), VERSIONS, [], [], None, CFG) == []


# ---- prediction cache ----------------------------------------------------------------------------------------


def test_no_cache_spec_renders_no_cache_config() -> None:
    assert _routed(md())[1].cache is None


def test_cache_spec_becomes_the_routers_cache_config() -> None:
    _, config = _routed(md(cache={"maxEntries": 500, "maxBytes": 2 * 1024 * 1024, "ttl": "1m30s"}))
    assert config.cache is not None
    assert (config.cache.max_entries, config.cache.max_bytes, config.cache.ttl_s) == (500, 2 * 1024 * 1024, 90.0)
    # The defaults the CRD describes: 10,000 entries, 64 MiB, 5 minutes.
    _, defaults = _routed(md(cache={}))
    assert defaults.cache is not None
    assert (defaults.cache.max_entries, defaults.cache.max_bytes, defaults.cache.ttl_s) == (10000, 64 << 20, 300.0)
    _, short = _routed(md(cache={"ttl": "250ms"}))
    assert short.cache is not None and short.cache.ttl_s == 0.25


def test_cache_settings_move_the_generation_and_never_the_pods() -> None:
    plain, with_cache = _routed(md()), _routed(md(cache={"ttl": "1m"}))
    other = _routed(md(cache={"ttl": "2m"}))
    assert len({plain[1].generation, with_cache[1].generation, other[1].generation}) == 3
    # A TTL change rolls no pod; adding the cache only grows the router's memory limit (below).
    assert with_cache[0]["spec"]["template"] == other[0]["spec"]["template"]


def test_the_cache_budget_is_added_to_the_default_router_memory_limit() -> None:
    def memory(router: dict[str, Any]) -> str:
        return router["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]

    plain, cached = _routed(md())[0], _routed(md(cache={"maxBytes": 100 << 20}))[0]
    assert memory(plain) == "256Mi" and memory(cached) == "356Mi"
    odd = _routed(md(cache={"maxBytes": 1024}))[0]
    assert memory(odd) == "257Mi"  # rounded up to whole MiB, never below the budget
    # Resources the user set are the user's: kept as written.
    own = _routed(md(cache={"maxBytes": 100 << 20}, router={"resources": {"limits": {"memory": "300Mi"}}}))[0]
    assert memory(own) == "300Mi"


def test_cache_is_rendered_with_an_experiment_and_the_router_turns_it_off() -> None:
    traffic = [TrafficEntry(version="iris-1-0-0", weight=70), TrafficEntry(version="iris-1-1-0", weight=30)]
    children = by_kind(render.render_deployment(md(cache={"ttl": "1m"}), VERSIONS, ["iris-1-0-0", "iris-1-1-0"],
                                                traffic, "iris-1-0-0", CFG, experiment=_experiment()))
    config = RouterConfig.model_validate_json(children[("ConfigMap", "iris-router")]["data"]["router.json"])
    # One rule in one place: the router uses no cache while `experiment` is set (tests/unit/router/test_cache_http).
    assert config.experiment == "iris-ab" and config.cache is not None and config.cache.ttl_s == 60.0


@pytest.mark.parametrize("cache", [{"maxBytes": 1023}, {"maxBytes": 8 * 1024**3 + 1}, {"maxEntries": 0},
                                   {"ttl": "0s"}, {"ttl": "soon"}])
def test_cache_bounds_are_refused(cache: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        md(cache=cache)
