"""The ModelDeployment plan: which versions live, where the router points, what status says."""

from __future__ import annotations

from mlsteward_operator.modeldeployment.rollout.base import Observed, VersionFacts
from mlsteward_operator.modeldeployment.rollout.immediate import plan_deployment

V1 = VersionFacts("iris-1", exists=True, model="iris", phase="Ready")
V2 = VersionFacts("iris-2", exists=True, model="iris", phase="Ready")


def test_first_deploy_waits_for_pods_and_router_then_serves():
    waiting = plan_deployment(V1, None, Observed())
    assert (waiting.live, waiting.router_target, waiting.serving) == (("iris-1",), "iris-1", None)
    assert waiting.progressing is not None and waiting.degraded is None

    ready = plan_deployment(V1, None, Observed(predictor_ready={"iris-1": True}, router_on="iris-1"))
    assert (ready.live, ready.serving, ready.stable) == (("iris-1",), "iris-1", "iris-1")
    assert ready.progressing is None and ready.degraded is None


def test_switch_keeps_old_version_routed_until_new_one_is_ready():
    plan = plan_deployment(V2, V1, Observed(predictor_ready={"iris-1": True, "iris-2": False}, router_on="iris-1"))
    assert plan.live == ("iris-1", "iris-2")
    assert plan.router_target == "iris-1"
    assert plan.serving == "iris-1"
    assert plan.progressing.reason == "WarmingUp"


def test_switch_moves_router_once_new_is_ready_and_keeps_old_until_router_rolled():
    plan = plan_deployment(V2, V1, Observed(predictor_ready={"iris-1": True, "iris-2": True}, router_on="iris-1"))
    assert plan.live == ("iris-1", "iris-2")
    assert plan.router_target == "iris-2"
    assert plan.serving == "iris-1"
    assert plan.progressing.reason == "Switching"


def test_switch_completes_and_retires_old_when_router_runs_new_config():
    plan = plan_deployment(V2, V1, Observed(predictor_ready={"iris-2": True}, router_on="iris-2"))
    assert (plan.live, plan.router_target, plan.serving, plan.stable) == (("iris-2",), "iris-2", "iris-2", "iris-2")


def test_same_observations_give_the_same_plan_after_a_restart():
    observed = Observed(predictor_ready={"iris-1": True, "iris-2": True}, router_on="iris-1")
    assert plan_deployment(V2, V1, observed) == plan_deployment(V2, V1, observed)


def test_missing_not_ready_failed_or_foreign_versions_keep_serving_and_degrade():
    cases = {
        "VersionNotFound": VersionFacts("iris-9", exists=False),
        "VersionNotReady": VersionFacts("iris-3", exists=True, model="iris", phase="Validating"),
        "VersionFailed": VersionFacts("iris-4", exists=True, model="iris", phase="Failed", reason="DigestMismatch"),
        "ModelMismatch": VersionFacts("wine-1", exists=True, model="wine", phase="Ready"),
    }
    for reason, desired in cases.items():
        plan = plan_deployment(desired, V1, Observed(predictor_ready={"iris-1": True}, router_on="iris-1"))
        assert plan.degraded is not None and plan.degraded.reason == reason, reason
        assert desired.name in plan.degraded.message
        assert (plan.live, plan.router_target, plan.serving) == (("iris-1",), "iris-1", "iris-1"), reason


def test_nothing_to_serve_when_the_first_version_is_unusable():
    plan = plan_deployment(VersionFacts("iris-9", exists=False), None, Observed())
    assert plan.live == () and plan.router_target is None and plan.serving is None
    assert plan.degraded.reason == "VersionNotFound"


def test_spec_model_guards_the_first_deployment_too():
    plan = plan_deployment(VersionFacts("wine-1", exists=True, model="wine", phase="Ready"), None, Observed(),
                           model="iris")
    assert plan.degraded.reason == "ModelMismatch" and plan.live == ()


# ---- serving requests and Experiment splits --------------------------------------------------------------------

import datetime as _dt  # noqa: E402

from mlsteward_operator.modeldeployment.decide import (  # noqa: E402
    Override,
    Request,
    effective_version,
    experiment_blocker,
    resolve_override,
    with_experiment,
)
from mlsteward_operator.modeldeployment.rollout.base import Plan, Problem  # noqa: E402

T0 = _dt.datetime(2026, 1, 1, 12, 0, tzinfo=_dt.UTC)
READY = {"v1": True, "v2": True, "v3": True}


def _req(kind: str = "Promote", version: str | None = "v2", from_: str = "v1", minutes: int = 1,
         source: str = "Experiment/ab") -> Request:
    return Request(source, kind, version, from_, T0 + _dt.timedelta(minutes=minutes), "Why", "because",
                   {"pValue": 0.01}, {"alpha": 0.05})


