"""Status functions: conditions, observations of children, ModelVersion verdicts, ModelDeployment status."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from mlsteward_operator.modeldeployment import status as st
from mlsteward_operator.kernel import pods
from mlsteward_operator.modelversion import status as mv_status
from mlsteward_operator.kernel import conditions
from mlsteward_operator.kernel import status as kstatus
from mlsteward_operator.api import ModelDeployment, ModelVersion
from mlsteward_operator.api.common import MAX_DECISIONS, Condition
from mlsteward_operator.api.modeldeployment import Decision
from mlsteward_operator.modeldeployment.decide import Observed, VersionFacts, plan_deployment

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
T1 = T0 + dt.timedelta(minutes=5)
T2 = T0 + dt.timedelta(minutes=9)
SHA = "cd" * 32
URL = "http://iris.ml.svc.cluster.local:8080"


def conds(status: Any) -> dict[str, Condition]:
    return {c.type: c for c in status.conditions}


# ---- conditions, decisions, change detection ---------------------------------------------------------------


def test_condition_transition_time_moves_only_on_a_flip() -> None:
    c = conditions.set_condition([], "Ready", False, "Waiting", "not yet", generation=1, now=T0)
    (ready,) = c
    assert ready.status == "False" and ready.last_transition_time == T0.replace(microsecond=0)
    c = conditions.set_condition(c, "Ready", False, "StillWaiting", "other words", generation=2, now=T1)
    (ready,) = c
    assert (ready.reason, ready.message, ready.observed_generation) == ("StillWaiting", "other words", 2)
    assert ready.last_transition_time == T0.replace(microsecond=0)
    c = conditions.set_condition(c, "Ready", True, "Serving", "ok", generation=2, now=T2)
    assert c[0].status == "True" and c[0].last_transition_time == T2.replace(microsecond=0)


def test_conditions_keep_a_stable_order() -> None:
    c = conditions.set_condition([], "Degraded", False, "AsExpected", "", generation=1, now=T0)
    c = conditions.set_condition(c, "Custom", True, "Why", "", generation=1, now=T0)
    c = conditions.set_condition(c, "Ready", True, "Serving", "", generation=1, now=T0)
    c = conditions.set_condition(c, "Progressing", False, "Stable", "", generation=1, now=T0)
    assert [x.type for x in c] == ["Ready", "Progressing", "Degraded", "Custom"]


def _decision(i: int, reason: str = "RolloutComplete") -> Decision:
    return Decision(time=T0, kind="Rollout", from_=f"v{i}", to=f"v{i + 1}", reason=reason)


def test_decisions_are_bounded_and_not_repeated() -> None:
    log: list[Decision] = []
    for i in range(MAX_DECISIONS + 5):
        log = st.append_decision(log, _decision(i))
    assert len(log) == MAX_DECISIONS
    assert log[0].from_ == "v5" and log[-1].to == f"v{MAX_DECISIONS + 5}"
    again = st.append_decision(log, _decision(MAX_DECISIONS + 4).model_copy(update={"time": T2}))
    assert again == log
    assert st.new_decisions(log[:-1], log) == [log[-1]]


def test_decision_wire_form_uses_from() -> None:
    wire = _decision(1).to_k8s()
    assert wire["from"] == "v1" and "from_" not in wire
    assert Decision.model_validate(wire).from_ == "v1"


def test_status_changed_ignores_a_round_trip() -> None:
    md = deployment()
    status = st.compute_deployment_status(md, plan_for(md), children(), VERSIONS, url=URL, now=T0)
    read_back = json.loads(json.dumps(status.to_k8s()))
    assert not kstatus.status_changed(read_back, status)
    assert not kstatus.status_changed(status, status.model_copy())
    assert kstatus.status_changed(read_back, status.model_copy(update={"url": "http://elsewhere"}))
    assert kstatus.status_changed(None, status)


# ---- observations ----------------------------------------------------------------------------------------------


def deployment_obj(*, generation: int = 2, observed: int = 2, replicas: int = 2, updated: int = 2,
                   available: int = 2, total: int | None = None, traffic: str | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {"metadata": {"annotations": {"mlsteward.io/traffic": traffic}}} if traffic else {}
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas, "template": template},
        "status": {"observedGeneration": observed, "replicas": updated if total is None else total,
                   "updatedReplicas": updated, "availableReplicas": available, "readyReplicas": available},
    }


def test_observe_deployment() -> None:
    assert pods.observe_deployment(None) == pods.WorkloadState()
    assert pods.observe_deployment(deployment_obj()).ready
    assert not pods.observe_deployment(deployment_obj(observed=1)).rolled_out  # controller has not seen the spec
    assert not pods.observe_deployment(deployment_obj(updated=1, total=3)).rolled_out  # old pods remain
    assert not pods.observe_deployment(deployment_obj(available=0)).ready


def test_full_version_reads_the_served_target() -> None:
    assert st.full_version({"iris-1-0-0": 100}) == "iris-1-0-0"
    assert st.full_version({"a": 0, "b": 100}) == "b"
    assert st.full_version({"a": 90, "b": 10}) is None
    assert st.full_version(None) is None
    assert pods.parse_traffic("a=90,b=10,junk") == {"a": 90, "b": 10}


def job_obj(*, active: int = 0, cond: str | None = None, reason: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"active": active}
    if cond:
        status["conditions"] = [{"type": cond, "status": "True", "reason": reason, "message": "m"}]
    return {"metadata": {"name": "job"}, "status": status}


def pod_obj(message: str, created: str = "2026-01-01T12:00:00Z") -> dict[str, Any]:
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"containerStatuses": [{"state": {"terminated": {"exitCode": 1, "message": message}}}]},
    }


def test_observe_job() -> None:
    assert pods.observe_job(None) == pods.JobState()
    running = pods.observe_job(job_obj(active=1))
    assert running.exists and running.active and not running.failed
    failed = pods.observe_job(job_obj(cond="Failed", reason="DeadlineExceeded"), [pod_obj("old", "2026-01-01T11:00:00Z"),
                                                                               pod_obj("new")])
    assert failed.failed and failed.failure_reason == "DeadlineExceeded" and failed.termination_message == "new"
    assert pods.observe_job(job_obj(cond="Complete")).succeeded


# ---- ModelVersion ---------------------------------------------------------------------------------------------


def version(name: str = "iris-1-0-0", model: str = "iris", **status: Any) -> ModelVersion:
    return ModelVersion.model_validate({
        "metadata": {"name": name, "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {"model": model, "version": "1.0.0", "artifact": {"uri": "file:///m/x.skops", "sha256": SHA}},
        "status": status,
    })


def result(**fields: Any) -> str:
    return json.dumps({"phase": "Ready", "reason": "Validated", "message": "", **fields})


def test_version_pending_then_validating() -> None:
    mv = version()
    pending = mv_status.compute_version_status(mv, "job", pods.JobState(), T0)
    assert (pending.phase, pending.reason, pending.validation_job) == ("Pending", "Created", "job")
    assert conds(pending)["Progressing"].status == "True" and conds(pending)["Ready"].status == "False"
    validating = mv_status.compute_version_status(mv, "job", pods.observe_job(job_obj(active=1)), T0)
    assert validating.phase == "Validating" and validating.observed_generation == 1


def test_version_ready_from_termination_message() -> None:
    message = result(sha256=SHA, metrics={"accuracy": 0.97},
                     golden={"inputs": [[1.0, 2.0]], "outputs": [1]},
                     signature={"inputs": [{"name": "a"}, {"name": "b"}], "output": {"kind": "class"}},
                     reference={"uri": "s3://m/profile.json", "sha256": SHA, "format": "skops"})
    job = pods.observe_job(job_obj(cond="Complete"), [pod_obj(message)])
    s = mv_status.compute_version_status(version(), "job", job, T1)
    assert (s.phase, s.reason) == ("Ready", "Validated")
    assert s.metrics == {"accuracy": 0.97} and s.sha256 == SHA
    assert s.golden is not None and s.golden.outputs == [1]
    assert s.signature is not None and s.signature.names == ["a", "b"]
    assert s.reference is not None and s.reference.uri == "s3://m/profile.json"
    assert s.validated_at == T1.replace(microsecond=0)
    c = conds(s)
    assert (c["Ready"].status, c["Progressing"].status, c["Degraded"].status) == ("True", "False", "False")


def test_version_failed_reasons() -> None:
    for reason in ("DigestMismatch", "SignatureMismatch", "BelowThreshold", "FetchFailed", "LoadFailed"):
        message = json.dumps({"phase": "Failed", "reason": reason, "message": f"{reason} details"})
        job = pods.observe_job(job_obj(cond="Failed", reason="BackoffLimitExceeded"), [pod_obj(message)])
        s = mv_status.compute_version_status(version(), "job", job, T0)
        assert (s.phase, s.reason, s.message) == ("Failed", reason, f"{reason} details")
        assert conds(s)["Degraded"].status == "True" and conds(s)["Ready"].reason == reason


def test_version_job_failed_without_result_and_garbage_result() -> None:
    s = mv_status.compute_version_status(version(), "job", pods.observe_job(job_obj(cond="Failed", reason="DeadlineExceeded")), T0)
    assert (s.phase, s.reason) == ("Failed", "JobFailed") and "DeadlineExceeded" in s.message
    job = pods.observe_job(job_obj(cond="Complete"), [pod_obj("Traceback: not json")])
    s = mv_status.compute_version_status(version(), "job", job, T0)
    assert (s.phase, s.reason) == ("Failed", "InvalidResult")


def test_version_verdict_is_kept_once_recorded() -> None:
    done = version(phase="Ready", reason="Validated", validationJob="job", metrics={"accuracy": 0.9})
    s = mv_status.compute_version_status(done, "job", pods.JobState(), T2)  # the Job is gone
    assert (s.phase, s.metrics) == ("Ready", {"accuracy": 0.9})
    assert mv_status.version_is_terminal(done, "job") and not mv_status.version_is_terminal(done, "other-job")


# ---- ModelDeployment ------------------------------------------------------------------------------------------


VERSIONS = {
    "iris-1": version("iris-1", phase="Ready"),
    "iris-2": version("iris-2", phase="Ready"),
    "iris-bad": version("iris-bad", phase="Failed", reason="DigestMismatch"),
    "iris-wait": version("iris-wait", phase="Validating"),
    "wine-1": version("wine-1", model="wine", phase="Ready"),
}


def deployment(wanted: str = "iris-1", **status: Any) -> ModelDeployment:
    return ModelDeployment.model_validate({
        "metadata": {"name": "iris", "namespace": "ml", "uid": "u", "generation": 4},
        "spec": {"version": wanted},
        "status": status,
    })


def facts(name: str | None) -> VersionFacts | None:
    if name is None:
        return None
    mv = VERSIONS.get(name)
    if mv is None:
        return VersionFacts(name, exists=False)
    return VersionFacts(name, exists=True, model=mv.spec.model, phase=mv.status.phase.value, reason=mv.status.reason)


def ready_state() -> pods.WorkloadState:
    return pods.WorkloadState(exists=True, replicas=1, ready_replicas=1, available_replicas=1, updated_replicas=1,
                            rolled_out=True)


def children(*ready_versions: str, router: bool = True) -> st.ChildrenState:
    return st.ChildrenState(predictors={v: ready_state() for v in ready_versions},
                            router=ready_state() if router else pods.WorkloadState())


def plan_for(md: ModelDeployment, router_on: str | None = None, *ready_versions: str):
    return plan_deployment(facts(md.spec.version), facts(md.status.serving_version),
                           Observed(predictor_ready={v: True for v in ready_versions}, router_on=router_on))


def test_first_deploy_progressing_then_ready() -> None:
    md = deployment()
    s = st.compute_deployment_status(md, plan_for(md), children(), VERSIONS, url=URL, now=T0)
    assert s.serving_version is None and s.observed_generation == 4
    assert [t.to_k8s() for t in s.traffic] == [{"version": "iris-1", "weight": 100}]
    assert s.traffic_summary == "iris-1=100" and s.url == URL and s.model == "iris"
    c = conds(s)
    assert (c["Ready"].status, c["Progressing"].status, c["Degraded"].status) == ("False", "True", "False")
    assert s.rollout is not None and (s.rollout.phase, s.rollout.target_version) == ("Progressing", "iris-1")

    md = md.model_copy(update={"status": s})
    s2 = st.compute_deployment_status(md, plan_for(md, "iris-1", "iris-1"), children("iris-1"), VERSIONS,
                                      url=URL, now=T1)
    assert (s2.serving_version, s2.stable_version) == ("iris-1", "iris-1")
    c = conds(s2)
    assert (c["Ready"].status, c["Ready"].reason) == ("True", "Serving")
    assert c["Ready"].last_transition_time == T1.replace(microsecond=0)
    assert c["Degraded"].last_transition_time == T0.replace(microsecond=0)  # never flipped
    assert s2.rollout is not None and s2.rollout.phase == "Stable"
    assert [(d.kind, d.from_, d.to) for d in s2.decisions] == [("Rollout", None, "iris-1")]


def _serving(wanted: str) -> ModelDeployment:
    base = deployment("iris-1")
    serving = st.compute_deployment_status(base, plan_for(base, "iris-1", "iris-1"), children("iris-1"), VERSIONS,
                                           url=URL, now=T0)
    serving = st.compute_deployment_status(base.model_copy(update={"status": serving}),
                                           plan_for(base.model_copy(update={"status": serving}), "iris-1", "iris-1"),
                                           children("iris-1"), VERSIONS, url=URL, now=T0)
    return deployment(wanted).model_copy(update={"status": serving})


def test_bad_spec_version_keeps_serving_and_explains_in_a_decision() -> None:
    cases = {
        "iris-missing": "VersionNotFound",
        "iris-bad": "VersionFailed",
        "iris-wait": "VersionNotReady",
        "wine-1": "ModelMismatch",
    }
    for wanted, reason in cases.items():
        md = _serving(wanted)
        s = st.compute_deployment_status(md, plan_for(md, "iris-1", "iris-1"), children("iris-1"), VERSIONS,
                                         url=URL, now=T1)
        assert s.serving_version == "iris-1" and s.traffic_summary == "iris-1=100", wanted
        c = conds(s)
        assert (c["Degraded"].status, c["Degraded"].reason) == ("True", reason), wanted
        assert c["Ready"].status == "True", wanted  # iris-1 still serves
        hold = s.decisions[-1]
        assert (hold.kind, hold.from_, hold.to, hold.reason) == ("Hold", "iris-1", "iris-1", reason)
        assert hold.git_change == "set spec.version: iris-1 in ModelDeployment ml/iris"
        assert wanted in hold.message
        assert s.rollout is not None and (s.rollout.phase, s.rollout.target_version) == ("Waiting", wanted)
        # Reconciling the same situation again records nothing new and changes nothing.
        again = st.compute_deployment_status(md.model_copy(update={"status": s}), plan_for(md, "iris-1", "iris-1"),
                                             children("iris-1"), VERSIONS, url=URL, now=T2)
        assert not kstatus.status_changed(s, again), wanted


def test_bad_first_version_serves_nothing() -> None:
    md = deployment("iris-bad")
    s = st.compute_deployment_status(md, plan_for(md), children(router=False), VERSIONS, url=URL, now=T0)
    assert s.serving_version is None and s.traffic == [] and s.url is None and s.decisions == []
    c = conds(s)
    assert (c["Ready"].status, c["Ready"].reason) == ("False", "VersionFailed")
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "VersionFailed")


def test_switch_records_a_rollout_decision_once_router_moved() -> None:
    md = _serving("iris-2")
    warming = st.compute_deployment_status(md, plan_for(md, "iris-1", "iris-1"), children("iris-1"), VERSIONS,
                                           url=URL, now=T1)
    assert warming.serving_version == "iris-1" and conds(warming)["Progressing"].reason == "WarmingUp"
    assert conds(warming)["Ready"].status == "True"
    md = md.model_copy(update={"status": warming})
    done = st.compute_deployment_status(md, plan_for(md, "iris-2", "iris-1", "iris-2"), children("iris-1", "iris-2"),
                                        VERSIONS, url=URL, now=T2)
    assert (done.serving_version, done.stable_version, done.traffic_summary) == ("iris-2", "iris-2", "iris-2=100")
    last = done.decisions[-1]
    assert (last.kind, last.from_, last.to, last.reason) == ("Rollout", "iris-1", "iris-2", "RolloutComplete")
    assert conds(done)["Progressing"].status == "False"


def test_ready_false_when_serving_predictor_lost_its_pods() -> None:
    md = _serving("iris-1")
    s = st.compute_deployment_status(md, plan_for(md, "iris-1", "iris-1"), children(), VERSIONS, url=URL, now=T1)
    assert (conds(s)["Ready"].status, conds(s)["Ready"].reason) == ("False", "PredictorNotReady")


@dataclass(frozen=True)
class CanaryPlan:
    """A plan carrying a split weight table, as a canary rollout will."""

    live: tuple[str, ...] = ("iris-1", "iris-2")
    router_target: str | None = "iris-1"
    serving: str | None = "iris-1"
    stable: str | None = "iris-1"
    degraded: Any = None
    progressing: Any = None
    traffic: tuple[tuple[str, int], ...] = (("iris-1", 90), ("iris-2", 10))


def test_split_traffic_from_a_plan() -> None:
    s = st.compute_deployment_status(_serving("iris-2"), CanaryPlan(), children("iris-1", "iris-2"), VERSIONS,
                                     url=URL, now=T1)
    assert s.traffic_summary == "iris-1=90,iris-2=10"
