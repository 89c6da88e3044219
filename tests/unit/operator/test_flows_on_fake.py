"""Whole ModelDeployment flows on the in-memory API server (kube/fake.py), fast, with a controlled clock: a canary
through every step, a step failing its gate and rolling back, an Experiment's promotion, and an operator that
restarts in the middle of a canary. The cluster's side is played here: the Deployments' controllers (a Deployment
becomes rolled out and ready when `settle` says so) and the router pods' counters (`Cluster.traffic`). Each test
asserts what the reconciles leave in the cluster and in status, never the order of calls."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mlsteward_runtime.contracts import RouterStats, VersionStats

from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel import names
from mlsteward_operator.kube.client import PodAnswers
from mlsteward_operator.kube.fake import FakeClient
from mlsteward_operator.modeldeployment.reconcile import reconcile_deployment

GV = "mlsteward.io/v1alpha1"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
STEP = dt.timedelta(minutes=2)
CANARY = {"strategy": "Canary", "steps": [10, 50, 100], "stepInterval": "2m",
          "analysis": {"maxErrorRate": 0.01, "minRequests": 100}}


class Cluster:
    """The fake API server, the clock, and the pods' side of the world."""

    def __init__(self) -> None:
        self.fake, self.cfg, self.now = FakeClient(), OperatorConfig(), T0
        self.counts: dict[str, list[int]] = {}  # version -> [requests, errors] one router replica counted

    async def create(self, obj: dict[str, Any]) -> None:
        created = await self.fake.create({k: v for k, v in obj.items() if k != "status"})
        assert created is not None
        if obj.get("status"):
            await self.fake.patch_status(obj["apiVersion"], obj["kind"], "ml", obj["metadata"]["name"], obj["status"])

    async def reconcile(self) -> dict[str, Any] | None:
        """One reconcile as the handlers run it: on the stored object, its returned status patched."""
        body = await self.fake.get(GV, "ModelDeployment", "ml", "iris")
        assert body is not None
        new = await reconcile_deployment(body, self.fake, self.cfg, now=self.now)
        if new is not None:
            await self.fake.patch_status(GV, "ModelDeployment", "ml", "iris", new)
        return new

    async def settle(self) -> None:
        """Every Deployment's controller catches up: each wanted pod runs the latest template and is ready."""
        for d in await self.fake.list("apps/v1", "Deployment", "ml"):
            n = d["spec"].get("replicas", 1)
            await self.fake.patch_status("apps/v1", "Deployment", "ml", d["metadata"]["name"], {
                "observedGeneration": d["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
                "readyReplicas": n, "availableReplicas": n})

    async def converge(self, limit: int = 12) -> None:
        """Reconcile and settle at the current time until a reconcile changes nothing in the cluster."""
        for _ in range(limit):
            await self.settle()
            writes = self.fake.writes
            if await self.reconcile() is None and self.fake.writes == writes:
                return
        raise AssertionError("the reconciles did not converge")

    def traffic(self, version: str, requests: int, errors: int = 0) -> None:
        """The router replica counted `requests` more for `version` (cumulative, as /v1/router/stats is)."""
        c = self.counts.setdefault(version, [0, 0])
        c[0] += requests
        c[1] += errors
        stats = RouterStats(deployment="iris", replica="iris-router-a", started=1000.0, versions={
            v: VersionStats(version=v, requests=r, errors=e, latency_buckets={"50": r, "+Inf": r})
            for v, (r, e) in self.counts.items()})
        self.fake.pod_answers["/v1/router/stats"] = PodAnswers([stats], [], 1)

    async def md(self) -> dict[str, Any]:
        obj = await self.fake.get(GV, "ModelDeployment", "ml", "iris")
        assert obj is not None
        return obj

    async def predictors(self) -> set[str]:
        return {d["metadata"]["name"] for d in await self.fake.list("apps/v1", "Deployment", "ml")
                if d["metadata"]["name"] != names.router_name("iris")}

    async def set_spec_version(self, version: str) -> None:
        md = await self.md()
        await self.fake.apply({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris",
                                                                                         "namespace": "ml"},
                               "spec": {**md["spec"], "version": version}})


def version(name: str) -> dict[str, Any]:
    return {"apiVersion": GV, "kind": "ModelVersion", "metadata": {"name": name, "namespace": "ml"},
            "spec": {"model": "iris", "version": "1.0.0", "artifact": {"uri": f"s3://m/{name}.skops",
                                                                        "sha256": "a" * 64}},
            "status": {"phase": "Ready"}}


async def serving_v1(rollout: dict[str, Any] | None = None) -> Cluster:
    """A cluster whose ModelDeployment `iris` serves iris-v1 (iris-v2 is Ready too), steady."""
    c = Cluster()
    for v in ("iris-v1", "iris-v2"):
        await c.create(version(v))
    spec: dict[str, Any] = {"model": "iris", "version": "iris-v1"}
    if rollout:
        spec["rollout"] = rollout
    await c.create({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ml"},
                    "spec": spec})
    await c.converge()
    assert (await c.md())["status"]["servingVersion"] == "iris-v1"
    return c