def test_a_promotion_is_applied_once_with_a_decision() -> None:
    o, d = resolve_override("v1", "v1", "v1", None, None, None, (_req(),), READY, T0)
    assert o == Override("v2", "v1", "Promote", "Experiment/ab", T0 + _dt.timedelta(minutes=1))
    assert d is not None and (d.kind, d.from_, d.to, d.git_version) == ("Promote", "v1", "v2", "v2")
    assert d.numbers == {"pValue": 0.01} and d.thresholds == {"alpha": 0.05}
    # Next reconcile: v2 serves now; the same request is not applied again and makes no decision.
    again, d2 = resolve_override("v1", "v2", "v2", "v1", None, o, (_req(),), READY, T0)
    assert again == o and d2 is None
    assert effective_version("v1", again) == "v2"


def test_a_stale_or_unready_request_moves_nothing() -> None:
    # Decided while v3 was served: v1 serves now, so it does not apply.
    assert resolve_override("v1", "v1", "v1", None, None, None, (_req(from_="v3"),), READY, T0) == (None, None)
    # Its target is not Ready: it waits.
    assert resolve_override("v1", "v1", "v1", None, None, None, (_req(),), {"v2": False}, T0) == (None, None)


def test_rollback_goes_to_the_previous_stable_version_or_abandons_a_canary() -> None:
    rb = _req("Rollback", None, from_="v2", source="DriftMonitor/dm")
    o, d = resolve_override("v2", "v2", "v2", "v1", None, None, (rb,), READY, T0)
    assert o is not None and o.version == "v1" and o.kind == "Rollback"
    assert d is not None and (d.from_, d.to) == ("v2", "v1")
    # During a canary from v2 to v3 (v2 still serves and is stable): back to v2 alone.
    o, d = resolve_override("v3", "v2", "v2", "v1", "v3", None, (rb,), READY, T0)
    assert o is not None and (o.version, o.spec_version) == ("v2", "v3") and effective_version("v3", o) == "v2"
    assert d is not None and (d.from_, d.to) == ("v3", "v2")
    # Nothing to go back to.
    assert resolve_override("v2", "v2", "v2", None, None, None, (rb,), READY, T0) == (None, None)


def test_a_spec_change_ends_an_override_and_old_requests_stay_applied() -> None:
    o = Override("v2", "v1", "Promote", "Experiment/ab", T0 + _dt.timedelta(minutes=1))
    ended, d = resolve_override("v3", "v2", "v2", "v1", None, o, (_req(),), READY, T0 + _dt.timedelta(hours=1))
    assert d is None and ended is not None and ended.ended_at == T0 + _dt.timedelta(hours=1)
    assert effective_version("v3", ended) == "v3"
    # Back to v1 in Git: the ended override does not come back.
    assert effective_version("v1", ended) == "v1"
    # A newer request applies on top.
    newer = _req(version="v1", from_="v2", minutes=90)
    o2, d2 = resolve_override("v3", "v2", "v2", "v1", None, ended, (newer,), READY, T0 + _dt.timedelta(hours=2))
    assert o2 is not None and o2.version == "v1" and o2.spec_version == "v3" and d2 is not None


def test_experiment_runs_only_on_a_settled_deployment_serving_the_control() -> None:
    settled = Plan(live=("v1",), router_target="v1", serving="v1", stable="v1")
    facts = {"v1": VersionFacts("v1", True, "iris", "Ready"), "v2": VersionFacts("v2", True, "iris", "Ready")}
    assert experiment_blocker(settled, "v1", facts, "iris") is None
    assert "not the served version" in experiment_blocker(settled, "v2", facts, "iris")
    moving = Plan(live=("v1", "v3"), router_target="v3", serving="v1", stable="v1",
                  progressing=Problem("Switching", "x"))
    assert "not settled (Switching)" in experiment_blocker(moving, "v1", facts, "iris")
    pending = dict(facts, v2=VersionFacts("v2", True, "iris", "Validating"))
    assert "v2 is Validating" in experiment_blocker(settled, "v1", pending, "iris")
    other = dict(facts, v2=VersionFacts("v2", True, "wine", "Ready"))
    assert "of model wine" in experiment_blocker(settled, "v1", other, "iris")
    split = with_experiment(settled, {"v1": 50, "v2": 50}, "v1")
    assert split.live == ("v1", "v2") and dict(split.traffic or {}) == {"v1": 50, "v2": 50}
    assert split.fallback == "v1" and split.serving == "v1"
