"""One view of a ModelDeployment (`mlsteward status`, `kubectl mlsteward status`): what is wanted and what is
served, the versions involved, the traffic split, router and predictor readiness, the Experiments and
DriftMonitors on it, shadow traffic, the kstatus conditions and the last decisions.

Pure: plain objects in the wire form (the kubernetes client's answers or `kubectl get -o yaml`) in, a plain dict
out (`build_status`); `statusview.render` turns it into text, JSON or YAML. Every value is read from a field the
operator writes (operator/mlsteward_operator/api: ModelDeploymentStatus, ModelVersionStatus, ExperimentStatus,
DriftMonitorStatus) or from the Deployments it renders; keys keep those fields' names. Nothing is computed anew
except which role each version plays and which Experiments count as active.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from mlsteward_runtime.cluster.inventory import dig, flatten, fnum, meta_of, name_of, parse_time

__all__ = ["ACTIVE_PHASES", "COMPONENT", "FINISHED_SHOWN", "KSTATUS", "build_status", "workload_labels"]

# The labels the operator puts on a ModelDeployment's Deployments (operator kernel/names.py). The deployment label
# is the ModelDeployment's name as is: the CRD keeps it a DNS label of at most 63 characters, a valid label value.
COMPONENT = "app.kubernetes.io/component"
LABEL_DEPLOYMENT = "mlsteward.io/deployment"
LABEL_VERSION = "mlsteward.io/version"

# The conditions kstatus (Flux, `kubectl wait`) reads, shown first; Reconciling and Stalled exist only while True.
KSTATUS = ("Ready", "Reconciling", "Stalled")
# Experiment phases that still steer traffic (phase unset: not yet seen by the operator).
ACTIVE_PHASES = (None, "Pending", "Running")
# Concluded or stopped Experiments shown besides the active ones: the most recent.
FINISHED_SHOWN = 3


def workload_labels(deployment: str) -> dict[str, str]:
    """The label selector of every Deployment the operator renders for the ModelDeployment `deployment`."""
    return {LABEL_DEPLOYMENT: deployment}


def _same_ns(obj: Mapping[str, Any], namespace: str | None) -> bool:
    ns = meta_of(dict(obj)).get("namespace")
    return namespace is None or not ns or ns == namespace


def _of(objects: Iterable[Any], kind: str, namespace: str | None) -> list[dict[str, Any]]:
    return [o for o in flatten(objects) if o.get("kind") == kind and _same_ns(o, namespace)]


def _on(objects: list[dict[str, Any]], deployment: str) -> list[dict[str, Any]]:
    return sorted((o for o in objects if dig(o, "spec", "deployment") == deployment), key=name_of)


def _map(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _roles(spec: dict[str, Any], st: dict[str, Any], experiments: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Version name -> the roles it plays, in the order they are worth reading."""
    roles: dict[str, list[str]] = {}

    def add(version: Any, role: str | None) -> None:
        if isinstance(version, str) and version:
            roles.setdefault(version, [])
            if role is not None and role not in roles[version]:
                roles[version].append(role)

    rollout = _map(st.get("rollout"))
    add(st.get("servingVersion"), "serving")
    add(spec.get("version"), "wanted")
    add(st.get("stableVersion"), "stable")
    if rollout.get("phase") == "Progressing":
        add(rollout.get("targetVersion"), "canary" if _strategy(spec) == "Canary" else "target")
    override = _map(st.get("override"))
    if override and not override.get("endedAt"):
        add(override.get("version"), "override")
    for t in _list(st.get("traffic")):
        add(_map(t).get("version"), None)
    add(dig(spec, "shadow", "version") or dig(st, "shadow", "version"), "shadow")
    for e in experiments:
        if dig(e, "status", "phase") in ACTIVE_PHASES:
            for v in _list(dig(e, "spec", "variants")):
                add(_map(v).get("version"), f"arm {_map(v).get('name', '?')}")
    add(st.get("previousVersion"), "previous")
    return roles


def _strategy(spec: dict[str, Any]) -> str:
    return str(dig(spec, "rollout", "strategy") or "Immediate")


