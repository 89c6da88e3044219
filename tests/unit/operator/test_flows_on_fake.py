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
        # The router configuration generation the router replica serves: it takes up its ConfigMap's on `settle`.
        self.router_generation: str | None = None
        self.fake.pod_answers["/v1/router/stats"] = self._router_stats

    def _router_stats(self, fake: FakeClient) -> PodAnswers[RouterStats]:
        stats = RouterStats(deployment="iris", replica="iris-router-a", started=1000.0,
                            generation=self.router_generation, versions={
                                v: VersionStats(version=v, requests=r, errors=e, latency_buckets={"50": r, "+Inf": r})
                                for v, (r, e) in self.counts.items()})
        return PodAnswers([stats], [], 1)

    async def router_config_generation(self) -> str | None:
        cm = await self.fake.get("v1", "ConfigMap", "ml", names.router_name("iris"))
        return ((cm or {}).get("metadata") or {}).get("annotations", {}).get(names.ANNOTATION_ROUTER_GENERATION)

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
        """Every Deployment's controller catches up: each wanted pod runs the latest template and is ready, and the
        router replica serves its ConfigMap's configuration."""
        self.router_generation = await self.router_config_generation()
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


async def test_a_step_begins_only_once_every_router_replica_serves_its_split():
    """The router pods are not rolled for a new weight table: the step starts when the replicas report serving
    the ConfigMap's generation (status.router), and the reconcile asks to look again meanwhile."""
    from mlsteward_operator.modeldeployment.schedule import ROUTER_RECHECK, next_look

    c = await serving_v1(CANARY)
    router_pods = (await c.fake.get("apps/v1", "Deployment", "ml", names.router_name("iris")))["spec"]["template"]
    await c.set_spec_version("iris-v2")
    c.traffic("iris-v1", 0)
    for _ in range(3):
        await c.reconcile()
        if c.router_generation != await c.router_config_generation():
            break
        await c.settle()  # the new predictor becomes ready; the router has not been given the split yet
    new = await c.router_config_generation()
    assert new is not None and c.router_generation != new
    for _ in range(3):  # the replica has not taken up the split: no step begins
        await c.reconcile()
        md = await c.md()
        assert rollout_of(md)["step"] == 0 and rollout_of(md).get("stepStartedAt") is None, md["status"]
        assert md["status"]["router"]["generation"] == new and md["status"]["router"]["current"] == 0
        assert next_look(md, c.now) == (c.now + ROUTER_RECHECK, True)
    c.router_generation = new
    await c.reconcile()
    md = await c.md()
    assert rollout_of(md)["stepStartedAt"] is not None
    assert md["status"]["router"] == {"generation": new, "traffic": "iris-v1=90,iris-v2=10", "replicas": 1,
                                      "current": 1}
    # The router's pod template never changed: the split reached the running replica in place.
    assert (await c.fake.get("apps/v1", "Deployment", "ml", names.router_name("iris")))["spec"]["template"] \
        == router_pods


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


async def test_an_experiment_starts_without_flapping_while_the_router_takes_up_its_split():
    """Reconciles that run before the router replica reports the Experiment's split (as events and the router
    recheck make them run) keep the split and the arms' predictors: the deployment still serves the control
    through the replica's previous configuration, so nothing is unsettled."""
    c = await serving_v1()
    await c.create({"apiVersion": GV, "kind": "Experiment", "metadata": {"name": "ab", "namespace": "ml"},
                    "spec": {"deployment": "iris", "metric": {"name": "reward", "kind": "binary",
                                                              "goal": "maximize"},
                             "variants": [{"name": "control", "version": "iris-v1", "weight": 50},
                                          {"name": "treatment", "version": "iris-v2", "weight": 50}]}})
    await c.reconcile()  # the arms' predictors are created
    await c.settle()  # ... and become ready
    await c.reconcile()  # the router is moved to the split
    old = c.router_generation
    for _ in range(3):  # looks before the replica took up the split
        await c.reconcile()
        assert c.router_generation == old and await c.router_config_generation() != old
        assert await c.predictors() == {names.predictor_name("iris", v) for v in ("iris-v1", "iris-v2")}
        md = await c.md()
        assert traffic_of(md) == {"iris-v1": 50, "iris-v2": 50}, md["status"]
        assert md["status"]["experiment"] == "ab"
    await c.converge()
    md = await c.md()
    assert traffic_of(md) == {"iris-v1": 50, "iris-v2": 50} and md["status"]["servingVersion"] == "iris-v1"
