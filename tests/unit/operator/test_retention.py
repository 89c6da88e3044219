"""The retention planner (retention/decide.py): last N by semver precedence, per-model overrides, the pin label, every
kind of reference that protects a version, the lineage of served versions, versions under validation, and
retention off."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from mlsteward_operator.retention import decide as rt
from mlsteward_operator.api import DriftMonitor, Experiment, ModelDeployment, ModelVersion

NS = "models"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def mv(name: str, version: str, *, model: str = "iris", phase: str | None = "Ready", minute: int = 0,
       labels: dict[str, str] | None = None, parent: str | None = None, deleting: bool = False) -> ModelVersion:
    meta: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "7",
                            "labels": labels or {},
                            "creationTimestamp": (T0 + dt.timedelta(minutes=minute)).isoformat()}
    if deleting:
        meta["deletionTimestamp"] = T0.isoformat()
    spec: dict[str, Any] = {"model": model, "version": version,
                            "artifact": {"uri": f"/models/{name}.skops", "sha256": "c" * 64}}
    if parent:
        spec["lineage"] = {"parent": parent}
    body: dict[str, Any] = {"metadata": meta, "spec": spec}
    if phase:
        body["status"] = {"phase": phase}
    return ModelVersion.model_validate(body)


def md(name: str, version: str, **status: Any) -> ModelDeployment:
    return ModelDeployment.model_validate({"metadata": {"name": name, "namespace": NS},
                                           "spec": {"version": version}, "status": status})


def exp(name: str, *versions: str, status: dict[str, Any] | None = None) -> Experiment:
    variants = [{"name": f"arm{i}", "version": v, "weight": 50} for i, v in enumerate(versions)]
    return Experiment.model_validate({"metadata": {"name": name, "namespace": NS},
                                      "spec": {"deployment": "iris", "variants": variants},
                                      "status": status or {}})


def dm(name: str, status: dict[str, Any]) -> DriftMonitor:
    return DriftMonitor.model_validate({"metadata": {"name": name, "namespace": NS},
                                        "spec": {"deployment": "iris"}, "status": status})


def series(n: int, model: str = "iris") -> list[ModelVersion]:
    """`model`-1.0.0 ... `model`-1.(n-1).0, created oldest first."""
    return [mv(f"{model}-{i}", f"1.{i}.0", model=model, minute=i) for i in range(n)]


def run(versions: list[ModelVersion], *, keep: int = 3, models: dict[str, int] | None = None,
        deployments: list[ModelDeployment] | None = None, experiments: list[Experiment] | None = None,
        monitors: list[DriftMonitor] | None = None) -> dict[str, rt.ModelPlan]:
    plans = rt.plan(NS, versions, deployments or [], experiments or [], monitors or [],
                    rt.Policy(keep, models or {}))
    return {p.model: p for p in plans}


def deleted(plan: rt.ModelPlan) -> set[str]:
    return {d.name for d in plan.delete}


def reasons(plan: rt.ModelPlan, name: str) -> set[rt.KeepReason]:
    return {k.reason for k in plan.kept[name]}


def test_last_n_follows_semver_not_creation_order():
    # Created in an order that disagrees with semver: 1.10.0 is older than 1.9.0 but newer by precedence, and a
    # pre-release comes before its release whatever its creation time.
    versions = [mv("a", "1.10.0", minute=1), mv("b", "1.9.0", minute=2), mv("c", "1.2.0", minute=3),
                mv("d", "2.0.0-rc.1", minute=4), mv("e", "2.0.0", minute=0), mv("f", "1.0.0", minute=5),
                mv("g", "2.0.0-alpha", minute=6)]
    plan = run(versions, keep=3)["iris"]
    assert set(plan.kept) == {"e", "d", "g"}          # 2.0.0 > 2.0.0-rc.1 > 2.0.0-alpha
    assert deleted(plan) == {"a", "b", "c", "f"}
    ranks = {d.name: d.rank for d in plan.delete}
    assert ranks == {"a": 4, "b": 5, "c": 6, "f": 7}  # 1.10.0 > 1.9.0 > 1.2.0 > 1.0.0
    plan = run(versions, keep=4)["iris"]
    assert "a" in plan.kept and "b" in deleted(plan)


def test_equal_precedence_is_ordered_by_creation_then_name():
    # Build metadata does not count in semver precedence: the later one created is the newer.
    versions = [mv("x-old", "1.0.0+build.1", minute=0), mv("x-new", "1.0.0+build.2", minute=9),
                mv("y", "0.9.0", minute=10)]
    plan = run(versions, keep=1)["iris"]
    assert set(plan.kept) == {"x-new"} and deleted(plan) == {"x-old", "y"}
    same_time = [mv("b", "1.0.0"), mv("a", "1.0.0")]
    assert set(run(same_time, keep=1)["iris"].kept) == {"b"}


def test_per_model_and_namespaced_overrides_and_zero():
    versions = series(6, "iris") + series(6, "fraud") + series(6, "churn")
    plans = run(versions, keep=2, models={"iris": 4, f"{NS}/iris": 5, "other/fraud": 1, "churn": 0})
    assert plans["iris"].keep_last == 5 and plans["iris"].source == f"retention.models[{NS}/iris]"
    assert deleted(plans["iris"]) == {"iris-0"}
    # A key of another namespace does not apply here: the global N does.
    assert plans["fraud"].keep_last == 2 and plans["fraud"].source == "retention.keepLast"
    assert deleted(plans["fraud"]) == {"fraud-0", "fraud-1", "fraud-2", "fraud-3"}
    # 0 for a model: every version of it is kept, so it gets no plan at all.
    assert "churn" not in plans


def test_retention_off_plans_nothing():
    versions = series(10)
    assert run(versions, keep=0) == {}
    assert not rt.Policy(0, {}).enabled and not rt.Policy(0, {"iris": 0}).enabled
    assert rt.Policy(0, {"iris": 2}).enabled and rt.Policy(3).enabled
    # keepLast 0 but a model with its own N: only that model is planned.
    plans = run(series(5) + series(5, "fraud"), keep=0, models={"fraud": 2})
    assert set(plans) == {"fraud"} and deleted(plans["fraud"]) == {"fraud-0", "fraud-1", "fraud-2"}


def test_pinned_version_is_kept():
    versions = series(5)
    versions[0] = mv("iris-0", "1.0.0", labels={rt.PIN_LABEL: "true"})
    versions[1] = mv("iris-1", "1.1.0", minute=1, labels={rt.PIN_LABEL: "false"})
    plan = run(versions, keep=2)["iris"]
    assert reasons(plan, "iris-0") == {rt.KeepReason.pinned}
    assert deleted(plan) == {"iris-1", "iris-2"}


@pytest.mark.parametrize("field, status", [
    ("spec.version", {}),
    ("status.servingVersion", {"servingVersion": "iris-0"}),
    ("status.stableVersion", {"stableVersion": "iris-0"}),
    ("status.previousVersion", {"previousVersion": "iris-0"}),
    ("status.override.version", {"override": {"version": "iris-0", "specVersion": "iris-9", "kind": "Rollback",
                                              "source": "DriftMonitor/d", "time": T0.isoformat()}}),
    ("status.rollout.targetVersion", {"rollout": {"phase": "Progressing", "targetVersion": "iris-0"}}),
    ("status.traffic", {"traffic": [{"version": "iris-9", "weight": 90}, {"version": "iris-0", "weight": 10}]}),
])
def test_each_modeldeployment_reference_protects(field, status):
    deployment = md("iris", "iris-0" if field == "spec.version" else "iris-9", **status)
    plan = run(series(10), keep=2, deployments=[deployment])["iris"]
    assert "iris-0" in plan.kept
    assert rt.Keep(rt.KeepReason.model_deployment, f"iris {field}") in plan.kept["iris-0"]
    assert deleted(plan) == {f"iris-{i}" for i in range(1, 8)}


def test_shadow_version_protects():
    deployment = ModelDeployment.model_validate({"metadata": {"name": "iris", "namespace": NS}, "spec": {
        "version": "iris-9", "shadow": {"version": "iris-3", "percent": 10}}})
    plan = run(series(10), keep=1, deployments=[deployment])["iris"]
    assert reasons(plan, "iris-3") == {rt.KeepReason.model_deployment}
    assert "iris-4" in deleted(plan)


def test_experiment_variants_protect_while_it_exists():
    plan = run(series(8), keep=2, experiments=[exp("ab", "iris-7", "iris-1")])["iris"]
    assert reasons(plan, "iris-1") == {rt.KeepReason.experiment}
    assert deleted(plan) == {"iris-0", "iris-2", "iris-3", "iris-4", "iris-5"}
    # A concluded one still refers to its arms (its record would name a deleted version otherwise).
    concluded = exp("old", "iris-7", "iris-6", status={
        "phase": "Concluded", "variants": [{"name": "arm0", "version": "iris-7"}, {"name": "z", "version": "iris-2"}],
        "servingRequest": {"kind": "Promote", "version": "iris-3", "fromVersion": "iris-7",
                           "time": T0.isoformat(), "reason": "ExperimentConcluded"}})
    plan = run(series(8), keep=2, experiments=[concluded])["iris"]
    assert {"iris-2", "iris-3"} <= set(plan.kept) and deleted(plan) == {"iris-0", "iris-1", "iris-4", "iris-5"}


def test_driftmonitor_retraining_and_requests_protect():
    monitor = dm("iris-drift", {
        "retrain": {"job": "j", "parent": "iris-1", "trigger": "t", "phase": "Validating",
                    "modelVersion": "iris-2", "startedAt": T0.isoformat()},
        "servingRequest": {"kind": "Rollback", "version": "iris-3", "fromVersion": "iris-9",
                           "time": T0.isoformat(), "reason": "DriftDetected"}})
    plan = run(series(10), keep=2, monitors=[monitor])["iris"]
    for name in ("iris-1", "iris-2", "iris-3"):
        assert reasons(plan, name) == {rt.KeepReason.drift_monitor}, name
    assert deleted(plan) == {"iris-0", "iris-4", "iris-5", "iris-6", "iris-7"}


def test_lineage_of_a_served_version_is_kept_transitively_but_not_of_an_unserved_one():
    # Served chain: s3 <- s2 <- s1 <- s0 (parents), and an unserved old version u1 whose parent is u0.
    versions = [mv("s0", "1.0.0"), mv("s1", "1.1.0", parent="s0"), mv("s2", "1.2.0", parent="s1"),
                mv("u0", "1.3.0"), mv("u1", "1.4.0", parent="u0"), mv("s3", "1.5.0", parent="s2"),
                mv("n1", "2.0.0"), mv("n2", "2.1.0")]
    plan = run(versions, keep=2, deployments=[md("iris", "s3")])["iris"]
    assert set(plan.kept) == {"n2", "n1", "s3", "s2", "s1", "s0"}
    assert plan.kept["s0"] == (rt.Keep(rt.KeepReason.lineage_of, "s3"),)
    assert deleted(plan) == {"u0", "u1"}


def test_lineage_cycles_and_missing_parents_end_the_walk():
    versions = [mv("a", "1.0.0", parent="b"), mv("b", "1.1.0", parent="a"), mv("c", "1.2.0", parent="gone"),
                mv("d", "1.3.0"), mv("e", "1.4.0")]
    plan = run(versions, keep=1, deployments=[md("x", "a"), md("y", "c")])["iris"]
    assert set(plan.kept) == {"e", "a", "b", "c"} and deleted(plan) == {"d"}


def test_versions_under_validation_are_kept_and_failed_ones_are_not():
    versions = [mv("p", "1.0.0", phase="Pending"), mv("v", "1.1.0", phase="Validating"), mv("none", "1.2.0",
                phase=None), mv("f", "1.3.0", phase="Failed"), mv("r", "1.4.0"), mv("r2", "1.5.0")]
    plan = run(versions, keep=1)["iris"]
    for name in ("p", "v", "none"):
        assert reasons(plan, name) == {rt.KeepReason.not_yet_validated}, name
    assert deleted(plan) == {"f", "r"}


def test_only_ready_versions_fill_the_last_n_places():
    # Newest first: 2.0.0 Pending (may still fail), 1.9.0 Failed, 1.8.0 and 1.7.0 Ready, then older ones.
    versions = [mv("new", "2.0.0", phase="Pending"), mv("bad", "1.9.0", phase="Failed"), mv("r8", "1.8.0"),
                mv("r7", "1.7.0"), mv("bad-old", "1.6.5", phase="Failed"), mv("r6", "1.6.0")]
    plan = run(versions, keep=2)["iris"]
    assert set(plan.kept) == {"new", "bad", "r8", "r7"}
    assert reasons(plan, "new") == {rt.KeepReason.not_yet_validated}
    assert reasons(plan, "bad") == {rt.KeepReason.last_n}
    assert deleted(plan) == {"bad-old", "r6"}
    # Once the new one is Ready, it takes a place and the oldest Ready one of the window goes.
    versions[0] = mv("new", "2.0.0")
    plan = run(versions, keep=2)["iris"]
    assert set(plan.kept) == {"new", "bad", "r8"} and deleted(plan) == {"r7", "bad-old", "r6"}


def test_versions_being_deleted_take_no_part():
    versions = series(4) + [mv("iris-z", "9.0.0", deleting=True)]
    plan = run(versions, keep=2)["iris"]
    # The one being deleted neither counts among the last N nor is planned again.
    assert set(plan.kept) == {"iris-3", "iris-2"} and deleted(plan) == {"iris-0", "iris-1"}


def test_other_models_are_planned_apart_and_references_cross_models():
    versions = series(4) + series(2, "fraud")
    plan = run(versions, keep=2, deployments=[md("fraud", "fraud-1")])
    assert deleted(plan["iris"]) == {"iris-0", "iris-1"} and deleted(plan["fraud"]) == set()
    # A lineage parent of another model is still protected (lineage names a ModelVersion, not a model).
    versions = series(4) + [mv("fraud-0", "1.0.0", model="fraud", parent="iris-0")]
    plan = run(versions, keep=1, deployments=[md("fraud", "fraud-0")])
    assert deleted(plan["iris"]) == {"iris-1", "iris-2"}


def test_doomed_carry_identity_and_a_message():
    plan = run(series(3), keep=1)["iris"]
    doomed = {d.name: d for d in plan.delete}["iris-0"]
    assert (doomed.uid, doomed.resource_version, doomed.version, doomed.rank) == ("uid-iris-0", "7", "1.0.0", 3)
    text = doomed.message(plan)
    assert "version 1.0.0 of model iris (number 3 by semver) is older than its last 1 Ready versions" in text
    assert "retention.keepLast" in text and rt.PIN_LABEL in text


def test_the_chart_defaults_turn_retention_off_and_its_env_parses(monkeypatch):
    import pathlib

    import yaml

    from mlsteward_operator.config import OperatorConfig

    manifests = pathlib.Path(__file__).resolve().parents[3] / "manifests" / "mlsteward.yaml"
    deployment = next(d for d in yaml.safe_load_all(manifests.read_text()) if d and d["kind"] == "Deployment")
    env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
           if e["name"].startswith("MLSTEWARD_OPERATOR_RETENTION_")}
    assert set(env) == {f"MLSTEWARD_OPERATOR_RETENTION_{k}" for k in ("KEEP_LAST", "MODELS", "INTERVAL_SECONDS",
                                                                        "DRY_RUN")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = OperatorConfig()
    assert (cfg.retention_keep_last, cfg.retention_models, cfg.retention_interval_seconds, cfg.retention_dry_run) \
        == (0, {}, 300, False)
    assert not rt.Policy(cfg.retention_keep_last, cfg.retention_models).enabled
    monkeypatch.setenv("MLSTEWARD_OPERATOR_RETENTION_MODELS", '{"iris": 3, "team-a/iris": 0}')
    assert OperatorConfig().retention_models == {"iris": 3, "team-a/iris": 0}
    monkeypatch.setenv("MLSTEWARD_OPERATOR_RETENTION_MODELS", '{"iris": -1}')
    with pytest.raises(ValueError, match="retention_models"):
        OperatorConfig()
