"""The DriftMonitor's actions as data (driftmonitor/decide.py and retraining/): when a check is due, the Rollback request, the alert body,
the retraining Job, the ModelVersion registered from a TrainResult, the Experiment, the metric comparison, and the
status written as a merge patch. Plus the drift-window poll and the webhook client against real loopback servers,
and the operator's drift metrics in a private registry."""

from __future__ import annotations

import datetime as dt
import json
import socket
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from mlsteward_runtime.contracts import ArtifactRef, DriftWindow, FeatureType, FeatureWindow, ProfileRef, TrainResult
from mlsteward_runtime.stats.profile import build_profile
from prometheus_client import CollectorRegistry

from mlsteward_operator.driftmonitor import analysis as dra
from mlsteward_operator.driftmonitor import decide as dr
from mlsteward_operator.retraining import render as retrain_render
from mlsteward_operator.retraining import decide as retraining
from mlsteward_operator.kube import client as k8s
from mlsteward_operator.api.common import ObjectMeta
from mlsteward_operator.api.driftmonitor import (
    Action,
    DriftMonitor,
    DriftMonitorSpec,
    DriftMonitorStatus,
    RetrainPhase,
    RetrainStatus,
)
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.kernel.metrics import DriftMetrics
from mlsteward_operator.driftmonitor.reconcile import _wire

T0 = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
RETRAIN_TEMPLATE = {"backoffLimit": 0, "template": {"spec": {"containers": [{
    "name": "train", "image": "mlsteward:0.1.0", "args": ["train", "--estimator", "x.Y"],
    "env": [{"name": "KEEP", "value": "1"}, {"name": retrain_render.ENV_PARENT, "value": "stale"}]}]}}}


def monitor(status: DriftMonitorStatus | None = None, **spec: Any) -> DriftMonitor:
    return DriftMonitor(metadata=ObjectMeta(name="iris-drift", namespace="ml", uid="uid-1", generation=2),
                        spec=DriftMonitorSpec(deployment="iris", **spec), status=status or DriftMonitorStatus())


def confirmed(dm: DriftMonitor, shift: float = 1.0) -> tuple[dra.DriftVerdict, dr.DriftDecision, DriftMonitor]:
    """Checks on shifted windows until the monitor acts; returns the acting check and the monitor before it."""
    rng = np.random.default_rng(3)
    reference = build_profile({"x": rng.normal(0, 1, 5000).tolist()}, types={"x": FeatureType.number}, seed=0)
    for i in range(dm.spec.consecutive):
        now = T0 + dt.timedelta(minutes=5 * i)
        w = DriftWindow(name="iris", version="iris-v1", replica="p", seen=800,
                        features={"x": FeatureWindow(type=FeatureType.number,
                                                     values=rng.normal(shift, 1, 800).tolist())})
        verdict = dra.analyse(dm, reference, [w], now)
        decision = dr.decide(dm, verdict, now)
        if decision.act:
            return verdict, decision, dm
        dm = dm.model_copy(update={"status": dr.compute_status(dm, verdict, decision, now)})
    raise AssertionError("no action")


def test_check_due_follows_interval_generation_and_last_check():
    dm = monitor(interval="5m")
    assert dr.check_due(dm, T0)  # never checked
    st = DriftMonitorStatus(observed_generation=2, last_check=T0)
    assert not dr.check_due(monitor(st, interval="5m"), T0 + dt.timedelta(minutes=4, seconds=59))
    assert dr.check_due(monitor(st, interval="5m"), T0 + dt.timedelta(minutes=5))
    # A spec change (generation 3 not yet observed) checks at once.
    changed = monitor(st, interval="5m").model_copy(update={"metadata": ObjectMeta(
        name="iris-drift", namespace="ml", uid="uid-1", generation=3)})
    assert dr.check_due(changed, T0 + dt.timedelta(seconds=1))


