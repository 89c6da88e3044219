"""spec.shadow through whole reconciles on the in-memory API server (kube/fake.py): what is rendered, status.shadow
from two router replicas, and the promotion gate (Passed: a canary to the shadow version; Failed: one Hold)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from mlsteward_runtime.contracts import RouterStats, ShadowStats, VersionStats
from test_flows_on_fake import CANARY, GV, Cluster, version

from mlsteward_operator.kernel import names
from mlsteward_operator.kube.client import PodAnswers
from mlsteward_operator.modeldeployment.schedule import SHADOW_RECHECK, next_look


class ShadowCluster(Cluster):
    """Two router replicas, each reporting shadow counters set by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.shadow: dict[str, dict[str, Any]] = {"router-a": {}, "router-b": {}}
        self.fake.pod_answers["/v1/router/stats"] = self._two_replicas

    def _two_replicas(self, fake: Any) -> PodAnswers[RouterStats]:
        out = []
        for replica, counters in self.shadow.items():
            out.append(RouterStats(
                deployment="iris", replica=replica, started=1000.0, generation=self.router_generation,
                versions={v: VersionStats(version=v, requests=r, errors=e, latency_buckets={"50": r, "+Inf": r})
                          for v, (r, e) in self.counts.items()},
                shadow={"iris-v2": ShadowStats(version="iris-v2", **counters)} if counters else None))
        return PodAnswers(out, [], len(out))

    async def router_json(self) -> dict[str, Any]:
        import json

        cm = await self.fake.get("v1", "ConfigMap", "ml", names.router_name("iris"))
        return json.loads(cm["data"]["router.json"])


def regression_version(name: str) -> dict[str, Any]:
    v = version(name)
    v["spec"]["signature"] = {"inputs": [{"name": "x"}], "output": {"kind": "regression"}}
    return v


async def deployment(shadow: dict[str, Any], *, rollout: dict[str, Any] | None = None,
                     v2: dict[str, Any] | None = None) -> ShadowCluster:
    c = ShadowCluster()
    await c.create(version("iris-v1"))
    await c.create(v2 or version("iris-v2"))
    spec: dict[str, Any] = {"model": "iris", "version": "iris-v1", "shadow": shadow}
    if rollout:
        spec["rollout"] = rollout
    await c.create({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ml"},
                    "spec": spec})
    await c.converge()
    return c


async def test_the_shadow_is_mirrored_once_its_predictor_is_ready_and_status_sums_the_replicas():
    c = await deployment({"version": "iris-v2", "percent": 30}, v2=regression_version("iris-v2"))
    md = await c.md()
    assert md["status"]["servingVersion"] == "iris-v1"
    assert await c.predictors() == {names.predictor_name("iris", v) for v in ("iris-v1", "iris-v2")}
    config = await c.router_json()
    assert config["shadow"] == {"version": "iris-v2", "percent": 30, "kind": "regression",
                                "url": f"http://{names.predictor_name('iris', 'iris-v2')}.ml.svc.cluster.local:8080"}
    assert [b["version"] for b in config["backends"]] == ["iris-v1"]
    assert md["status"]["shadow"]["phase"] == "Mirroring"
    assert next_look(md, c.now)[0] == c.now + SHADOW_RECHECK

    c.shadow["router-a"] = {"mirrored": 60, "errors": 3, "dropped": 1, "compared": 57, "agreed": 50,
                            "latency_buckets": {"10": 60, "+Inf": 60}, "diff_n": 57, "diff_mean": 0.2,
                            "diff_m2": 1.0}
    c.shadow["router-b"] = {"mirrored": 40, "errors": 1, "dropped": 0, "compared": 39, "agreed": 30,
                            "latency_buckets": {"10": 20, "+Inf": 40}, "diff_n": 39, "diff_mean": 0.4,
                            "diff_m2": 2.0}
    c.now += SHADOW_RECHECK
    await c.reconcile()
    s = (await c.md())["status"]["shadow"]
    assert (s["replicas"], s["requests"], s["errors"], s["dropped"], s["compared"]) == (2, 100, 4, 1, 96)
    assert s["errorRate"] == 0.04 and s["agreement"] == round(80 / 96, 6) and s["kind"] == "regression"
    assert s["meanAbsDiff"] == round((57 * 0.2 + 39 * 0.4) / 96, 6)
    assert s["p99Ms"] == 10.0 and s["updatedAt"] == c.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert "gate" not in s  # no spec.shadow.promote: only measured


async def test_a_shadow_that_is_not_ready_or_of_another_model_is_not_mirrored():
    other = version("iris-v2")
    other["spec"]["model"] = "wine"
    c = await deployment({"version": "iris-v2"}, v2=other)
    md = await c.md()
    assert md["status"]["shadow"]["phase"] == "Waiting"
    assert "of model wine, not iris" in md["status"]["shadow"]["message"]
    assert "shadow" not in await c.router_json()
    assert await c.predictors() == {names.predictor_name("iris", "iris-v1")}
    assert next_look(md, c.now)[0] is None


