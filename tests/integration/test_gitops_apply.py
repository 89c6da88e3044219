"""What a GitOps tool sees after the operator reconciled its objects: nothing but status (docs/gitops.md).

The four kinds are applied as Flux's kustomize-controller applies a sync: server-side apply, field manager
`kustomize-controller`, everything at once (the ModelDeployment before the ModelVersion it names). The operator runs
in-process against a real API server (tier A: no node, so the test plays the kubelet for the validation Job's pod,
with the result `mlsteward validate` would write). Once every object holds a steady status, each must show:

- exactly the labels and annotations applied, and no finalizer (kopf, registered with on.event handlers only,
  writes no progress annotation, last-handled-configuration or finalizer; the operator writes none either);
- managedFields: the GitOps manager still owns every spec and metadata field it applied, and every other manager
  (the operator's status writes) touched only the status subresource;
- no drift: the same manifest applied again by the GitOps manager with dryRun=All yields the live spec, labels,
  annotations and generation, which is how Flux and Argo CD's server-side diff decide "in sync".
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from .conftest import wait_for
from .test_controllers import GV, cond, custom, get, ready_version

GITOPS = "kustomize-controller"
LABELS = {"kustomize.toolkit.fluxcd.io/name": "models", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}
ANNOTATIONS = {"example.com/owner": "ml-platform"}
PLURALS = {"ModelVersion": "modelversions", "ModelDeployment": "modeldeployments", "Experiment": "experiments",
           "DriftMonitor": "driftmonitors"}


def manifest(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "mlsteward.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "labels": dict(LABELS), "annotations": dict(ANNOTATIONS)}, "spec": spec}


def version(name: str, semver: str) -> dict[str, Any]:
    return manifest("ModelVersion", name, {"model": "iris", "version": semver, "artifact": {
        "uri": f"file:///models/{name}.skops", "sha256": "c" * 64, "format": "skops"}})


# In the order of a kustomize build (kinds sorted by name): the ModelDeployment reaches the API server first.
SYNC = [
    manifest("DriftMonitor", "iris-drift", {"deployment": "iris", "interval": "1m"}),
    manifest("Experiment", "iris-ab", {"deployment": "iris", "variants": [
        {"name": "control", "version": "iris-1", "weight": 50},
        {"name": "treatment", "version": "iris-2", "weight": 50}]}),
    manifest("ModelDeployment", "iris", {"version": "iris-1", "replicas": 1}),
    version("iris-1", "1.0.0"),
    version("iris-2", "2.0.0"),
]


def apply(kube: Any, ns: str, obj: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
    """Server-side apply as the GitOps manager (force, as kustomize-controller does)."""
    extra = {"dry_run": "All"} if dry_run else {}
    return custom(kube).patch_namespaced_custom_object(
        *GV, ns, PLURALS[obj["kind"]], obj["metadata"]["name"], obj, field_manager=GITOPS, force=True,
        _content_type="application/apply-patch+yaml", **extra)


def finish_validation(kube: Any, ns: str, name: str) -> None:
    """The kubelet's part for the validation Job's pod: it terminated with `mlsteward validate`'s result."""
    from kubernetes import client

    from mlsteward_operator.api.modelversion import ModelVersion
    from mlsteward_operator.modelversion import render

    job = render.validation_job_name(ModelVersion.model_validate(get(kube, ns, "modelversions", name)))
    core = client.CoreV1Api(kube)
    pod = wait_for(lambda: (core.list_namespaced_pod(ns, label_selector=f"job-name={job}").items or [None])[0],
                   timeout=60, what=f"pod of Job {job}")
    container = pod.spec.containers[0]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = {"phase": "Ready", "reason": "Validated", "message": "validated", "sha256": "c" * 64}
    core.patch_namespaced_pod_status(pod.metadata.name, ns, {"status": {
        "phase": "Succeeded", "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
        "containerStatuses": [{"name": container.name, "image": container.image, "imageID": "", "ready": False,
                               "restartCount": 0, "state": {"terminated": {
                                   "exitCode": 0, "reason": "Completed", "message": json.dumps(result),
                                   "startedAt": now, "finishedAt": now}}}]}})


def live(kube: Any, ns: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: get(kube, ns, PLURALS[o["kind"]], o["metadata"]["name"]) or {} for o in SYNC}


