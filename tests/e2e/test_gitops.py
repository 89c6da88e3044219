"""GitOps with a real GitOps controller: Flux (source-controller and kustomize-controller, built from their Go
modules and started by `hack/gitops.sh up`) syncs a Git repository on the machine into the cluster, and nothing in
this module applies a mlsteward object itself. Every change reaches the cluster as a commit.

The repository holds the examples (`examples/modeldeployment-canary.yaml`, `examples/experiment.yaml`) and the two
ModelVersions `mlsteward register` writes, with the timings shortened for a test. The Kustomization has `wait: true`,
so Flux judges every object it applied with kstatus, the library `flux` and `kubectl wait` use: what it says about
our kinds is under test here, beside what the operator does.

The story, in order (the tests share one repository and one Kustomization):
1. Flux applies the versions and a ModelDeployment; the Kustomization is Ready once they serve.
2. A canary to a version that fails its latency gate is rolled back by the operator, in status only. Flux goes on
   applying the commit without drift (the spec is Git's, the generation moves only with Git), and its health check
   reports the ModelDeployment as Failed with the rollback's message, because what Git asks for is not served and
   will not be by itself. Committing the decision's `gitChange` makes Git agree, and the Kustomization is Ready.
3. An Experiment committed to Git concludes on live feedback and promotes the better version; the Kustomization
   stays Ready while it runs. Committing the promotion's `gitChange` moves nothing: no second rollout, no flapping.
4. Deleting the files from Git prunes them, and with them everything the operator made.

How the failing version is made: as in test_rollout.py, a healthy version judged by `maxP99LatencyMs: 0.001`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT, apply, condition, kget, kubectl, wait_for
from .test_experiment import run_feedback_client
from .test_rollout import predictors
from .test_serving import client_result, register, run_client, validation_rows

pytestmark = pytest.mark.usefixtures("operator_installed")

MD = "breast-cancer"
EXP = "breast-cancer-ab"
V1, V2 = "breast-cancer-1-0-0", "breast-cancer-1-1-0"
FLUX_MANAGER = "kustomize-controller"  # the field manager of Flux's server-side apply
GIT_CHANGE = re.compile(r"^set spec\.version: (?P<version>\S+) in ModelDeployment (?P<ns>[^/]+)/(?P<name>\S+)$")


def git_url() -> str:
    """The Git server's base URL: MLS_GIT_URL (`make e2e` sets it), else what `hack/gitops.sh env` prints."""
    if os.environ.get("MLS_GIT_URL"):
        return os.environ["MLS_GIT_URL"].rstrip("/")
    proc = subprocess.run([str(ROOT / "hack/gitops.sh"), "env"], capture_output=True, text=True, timeout=30)
    match = re.search(r"MLS_GIT_URL=(\S+)", proc.stdout)
    if proc.returncode != 0 or not match:
        pytest.fail(f"Flux and its Git server are not running: run `hack/gitops.sh up` ({proc.stderr.strip()})")
    return match.group(1).rstrip("/")


