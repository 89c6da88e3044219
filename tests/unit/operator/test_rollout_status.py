"""A canary plan turned into status and children: status.rollout with the baseline, decisions with numbers and
the Git change, conditions, the router's split configuration, and the reading of the router's table."""

from __future__ import annotations

import datetime as dt

from mlsteward_operator.modeldeployment import render
from mlsteward_operator.modeldeployment import status as st
from mlsteward_operator.kernel import pods
from mlsteward_operator.kernel import status as kstatus
from mlsteward_operator.api import ModelDeployment, ModelVersion
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.modeldeployment.rollout.base import Counters, Observed, RolloutState, VersionFacts
from mlsteward_operator.modeldeployment.decide import plan_rollout
from mlsteward_operator.modeldeployment.reconcile import desired_children, rollout_spec, rollout_state
from mlsteward_runtime.router.config import parse_config

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
URL = "http://iris.ml.svc.cluster.local:8080"
READY = {"iris-1": True, "iris-2": True}


def mv(name: str) -> ModelVersion:
    return ModelVersion.model_validate({
        "metadata": {"name": name, "namespace": "ml", "uid": "u-" + name},
        "spec": {"model": "iris", "version": "1.0.0", "artifact": {"uri": f"http://a/{name}.skops", "sha256": "a" * 64}},
        "status": {"phase": "Ready"},
    })


VERSIONS = {"iris-1": mv("iris-1"), "iris-2": mv("iris-2")}
FACTS = {n: VersionFacts(n, exists=True, model="iris", phase="Ready") for n in VERSIONS}


def canary(status: dict | None = None, rollback: bool = True) -> ModelDeployment:
    return ModelDeployment.model_validate({
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u", "generation": 3},
        "spec": {"version": "iris-2", "rollout": {"strategy": "Canary", "steps": [10, 50, 100], "stepInterval": "30s",
                                                  "analysis": {"maxErrorRate": 0.01, "maxP99LatencyMs": 50,
                                                               "minRequests": 10}},
                 "rollback": {"onFailedAnalysis": rollback}},
        "status": {"servingVersion": "iris-1", "stableVersion": "iris-1", "model": "iris", **(status or {})},
    })


def children() -> st.ChildrenState:
    ready = pods.WorkloadState(exists=True, replicas=1, ready_replicas=1, available_replicas=1, updated_replicas=1,
                             rolled_out=True)
    return st.ChildrenState(predictors={"iris-1": ready, "iris-2": ready}, router=ready)


def reconcile_once(md: ModelDeployment, observed: Observed, now: dt.datetime):
    plan = plan_rollout(FACTS[md.spec.version], FACTS[md.status.serving_version], observed, rollout_spec(md),
                        rollout_state(md.status.rollout), now)
    new = st.compute_deployment_status(md, plan, children(), VERSIONS, url=URL, now=now)
    return plan, new


def conds(s) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status.value, c.reason) for c in s.conditions}


def test_rollout_spec_and_state_read_from_the_object():
    md = canary({"rollout": {"phase": "Progressing", "step": 1, "targetVersion": "iris-2",
                             "stepStartedAt": "2026-01-01T12:00:00Z",
                             "baseline": [{"replica": "r", "started": 1.5, "requests": 3, "errors": 1,
                                           "latencyBuckets": {"5": 3}}]}})
    spec = rollout_spec(md)
    assert (spec.strategy, spec.steps, spec.interval_s, spec.rollback) == ("Canary", (10, 50, 100), 30.0, True)
    assert (spec.gates.max_error_rate, spec.gates.max_p99_latency_ms, spec.gates.min_requests) == (0.01, 50, 10)
    assert rollout_state(md.status.rollout) == RolloutState(
        "Progressing", "iris-2", 1, T0, (Counters("r", 1.5, "iris-2", 3, 1, {"5": 3}),))
    assert rollout_state(None) == RolloutState()


def test_step_start_writes_the_baseline_and_a_split_router_config():
    md = canary({"rollout": {"phase": "Progressing", "step": 0, "targetVersion": "iris-2"}})
    observed = Observed(predictor_ready=READY, router_table={"iris-1": 90, "iris-2": 10},
                        router_stats=(Counters("r-a", 1700000000.25, "iris-2", 4, 0, {"5": 4, "+Inf": 4}),))
    plan, new = reconcile_once(md, observed, T0)
    r = new.rollout
    assert (r.phase.value, r.step, r.target_version, r.step_started_at) == ("Progressing", 0, "iris-2", T0)
    assert [b.to_k8s() for b in r.baseline] == [{"replica": "r-a", "started": 1700000000.25, "requests": 4,
                                                 "errors": 0, "latencyBuckets": {"5": 4, "+Inf": 4}}]
    assert new.traffic_summary == "iris-1=90,iris-2=10" and new.serving_version == "iris-1"
    assert conds(new)["Progressing"] == ("True", "Analysing") and conds(new)["Ready"] == ("True", "Serving")
    assert not kstatus.status_changed(new, new.to_k8s())  # survives a round trip through the API server

    (cm,) = [c for c in desired_children(md, VERSIONS, plan, OperatorConfig())
             if c["kind"] == "ConfigMap" and c["metadata"]["name"] == "iris-router"]
    config = parse_config(cm["data"][render.ROUTER_CONFIG_FILE], "router.json")
    assert {b.version: b.weight for b in config.backends} == {"iris-1": 90, "iris-2": 10}
    assert config.stable_version == "iris-1"  # canary errors fall back to the stable version


