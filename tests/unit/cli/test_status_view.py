"""`mlsteward status` (and `kubectl mlsteward status`): the view of a ModelDeployment built from what the operator
writes. The objects come from the operator itself: a real canary reconciled on the in-memory API server, and
statuses built through the operator's status models (`to_k8s()` drops any key the models do not know, so the view
cannot read a field the operator never writes). The `kubectl-mlsteward` console script is resolved from
pyproject.toml and run with argv."""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsteward_operator.api.driftmonitor import DriftMonitor
from mlsteward_operator.api.experiment import Experiment
from mlsteward_operator.api.modeldeployment import ModelDeployment
from mlsteward_operator.api.modelversion import ModelVersion
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel import names
from mlsteward_operator.kernel.conditions import set_condition, set_kstatus
from mlsteward_operator.kube.client import PodAnswers
from mlsteward_operator.kube.fake import FakeClient
from mlsteward_operator.modeldeployment.reconcile import reconcile_deployment
from mlsteward_runtime.cluster.status import build_status, workload_labels
from mlsteward_runtime.cluster.statusview import render
from mlsteward_runtime.contracts import RouterStats
from mlsteward_runtime.kubectl import hoist

ROOT = Path(__file__).resolve().parents[3]
CARD_FIXTURES = Path(__file__).parent / "fixtures" / "card"
GV = "mlsteward.io/v1alpha1"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SHA = {"iris-v1": "1f" * 32, "iris-v2": "2e" * 32, "iris-v3": "3d" * 32}


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def section(text: str, title: str) -> str:
    """The lines of the `title:` section of the text view."""
    m = re.search(rf"^{re.escape(title)}[^\n]*:\n(.*?)(?=\n\S|\Z)", text, flags=re.S | re.M)
    assert m, f"no section {title!r} in:\n{text}"
    return m.group(1)


def version(name: str, accuracy: float, phase: str = "Ready") -> dict[str, Any]:
    return ModelVersion.model_validate({
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"model": "iris", "version": f"1.{name[-1]}.0", "metrics": {"accuracy": accuracy - 0.01},
                 "artifact": {"uri": f"s3://m/{name}.skops", "sha256": SHA[name]}},
        "status": {"phase": phase, "reason": "Validated" if phase == "Ready" else "BelowThreshold",
                   "metrics": {"accuracy": accuracy, "f1": accuracy - 0.02}, "sha256": SHA[name]},
    }).to_k8s()


# ---- a canary as the operator leaves it ----


class Canary:
    """The in-memory API server with the cluster's side played: Deployments become ready, the router replica serves
    its ConfigMap's configuration (as tests/unit/operator/test_flows_on_fake.py plays it)."""

    def __init__(self) -> None:
        self.fake, self.cfg = FakeClient(), OperatorConfig()
        self.generation: str | None = None
        self.fake.pod_answers["/v1/router/stats"] = lambda _fake: PodAnswers(
            [RouterStats(deployment="iris", replica="iris-router-a", started=1000.0, generation=self.generation,
                         versions={})], [], 1)

    async def create(self, obj: dict[str, Any]) -> None:
        assert await self.fake.create({k: v for k, v in obj.items() if k != "status"}) is not None
        if obj.get("status"):
            await self.fake.patch_status(GV, obj["kind"], "ml", obj["metadata"]["name"], obj["status"])

    async def converge(self) -> None:
        for _ in range(12):
            cm = await self.fake.get("v1", "ConfigMap", "ml", names.router_name("iris"))
            self.generation = ((cm or {}).get("metadata") or {}).get("annotations", {}).get(
                names.ANNOTATION_ROUTER_GENERATION)
            for d in await self.fake.list("apps/v1", "Deployment", "ml"):
                n = d["spec"].get("replicas", 1)
                await self.fake.patch_status("apps/v1", "Deployment", "ml", d["metadata"]["name"], {
                    "observedGeneration": d["metadata"]["generation"], "replicas": n, "updatedReplicas": n,
                    "readyReplicas": n, "availableReplicas": n})
            writes = self.fake.writes
            body = await self.fake.get(GV, "ModelDeployment", "ml", "iris")
            new = await reconcile_deployment(body, self.fake, self.cfg, now=T0)
            if new is not None:
                await self.fake.patch_status(GV, "ModelDeployment", "ml", "iris", new)
            elif self.fake.writes == writes:
                return
        raise AssertionError("the reconciles did not converge")

    async def md(self) -> dict[str, Any]:
        return await self.fake.get(GV, "ModelDeployment", "ml", "iris")