def rollout_of(md: dict[str, Any]) -> dict[str, Any]:
    return md["status"]["rollout"]


def traffic_of(md: dict[str, Any]) -> dict[str, int]:
    return {t["version"]: t["weight"] for t in md["status"]["traffic"]}


async def test_a_canary_goes_through_every_step_and_ends_serving_the_new_version():
    c = await serving_v1(CANARY)
    await c.set_spec_version("iris-v2")
    c.traffic("iris-v1", 0)
    for index, weight in enumerate(CANARY["steps"]):
        await c.converge()  # the router moves to the step's split; the step begins, its baseline taken
        md = await c.md()
        assert rollout_of(md)["phase"] == "Progressing" and rollout_of(md)["step"] == index
        assert rollout_of(md)["stepStartedAt"] is not None
        assert traffic_of(md) == {"iris-v1": 100 - weight, "iris-v2": weight}
        assert md["status"]["servingVersion"] == "iris-v1"
        c.traffic("iris-v2", 150)  # enough requests, no error
        c.now += STEP
    await c.converge()

    md = await c.md()
    assert md["status"]["servingVersion"] == md["status"]["stableVersion"] == "iris-v2"
    assert md["status"]["previousVersion"] == "iris-v1"
    assert traffic_of(md) == {"iris-v2": 100} and rollout_of(md)["phase"] == "Stable"
    passed = [d for d in md["status"]["decisions"] if d["reason"] == "StepPassed"]
    assert [d["numbers"]["step"] for d in passed] == [0, 1, 2]
    assert all(d["numbers"]["requests"] == 150 and d["numbers"]["errors"] == 0 for d in passed)
    assert [d["to"] for d in md["status"]["decisions"] if d["reason"] == "RolloutComplete"] == ["iris-v1", "iris-v2"]
    # The old version's predictor is gone once the new one serves alone.
    assert await c.predictors() == {names.predictor_name("iris", "iris-v2")}
    assert md["spec"]["version"] == "iris-v2"


async def test_a_step_failing_its_gate_rolls_back_and_leaves_the_spec_alone():
    c = await serving_v1(CANARY)
    await c.set_spec_version("iris-v2")
    c.traffic("iris-v1", 0)
    await c.converge()
    assert rollout_of(await c.md())["step"] == 0
    c.traffic("iris-v2", 200, errors=20)  # an error rate of 0.1, over maxErrorRate 0.01
    c.now += STEP
    await c.converge()

    md = await c.md()
    assert md["spec"]["version"] == "iris-v2"  # status only: Git still says iris-v2
    assert rollout_of(md)["phase"] == "RolledBack" and rollout_of(md)["targetVersion"] == "iris-v2"
    assert md["status"]["servingVersion"] == "iris-v1" and traffic_of(md) == {"iris-v1": 100}
    [rollback] = [d for d in md["status"]["decisions"] if d["kind"] == "Rollback"]
    assert (rollback["from"], rollback["to"], rollback["reason"]) == ("iris-v2", "iris-v1", "AnalysisFailed")
    assert rollback["numbers"]["errorRate"] == 0.1 and rollback["thresholds"]["maxErrorRate"] == 0.01
    assert "iris-v1" in rollback["gitChange"] and "ModelDeployment ml/iris" in rollback["gitChange"]
    conditions = {x["type"]: x for x in md["status"]["conditions"]}
    assert conditions["Degraded"]["status"] == "True" and conditions["Degraded"]["reason"] == "AnalysisFailed"
    assert [e["reason"] for e in c.fake.events].count("AnalysisFailed") == 1
    # Later reconciles do not try the failed version again.
    c.now += 3 * STEP
    await c.converge()
    assert (await c.md())["status"]["servingVersion"] == "iris-v1"
    assert traffic_of(await c.md()) == {"iris-v1": 100}


async def test_an_experiments_promotion_is_applied_once():
    c = await serving_v1()
    await c.create({"apiVersion": GV, "kind": "Experiment", "metadata": {"name": "ab", "namespace": "ml"},
                    "spec": {"deployment": "iris", "variants": [{"name": "control", "version": "iris-v1",
                                                                 "weight": 50},
                                                                {"name": "treatment", "version": "iris-v2",
                                                                 "weight": 50}]},
                    "status": {"phase": "Concluded", "servingRequest": {
                        "kind": "Promote", "version": "iris-v2", "fromVersion": "iris-v1",
                        "time": "2026-03-01T12:00:00Z", "reason": "ExperimentConcluded",
                        "message": "iris-v2 wins", "numbers": {"pValue": 0.001}}}})
    c.now += STEP
    await c.converge()
    c.now += STEP
    await c.converge()

    md = await c.md()
    assert md["spec"]["version"] == "iris-v1"
    override = md["status"]["override"]
    assert (override["version"], override["specVersion"], override["kind"], override["source"]) == (
        "iris-v2", "iris-v1", "Promote", "Experiment/ab")
    assert md["status"]["servingVersion"] == "iris-v2" and traffic_of(md) == {"iris-v2": 100}
    [promote] = [d for d in md["status"]["decisions"] if d["kind"] == "Promote"]
    assert (promote["from"], promote["to"], promote["reason"]) == ("iris-v1", "iris-v2", "ExperimentConcluded")
    assert promote["numbers"] == {"pValue": 0.001} and "iris-v2" in promote["gitChange"]
    assert [e["reason"] for e in c.fake.events].count("ExperimentConcluded") == 1
    conditions = {x["type"]: x for x in md["status"]["conditions"]}
    assert conditions["Degraded"]["reason"] == "Promoted"

    # Git catches up (the override ends), then a person puts iris-v1 back: the old request, whose fromVersion is
    # served again, is not applied a second time.
    await c.set_spec_version("iris-v2")
    c.now += STEP
    await c.converge()
    assert (await c.md())["status"]["override"]["endedAt"] is not None
    await c.set_spec_version("iris-v1")
    c.now += STEP
    await c.converge()
    md = await c.md()
    assert md["status"]["servingVersion"] == "iris-v1" and traffic_of(md) == {"iris-v1": 100}
    assert [d["kind"] for d in md["status"]["decisions"]].count("Promote") == 1