def _version(name: str, roles: list[str], mv: dict[str, Any] | None) -> dict[str, Any]:
    if mv is None:
        return {"name": name, "roles": roles, "found": False}
    mst = _map(mv.get("status"))
    validated = {k: v for k, v in _map(mst.get("metrics")).items() if fnum(v) is not None}
    trained = {k: v for k, v in _map(dig(mv, "spec", "metrics")).items() if fnum(v) is not None}
    return {
        "name": name, "roles": roles, "found": True,
        "model": dig(mv, "spec", "model"), "version": dig(mv, "spec", "version"),
        "phase": mst.get("phase") or "Pending", "reason": mst.get("reason"), "message": mst.get("message"),
        "sha256": mst.get("sha256") or dig(mv, "spec", "artifact", "sha256"),
        # Validated metrics when there are any, else those recorded at training time.
        "metrics": validated or trained, "metricsSource": "validation" if validated else "training" if trained
        else None,
    }


def _traffic(st: dict[str, Any], roles: dict[str, list[str]]) -> list[dict[str, Any]]:
    out = []
    for t in _list(st.get("traffic")):
        t = _map(t)
        version = t.get("version")
        out.append({"version": version, "weight": t.get("weight"),
                    "roles": [r for r in roles.get(str(version), []) if r not in ("wanted", "serving")]})
    return out


def _replicas(d: dict[str, Any]) -> dict[str, Any]:
    """A Deployment's wanted and ready replicas, as `kubectl get deploy` shows them (READY ready/wanted)."""
    spec, st = _map(d.get("spec")), _map(d.get("status"))
    return {"deployment": name_of(d), "replicas": spec.get("replicas", 1),
            "readyReplicas": st.get("readyReplicas") or 0, "updatedReplicas": st.get("updatedReplicas") or 0,
            "availableReplicas": st.get("availableReplicas") or 0}