async def canary_at_first_step() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    c = Canary()
    await c.create(version("iris-v1", 0.93))
    await c.create(version("iris-v2", 0.96))
    await c.create({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ml"},
                    "spec": {"model": "iris", "version": "iris-v1",
                             "rollout": {"strategy": "Canary", "steps": [10, 50, 100], "stepInterval": "2m"}}})
    await c.converge()
    md = await c.md()
    await c.fake.apply({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ml"},
                        "spec": {**md["spec"], "version": "iris-v2"}})
    await c.converge()
    md = await c.md()
    # The operator's own account of the first step: the view must say the same.
    assert md["status"]["traffic"] == [{"version": "iris-v1", "weight": 90}, {"version": "iris-v2", "weight": 10}]
    return (md, await c.fake.list(GV, "ModelVersion", "ml"),
            await c.fake.list("apps/v1", "Deployment", "ml", labels=workload_labels("iris")))


async def test_a_canary_shows_its_weight_against_stable_the_versions_and_readiness():
    md, versions, deployments = await canary_at_first_step()
    st = md["status"]
    view = build_status(md, versions, deployments)

    assert (view["wantedVersion"], view["servingVersion"], view["stableVersion"]) == ("iris-v2", "iris-v1", "iris-v1")
    assert view["traffic"] == [{"version": "iris-v1", "weight": 90, "roles": ["stable"]},
                               {"version": "iris-v2", "weight": 10, "roles": ["canary"]}]
    by = {v["name"]: v for v in view["versions"]}
    assert by["iris-v1"]["roles"] == ["serving", "stable"] and by["iris-v2"]["roles"] == ["wanted", "canary"]
    assert by["iris-v2"]["sha256"] == SHA["iris-v2"] and by["iris-v2"]["metrics"] == {"accuracy": 0.96, "f1": 0.94}
    assert view["router"]["deployment"]["readyReplicas"] == 1
    assert (view["router"]["current"], view["router"]["generation"]) == (1, st["router"]["generation"])
    assert sorted(p["version"] for p in view["predictors"]) == ["iris-v1", "iris-v2"]
    assert [c["type"] for c in view["conditions"]][:2] == ["Ready", "Reconciling"]
    assert view["decisions"] == st["decisions"]

    text = render(view)
    assert "Traffic:    iris-v1 90% (stable), iris-v2 10% (canary)" in text
    assert "Rollout:    Canary, Progressing to iris-v2, step 1 of 3 (10/50/100%)" in text
    rows = section(text, "Versions").splitlines()
    assert re.search(rf"iris-v2\s+wanted, canary\s+Ready\s+{SHA['iris-v2'][:12]}\s+accuracy=0.96 f1=0.94", rows[2])
    workloads = section(text, "Workloads")
    assert re.search(rf"router\s+-\s+1/1 ready\s+1/1 replicas serve configuration {st['router']['generation']}",
                     workloads)
    assert re.search(r"predictor\s+iris-v2\s+1/1 ready", workloads)
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert re.search(rf"^  Ready\s+True\s+{ready['reason']}\s", section(text, "Conditions"), flags=re.M)
    assert "Stalled is set only while True: absent means False" in text
    assert "RolloutComplete  iris-v1 serves all traffic" in section(text, "Decisions")


# ---- experiments, drift, shadow, an override, kstatus Stalled: built through the status models ----