def test_rollback_request_carries_served_version_numbers_and_thresholds():
    verdict, decision, dm = confirmed(monitor(consecutive=2, actions=[Action.rollback]))
    req = dr.rollback_request(dm, verdict, decision, "iris-v1", T0)
    assert (req.kind.value, req.version, req.from_version, req.reason) == ("Rollback", None, "iris-v1",
                                                                            "DriftDetected")
    assert req.numbers["windowSize"] == verdict.window_size == 800
    assert req.numbers["consecutiveBreaches"] == 2 and req.numbers["driftedFeatures"] == 1
    (feature,) = verdict.report.features
    assert req.numbers["x.pValue"] == feature.p_value and req.numbers["x.ks"] == feature.statistic
    assert req.thresholds["pValue"] == dm.spec.thresholds.p_value and req.thresholds["consecutive"] == 2


def test_alert_payload_is_slack_compatible_and_structured():
    verdict, decision, dm = confirmed(monitor(consecutive=1))
    body = dr.alert_payload(dm, verdict, decision)
    json.dumps(body)  # serializable as sent
    assert "ml/iris-drift" in body["text"] and "x drifted" in body["text"]
    assert body["actions"] == ["Alert"] and body["driftedFeatures"] == ["x"] and body["version"] == "iris-v1"
    assert body["evidence"]["features"]["x"]["drifted"] is True