def test_every_passed_step_is_its_own_decision():
    md = canary({"rollout": {"phase": "Progressing", "step": 0, "targetVersion": "iris-2",
                             "stepStartedAt": "2026-01-01T12:00:00Z"}})
    counted = (Counters("r-a", 1.0, "iris-2", 20, 0, {"5": 20, "+Inf": 20}),)
    _, s1 = reconcile_once(md, Observed(predictor_ready=READY, router_table={"iris-1": 90, "iris-2": 10},
                                        router_stats=counted), T0 + dt.timedelta(seconds=30))
    md2 = canary({**s1.to_k8s(), "rollout": {"phase": "Progressing", "step": 1, "targetVersion": "iris-2",
                                             "stepStartedAt": "2026-01-01T12:01:00Z"}})
    _, s2 = reconcile_once(md2, Observed(predictor_ready=READY, router_table={"iris-1": 50, "iris-2": 50},
                                         router_stats=counted), T0 + dt.timedelta(seconds=90))
    assert [(d.reason, d.numbers["step"]) for d in s2.decisions] == [("StepPassed", 0), ("StepPassed", 1)]
    assert s2.rollout.step == 2 and s2.traffic_summary == "iris-1=0,iris-2=100"


def test_rollback_status_has_one_decision_with_numbers_thresholds_and_git_change():
    md = canary({"rollout": {"phase": "Progressing", "step": 0, "targetVersion": "iris-2",
                             "stepStartedAt": "2026-01-01T12:00:00Z"}})
    slow = (Counters("r-a", 1.0, "iris-2", 10, 0, {"50": 0, "100": 10, "+Inf": 10}),)
    _, new = reconcile_once(md, Observed(predictor_ready=READY, router_table={"iris-1": 90, "iris-2": 10},
                                         router_stats=slow), T0 + dt.timedelta(seconds=30))
    (d,) = new.decisions
    assert (d.kind.value, d.from_, d.to, d.reason) == ("Rollback", "iris-2", "iris-1", "AnalysisFailed")
    assert d.numbers["p99LatencyMs"] == 99.5 and d.numbers["requests"] == 10
    assert d.thresholds == {"minRequests": 10, "maxErrorRate": 0.01, "maxP99LatencyMs": 50}
    assert d.git_change == "set spec.version: iris-1 in ModelDeployment ml/iris"
    assert (new.serving_version, new.stable_version, new.traffic_summary) == ("iris-1", "iris-1", "iris-1=100")
    assert (new.rollout.phase.value, new.rollout.target_version) == ("RolledBack", "iris-2")
    assert conds(new)["Degraded"] == ("True", "AnalysisFailed") and conds(new)["Ready"] == ("True", "Serving")

    # Later reconciles keep the verdict and add nothing (no Hold on top of the Rollback).
    again = canary(new.to_k8s())
    _, later = reconcile_once(again, Observed(predictor_ready=READY, router_table={"iris-1": 100}),
                              T0 + dt.timedelta(minutes=5))
    assert len(later.decisions) == 1 and later.rollout.phase.value == "RolledBack"
    assert conds(later)["Progressing"][0] == "False"


def test_the_served_table_is_the_configmaps_once_every_ready_replica_reports_its_generation():
    def config_map(traffic: str, generation: str | None = "g2") -> dict:
        annotations = {"mlsteward.io/traffic": traffic}
        if generation:
            annotations["mlsteward.io/router-generation"] = generation
        return {"metadata": {"name": "iris-router", "annotations": annotations}}

    generation, table = pods.router_config_map(config_map("iris-1=90,iris-2=10"))
    assert (generation, table) == ("g2", {"iris-1": 90, "iris-2": 10})
    assert pods.RouterView(generation, table, replicas=3, current=3).served_table == {"iris-1": 90, "iris-2": 10}
    assert pods.RouterView(generation, table, replicas=3, current=2).served_table is None  # one is not on it yet
    assert pods.RouterView(generation, table, replicas=0, current=0).served_table is None  # none is ready
    assert pods.RouterView(*pods.router_config_map(config_map("iris-1=90", None)), 1, 1).served_table is None
    assert pods.router_config_map(None) == (None, {})
    assert st.full_version(pods.RouterView("g", {"iris-1": 0, "iris-2": 100}, 1, 1).served_table) == "iris-2"


def test_every_rollout_field_is_sent_so_a_merge_patch_clears_stale_ones():
    from mlsteward_operator.api.modeldeployment import ModelDeploymentStatus, RolloutStatus
    from mlsteward_operator.kernel.status import status_patch

    old = ModelDeploymentStatus(serving_version="iris-1", experiment="ab", rollout=RolloutStatus(
        phase="Progressing", step=1, target_version="iris-2", step_started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
    new = ModelDeploymentStatus(serving_version="iris-1", rollout=RolloutStatus(phase="Stable"))
    patch = status_patch(new, old, replaced=("rollout", "override"))
    # Every field of the replaced object is named (unset ones as null), so nothing of the old step survives.
    assert set(patch["rollout"]) == {f.alias or n for n, f in RolloutStatus.model_fields.items()}
    assert patch["rollout"]["phase"] == "Stable"
    assert patch["rollout"]["stepStartedAt"] is None and patch["rollout"]["targetVersion"] is None
    # A top-level field set before and unset now is cleared; one never set is not named.
    assert patch["experiment"] is None and "override" not in patch and patch["servingVersion"] == "iris-1"


def test_the_canary_example_is_a_valid_modeldeployment():
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[3] / "examples/modeldeployment-canary.yaml"
    md = ModelDeployment.model_validate({**yaml.safe_load(path.read_text()), "metadata": {"name": "breast-cancer"}})
    spec = rollout_spec(md)
    assert (spec.strategy, spec.steps, spec.interval_s) == ("Canary", (10, 50, 100), 120.0)