class Repo:
    """A working copy of the test repository on the Git server; `commit` pushes and returns the new revision."""

    def __init__(self, path: Path, remote: str) -> None:
        self.path, self.remote = path, remote
        self.rev = ""  # the last revision every test before left Flux Ready at
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.name", "mlsteward e2e")
        self.git("config", "user.email", "e2e@mlsteward.invalid")
        self.git("remote", "add", "origin", remote)

    def git(self, *args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=self.path, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"git {' '.join(args)} failed: {proc.stderr}"
        return proc.stdout.strip()

    def write(self, name: str, doc: dict[str, Any]) -> None:
        (self.path / name).write_text(yaml.safe_dump(doc, sort_keys=False))

    def read(self, name: str) -> dict[str, Any]:
        return yaml.safe_load((self.path / name).read_text())

    def remove(self, name: str) -> None:
        (self.path / name).unlink()

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        self.git("push", "-q", "origin", "main")
        return self.git("rev-parse", "HEAD")


def kustomization(ns: str) -> dict[str, Any]:
    obj = kget("kustomizations.kustomize.toolkit.fluxcd.io", "mlsteward", ns)
    assert obj is not None, "the Kustomization is gone"
    return obj


def applied(ns: str, rev: str) -> dict[str, Any] | None:
    """The Kustomization once it has applied `rev` (whatever its health)."""
    obj = kustomization(ns)
    return obj if (obj.get("status") or {}).get("lastAttemptedRevision") == f"main@sha1:{rev}" else None


def ready_at(ns: str, rev: str) -> dict[str, Any] | None:
    """The Kustomization once it has applied `rev` and every object it applied passed its health check."""
    obj = applied(ns, rev)
    ready = condition(obj, "Ready") if obj else None
    return obj if ready and ready["status"] == "True" and obj["status"].get("lastAppliedRevision") == \
        f"main@sha1:{rev}" else None


def md(ns: str) -> dict[str, Any]:
    obj = kget("modeldeployment", MD, ns)
    assert obj is not None, f"ModelDeployment {MD} is gone"
    return obj


def longest_in_progress(samples: list[tuple[float, str, str]]) -> float:
    """Seconds of the longest run of samples that were not Ready=True, up to the next True sample (or the last)."""
    longest, since = 0.0, None
    for t, status, _ in samples:
        if status != "True" and since is None:
            since = t
        elif status == "True" and since is not None:
            longest, since = max(longest, t - since), None
    if since is not None:
        longest = max(longest, samples[-1][0] - since)
    return longest


def set_git_change(repo: Repo, ns: str, change: str) -> None:
    """Applies a decision's one-line `gitChange` to the file in Git that holds the ModelDeployment."""
    m = GIT_CHANGE.match(change)
    assert m and (m["ns"], m["name"]) == (ns, MD), change
    doc = repo.read("modeldeployment.yaml")
    doc["spec"]["version"] = m["version"]
    repo.write("modeldeployment.yaml", doc)


def assert_git_owns_spec(kind: str, name: str, ns: str) -> None:
    """No drift a GitOps diff would show: Flux's field manager owns the spec it applied, the operator writes only
    through the status subresource, and no bookkeeping (annotations, finalizers) was added to the object."""
    obj = json.loads(kubectl("get", kind, name, "-n", ns, "-o", "json", "--show-managed-fields"))
    entries = obj["metadata"]["managedFields"]
    flux = [e for e in entries if e["manager"] == FLUX_MANAGER]
    assert flux and all(e.get("subresource", "") == "" for e in flux), entries
    assert any("f:spec" in e.get("fieldsV1", {}) for e in flux), entries
    others = [e for e in entries if e["manager"] != FLUX_MANAGER]
    assert all(e.get("subresource") == "status" for e in others), others
    assert not obj["metadata"].get("finalizers"), obj["metadata"]
    annotations = obj["metadata"].get("annotations") or {}
    assert not [k for k in annotations if k.startswith(("kopf.", "mlsteward.io/"))], annotations


@pytest.fixture(scope="module")
def gitops(namespace: str, trained: Path, artifact_server: str, tmp_path_factory: pytest.TempPathFactory) -> Repo:
    """The test repository, pushed with the two ModelVersions and the canary example, and the Flux objects that
    sync it into `namespace` (applied by hand, as `flux bootstrap` or a platform team would)."""
    repo = Repo(tmp_path_factory.mktemp("gitops") / "repo", f"{git_url()}/{namespace}.git")
    for version in ("1.0.0", "1.1.0"):
        mv = register(trained, version, artifact_server)
        repo.write(f"{mv['metadata']['name']}.yaml", mv)
    md_doc = yaml.safe_load((ROOT / "examples/modeldeployment-canary.yaml").read_text())
    assert md_doc["metadata"]["name"] == MD and md_doc["spec"]["version"] == V2
    md_doc["spec"].update(version=V1, replicas=1, router={"replicas": 1})
    md_doc["spec"]["rollout"].update(steps=[50, 100], stepInterval="10s",
                                     analysis={"maxP99LatencyMs": 0.001, "minRequests": 5})
    repo.write("modeldeployment.yaml", md_doc)
    repo.rev = repo.commit("Serve breast-cancer 1.0.0")
    apply([
        {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
         "metadata": {"name": "mlsteward", "namespace": namespace},
         "spec": {"interval": "5s", "timeout": "30s", "url": repo.remote, "ref": {"branch": "main"}}},
        {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
         "metadata": {"name": "mlsteward", "namespace": namespace},
         "spec": {"interval": "10s", "retryInterval": "5s", "timeout": "4m", "path": "./", "prune": True,
                  "wait": True, "targetNamespace": namespace,
                  "sourceRef": {"kind": "GitRepository", "name": "mlsteward"}}},
    ], namespace)
    return repo


@pytest.mark.timeout(480)
def test_flux_applies_the_versions_and_the_deployment_from_git(namespace: str, gitops: Repo):
    ks = wait_for(lambda: ready_at(namespace, gitops.rev), timeout=420, what="the Kustomization Ready", interval=2)
    inventory = {e["id"] for e in ks["status"]["inventory"]["entries"]}
    assert {f"{namespace}_{MD}_mlsteward.io_ModelDeployment", f"{namespace}_{V1}_mlsteward.io_ModelVersion",
            f"{namespace}_{V2}_mlsteward.io_ModelVersion"} <= inventory, inventory
    obj = md(namespace)
    assert obj["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] == "mlsteward"
    assert obj["status"]["servingVersion"] == V1
    assert condition(obj, "Ready")["status"] == "True"
    assert condition(obj, "Reconciling") is None and condition(obj, "Stalled") is None
    assert obj["metadata"]["generation"] == 1
    assert_git_owns_spec("modeldeployment", MD, namespace)
    for name in (V1, V2):
        assert_git_owns_spec("modelversion", name, namespace)


@pytest.mark.timeout(600)
def test_a_failed_canary_rolls_back_without_drift_and_its_git_change_brings_git_in_line(
        namespace: str, trained: Path, gitops: Repo):
    X, _ = validation_rows(trained)
    run_client(namespace, "gitops-load", f"http://{MD}.{namespace}.svc.cluster.local:8080/predict", 150,
               {"instances": X[:1]})
    wait_for(lambda: (kget("pod", "gitops-load", namespace) or {}).get("status", {}).get("phase") == "Running",
             timeout=60, what="load client running")

    doc = gitops.read("modeldeployment.yaml")
    doc["spec"]["version"] = V2
    gitops.write("modeldeployment.yaml", doc)
    rev = gitops.commit("Roll out breast-cancer 1.1.0")
    wait_for(lambda: applied(namespace, rev), timeout=60, what="Flux to apply the new version")
    rolled = wait_for(lambda: (o := md(namespace))["status"].get("rollout", {}).get("phase") == "RolledBack" and o,
                      timeout=240, what="the canary rolled back", interval=1)
    (rollback,) = [d for d in rolled["status"]["decisions"] if d["kind"] == "Rollback"]
    assert (rollback["from"], rollback["to"]) == (V2, V1)
    assert rolled["spec"]["version"] == V2 and rolled["status"]["servingVersion"] == V1

    # Flux's health check reads the rollback as Failed (kstatus: Stalled), naming the object; the apply itself
    # succeeded at this revision.
    def health_failed() -> dict[str, Any] | None:
        ks = kustomization(namespace)
        ready = condition(ks, "Ready") or {}
        return ks if ks["status"].get("lastAttemptedRevision") == f"main@sha1:{rev}" and \
            ready.get("status") == "False" and ready.get("reason") == "HealthCheckFailed" else None

    ks = wait_for(health_failed, timeout=300, what="Flux's health check to fail on the rollback", interval=2)
    message = condition(ks, "Ready")["message"]
    assert f"ModelDeployment/{namespace}/{MD}" in message, message

    # No drift, no fight: Flux re-applies every 10 s; the spec stays Git's, the generation moved once (the commit),
    # the operator does not try the failed version again.
    generation = md(namespace)["metadata"]["generation"]
    assert generation == 2
    time.sleep(25)
    later = md(namespace)
    assert later["metadata"]["generation"] == generation and later["spec"]["version"] == V2
    assert [d["kind"] for d in later["status"]["decisions"]].count("Rollback") == 1
    assert predictors(namespace, MD) == [f"{MD}-{V1}"]
    assert_git_owns_spec("modeldeployment", MD, namespace)

    # Commit the decision's one-line change: Git agrees with what serves, the health check passes, nothing moves.
    set_git_change(gitops, namespace, rollback["gitChange"])
    assert gitops.read("modeldeployment.yaml")["spec"]["version"] == V1
    rev = gitops.commit("Apply the rollback's gitChange")
    wait_for(lambda: ready_at(namespace, rev), timeout=240, what="the Kustomization Ready again", interval=2)
    settled = md(namespace)
    assert settled["status"]["servingVersion"] == V1
    assert condition(settled, "Stalled") is None and condition(settled, "Reconciling") is None
    assert [d["kind"] for d in settled["status"]["decisions"]].count("Rollback") == 1
    assert predictors(namespace, MD) == [f"{MD}-{V1}"]
    result = client_result(namespace, "gitops-load", timeout=240)
    assert result["failed"] == 0, result
    assert result["versions"].get("1.1.0", 0) > 0, result  # the canary did serve during its step
    gitops.rev = rev


@pytest.mark.timeout(720)
def test_an_experiment_from_git_promotes_and_committing_its_git_change_moves_nothing(
        namespace: str, trained: Path, gitops: Repo):
    exp = yaml.safe_load((ROOT / "examples/experiment.yaml").read_text())
    assert exp["metadata"]["name"] == EXP and exp["spec"]["deployment"] == MD
    assert [v["version"] for v in exp["spec"]["variants"]] == [V1, V2]
    exp["spec"]["stopping"]["minSamplesPerVariant"] = 200
    gitops.write("experiment.yaml", exp)
    rev = gitops.commit("A/B test breast-cancer 1.0.0 against 1.1.0")
    wait_for(lambda: ready_at(namespace, rev), timeout=240, what="the Kustomization Ready with the Experiment",
             interval=2)
    wait_for(lambda: ((kget("experiment", EXP, namespace) or {}).get("status") or {}).get("phase") == "Running",
             timeout=120, what="the Experiment running")

    X, _ = validation_rows(trained)
    run_feedback_client(namespace, "gitops-ab", f"http://{MD}.{namespace}.svc.cluster.local:8080", 400,
                        {"instances": X[:1]})
    # While the Experiment runs, Flux's health check keeps passing (a running Experiment is Current in kstatus):
    # sample the Kustomization's Ready until the Experiment concludes. Flux sets Ready=Unknown (Progressing) at the
    # start of each reconcile, every 10 s, so a sample may fall inside one; what must not happen is a failed check
    # (False) or a reconcile held in progress, which is what kstatus reading the Experiment as InProgress would do
    # (Flux waits up to the Kustomization's 4 m timeout for it).
    readiness: list[tuple[float, str, str]] = []

    def concluded() -> dict[str, Any] | None:
        ready = condition(kustomization(namespace), "Ready") or {}
        readiness.append((time.monotonic(), ready.get("status", "missing"), ready.get("reason", "")))
        o = kget("experiment", EXP, namespace)
        return o if (o.get("status") or {}).get("phase") in ("Concluded", "Stopped") else None

    done = wait_for(concluded, timeout=420, what="the Experiment concluded", interval=2)
    assert done["status"]["phase"] == "Concluded" and done["status"]["winner"] == "treatment", done["status"]
    states = [(status, reason) for _, status, reason in readiness]
    assert len(readiness) >= 3 and ("True", "ReconciliationSucceeded") in states, states
    assert all(status == "True" or (status, reason) == ("Unknown", "Progressing") for status, reason in states), states
    assert longest_in_progress(readiness) < 20, readiness

    promoted = wait_for(lambda: (o := md(namespace))["status"].get("servingVersion") == V2 and o, timeout=180,
                        what=f"{MD} serving {V2}")
    assert promoted["spec"]["version"] == V1  # the promotion is in status; Git still says V1
    (promote,) = [d for d in promoted["status"]["decisions"] if d["kind"] == "Promote"]
    assert promote["gitChange"] == f"set spec.version: {V2} in ModelDeployment {namespace}/{MD}"
    kubectl("delete", "pod", "gitops-ab", "-n", namespace, "--wait=false")

    # Commit the promotion: Git agrees, and nothing moves again.
    set_git_change(gitops, namespace, promote["gitChange"])
    rev = gitops.commit("Apply the promotion's gitChange")
    wait_for(lambda: ready_at(namespace, rev), timeout=240, what="the Kustomization Ready at the promotion",
             interval=2)
    before = md(namespace)
    assert before["spec"]["version"] == V2 and before["status"]["servingVersion"] == V2
    decisions = len(before["status"]["decisions"])
    traffic: set[str] = set()
    phases: set[str] = set()
    deadline = time.monotonic() + 30  # three Kustomization intervals, each a re-apply
    while time.monotonic() < deadline:
        now = md(namespace)
        traffic.add(now["status"].get("trafficSummary") or "")
        phases.add((now["status"].get("rollout") or {}).get("phase") or "")
        time.sleep(1)
    after = md(namespace)
    assert traffic == {f"{V2}=100"}, traffic  # no canary split, ever
    assert phases <= {"Stable", ""}, phases
    assert after["status"]["servingVersion"] == V2
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert len(after["status"]["decisions"]) == decisions, after["status"]["decisions"][decisions:]
    assert predictors(namespace, MD) == [f"{MD}-{V2}"]
    assert condition(after, "Reconciling") is None and condition(after, "Stalled") is None
    assert_git_owns_spec("modeldeployment", MD, namespace)
    gitops.rev = rev


@pytest.mark.timeout(420)
def test_deleting_the_files_from_git_prunes_everything_the_operator_made(namespace: str, gitops: Repo):
    made = kubectl("get", "deployments,services,secrets,configmaps", "-n", namespace, "-l",
                   f"mlsteward.io/deployment={MD}", "-o", "name").split()
    assert any(m.startswith("deployment") for m in made), made  # the predictor and the router
    for name in (f"{V1}.yaml", f"{V2}.yaml", "modeldeployment.yaml", "experiment.yaml"):
        gitops.remove(name)
    # An empty path is not a kustomization; one unrelated object keeps the sync meaningful.
    gitops.write("marker.yaml", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gitops-marker"},
                                 "data": {"purpose": "keeps the path non-empty"}})
    rev = gitops.commit("Remove breast-cancer")
    wait_for(lambda: ready_at(namespace, rev), timeout=240, what="the Kustomization Ready after the removal",
             interval=2)
    for kind, name in (("modeldeployment", MD), ("experiment", EXP), ("modelversion", V1), ("modelversion", V2)):
        wait_for(lambda k=kind, n=name: kget(k, n, namespace) is None, timeout=120, what=f"{kind} {name} pruned")
    wait_for(lambda: not kubectl("get", "deployments,services,secrets,configmaps,pods", "-n", namespace, "-l",
                                 f"mlsteward.io/deployment={MD}", "-o", "name").split(),
             timeout=180, what="everything the operator made for the ModelDeployment removed")
    assert kget("configmap", "gitops-marker", namespace) is not None