PROMOTE = {"minRequests": 100, "minAgreement": 0.9}


async def test_a_passed_gate_starts_a_canary_to_the_shadow_version_and_stops_mirroring():
    c = await deployment({"version": "iris-v2", "promote": PROMOTE}, rollout=CANARY)
    c.shadow["router-a"] = {"mirrored": 300, "compared": 300, "agreed": 298}
    c.shadow["router-b"] = {"mirrored": 200, "compared": 200, "agreed": 199}
    c.now += SHADOW_RECHECK
    await c.converge()
    md = await c.md()
    s = md["status"]
    assert s["shadow"]["gate"]["result"] == "Passed" and s["shadow"]["phase"] == "Promoted"
    assert s["override"]["version"] == "iris-v2" and s["override"]["source"] == "ModelDeployment/iris/shadow"
    [decision] = [d for d in s["decisions"] if d["reason"] == "ShadowPassed"]
    assert (decision["kind"], decision["from"], decision["to"]) == ("Promote", "iris-v1", "iris-v2")
    assert decision["numbers"]["compared"] == 500 and decision["numbers"]["agreementLow"] > 0.9
    assert decision["thresholds"]["minAgreement"] == 0.9 and decision["thresholds"]["minRequests"] == 100
    assert "set spec.version: iris-v2" in decision["gitChange"]
    # spec.rollout applies: the first canary step, not an immediate switch; the router mirrors no more.
    assert s["rollout"]["phase"] == "Progressing" and s["rollout"]["targetVersion"] == "iris-v2"
    assert {t["version"]: t["weight"] for t in s["traffic"]} == {"iris-v1": 90, "iris-v2": 10}
    assert "shadow" not in await c.router_json()
    assert md["spec"]["version"] == "iris-v1" and s["servingVersion"] == "iris-v1"


async def test_a_failed_gate_is_one_hold_and_nothing_moves():
    c = await deployment({"version": "iris-v2", "promote": PROMOTE | {"notWorse": True}})
    c.shadow["router-a"] = {"mirrored": 300, "compared": 300, "agreed": 200, "pairs": 150, "both_correct": 90,
                            "served_only": 40, "shadow_only": 5, "neither": 15}
    c.shadow["router-b"] = {"mirrored": 100, "compared": 100, "agreed": 70}
    for _ in range(3):
        c.now += SHADOW_RECHECK
        await c.converge()
        c.shadow["router-b"]["mirrored"] += 10  # more traffic, the same verdict
        c.shadow["router-b"]["compared"] += 10
    md = await c.md()
    s = md["status"]
    assert s["shadow"]["gate"]["result"] == "Failed" and s["shadow"]["phase"] == "Mirroring"
    [hold] = [d for d in s["decisions"] if d["reason"] == "ShadowFailed"]
    assert hold["kind"] == "Hold" and hold["from"] == hold["to"] == "iris-v1"
    assert hold["numbers"]["agreementHigh"] < 0.9 and hold["numbers"]["accuracyDiffHigh"] < 0
    assert "upper bound below minAgreement 0.9" in hold["message"]
    assert [e["reason"] for e in c.fake.events].count("ShadowFailed") == 1
    assert "override" not in s and s["servingVersion"] == "iris-v1" and md["spec"]["version"] == "iris-v1"
    assert (await c.router_json())["shadow"]["version"] == "iris-v2"  # still measured


async def test_removing_spec_shadow_removes_its_predictor_and_status():
    c = await deployment({"version": "iris-v2"})
    md = await c.md()
    assert md["status"]["shadow"]["phase"] == "Mirroring"
    await c.fake.apply({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ml"},
                        "spec": {k: v for k, v in md["spec"].items() if k != "shadow"}})
    c.now += dt.timedelta(seconds=1)
    await c.converge()
    md = await c.md()
    assert "shadow" not in md["status"] and "shadow" not in await c.router_json()
    assert await c.predictors() == {names.predictor_name("iris", "iris-v1")}


async def test_the_reconcile_that_serves_the_first_version_starts_the_shadow_predictor():
    """Nothing wakes a steady deployment again: the reconcile in which the first version comes to serve must
    already render the shadow's predictor (its Deployment's events then bring the mirroring)."""
    c = ShadowCluster()
    await c.create(version("iris-v1"))
    await c.create(version("iris-v2"))
    await c.create({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ml"},
                    "spec": {"model": "iris", "version": "iris-v1", "shadow": {"version": "iris-v2"}}})
    for _ in range(8):
        await c.settle()
        await c.reconcile()
        md = await c.md()
        if md["status"].get("servingVersion") == "iris-v1":
            break
    else:
        raise AssertionError("iris-v1 never served")
    assert names.predictor_name("iris", "iris-v2") in await c.predictors()
    assert md["status"]["shadow"]["phase"] == "Waiting" and "starting" in md["status"]["shadow"]["message"]
