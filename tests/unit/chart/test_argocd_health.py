"""The Argo CD health checks (charts/mlsteward/argocd/health/<Kind>.lua) run in gopher-lua, the interpreter Argo CD
embeds, the way Argo CD runs them (hack/luahealth: base, package and table libraries only, a one-second timeout,
the same check of the returned status), on objects whose status the operator's own code and models produce.

The fixtures under tests/fixtures/argocd-health/<Kind>/ carry the object and the expected health; each object's
status is parsed by the operator's model and must dump back to the same fields, so renaming a status field fails
here until the fixtures and the scripts follow. More cases are built at test time by the operator's status
functions (ModelVersion verdicts, canary steps through plan_rollout, DriftMonitor checks through decide).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsteward_operator.api import KINDS, DriftMonitor, Experiment, ModelDeployment, ModelVersion

ROOT = Path(__file__).resolve().parents[3]
HEALTH = ROOT / "charts" / "mlsteward" / "argocd" / "health"
FIXTURES = ROOT / "tests" / "fixtures" / "argocd-health"
TOOL = ROOT / "hack" / "luahealth"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlsteward" / "bin"
MODELS = {"ModelVersion": ModelVersion, "ModelDeployment": ModelDeployment, "Experiment": Experiment,
          "DriftMonitor": DriftMonitor}
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing"}
INVALID = "Lua returned an invalid health status"  # Argo CD's message for any other status


@pytest.fixture(scope="session")
def luahealth() -> Path:
    """hack/luahealth built once into ~/.cache/mlsteward/bin/luahealth-<hash of its sources>: a second session
    finds it and builds nothing."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("`go` is not on PATH: the Argo CD health tests build hack/luahealth (gopher-lua, the Lua of "
                    "Argo CD) with it; install Go or add its bin directory (e.g. /usr/local/go/bin) to PATH")
    digest = hashlib.sha256(b"".join((TOOL / f).read_bytes() for f in ("go.mod", "go.sum", "main.go")))
    binary = CACHE / f"luahealth-{digest.hexdigest()[:16]}"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
        env = {**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
        proc = subprocess.run([go, "build", "-o", str(partial), "."], cwd=TOOL, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"go build of hack/luahealth failed:\n{proc.stderr}"
        partial.replace(binary)  # atomic: a parallel session sees the whole binary or none
    return binary


def health(tool: Path, script: Path, obj: dict[str, Any]) -> dict[str, str]:
    """What Argo CD would show for `obj` with `script`: {"status", "message"}."""
    proc = subprocess.run([str(tool), str(script)], input=json.dumps(obj), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{script.name}: {proc.stderr}"
    return json.loads(proc.stdout)


def kind_health(tool: Path, obj: dict[str, Any]) -> dict[str, str]:
    return health(tool, HEALTH / f"{obj['kind']}.lua", obj)


def fixtures() -> list[Path]:
    return sorted(FIXTURES.glob("*/*.yaml"))


def subset_of(part: Any, whole: Any, where: str = "status") -> None:
    """Every field of `part` is in `whole` with the same value."""
    if isinstance(part, dict):
        assert isinstance(whole, dict), where
        for key, value in part.items():
            assert key in whole, f"{where}.{key} is not a field of the operator's model (renamed?)"
            subset_of(value, whole[key], f"{where}.{key}")
    elif isinstance(part, list):
        assert isinstance(whole, list) and len(part) == len(whole), where
        for i, (a, b) in enumerate(zip(part, whole)):
            subset_of(a, b, f"{where}[{i}]")
    else:
        assert part == whole, f"{where}: {part!r} != {whole!r}"


# ---- the harness is Argo CD's ---------------------------------------------------------------------------------


def test_the_harness_catches_what_argo_cd_would_refuse(luahealth: Path, tmp_path: Path):
    path = tmp_path / "health.lua"
    path.write_text('return {status = "Fine", message = "x"}')
    assert health(luahealth, path, {}) == {"status": "Unknown", "message": INVALID}
    path.write_text('return {message = "no status"}')
    assert health(luahealth, path, {})["message"] == INVALID
    path.write_text('return {status = "Suspended", message = obj.metadata.name}')
    assert health(luahealth, path, {"metadata": {"name": "x"}}) == {"status": "Suspended", "message": "x"}
    for script, error in [('return "Healthy"', "expect table output"), ("while true do end", "deadline"),
                          ('return {status = string.format("%s", "Healthy")}', "string"),
                          ("return {status = obj.status.phase}", "non-table")]:
        path.write_text(script)
        proc = subprocess.run([str(luahealth), str(path)], input="{}", capture_output=True, text=True, timeout=30)
        assert proc.returncode == 1 and error in proc.stderr, (script, proc.stderr)


def test_one_script_per_kind():
    assert sorted(p.stem for p in HEALTH.glob("*.lua")) == sorted(k.kind for k in KINDS)


def test_the_shared_opening_is_the_same_in_every_script():
    def opening(kind: str) -> str:
        text = (HEALTH / f"{kind}.lua").read_text()
        return text[text.index("-- Shared opening"):text.index("local status = obj.status")]

    assert len({opening(kind) for kind in MODELS}) == 1


def test_the_argocd_cm_patch_in_the_docs_is_the_scripts():
    text = (ROOT / "docs" / "gitops.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "resource.customizations.health." in b]
    assert len(blocks) == 1, "docs/gitops.md: one argocd-cm patch with the health checks"
    patch = yaml.safe_load(blocks[0])
    assert (patch["kind"], patch["metadata"]) == ("ConfigMap", {"name": "argocd-cm", "namespace": "argocd"})
    assert patch["data"] == {f"resource.customizations.health.mlsteward.io_{kind}": (HEALTH / f"{kind}.lua").read_text()
                             for kind in MODELS}, "docs/gitops.md is stale: run python hack/argocd-health-doc.py"


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_scripts_use_only_the_libraries_argo_cd_opens(kind: str):
    code = re.sub(r"--[^\n]*", "", (HEALTH / f"{kind}.lua").read_text())
    for library in ("string", "math", "io", "os", "debug", "coroutine", "utf8"):
        assert not re.search(rf"\b{library}\s*\.", code), f"{kind}.lua uses {library}.*"
    assert not re.search(r"[\w\)\]]:\w+\s*\(", code), f"{kind}.lua calls a string method (no string library)"


# ---- fixtures -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", fixtures(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture(luahealth: Path, path: Path):
    doc = yaml.safe_load(path.read_text())
    obj, want = doc["object"], doc["health"]
    assert obj["kind"] == path.parent.name
    model = MODELS[obj["kind"]].model_validate(obj)  # the spec and status are ones the operator reads
    if "status" in obj:
        subset_of(obj["status"], model.status.to_k8s())
    got = kind_health(luahealth, obj)
    assert got["status"] == want["status"], got
    assert want["message"] in got["message"], got


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_fixtures_cover_every_health_of_each_kind(kind: str):
    seen = {yaml.safe_load(p.read_text())["health"]["status"] for p in (FIXTURES / kind).glob("*.yaml")}
    no_status = [p for p in (FIXTURES / kind).glob("*.yaml") if "status" not in yaml.safe_load(p.read_text())["object"]]
    assert no_status, f"{kind}: no fixture of an object without status"
    # Suspended only where a state fits it: a Stopped Experiment (see docs/gitops.md, Argo CD health).
    want = {"Healthy", "Progressing", "Degraded"} | ({"Suspended"} if kind == "Experiment" else set())
    assert seen == want, f"{kind}: fixtures show {sorted(seen)}"


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_every_script_answers_any_object(luahealth: Path, kind: str):
    """Empty, deleted, half-written objects and unknown values: always a status Argo CD knows, never an error."""
    script = HEALTH / f"{kind}.lua"
    odd = [
        {},
        {"metadata": {"name": "x", "generation": 4, "deletionTimestamp": "2026-11-30T09:00:00Z"}},
        {"metadata": {"generation": 2}, "status": {}},
        {"metadata": {"generation": 2}, "status": {"observedGeneration": 2}},
        {"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "conditions": []}},
        {"metadata": {"generation": 2}, "status": {"observedGeneration": 3, "phase": "Surprise",
                                                   "conditions": [{"type": "Ready", "status": "Unknown"}],
                                                   "rollout": {"phase": "Surprise"}, "retrain": {"phase": "?"}}},
        {"spec": {}, "status": {"observedGeneration": 1, "rollout": {"phase": "Progressing", "step": 7}}},
    ]
    results = [health(luahealth, script, o) for o in odd]
    assert all(r["status"] in STATUSES | {"Unknown"} and r["message"] != INVALID for r in results), results
    assert results[0] == {"status": "Progressing", "message": "waiting for the operator to observe the object"}
    assert results[1] == {"status": "Progressing", "message": "pending deletion"}
    assert results[2] == {"status": "Progressing", "message": "waiting for the operator to observe generation 2"}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_an_unobserved_generation_wins_over_any_status(luahealth: Path, kind: str):
    """A status written for generation 2 says nothing about generation 3 (what Git just changed)."""
    for path in (FIXTURES / kind).glob("*.yaml"):
        obj = yaml.safe_load(path.read_text())["object"]
        if "status" not in obj:
            continue
        obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
        assert kind_health(luahealth, obj) == {
            "status": "Progressing",
            "message": f"waiting for the operator to observe generation {obj['metadata']['generation']}"}, path


# ---- statuses the operator's own functions write --------------------------------------------------------------

T0 = dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC)


def wire(kind: str, metadata: dict[str, Any], spec: dict[str, Any], status: Any) -> dict[str, Any]:
    return {"apiVersion": "mlsteward.io/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec,
            "status": status.to_k8s()}


def test_modelversion_verdicts_of_the_validation_job(luahealth: Path):
    from mlsteward_operator.kernel.pods import JobState
    from mlsteward_operator.modelversion.status import compute_version_status
    from mlsteward_runtime.contracts import ValidationResult

    body = {"metadata": {"name": "iris-2", "namespace": "ml", "generation": 1},
            "spec": {"model": "iris", "version": "2.0.0", "artifact": {"uri": "file:///m/iris-2.skops",
                                                                        "sha256": "a" * 64}}}
    mv = ModelVersion.model_validate(body)
    failed = ValidationResult(phase="Failed", reason="SignatureMismatch", message="model has 3 inputs, not 4")
    passed = ValidationResult(phase="Ready", reason="Validated", message="accuracy 0.97 >= 0.9", sha256="a" * 64,
                              metrics={"accuracy": 0.97})
    cases = [
        (JobState(), "Progressing", "Created: validation Job iris-2-validate not created yet"),
        (JobState(exists=True, active=True), "Progressing", "Validating: validation Job iris-2-validate is running"),
        (JobState(exists=True, failed=True, failure_reason="DeadlineExceeded"), "Degraded",
         "JobFailed: validation Job iris-2-validate failed without a result: DeadlineExceeded"),
        (JobState(exists=True, failed=True, termination_message=failed.model_dump_json()), "Degraded",
         "SignatureMismatch: model has 3 inputs, not 4"),
        (JobState(exists=True, succeeded=True, termination_message=passed.model_dump_json()), "Healthy",
         "Validated: accuracy 0.97 >= 0.9"),
    ]
    for job, want, message in cases:
        status = compute_version_status(mv, "iris-2-validate", job, T0)
        got = kind_health(luahealth, wire("ModelVersion", body["metadata"], body["spec"], status))
        assert got == {"status": want, "message": message}, job


def test_a_canary_through_plan_rollout(luahealth: Path):
    """Steps, a rollback and a held step as plan_rollout and compute_deployment_status write them."""
    from mlsteward_operator.kernel import pods
    from mlsteward_operator.modeldeployment import status as st
    from mlsteward_operator.modeldeployment.decide import plan_rollout
    from mlsteward_operator.modeldeployment.reconcile import rollout_spec, rollout_state
    from mlsteward_operator.modeldeployment.rollout.base import Counters, Observed, VersionFacts

    def mv(name: str) -> ModelVersion:
        return ModelVersion.model_validate({
            "metadata": {"name": name, "namespace": "ml"}, "status": {"phase": "Ready"},
            "spec": {"model": "iris", "version": "1.0.0",
                     "artifact": {"uri": f"file:///m/{name}", "sha256": "a" * 64}}})

    versions = {"iris-1": mv("iris-1"), "iris-2": mv("iris-2")}
    facts = {n: VersionFacts(n, exists=True, model="iris", phase="Ready") for n in versions}
    ready = pods.WorkloadState(exists=True, replicas=1, ready_replicas=1, available_replicas=1, updated_replicas=1,
                               rolled_out=True)
    children = st.ChildrenState(predictors={"iris-1": ready, "iris-2": ready}, router=ready)
    metadata = {"name": "iris", "namespace": "ml", "uid": "u", "generation": 3}

    def reconcile(status: dict[str, Any], observed: Observed, now: dt.datetime, rollback: bool = True
                  ) -> dict[str, Any]:
        spec = {"version": "iris-2", "rollout": {"strategy": "Canary", "steps": [10, 50, 100], "stepInterval": "30s",
                                                 "analysis": {"maxErrorRate": 0.01, "minRequests": 10}},
                "rollback": {"onFailedAnalysis": rollback}}
        md = ModelDeployment.model_validate({"metadata": metadata, "spec": spec, "status": {
            "servingVersion": "iris-1", "stableVersion": "iris-1", "model": "iris", **status}})
        plan = plan_rollout(facts["iris-2"], facts["iris-1"], observed, rollout_spec(md),
                            rollout_state(md.status.rollout), now)
        return wire("ModelDeployment", metadata, spec,
                    st.compute_deployment_status(md, plan, children, versions, url="http://iris", now=now))

    ready_both = {"iris-1": True, "iris-2": True}
    at_step_0 = {"rollout": {"phase": "Progressing", "step": 0, "targetVersion": "iris-2"}}
    begun = reconcile(at_step_0, Observed(predictor_ready=ready_both, router_table={"iris-1": 90, "iris-2": 10}), T0)
    assert kind_health(luahealth, begun) == {
        "status": "Progressing",
        "message": "rollout of iris-2 at step 1/3 (10%); Analysing: step 1/3 (10% to iris-2) began; judged after 30s"}

    started = {"rollout": {**at_step_0["rollout"], "stepStartedAt": "2026-11-30T09:00:00Z"}}
    failing = Observed(predictor_ready=ready_both, router_table={"iris-1": 90, "iris-2": 10},
                       router_stats=(Counters("r-a", 1.0, "iris-2", 20, 5, {"+Inf": 20}),))
    later = T0 + dt.timedelta(seconds=30)
    rolled_back = reconcile(started, failing, later)
    assert rolled_back["status"]["rollout"]["phase"] == "RolledBack"
    got = kind_health(luahealth, rolled_back)
    assert got["status"] == "Degraded" and got["message"].startswith("AnalysisFailed: iris-2 failed step 1/3"), got
    assert got["message"].endswith("rolled back to iris-1"), got

    held = reconcile(started, failing, later, rollback=False)
    assert held["status"]["rollout"]["phase"] == "Paused"
    got = kind_health(luahealth, held)
    assert got["status"] == "Degraded" and got["message"].startswith("AnalysisFailed: iris-2 failed step 1/3"), got

    passing = Observed(predictor_ready=ready_both, router_table={"iris-1": 90, "iris-2": 10},
                       router_stats=(Counters("r-a", 1.0, "iris-2", 20, 0, {"+Inf": 20}),))
    stepped = reconcile(started, passing, later)
    assert kind_health(luahealth, stepped) == {
        "status": "Progressing",
        "message": "rollout of iris-2 at step 2/3 (50%); Stepping: router moving to step 2/3 (50% to iris-2)"}


def test_drift_checks_through_decide(luahealth: Path):
    from mlsteward_operator.api.driftmonitor import FeatureResult, Report
    from mlsteward_operator.driftmonitor.analysis import DriftVerdict
    from mlsteward_operator.driftmonitor.decide import compute_status, decide

    metadata = {"name": "iris-drift", "namespace": "ml", "uid": "u", "generation": 2}
    spec = {"deployment": "iris", "interval": "5m", "consecutive": 2, "actions": ["Alert"]}
    dm = DriftMonitor.model_validate({"metadata": metadata, "spec": spec})

    def check(dm: DriftMonitor, verdict: DriftVerdict) -> tuple[DriftMonitor, dict[str, Any]]:
        status = compute_status(dm, verdict, decide(dm, verdict, verdict.time), verdict.time)
        return dm.model_copy(update={"status": status}), wire("DriftMonitor", metadata, spec, status)

    def report(at: dt.datetime, drifted: bool) -> DriftVerdict:
        feature = FeatureResult(name="petal_length", method="ks", statistic=0.4, p_value=1e-9 if drifted else 0.6,
                                effect_size=0.4 if drifted else 0.01, drifted=drifted)
        return DriftVerdict(time=at, reason="DriftDetected" if drifted else "NoDrift", message="",
                            report=Report(time=at, window_size=600, features=[feature], drifted=drifted),
                            window_size=600, replicas=("p-0",))

    dm, obj = check(dm, DriftVerdict(time=T0, reason="InsufficientSamples", message="12 rows, fewer than 200"))
    assert kind_health(luahealth, obj) == {"status": "Progressing",
                                           "message": "InsufficientSamples: 12 rows, fewer than 200"}
    dm, obj = check(dm, report(T0 + dt.timedelta(minutes=5), drifted=False))
    assert kind_health(luahealth, obj)["status"] == "Healthy"
    dm, obj = check(dm, report(T0 + dt.timedelta(minutes=10), drifted=True))
    assert kind_health(luahealth, obj)["message"].startswith("BreachPending: ")
    dm, obj = check(dm, report(T0 + dt.timedelta(minutes=15), drifted=True))
    got = kind_health(luahealth, obj)
    assert got["status"] == "Degraded" and got["message"].startswith("DriftConfirmed: "), got