async def test_an_operator_restarted_mid_canary_converges_to_the_same_result():
    """Two clusters run the same canary; in one the operator restarts in the middle of a step, so the reconcile
    after the restart has nothing but the stored status (and the cluster) to go on. Both end the same."""
    runs = []
    for restart in (False, True):
        c = await serving_v1(CANARY)
        await c.set_spec_version("iris-v2")
        c.traffic("iris-v1", 0)
        await c.converge()
        c.traffic("iris-v2", 60)
        c.now += STEP / 2
        if restart:
            # A new process: a fresh client over the same stored objects, nothing remembered but the cluster.
            fresh = FakeClient()
            fresh.objects, fresh.pod_answers = c.fake.objects, c.fake.pod_answers
            c.fake = fresh
        await c.converge()
        c.traffic("iris-v2", 60)
        c.now += STEP / 2
        await c.converge()
        for _ in CANARY["steps"][1:]:
            c.traffic("iris-v2", 150)
            c.now += STEP
            await c.converge()
        runs.append((await c.md(), await c.predictors(), c.fake.events))

    (plain, plain_children, _), (restarted, restarted_children, events_after) = runs
    assert restarted["status"]["decisions"] == plain["status"]["decisions"]
    assert restarted["status"]["servingVersion"] == "iris-v2" and traffic_of(restarted) == {"iris-v2": 100}
    assert restarted_children == plain_children
    passed = [d for d in restarted["status"]["decisions"] if d["reason"] == "StepPassed"]
    assert [d["numbers"]["step"] for d in passed] == [0, 1, 2]
    assert passed[0]["numbers"]["requests"] == 120  # the step's counts span the restart
    # Every step passed after the restart, each posted once: no decision was repeated.
    assert [e["reason"] for e in events_after].count("StepPassed") == 3


async def _partly_rolled_out(c: Cluster, name: str) -> None:
    """The Deployment's controller has seen the new template but the old pod still serves: one available pod of
    the old template, the new one not ready yet (what a watch event shows in the middle of a rollout)."""
    d = await c.fake.get("apps/v1", "Deployment", "ml", name)
    assert d is not None
    await c.fake.patch_status("apps/v1", "Deployment", "ml", name, {
        "observedGeneration": d["metadata"]["generation"], "replicas": 2, "updatedReplicas": 1,
        "readyReplicas": 1, "availableReplicas": 1})


async def test_an_experiment_starts_without_flapping_while_the_router_rolls_to_its_split():
    """Reconciles that run while the router Deployment is still rolling to the Experiment's split (as watch events
    make them run) keep the split and the arms' predictors: the deployment still serves the control through the
    old router pod, so nothing is unsettled."""
    c = await serving_v1()
    await c.create({"apiVersion": GV, "kind": "Experiment", "metadata": {"name": "ab", "namespace": "ml"},
                    "spec": {"deployment": "iris", "metric": {"name": "reward", "kind": "binary",
                                                              "goal": "maximize"},
                             "variants": [{"name": "control", "version": "iris-v1", "weight": 50},
                                          {"name": "treatment", "version": "iris-v2", "weight": 50}]}})
    await c.reconcile()  # the arms' predictors are created
    await c.settle()  # ... and become ready
    await c.reconcile()  # the router is moved to the split
    router = names.router_name("iris")
    for _ in range(3):  # events from the router's rollout, each one reconciled before the rollout completes
        await _partly_rolled_out(c, router)
        await c.reconcile()
        assert await c.predictors() == {names.predictor_name("iris", v) for v in ("iris-v1", "iris-v2")}
        md = await c.md()
        assert traffic_of(md) == {"iris-v1": 50, "iris-v2": 50}, md["status"]
        assert md["status"]["experiment"] == "ab"
    await c.converge()
    md = await c.md()
    assert traffic_of(md) == {"iris-v1": 50, "iris-v2": 50} and md["status"]["servingVersion"] == "iris-v1"
