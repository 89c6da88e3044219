"""The DriftMonitor's other retraining triggers against a real API server: spec.schedule and spec.performance.

As in test_drift_controller.py, the tests play the kubelet: one predictor pod of the served version is reported
Ready at 127.0.0.1, where a real HTTP server answers `GET /v1/stats` (accuracy from feedback) and
`GET /v1/drift/window` (inputs like the reference: no drift); the reconcile is called directly, once, twice and with
a fresh client as a restarted operator would.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from .conftest import wait_for
from .test_controllers import GV, custom
from .test_drift_controller import (
    V1,
    create_version,
    PlayedPod,
    data,  # noqa: F401  (a module fixture)
    drift_window,
    events,
    monitor,
    operator_config,
    play_train_job,
    reconcile,
    retrain_template,
    serving_deployment,
)


class PredictorServer(PlayedPod):
    """`GET /v1/stats` and `GET /v1/drift/window` (no shift) of the played predictor pod."""

    def __init__(self, accuracy: float, feedback: int) -> None:
        super().__init__()
        self.accuracy, self.feedback = accuracy, feedback
        self.window = drift_window(0.0, 600, seed=5)

    def routes(self) -> dict[str, Callable[[], Any]]:
        from mlsteward_runtime.contracts import Quantiles, RuntimeStats

        def stats() -> RuntimeStats:
            return RuntimeStats(name="iris", version="1.0.0", window_s=600, count=2000, errors=0, error_rate=0.0,
                                throughput_rps=3.3, latency_ms=Quantiles(p50=2.0), feedback=self.feedback,
                                accuracy=self.accuracy)

        return {"/v1/stats": stats, "/v1/drift/window": lambda: self.window}


def retrain_jobs(kube: Any, ns: str) -> list[Any]:
    from kubernetes import client

    return client.BatchV1Api(kube).list_namespaced_job(ns).items


async def test_a_due_schedule_makes_one_job_with_the_schedule_trigger(kube, namespace, data, tmp_path):  # noqa: F811
    from kubernetes import client

    from mlsteward_operator.kube import client as k8s

    create_version(kube, namespace, V1, data, {"accuracy": 0.9})
    serving_deployment(kube, namespace)
    obj = monitor(namespace, kube, actions=["Retrain"], retrain={"template": retrain_template(data)},
                  schedule="* * * * *", cooldown="1h")
    created = dt.datetime.fromisoformat(obj["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    # Two minutes after creation: the cron times of both minutes passed; one run, for the latest. Ten seconds into
    # the minute, so that the later calls below stay within it.
    due = created.replace(second=0) + dt.timedelta(minutes=2)
    at = due + dt.timedelta(seconds=10)
    async with PredictorServer(accuracy=0.9, feedback=500) as server:
        cfg = operator_config(server.port)
        first = await reconcile(kube, namespace, cfg, k8s.Client(), at=at)
        await reconcile(kube, namespace, cfg, k8s.Client(), at=at)
        obj = await reconcile(kube, namespace, cfg, k8s.Client(), at=at + dt.timedelta(seconds=20))
    st = obj["status"]
    stamp = due.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert first["status"]["lastScheduledRun"] == stamp
    assert st["lastScheduledRun"] == stamp and st["nextScheduledRun"] == (due + dt.timedelta(minutes=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    jobs = retrain_jobs(kube, namespace)
    assert [j.metadata.name for j in jobs] == [f"iris-drift-retrain-schedule-{due:%Y%m%d%H%M%S}"]
    retrain = st["retrain"]
    assert retrain["job"] == jobs[0].metadata.name and retrain["trigger"] == f"schedule/iris-drift@{stamp}"
    assert retrain["parent"] == V1 and [s["step"] for s in retrain["steps"]] == ["JobCreated"]
    assert st["lastAction"]["type"] == "Retrain" and st["lastAction"]["trigger"] == retrain["trigger"]
    assert st["driftDetected"] is False  # the drift check ran too, and saw no drift
    reasons = [r for r, _ in events(kube, namespace)]
    assert reasons.count("ScheduledRun") == 1 and reasons.count("RetrainDecided") == 1

    # The same loop as a drift-triggered retraining: the result becomes a ModelVersion with the schedule's trigger.
    env = play_train_job(kube, namespace, retrain["job"], tmp_path)
    assert env["MLSTEWARD_TRIGGER"] == retrain["trigger"]
    wait_for(lambda: client.BatchV1Api(kube).read_namespaced_job_status(retrain["job"], namespace).status.succeeded,
             timeout=60, what="the Job controller marks the Job succeeded")
    async with PredictorServer(accuracy=0.9, feedback=500) as server:
        obj = await reconcile(kube, namespace, operator_config(server.port), k8s.Client(),
                              at=at + dt.timedelta(seconds=30))
    name = obj["status"]["retrain"]["modelVersion"]
    mv = custom(kube).get_namespaced_custom_object(*GV, namespace, "modelversions", name)
    assert mv["spec"]["lineage"]["trigger"] == retrain["trigger"] and mv["spec"]["lineage"]["parent"] == V1
    result = json.loads((tmp_path / f"{retrain['job']}.termination").read_text())
    assert mv["spec"]["artifact"]["sha256"] == result["artifact"]["sha256"]
    assert len(retrain_jobs(kube, namespace)) == 1


async def test_accuracy_below_the_floor_read_from_the_predictor_makes_one_job(kube, namespace, data):  # noqa: F811
    from mlsteward_operator.kube import client as k8s

    create_version(kube, namespace, V1, data, {"accuracy": 0.9})
    serving_deployment(kube, namespace)
    monitor(namespace, kube, actions=["Retrain"], retrain={"template": retrain_template(data)}, consecutive=2,
            performance={"metric": "accuracy", "floor": 0.8, "minSamples": 200})
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    async with PredictorServer(accuracy=0.62, feedback=400) as server:
        cfg = operator_config(server.port)
        obj = await reconcile(kube, namespace, cfg, k8s.Client(), at=t0)
        perf = obj["status"]["performance"]
        assert (perf["metric"], perf["value"], perf["samples"], perf["breaches"]) == ("accuracy", 0.62, 400, 1)
        assert perf["version"] == V1 and "retrain" not in obj["status"] and not retrain_jobs(kube, namespace)
        # The second check in breach acts; checks again at the same time and later do not add a Job.
        obj = await reconcile(kube, namespace, cfg, k8s.Client(), at=t0 + dt.timedelta(seconds=2))
        await reconcile(kube, namespace, cfg, k8s.Client(), at=t0 + dt.timedelta(seconds=2))
        await reconcile(kube, namespace, cfg, k8s.Client(), at=t0 + dt.timedelta(seconds=4))
        # Still below the floor for `consecutive` more checks, but the retraining it started is active.
        obj = await reconcile(kube, namespace, cfg, k8s.Client(), at=t0 + dt.timedelta(seconds=6))
        assert server.calls["/v1/stats"] == 4
    st = obj["status"]
    stamp = t0.strftime("%Y-%m-%dT%H:%M:%SZ")
    jobs = retrain_jobs(kube, namespace)
    assert [j.metadata.name for j in jobs] == [f"iris-drift-retrain-performance-{t0:%Y%m%d%H%M%S}"]
    assert st["retrain"]["trigger"] == f"performance/iris-drift@{stamp}" and st["retrain"]["parent"] == V1
    assert st["lastAction"]["job"] == jobs[0].metadata.name
    assert st["performance"]["breaches"] == 2 and "still active" in st["performance"]["message"]
    env = {e.name: e.value for e in jobs[0].spec.template.spec.containers[0].env}
    assert env["MLSTEWARD_TRIGGER"] == st["retrain"]["trigger"]
    reasons = [r for r, _ in events(kube, namespace)]
    assert reasons.count("PerformanceBelowFloor") == 1 and reasons.count("RetrainDecided") == 1
    assert reasons.count("PerformanceRetrainSkipped") == 1
