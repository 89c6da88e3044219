"""A highly available data plane on a real cluster: three router replicas, clients with pooled keep-alive
connections, and the pods and the operator taken away under load.

- A canary with three router replicas goes through every step to promotion while the operator is killed twice:
  no request fails, and no router pod is replaced (each step reaches the running replicas through their ConfigMap,
  watched through the API; status.router shows every replica on the configuration before a step begins).
- An Experiment with three router replicas, its feedback sent through the Service on fresh connections (so it lands
  on any replica, rarely the one that served the prediction), while the router pods are deleted one by one: every
  outcome the routers accepted is counted once (the request id is signed, so any replica attributes it; a replica
  that is told to stop waits until the operator has read its counters), and the Experiment concludes for the better
  version as with one replica.

The load client runs in the cluster (a pod with the mlsteward image) and uses one aiohttp session with a small
connection pool, as a service calling the model would: a reset on a pooled connection counts as a failed request.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import OPERATOR_NS, apply, condition, kget, kubectl, wait_for
from .test_experiment import operator_pod
from .test_rollout import set_version, versions  # noqa: F401  (module fixture: two Ready ModelVersions)
from .test_serving import image, validation_rows

pytestmark = pytest.mark.usefixtures("operator_installed")

REWARD = {"1.0.0": 0.3, "1.1.0": 0.7}

# Predictions from `workers` concurrent loops over one pooled session; with `feedback` > 0, each prediction's
# reward (drawn from REWARD by the version that answered) is sent on a fresh connection until `feedback` were
# accepted. Prints running totals as one JSON line every 2 s and at the end.
CLIENT = r"""
import asyncio, json, random, sys, time
import aiohttp
base, seconds, body, rates, workers, feedback_max = (sys.argv[1], float(sys.argv[2]), sys.argv[3].encode(),
                                                     json.loads(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
rng = random.Random(11)
t = {"ok": 0, "failed": 0, "versions": {}, "errors": [], "feedback": {}, "feedback_sent": 0, "feedback_refused": []}
def report(**extra):
    print(json.dumps({**t, "errors": t["errors"][:5], "feedback_refused": t["feedback_refused"][:20], **extra}),
          flush=True)
async def give_feedback(session, rid, version):
    reward = 1.0 if rng.random() < rates.get(version, 0.0) else 0.0
    t["feedback_sent"] += 1
    try:
        async with session.post(base + "/v1/feedback", json={"request_id": rid, "reward": reward}) as r:
            text = await r.text()
            if r.status == 200:
                t["feedback"][version] = t["feedback"].get(version, 0) + 1
            else:
                t["feedback_refused"].append({"status": r.status, "body": text[:200]})
    except Exception as exc:
        t["feedback_refused"].append({"status": None, "body": repr(exc)[:200]})
async def worker(session, fresh, end):
    while time.time() < end and (not feedback_max or t["feedback_sent"] < feedback_max):
        try:
            async with session.post(base + "/predict", data=body,
                                    headers={"content-type": "application/json"}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")
                v = r.headers.get("x-model-version"); rid = r.headers.get("x-request-id")
                t["versions"][v] = t["versions"].get(v, 0) + 1; t["ok"] += 1
        except Exception as exc:
            t["failed"] += 1; t["errors"].append(repr(exc)[:200]); v = None
        if v is not None and feedback_max and t["feedback_sent"] < feedback_max:
            await give_feedback(fresh, rid, v)
        await asyncio.sleep(0.02)
async def reporter(end):
    while time.time() < end:
        report(); await asyncio.sleep(2)
async def main():
    end = time.time() + seconds
    timeout = aiohttp.ClientTimeout(total=10)
    pooled = aiohttp.TCPConnector(limit=workers, keepalive_timeout=60)
    fresh = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=pooled, timeout=timeout) as session, \
            aiohttp.ClientSession(connector=fresh, timeout=timeout) as fresh_session:
        rep = asyncio.create_task(reporter(end))
        await asyncio.gather(*(worker(session, fresh_session, end) for _ in range(workers)))
        rep.cancel()
    report(done=True)
asyncio.run(main())
"""


def run_client(ns: str, name: str, base: str, seconds: int, body: dict[str, Any], *, workers: int = 4,
               feedback: int = 0) -> None:
    apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "client", "image": image(), "imagePullPolicy": "IfNotPresent",
               "command": ["python3", "-c", CLIENT, base, str(seconds), json.dumps(body), json.dumps(REWARD),
                           str(workers), str(feedback)]}]}}, ns)
    wait_for(lambda: (kget("pod", name, ns) or {}).get("status", {}).get("phase") in ("Running", "Succeeded"),
             timeout=60, what=f"client {name} running")


def totals(ns: str, name: str) -> dict[str, Any]:
    """The client's latest running totals."""
    return json.loads(kubectl("logs", name, "-n", ns).strip().splitlines()[-1])


def finished(ns: str, name: str, timeout: float) -> dict[str, Any]:
    wait_for(lambda: (kget("pod", name, ns) or {}).get("status", {}).get("phase") in ("Succeeded", "Failed"),
             timeout=timeout, what=f"client {name} to finish")
    result = totals(ns, name)
    assert result.get("done"), result
    return result


def router_pods(ns: str, md: str) -> dict[str, dict[str, Any]]:
    out = json.loads(kubectl("get", "pods", "-n", ns, "-l",
                             f"mlsteward.io/deployment={md},app.kubernetes.io/component=router", "-o", "json"))
    return {p["metadata"]["name"]: p for p in out["items"]}


def ready_routers(ns: str, md: str) -> set[str]:
    return {n for n, p in router_pods(ns, md).items() if not p["metadata"].get("deletionTimestamp")
            and all(c.get("ready") for c in p["status"].get("containerStatuses", []) or [{}])}


def deployment(ns: str, md: str, version: str, routers: int, rollout: dict[str, Any] | None = None) -> None:
    spec: dict[str, Any] = {"version": version, "replicas": 1, "router": {"replicas": routers}}
    if rollout:
        spec["rollout"] = rollout
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": md, "namespace": ns}, "spec": spec}, ns)
    wait_for(lambda: (condition(kget("modeldeployment", md, ns), "Ready") or {}).get("status") == "True"
             and len(ready_routers(ns, md)) == routers, timeout=300, what=f"ModelDeployment {md} Ready")


def kill_operator() -> None:
    old = operator_pod()
    assert old is not None
    kubectl("delete", "pod", old, "-n", OPERATOR_NS, "--wait=false")
    wait_for(lambda: (p := operator_pod()) is not None and p != old, timeout=180, what="a new operator pod")


@pytest.mark.timeout(720)
def test_canary_with_three_router_replicas_promotes_without_a_failed_request_or_a_router_roll(
        namespace: str, trained: Path, versions: tuple[str, str]):  # noqa: F811
    v1, v2 = versions
    md = "ha-canary"
    deployment(namespace, md, v1, 3, {"strategy": "Canary", "steps": [20, 50, 100], "stepInterval": "15s",
                                      "analysis": {"maxErrorRate": 0.01, "maxP99LatencyMs": 2000, "minRequests": 5}})
    before = {n: p["metadata"]["uid"] for n, p in router_pods(namespace, md).items()}
    assert len(before) == 3
    X, _ = validation_rows(trained)
    run_client(namespace, "ha-load", f"http://{md}.{namespace}.svc.cluster.local:8080", 200, {"instances": X[:1]})
    time.sleep(3)

    set_version(namespace, md, v2)
    seen: set[str] = set()

    def at_step(step: int) -> dict[str, Any] | None:
        obj = kget("modeldeployment", md, namespace)
        r = obj["status"].get("rollout") or {}
        router = obj["status"].get("router") or {}
        if router.get("current") == router.get("replicas") == 3:
            seen.add(router.get("traffic") or "")
        return obj if (r.get("phase") == "Progressing" and (r.get("step") or 0) >= step and r.get("stepStartedAt")) \
            or obj["status"].get("stableVersion") == v2 else None

    wait_for(lambda: at_step(1), timeout=180, what="step 1", interval=0.5)
    kill_operator()
    wait_for(lambda: at_step(2), timeout=180, what="step 2", interval=0.5)
    kill_operator()
    obj = wait_for(lambda: at_step(3) if (at_step(3) or {}).get("status", {}).get("stableVersion") == v2 else None,
                   timeout=240, what=f"{md} promoted to {v2}", interval=0.5)
    status = obj["status"]
    assert status["servingVersion"] == v2 and status["rollout"]["phase"] == "Stable", status
    passed = [d for d in status["decisions"] if d["reason"] == "StepPassed"]
    assert [d["numbers"]["step"] for d in passed] == [0, 1, 2], status["decisions"]
    # Each step's split was served by all three replicas at once (status.router), and no router pod was replaced:
    # the configuration reached the running pods in place.
    assert {f"{v1}=80,{v2}=20", f"{v1}=50,{v2}=50"} <= seen, seen
    wait_for(lambda: (r := kget("modeldeployment", md, namespace)["status"].get("router") or {})
             .get("traffic") == f"{v2}=100" and r.get("current") == 3, timeout=60, what="every replica on v2")
    after = {n: p["metadata"]["uid"] for n, p in router_pods(namespace, md).items()}
    assert after == before, (before, after)
    result = finished(namespace, "ha-load", timeout=240)
    assert result["failed"] == 0, result
    assert result["versions"].get("1.0.0", 0) > 0 and result["versions"].get("1.1.0", 0) > 0, result
    kubectl("delete", "pod", "ha-load", "-n", namespace, "--wait=false")


@pytest.mark.timeout(900)
def test_experiment_with_three_router_replicas_loses_no_outcome_while_router_pods_are_deleted(
        namespace: str, trained: Path, versions: tuple[str, str]):  # noqa: F811
    v1, v2 = versions
    md, exp = "ha-ab", "ha-ab-test"
    deployment(namespace, md, v1, 3)
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "Experiment",
           "metadata": {"name": exp, "namespace": namespace},
           "spec": {"deployment": md, "onSuccess": "Promote",
                    "metric": {"name": "reward", "kind": "binary", "goal": "maximize"},
                    "stopping": {"confidence": 0.95, "minSamplesPerVariant": 300, "sequential": True},
                    "variants": [{"name": "control", "version": v1, "weight": 50},
                                 {"name": "treatment", "version": v2, "weight": 50}]}}, namespace)
    wait_for(lambda: ((kget("experiment", exp, namespace) or {}).get("status") or {}).get("phase") == "Running",
             timeout=240, what="Running")
    md_status = kget("modeldeployment", md, namespace)["status"]
    assert md_status["router"]["current"] == md_status["router"]["replicas"] == 3, md_status["router"]

    # Phase one: exactly 400 feedbacks (about 200 per arm, fewer than the 300 each needs to conclude), while each
    # router pod in turn is deleted and replaced.
    X, _ = validation_rows(trained)
    base = f"http://{md}.{namespace}.svc.cluster.local:8080"
    run_client(namespace, "ha-fb", base, 300, {"instances": X[:1]}, workers=2, feedback=400)
    for _ in range(3):
        wait_for(lambda: totals(namespace, "ha-fb")["feedback_sent"] >= 40, timeout=60, what="feedback flowing")
        victim = sorted(ready_routers(namespace, md))[0]
        kubectl("delete", "pod", victim, "-n", namespace, "--wait=false")
        wait_for(lambda v=victim: v not in router_pods(namespace, md) and len(ready_routers(namespace, md)) == 3,
                 timeout=120, what=f"router pod {victim} replaced")
    result = finished(namespace, "ha-fb", timeout=300)
    assert result["failed"] == 0, result
    assert result["feedback_sent"] == 400 and not result["feedback_refused"], result
    accepted = result["feedback"]

    # Every accepted outcome is in the Experiment's totals, once: none lost with the deleted pods, none doubled.
    def counted() -> dict[str, int] | None:
        variants = (kget("experiment", exp, namespace)["status"].get("variants") or [])
        got = {v["version"]: v.get("outcomes", 0) for v in variants}
        return got if got == {v1: accepted.get("1.0.0", 0), v2: accepted.get("1.1.0", 0)} else None

    try:
        wait_for(counted, timeout=60, what="the Experiment's totals to equal the accepted feedback")
    except BaseException:
        print("client:", result, "experiment:", kget("experiment", exp, namespace)["status"].get("variants"))
        raise
    assert kget("experiment", exp, namespace)["status"]["phase"] == "Running"

    # Phase two: enough feedback to conclude, as with one replica: the better version wins and is promoted.
    run_client(namespace, "ha-fb2", base, 400, {"instances": X[:1]}, workers=2, feedback=2000)
    concluded = wait_for(lambda: (o := kget("experiment", exp, namespace)) and
                         o["status"].get("phase") in ("Concluded", "Stopped") and o, timeout=400, what="concluded")
    status = concluded["status"]
    assert status["phase"] == "Concluded" and status["winner"] == "treatment", status
    promoted = wait_for(lambda: (o := kget("modeldeployment", md, namespace)) and
                        o["status"].get("servingVersion") == v2 and o, timeout=180, what=f"{md} serves {v2}")
    assert promoted["status"]["override"]["source"] == f"Experiment/{exp}"
    kubectl("delete", "pod", "ha-fb2", "-n", namespace, "--wait=false")