def test_retrain_job_is_named_after_the_breach_owned_and_carries_the_report():
    dm0 = monitor(consecutive=2, actions=[Action.retrain], retrain={"template": RETRAIN_TEMPLATE})
    verdict, decision, dm = confirmed(dm0)
    r = dr.start_retrain(decision, "iris-v1", T0 + dt.timedelta(minutes=5))
    assert r.job == retraining.retrain_job_name("iris-drift", T0) == "iris-drift-retrain-20260301120000"
    status = dr.compute_status(dm, verdict, decision, T0 + dt.timedelta(minutes=5))
    job = retrain_render.render_retrain_job(dm.model_copy(update={"status": status}), r)
    assert job["metadata"]["name"] == r.job and job["metadata"]["namespace"] == "ml"
    owner = job["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("DriftMonitor", "iris-drift", "uid-1")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["KEEP"] == "1" and env[retrain_render.ENV_PARENT] == "iris-v1" and env[retrain_render.ENV_TRIGGER] == r.trigger
    assert env[retrain_render.ENV_JOB] == r.job and env[retrain_render.ENV_MONITOR] == "iris-drift"
    report = json.loads(env[retrain_render.ENV_REPORT])
    assert report["report"]["windowSize"] == 800 and report["report"]["features"][0]["drifted"] is True
    assert report["parent"] == "iris-v1"
    # The user's template is not modified.
    assert dm.spec.retrain.template["template"]["spec"]["containers"][0]["env"][1]["value"] == "stale"


def parent_version() -> ModelVersion:
    return ModelVersion.model_validate({"metadata": {"name": "iris-v1", "namespace": "ml"}, "spec": {
        "model": "iris", "version": "1.4.0",
        "artifact": {"uri": "s3://m/iris-1.4.0.skops", "sha256": "c" * 64, "format": "skops"},
        "signature": {"inputs": [{"name": "x"}]},
        "validation": {"dataset": "s3://d/holdout.csv", "target": "y", "thresholds": ["accuracy >= 0.8"]}}})


def train_result(sha: str = "3f5a09c2" + "d" * 56) -> TrainResult:
    return TrainResult(phase="Succeeded", reason="Trained", message="ok",
                       artifact=ArtifactRef(uri="s3://m/iris-r.skops", sha256=sha),
                       reference=ProfileRef(uri="s3://m/iris-r.profile.json", sha256="e" * 64),
                       metrics={"accuracy": 0.93}, framework={"name": "sklearn", "version": "1.5.2"},
                       data="s3://d/fresh.csv")


def test_retrained_version_has_lineage_parent_validation_and_a_valid_deterministic_name():
    r = RetrainStatus(job="iris-drift-retrain-1", parent="iris-v1", trigger="driftmonitor/iris-drift@2026-03-01T12:00:00Z",
                      phase=RetrainPhase.running, started_at=T0)
    mv = retrain_render.render_retrained_version(parent_version(), train_result(), r, "iris-drift")
    again = retrain_render.render_retrained_version(parent_version(), train_result(), r, "iris-drift")
    assert mv == again and mv["metadata"]["name"] == "iris-r3f5a09c2dd"
    parsed = ModelVersion.model_validate(mv)  # the CRD's own model accepts it
    assert parsed.spec.version == "1.4.1-retrain.g3f5a09c2"
    assert parsed.spec.lineage.parent == "iris-v1" and parsed.spec.lineage.trigger == r.trigger
    assert parsed.spec.lineage.dataset == "s3://d/fresh.csv"
    assert parsed.spec.validation == parent_version().spec.validation
    assert parsed.spec.signature == parent_version().spec.signature
    assert parsed.spec.reference.sha256 == "e" * 64 and parsed.spec.metrics == {"accuracy": 0.93}
    other = retrain_render.render_retrained_version(parent_version(), train_result("0" * 64), r, "iris-drift")
    assert other["metadata"]["name"] != mv["metadata"]["name"]


def test_parse_train_result_reads_what_mlsteward_train_writes_and_refuses_the_rest():
    from mlsteward_runtime.commands.train import encode_result

    assert retrain_render.parse_train_result(encode_result(train_result())) == train_result()
    assert retrain_render.parse_train_result("not json") is None and retrain_render.parse_train_result(None) is None
    assert retrain_render.parse_train_result('{"phase": "Done"}') is None


def test_experiment_is_champion_against_challenger_half_and_half():
    from mlsteward_operator.api.experiment import ExperimentSpec

    exp = retrain_render.render_experiment(monitor(), "iris-v1", "iris-r3f5a09c2dd")
    spec = ExperimentSpec.model_validate(exp["spec"])
    assert [(v.name, v.version, v.weight) for v in spec.variants] == [
        ("champion", "iris-v1", 50), ("challenger", "iris-r3f5a09c2dd", 50)]
    assert spec.on_success.value == "Promote" and spec.deployment == "iris"
    assert exp["metadata"]["name"] == retrain_render.experiment_name("iris-drift", "iris-r3f5a09c2dd")


@pytest.mark.parametrize(("new", "champion", "better"), [
    ({"accuracy": 0.93, "f1_macro": 0.9}, {"accuracy": 0.91, "f1_macro": 0.9}, True),
    ({"accuracy": 0.93, "f1_macro": 0.8}, {"accuracy": 0.91, "f1_macro": 0.9}, False),  # worse on one
    ({"rmse": 2.0}, {"rmse": 2.5}, True),  # lower is better
    ({"rmse": 3.0}, {"rmse": 2.5}, False),
    ({"accuracy": 0.9}, {"accuracy": 0.9}, False),  # equal is not better
    ({"accuracy": 0.99}, {"r2": 0.5}, False),  # nothing shared
])
def test_compare_metrics(new, champion, better):
    assert retraining.compare_metrics(new, champion)[0] is better


def test_status_patch_nulls_what_a_replaced_object_left_unset():
    r = RetrainStatus(job="j2", trigger="t", phase=RetrainPhase.running, started_at=T0)
    out = _wire(DriftMonitorStatus(retrain=r))
    assert out["retrain"]["modelVersion"] is None and out["retrain"]["experiment"] is None
    assert out["retrain"]["job"] == "j2"


def test_metrics_set_and_drop_series():
    reg = CollectorRegistry()
    m = DriftMetrics(reg)
    m.record("ml", "dm", [("x", "ks", 0.3, 0.001, 0.4, True), ("c", "chi-square", 2.0, 0.5, None, False)], 800, 2)
    labels = {"namespace": "ml", "monitor": "dm", "feature": "x", "method": "ks"}
    assert reg.get_sample_value("mlsteward_drift_statistic", labels) == 0.3
    assert reg.get_sample_value("mlsteward_drift_drifted", labels) == 1.0
    assert reg.get_sample_value("mlsteward_drift_window_rows", {"namespace": "ml", "monitor": "dm"}) == 800
    m.record("ml", "dm", [("c", "chi-square", 1.0, 0.6, None, False)], 900, 0)
    assert reg.get_sample_value("mlsteward_drift_statistic", labels) is None  # x no longer tested
    m.forget("ml", "dm")
    assert reg.get_sample_value("mlsteward_drift_window_rows", {"namespace": "ml", "monitor": "dm"}) is None


# --------------------------------------------------------------------------------------------------------------
# The client's outside calls against real loopback servers
# --------------------------------------------------------------------------------------------------------------


class PodsOnly(k8s.Client):
    """The real client with the API server's pod listing replaced by a fixed answer."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        super().__init__(api_client=object())  # never used: only `list` would call the API server
        self.pods = pods

    async def list(self, api_version: str, kind: str, namespace: str | None, *,
                   labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        return self.pods


def pod(name: str, ip: str, ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"phase": "Running", "podIP": ip, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(routes: list[web.RouteDef]) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


async def test_drift_windows_reads_every_ready_pod_and_reports_failures():
    window = DriftWindow(name="iris", version="v1", replica="p-a", seen=10,
                         features={"x": FeatureWindow(type=FeatureType.number, values=[1.0, 2.0])})

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=window.model_dump_json(), content_type="application/json")

    runner, port = await serve([web.get("/v1/drift/window", handler)])
    try:
        client = PodsOnly([pod("a", "127.0.0.1"), pod("b", "127.0.0.1"), pod("dead", "127.0.0.2"),
                           pod("unready", "127.0.0.1", ready=False)])
        report = await client.drift_windows("ml", {"k": "v"}, port, timeout_s=1.0)
    finally:
        await runner.cleanup()
    assert report.answers == [window, window] and report.pods == 3
    assert len(report.failures) == 1 and report.failures[0].startswith("dead: ")


async def test_post_webhook_retries_server_errors_then_succeeds_and_gives_up_on_4xx():
    seen: list[dict[str, Any]] = []
    answers = [503, 500, 200]

    async def flaky(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.Response(status=answers[len(seen) - 1])

    async def refuse(_: web.Request) -> web.Response:
        return web.Response(status=400)

    runner, port = await serve([web.post("/hook", flaky), web.post("/bad", refuse)])
    try:
        client = PodsOnly([])
        ok = await client.post_webhook(f"http://127.0.0.1:{port}/hook", {"text": "hi"}, attempts=3, backoff_s=0.01)
        bad = await client.post_webhook(f"http://127.0.0.1:{port}/bad", {"text": "hi"}, attempts=3, backoff_s=0.01)
        down = await client.post_webhook(f"http://127.0.0.1:{free_port()}/x", {}, attempts=2, backoff_s=0.01)
    finally:
        await runner.cleanup()
    assert ok is None and seen == [{"text": "hi"}] * 3
    assert bad == "HTTP 400 on attempt 1"
    assert down is not None and "attempt 2" in down


async def test_fetch_profile_checks_the_digest_and_caches_by_it(tmp_path):
    import hashlib

    profile = build_profile({"x": [1.0, 2.0, 3.0, 4.0]}, types={"x": FeatureType.number}, seed=0)
    path = tmp_path / "p.json"
    path.write_text(profile.model_dump_json())
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    client = PodsOnly([])
    assert await client.fetch_profile(str(path), sha) == profile
    path.write_text("{}")  # served from the cache by digest now
    assert await client.fetch_profile(str(path), sha) == profile
    with pytest.raises(k8s.ProfileError) as exc:
        await client.fetch_profile(str(path), "0" * 64)
    assert exc.value.reason == "DigestMismatch"
    with pytest.raises(k8s.ProfileError) as exc:
        await client.fetch_profile(str(path), None)
    assert exc.value.reason == "InvalidProfile" and "rows" in exc.value.message