def _workloads(st: dict[str, Any], workloads: list[dict[str, Any]] | None
               ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The router (status.router and its Deployment) and the predictors (one Deployment per live version)."""
    router: dict[str, Any] = {k: v for k, v in _map(st.get("router")).items()
                              if k in ("generation", "traffic", "replicas", "current")}
    if workloads is None:
        return router, None
    predictors = []
    for d in sorted(workloads, key=name_of):
        labels = _map(meta_of(d).get("labels"))
        if labels.get(COMPONENT) == "router":
            router["deployment"] = _replicas(d)
        elif labels.get(COMPONENT) == "predictor":
            predictors.append({"version": labels.get(LABEL_VERSION), **_replicas(d)})
    return router, predictors


def _experiment(e: dict[str, Any]) -> dict[str, Any]:
    spec, st = _map(e.get("spec")), _map(e.get("status"))
    arms_by_name = {_map(v).get("name"): _map(v) for v in _list(st.get("variants"))}
    arms = []
    for v in _list(spec.get("variants")):
        v = _map(v)
        got = arms_by_name.get(v.get("name"), {})
        arms.append({"name": v.get("name"), "version": v.get("version"),
                     "weight": got.get("weight", v.get("weight")), "requests": got.get("requests", 0),
                     "outcomes": got.get("outcomes", 0), "mean": got.get("mean"),
                     "probabilityBest": got.get("probabilityBest")})
    request = _map(st.get("servingRequest"))
    return {
        "name": name_of(e), "phase": st.get("phase"), "strategy": dig(spec, "strategy", "type") or "Weighted",
        "metric": dig(spec, "metric", "name"), "onSuccess": spec.get("onSuccess") or "Promote", "arms": arms,
        "test": st.get("test"), "pValue": st.get("pValue"), "effect": st.get("effect"),
        "sampleRatioMismatch": dig(st, "sampleRatio", "mismatch"), "leader": st.get("leader"),
        "probabilityBest": st.get("probabilityBest"), "winner": st.get("winner"),
        "servingRequest": {k: request[k] for k in ("kind", "version", "reason", "time") if k in request} or None,
        "startedAt": st.get("startedAt"), "concludedAt": st.get("concludedAt"),
    }


def _monitor(dm: dict[str, Any]) -> dict[str, Any]:
    spec, st = _map(dm.get("spec")), _map(dm.get("status"))
    report = _map(st.get("lastReport"))
    features = [_map(f) for f in _list(report.get("features"))]
    last = None
    if report:
        last = {"time": report.get("time"), "windowSize": report.get("windowSize"), "version": report.get("version"),
                "drifted": bool(report.get("drifted")), "features": len(features),
                "driftedFeatures": sorted(str(f.get("name")) for f in features if f.get("drifted"))}
    action = _map(st.get("lastAction"))
    retrain = _map(st.get("retrain"))
    return {
        "name": name_of(dm), "actions": _list(spec.get("actions")), "consecutive": spec.get("consecutive", 3),
        "driftDetected": st.get("driftDetected"), "consecutiveBreaches": st.get("consecutiveBreaches", 0),
        "lastCheck": st.get("lastCheck"), "lastReport": last,
        "lastAction": {k: action[k] for k in ("type", "time", "message") if k in action} or None,
        "retrain": {k: retrain[k] for k in ("phase", "job", "modelVersion") if k in retrain} or None,
    }


def _conditions(st: dict[str, Any]) -> list[dict[str, Any]]:
    conds = [_map(c) for c in _list(st.get("conditions")) if _map(c).get("type")]
    order = {t: i for i, t in enumerate(KSTATUS)}
    conds.sort(key=lambda c: order.get(c["type"], len(KSTATUS)))
    return [{k: c[k] for k in ("type", "status", "reason", "message", "lastTransitionTime") if k in c} for c in conds]


def _finished_at(e: dict[str, Any]) -> dt.datetime:
    t = parse_time(dig(e, "status", "concludedAt")) or parse_time(meta_of(e).get("creationTimestamp"))
    return t or dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def build_status(md: dict[str, Any], objects: Iterable[Any], workloads: list[dict[str, Any]] | None, *,
                 decisions: int = 5) -> dict[str, Any]:
    """The view of the ModelDeployment `md`, with the ModelVersions, Experiments and DriftMonitors among `objects`
    (others are ignored) and its Deployments `workloads` (None: not readable, e.g. not allowed by RBAC). Keeps the
    last `decisions` entries of status.decisions (0: none)."""
    objects = list(objects)
    name, namespace = name_of(md), meta_of(md).get("namespace")
    spec, st = _map(md.get("spec")), _map(md.get("status"))
    experiments = _on(_of(objects, "Experiment", namespace), name)
    active = [e for e in experiments if dig(e, "status", "phase") in ACTIVE_PHASES]
    finished = sorted((e for e in experiments if e not in active), key=_finished_at)
    monitors = _on(_of(objects, "DriftMonitor", namespace), name)
    versions = {name_of(mv): mv for mv in _of(objects, "ModelVersion", namespace)}
    roles = _roles(spec, st, experiments)
    router, predictors = _workloads(st, workloads)
    rollout = {k: v for k, v in _map(st.get("rollout")).items() if k != "baseline"}
    log = [_map(d) for d in _list(st.get("decisions"))]
    shadow = _map(st.get("shadow"))
    return {
        "name": name, "namespace": namespace,
        "generation": meta_of(md).get("generation"), "observedGeneration": st.get("observedGeneration"),
        "model": st.get("model") or spec.get("model"),
        "wantedVersion": spec.get("version"), "servingVersion": st.get("servingVersion"),
        "stableVersion": st.get("stableVersion"), "previousVersion": st.get("previousVersion"),
        "override": st.get("override"), "experiment": st.get("experiment"), "url": st.get("url"),
        "rollout": {"strategy": _strategy(spec), "steps": dig(spec, "rollout", "steps"), **rollout},
        "traffic": _traffic(st, roles),
        "versions": [_version(v, r, versions.get(v)) for v, r in roles.items()],
        "router": router, "predictors": predictors,
        "experiments": [_experiment(e) for e in [*active, *finished[-FINISHED_SHOWN:]]],
        "experimentsTotal": len(experiments),
        "driftMonitors": [_monitor(dm) for dm in monitors],
        "shadow": {k: v for k, v in shadow.items() if k in (
            "version", "percent", "phase", "message", "requests", "errors", "errorRate", "compared", "agreement",
            "agreementLow", "agreementHigh", "pairs", "accuracyDiff", "pValue", "mcnemarP", "gate", "updatedAt")}
        or None,
        "conditions": _conditions(st),
        "decisions": log[-decisions:] if decisions > 0 else [], "decisionsTotal": len(log),
    }
