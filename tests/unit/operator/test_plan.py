"""The ModelDeployment plan: which versions live, where the router points, what status says."""

from __future__ import annotations

from mlsteward_operator.plan import Observed, VersionFacts, plan_deployment

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