def deployment() -> dict[str, Any]:
    conds = set_condition([], "Ready", True, "Serving", "iris-v1 serves", generation=4, now=T0)
    conds = set_condition(conds, "Degraded", True, "RolledBack", "DriftMonitor iris-drift asked", generation=4,
                          now=T0)
    conds = set_kstatus(conds, reconciling=None, stalled=("RolledBack", "spec.version iris-v2 was rolled back"),
                        generation=4, now=T0)
    decisions = [{"time": iso(T0 - dt.timedelta(minutes=70 - i)), "kind": "Hold", "to": "iris-v1",
                  "reason": f"Held{i}", "message": f"held {i}"} for i in range(6)]
    decisions.append({"time": iso(T0), "kind": "Rollback", "from": "iris-v2", "to": "iris-v1",
                      "reason": "DriftDetected", "message": "3 windows drifted", "numbers": {"drifted": 3},
                      "gitChange": "spec.version: iris-v1"})
    return ModelDeployment.model_validate({
        "metadata": {"name": "iris", "namespace": "ml", "generation": 4},
        "spec": {"version": "iris-v2", "shadow": {"version": "iris-v3", "percent": 20}},
        "status": {
            "observedGeneration": 4, "conditions": [c.to_k8s() for c in conds], "model": "iris",
            "servingVersion": "iris-v1", "stableVersion": "iris-v1", "previousVersion": "iris-v0",
            "traffic": [{"version": "iris-v1", "weight": 50}, {"version": "iris-v2", "weight": 50}],
            "rollout": {"phase": "RolledBack", "targetVersion": "iris-v2"}, "experiment": "iris-ab",
            "override": {"version": "iris-v1", "specVersion": "iris-v2", "kind": "Rollback",
                         "source": "DriftMonitor/iris-drift", "time": iso(T0)},
            "router": {"generation": "g7", "traffic": "iris-v1=50,iris-v2=50", "replicas": 2, "current": 1},
            "decisions": decisions,
            "shadow": {"version": "iris-v3", "percent": 20, "phase": "Mirroring", "requests": 400, "errors": 4,
                       "errorRate": 0.01, "compared": 396, "agreement": 0.97, "agreementLow": 0.95,
                       "agreementHigh": 0.98, "pairs": 120,
                       "gate": {"result": "Pending", "message": "120 of 200 pairs", "since": iso(T0)}},
        }}).to_k8s()


def experiment(name: str, phase: str, concluded: dt.datetime | None = None, **status: Any) -> dict[str, Any]:
    return Experiment.model_validate({
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"deployment": "iris", "strategy": {"type": "ThompsonSampling"}, "metric": {"name": "accuracy"},
                 "variants": [{"name": "control", "version": "iris-v1", "weight": 50},
                              {"name": "treatment", "version": "iris-v2", "weight": 50}]},
        "status": {"phase": phase, **({"concludedAt": iso(concluded)} if concluded else {}), **status}}).to_k8s()


def objects() -> list[dict[str, Any]]:
    running = experiment("iris-ab", "Running", test="two-proportion z", pValue=0.0123, leader="treatment",
                         probabilityBest=0.981, sampleRatio={"pValue": 0.5, "mismatch": False}, variants=[
                             {"name": "control", "version": "iris-v1", "weight": 30, "requests": 1000,
                              "outcomes": 800, "mean": 0.81, "probabilityBest": 0.019},
                             {"name": "treatment", "version": "iris-v2", "weight": 70, "requests": 2000,
                              "outcomes": 1600, "mean": 0.86, "probabilityBest": 0.981}])
    concluded = [experiment(f"old-{i}", "Concluded", T0 - dt.timedelta(days=10 - i), winner="control")
                 for i in range(4)]
    concluded.append(experiment("last", "Concluded", T0 - dt.timedelta(hours=1), winner="treatment", servingRequest={
        "kind": "Promote", "version": "iris-v2", "fromVersion": "iris-v1", "time": iso(T0), "reason": "Won"}))
    monitor = DriftMonitor.model_validate({
        "metadata": {"name": "iris-drift", "namespace": "ml"},
        "spec": {"deployment": "iris", "actions": ["Rollback"], "consecutive": 3},
        "status": {"driftDetected": True, "consecutiveBreaches": 3, "lastCheck": iso(T0),
                   "lastReport": {"time": iso(T0), "windowSize": 500, "version": "iris-v2", "drifted": True,
                                  "features": [{"name": n, "method": "ks", "drifted": n.startswith("petal")}
                                               for n in ("sepal_length", "petal_length", "petal_width")]},
                   "lastAction": {"type": "Rollback", "time": iso(T0), "message": "rolled back to iris-v1"}}}
    ).to_k8s()
    other = DriftMonitor.model_validate({"metadata": {"name": "other", "namespace": "ml"},
                                         "spec": {"deployment": "not-iris"}}).to_k8s()
    return [version("iris-v1", 0.93), version("iris-v2", 0.9, "Failed"), version("iris-v3", 0.95), running,
            *concluded, monitor, other]