def steady(kube: Any, ns: str, seconds: float = 6.0) -> dict[str, dict[str, Any]]:
    """Every object's status written for its generation, then no write to any of them for `seconds`."""
    def observed() -> dict[str, dict[str, Any]] | None:
        objs = live(kube, ns)
        ok = all((o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
                 for o in objs.values())
        return objs if ok else None

    first = wait_for(observed, timeout=60, what="a status of every object's generation")
    while True:
        time.sleep(seconds)
        again = live(kube, ns)
        if {n: o["metadata"]["resourceVersion"] for n, o in again.items()} == \
                {n: o["metadata"]["resourceVersion"] for n, o in first.items()}:
            return again
        first = again


def paths(value: Any, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The leaf paths of a manifest (a list is a leaf: each list's own ownership is checked at its key)."""
    if isinstance(value, dict) and value:
        return {p for k, v in value.items() for p in paths(v, (*prefix, k))}
    return {prefix}


def owns(fields: dict[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = fields
    for key in path:
        node = (node or {}).get(f"f:{key}") if isinstance(node, dict) else None
        if node is None:
            return False
    return True


def test_the_operator_writes_only_status_on_objects_a_gitops_tool_applies(kube, namespace):
    from mlsteward_operator.main import OperatorThread

    operator = OperatorThread(namespaces=[namespace]).start()
    try:
        for obj in SYNC:
            apply(kube, namespace, obj)
        for name in ("iris-1", "iris-2"):
            finish_validation(kube, namespace, name)
        wait_for(lambda: all((get(kube, namespace, "modelversions", n) or {}).get("status", {}).get("phase")
                             == "Ready" for n in ("iris-1", "iris-2")), timeout=60, what="both versions Ready")
        # The deployment renders its children (its pods never run here: it keeps waiting for them).
        wait_for(lambda: cond(get(kube, namespace, "modeldeployments", "iris"), "Reconciling").get("reason")
                 == "RollingOut", timeout=60, what="the ModelDeployment rolling out")
        objs = steady(kube, namespace)
        check(kube, namespace, objs)
    finally:
        operator.stop()
    assert operator.error is None, f"operator failed: {operator.error!r}"


def test_a_new_object_reads_not_observed_until_the_operator_writes_its_status(kube, namespace):
    """Before the operator's first status write, each kind reads "generation 1 not observed" (the CRDs default
    status to observedGeneration 0). Without that, kstatus (Flux's health checks, `kubectl wait`) finds no
    observedGeneration and no condition and calls a brand-new object Current: a sync would pass its health check
    before anything serves. No operator runs in this test, so nothing else writes status."""
    for obj in SYNC:
        apply(kube, namespace, obj)
        created = get(kube, namespace, PLURALS[obj["kind"]], obj["metadata"]["name"])
        assert created["metadata"]["generation"] == 1
        assert created.get("status") == {"observedGeneration": 0}, (obj["kind"], created.get("status"))
    # The default never overrides what the operator writes: a status write keeps its own observedGeneration.
    written = custom(kube).patch_namespaced_custom_object_status(
        *GV, namespace, "modelversions", "iris-1", {"status": {"observedGeneration": 1, "phase": "Pending"}})
    assert written["status"] == {"observedGeneration": 1, "phase": "Pending"}


def check(kube: Any, namespace: str, objs: dict[str, dict[str, Any]]) -> None:
    for applied in SYNC:
        name = applied["metadata"]["name"]
        obj = objs[name]
        meta = obj["metadata"]
        # The operator reconciled it (not a vacuous check): a status for this generation.
        assert obj["status"]["observedGeneration"] == meta["generation"] == 1, name
        assert meta.get("labels") == LABELS and meta.get("annotations") == ANNOTATIONS, name
        assert not meta.get("finalizers"), name

        entries = meta["managedFields"]
        gitops = [e for e in entries if e["manager"] == GITOPS]
        assert len(gitops) == 1 and gitops[0]["operation"] == "Apply" and "subresource" not in gitops[0], name
        wanted = {("spec", *p) for p in paths(applied["spec"])} | \
                 {("metadata", k, x) for k in ("labels", "annotations") for x in applied["metadata"][k]}
        assert {p for p in wanted if not owns(gitops[0]["fieldsV1"], p)} == set(), name
        others = [e for e in entries if e["manager"] != GITOPS]
        assert others, f"{name}: no status write by the operator"
        assert [e for e in others if e.get("subresource") != "status"] == [], name
        assert not any("f:spec" in e["fieldsV1"] or "f:metadata" in e["fieldsV1"] for e in others), name

        # Applying the same manifest again (dry run) changes nothing the GitOps tool owns: no drift.
        again = apply(kube, namespace, applied, dry_run=True)
        assert again["spec"] == obj["spec"], name
        assert again["metadata"]["generation"] == meta["generation"], name
        assert again["metadata"].get("labels") == LABELS and again["metadata"].get("annotations") == ANNOTATIONS
        assert again["metadata"]["resourceVersion"] == meta["resourceVersion"], name


def test_a_rollout_whose_pods_never_become_ready_is_stalled_after_its_progress_deadline(kube, namespace):
    from kubernetes import client

    from mlsteward_operator.main import OperatorThread

    ready_version(kube, namespace, "iris-1", "iris", "1.0.0")
    operator = OperatorThread(namespaces=[namespace]).start()
    try:
        # No node: the predictor's pod stays Pending, so nothing progresses after the first look.
        apply(kube, namespace, manifest("ModelDeployment", "iris", {
            "version": "iris-1", "rollout": {"progressDeadline": "30s"}}))
        rolling = wait_for(lambda: (o := get(kube, namespace, "modeldeployments", "iris")) and
                           cond(o, "Reconciling").get("reason") == "RollingOut" and o, timeout=30, what="RollingOut")
        deadline = dt.datetime.fromisoformat(rolling["status"]["progress"]["deadline"])
        stalled = wait_for(lambda: (o := get(kube, namespace, "modeldeployments", "iris")) and
                           cond(o, "Stalled").get("reason") == "ProgressDeadlineExceeded" and o, timeout=90,
                           what="Stalled (ProgressDeadlineExceeded)")
        assert dt.datetime.fromisoformat(cond(stalled, "Stalled")["lastTransitionTime"]) >= deadline
        assert "Reconciling" not in {c["type"] for c in stalled["status"]["conditions"]}
        assert cond(stalled, "Progressing")["status"] == "False"
        time.sleep(4)  # later looks post no second Event
        events = [e for e in client.CoreV1Api(kube).list_namespaced_event(namespace).items
                  if e.reason == "ProgressDeadlineExceeded" and e.involved_object.name == "iris"]
        assert len(events) == 1 and events[0].type == "Warning" and (events[0].count or 1) == 1
    finally:
        operator.stop()
    assert operator.error is None, f"operator failed: {operator.error!r}"