def test_experiments_drift_shadow_override_and_stalled():
    view = build_status(deployment(), objects(), [])
    text = render(view)

    assert [e["name"] for e in view["experiments"]] == ["iris-ab", "old-2", "old-3", "last"]
    ab = view["experiments"][0]
    assert (ab["phase"], ab["leader"], ab["pValue"], ab["probabilityBest"]) == ("Running", "treatment", 0.0123, 0.981)
    assert [(a["name"], a["weight"], a["requests"]) for a in ab["arms"]] == [("control", 30, 1000),
                                                                            ("treatment", 70, 2000)]
    exps = section(text, "Experiments")
    assert ("iris-ab: Running, ThompsonSampling on accuracy; p=0.0123 (two-proportion z); leader treatment "
            "P(best)=0.981; decision: none yet") in exps
    assert re.search(r"treatment\s+iris-v2\s+70%\s+2000\s+1600\s+0.86\s+0.981", exps)
    assert "last: Concluded" in exps and "decision: Promote iris-v2 requested (Won)" in exps
    assert "(2 older concluded or stopped not shown)" in exps

    (dm,) = view["driftMonitors"]
    assert dm["lastReport"]["driftedFeatures"] == ["petal_length", "petal_width"]
    drift = section(text, "Drift")
    assert "iris-drift: drift detected, 3 of 3 windows in breach before Rollback" in drift
    assert "500 rows on iris-v2, 2 of 3 features drifted (petal_length, petal_width)" in drift
    assert "last action Rollback at 2026-03-01T12:00:00Z: rolled back to iris-v1" in drift

    assert "iris-v3 at 20%: Mirroring" in section(text, "Shadow")
    assert "agreement 97.0% [95.0%, 98.0%] on 396 compared" in text
    assert "promotion gate Pending: 120 of 200 pairs" in text
    by = {v["name"]: v for v in view["versions"]}
    assert by["iris-v3"]["roles"] == ["shadow"] and by["iris-v0"]["found"] is False
    assert "arm treatment" in by["iris-v2"]["roles"] and "override" in by["iris-v1"]["roles"]
    assert re.search(r"iris-v2\s+wanted, arm treatment\s+Failed \(BelowThreshold\)", text)
    assert "Override:   Rollback to iris-v1 by DriftMonitor/iris-drift" in text

    conds = section(text, "Conditions")
    assert re.search(r"^  Stalled\s+True\s+RolledBack\s", conds, flags=re.M)
    assert conds.splitlines()[1].split()[0] == "Ready" and conds.splitlines()[2].split()[0] == "Stalled"
    assert [d["reason"] for d in view["decisions"]] == ["Held2", "Held3", "Held4", "Held5", "DriftDetected"]
    assert "Decisions (last 5 of 7, oldest first):" in text
    assert "To bring Git in line: spec.version: iris-v1" in text
    assert "Workloads:" in text and "predictor  -        no Deployment" in text


def test_readiness_is_unknown_when_the_deployments_cannot_be_read():
    view = build_status(deployment(), objects(), None)
    assert view["predictors"] is None
    assert "readiness unknown (not allowed to list Deployments)" in section(render(view), "Workloads")


def test_json_and_yaml_are_the_view_and_decisions_can_be_limited():
    view = build_status(deployment(), objects(), [], decisions=2)
    assert json.loads(render(view, "json")) == view == yaml.safe_load(render(view, "yaml"))
    assert [d["reason"] for d in view["decisions"]] == ["Held5", "DriftDetected"] and view["decisionsTotal"] == 7
    assert build_status(deployment(), objects(), [], decisions=0)["decisions"] == []


def test_status_text_from_a_status_writer_cannot_drive_the_terminal():
    md = deployment()
    md["status"]["decisions"][-1]["message"] = "ok\x1b[2J\x1b]0;owned\x07\r\nnext"
    text = render(build_status(md, [], []))
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "ok [2J ]0;owned next" in text


# ---- the console script ----


def kubectl_mlsteward() -> Any:
    """The callable pyproject.toml installs as `kubectl-mlsteward` (what kubectl runs for `kubectl mlsteward`)."""
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["kubectl-mlsteward"]
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def test_the_kubectl_mlsteward_script_runs_the_cluster_verbs(capsys):
    main = kubectl_mlsteward()
    cluster = str(CARD_FIXTURES / "cluster.yaml")
    assert main(["-n", "models", "card", "iris-1-1-0", "--file", cluster]) == 0
    card = capsys.readouterr().out
    assert card.startswith("# Model card: iris 1.1.0") and "ModelVersion `iris-1-1-0` in namespace `models`." in card

    with pytest.raises(SystemExit) as help_exit:
        main(["--help"])
    assert help_exit.value.code == 0
    listing = capsys.readouterr().out
    assert listing.startswith("usage: kubectl mlsteward")
    assert all(re.search(rf"^    {v}\s", listing, flags=re.M) for v in ("status", "report", "card"))
    assert not re.search(r"^    serve\s", listing, flags=re.M)  # only the verbs that read a cluster

    with pytest.raises(SystemExit) as refused:
        main(["serve", "--help"])
    assert refused.value.code == 2 and "invalid choice: 'serve'" in capsys.readouterr().err


def kubeconfig(tmp_path: Path) -> Path:
    """Two contexts on two addresses where nothing listens, with different namespaces."""
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "a", "cluster": {"server": "http://127.0.0.1:9"}},
                     {"name": "b", "cluster": {"server": "http://127.0.0.2:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "a", "context": {"cluster": "a", "user": "u", "namespace": "ns-a"}},
                     {"name": "b", "context": {"cluster": "b", "user": "u", "namespace": "ns-b"}}]}))
    return path


def test_status_honours_kubeconfig_and_context_and_fails_cleanly_without_a_cluster(tmp_path, capsys, monkeypatch):
    main = kubectl_mlsteward()
    path = kubeconfig(tmp_path)
    monkeypatch.setenv("KUBECONFIG", str(path))  # read as kubectl reads it: no --kubeconfig needed
    assert main(["status", "iris"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kubectl mlsteward status: error: cannot reach the API server at http://127.0.0.1:9")
    assert "Traceback" not in err

    assert main(["--context", "b", "status", "iris", "--kubeconfig", str(path)]) == 2
    assert "cannot reach the API server at http://127.0.0.2:9" in capsys.readouterr().err

    assert main(["status", "iris", "--context", "nope"]) == 2
    err = capsys.readouterr().err
    assert f"kubectl mlsteward status: error: kubeconfig {path}, context nope:" in err and "Traceback" not in err

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "")
    assert main(["status", "iris"]) == 2
    assert "kubectl mlsteward status: error: no cluster to read" in capsys.readouterr().err


def test_cluster_flags_before_the_verb_move_after_it():
    assert hoist(["-n", "ml", "--context=b", "status", "iris", "-o", "json"]) == \
        ["status", "-n", "ml", "--context=b", "iris", "-o", "json"]
    assert hoist(["-nml", "--kubeconfig", "/k", "report", "iris"]) == ["report", "-nml", "--kubeconfig", "/k", "iris"]
    assert hoist(["--help"]) == ["--help"]
    assert hoist(["status", "iris", "-n", "ml"]) == ["status", "iris", "-n", "ml"]
