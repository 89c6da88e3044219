"""The view of `mlsteward status` rendered for people (`text`: a header, then sections with aligned columns, as
`kubectl describe` reads) or programs (`json`, `yaml`: the view's keys as they are). Pure: a dict from
`status.build_status` in, a string out."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from mlsteward_runtime.cluster.inventory import fnum
from mlsteward_runtime.cluster.reportview import show_time
from mlsteward_runtime.cluster.status import KSTATUS

__all__ = ["FORMATS", "render", "render_text"]

FORMATS = ("text", "json", "yaml")

# Status messages come from objects anyone with write access to a status can fill: no escape sequences reach the
# terminal (C0 and C1 control characters, DEL).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
SHA_PREFIX = 12
METRICS_SHOWN = 4


def _s(x: Any) -> str:
    """One line of text for a value: control characters dropped, whitespace runs collapsed, '-' when empty."""
    if x is None or x == "" or x == []:
        return "-"
    return " ".join(_CONTROL.sub(" ", str(x)).split()) or "-"


def _n(x: Any, spec: str = ".4g") -> str:
    v = fnum(x)
    return "-" if v is None else format(v, spec)


def _pct(x: Any) -> str:
    v = fnum(x)
    return "-" if v is None else f"{100 * v:.1f}%"


def _table(header: list[str], rows: list[list[Any]], indent: str = "  ") -> list[str]:
    cells = [[_s(c) for c in r] for r in rows]
    widths = [max(len(c) for c in col) for col in zip(header, *cells)]
    return [(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths))).rstrip() for r in [header, *cells]]


def _ready(d: dict[str, Any] | None) -> str:
    if not d:
        return "no Deployment"
    return f"{d.get('readyReplicas', 0)}/{d.get('replicas', 0)} ready"


def _header(v: dict[str, Any]) -> list[str]:
    rollout = v.get("rollout") or {}
    lines = [f"ModelDeployment {_s(v.get('namespace'))}/{_s(v.get('name'))}"]
    rows: list[tuple[str, str]] = [
        ("Model", _s(v.get("model"))),
        ("Wanted", _s(v.get("wantedVersion")) + "  (spec.version)"),
        ("Serving", _s(v.get("servingVersion")) + (f"  (stable {_s(v.get('stableVersion'))})"
                                                  if v.get("stableVersion") else "")),
    ]
    override = v.get("override") or {}
    if override and not override.get("endedAt"):
        rows.append(("Override", f"{_s(override.get('kind'))} to {_s(override.get('version'))} by "
                                 f"{_s(override.get('source'))} at {show_time(override.get('time'))}, while "
                                 f"spec.version is {_s(override.get('specVersion'))}"))
    step = rollout.get("step")
    steps = rollout.get("steps") or []
    where = f", step {step + 1} of {len(steps)} ({'/'.join(str(s) for s in steps)}%)" \
        if isinstance(step, int) and steps and rollout.get("phase") == "Progressing" else ""
    target = f" to {_s(rollout.get('targetVersion'))}" if rollout.get("targetVersion") else ""
    rows.append(("Rollout", f"{_s(rollout.get('strategy'))}, {_s(rollout.get('phase'))}{target}{where}"))
    traffic = ", ".join(
        f"{_s(t.get('version'))} {_s(t.get('weight'))}%" + (f" ({', '.join(_s(r) for r in t['roles'])})"
                                                             if t.get("roles") else "")
        for t in v.get("traffic") or [])
    rows.append(("Traffic", traffic or "-  (no traffic routed yet)"))
    if v.get("experiment"):
        rows.append(("Experiment", _s(v.get("experiment")) + "  (steering the traffic)"))
    rows.append(("URL", _s(v.get("url"))))
    gen, seen = v.get("generation"), v.get("observedGeneration")
    if gen is not None:
        rows.append(("Generation", f"{_s(gen)}, observed {_s(seen)}" + ("" if gen == seen else "  (not caught up)")))
    width = max(len(k) for k, _ in rows) + 1
    return lines + [f"  {(k + ':').ljust(width)} {val}" for k, val in rows]


def _conditions(v: dict[str, Any]) -> list[str]:
    conds = v.get("conditions") or []
    if not conds:
        return ["  None reported yet (the operator has not reconciled it)."]
    lines = _table(["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"],
                   [[c.get("type"), c.get("status"), c.get("reason"), show_time(c.get("lastTransitionTime")),
                     c.get("message")] for c in conds])
    absent = [t for t in KSTATUS[1:] if t not in {c.get("type") for c in conds}]
    if absent:
        lines.append(f"  {' and '.join(absent)} {'is' if len(absent) == 1 else 'are'} set only while True: absent "
                     "means False.")
    return lines


def _metrics(ver: dict[str, Any]) -> str:
    metrics = ver.get("metrics") or {}
    shown = [f"{k}={_n(metrics[k])}" for k in sorted(metrics)[:METRICS_SHOWN]]
    more = f" +{len(metrics) - METRICS_SHOWN}" if len(metrics) > METRICS_SHOWN else ""
    trained = " (trained)" if ver.get("metricsSource") == "training" else ""
    return " ".join(shown) + more + trained if shown else "-"


def _versions(v: dict[str, Any]) -> list[str]:
    rows = []
    for ver in v.get("versions") or []:
        if not ver.get("found"):
            rows.append([ver.get("name"), ", ".join(ver.get("roles") or []), "NotFound", "-", "-"])
            continue
        phase = _s(ver.get("phase")) + (f" ({_s(ver.get('reason'))})" if ver.get("reason") and
                                        ver.get("phase") != "Ready" else "")
        sha = str(ver.get("sha256") or "")[:SHA_PREFIX]
        rows.append([ver.get("name"), ", ".join(ver.get("roles") or []), phase, sha, _metrics(ver)])
    return _table(["NAME", "ROLE", "PHASE", "SHA256", "METRICS"], rows) if rows else ["  None."]


def _workloads(v: dict[str, Any]) -> list[str]:
    router = v.get("router") or {}
    config = ""
    if "current" in router or "replicas" in router:
        config = f"{router.get('current', 0)}/{router.get('replicas', 0)} replicas serve configuration " \
                 f"{_s(router.get('generation'))} ({_s(router.get('traffic'))})"
    predictors = v.get("predictors")
    if predictors is None:
        return [f"  router     readiness unknown (not allowed to list Deployments); {config or 'no router status'}"]
    rows = [["router", "-", _ready(router.get("deployment")), config or "-"]]
    rows += [["predictor", p.get("version"), _ready(p), p.get("deployment")] for p in predictors]
    if not predictors:
        rows.append(["predictor", "-", "no Deployment", "-"])
    return _table(["COMPONENT", "VERSION", "READY", "DETAIL"], rows)


def _decision_text(e: dict[str, Any]) -> str:
    request = e.get("servingRequest") or {}
    if request:
        return f"{_s(request.get('kind'))} {_s(request.get('version'))} requested ({_s(request.get('reason'))})"
    if e.get("winner"):
        return f"winner {_s(e['winner'])} (onSuccess {_s(e.get('onSuccess'))})"
    if e.get("phase") in ("Concluded", "Stopped"):
        return "no winner"
    return "none yet"


def _experiments(v: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for e in v.get("experiments") or []:
        p = f"p={_n(e.get('pValue'))}" + (f" ({_s(e.get('test'))})" if e.get("test") else "")
        leader = f"leader {_s(e.get('leader'))}" + (f" P(best)={_n(e.get('probabilityBest'), '.3f')}"
                                                     if e.get("probabilityBest") is not None else "")
        srm = "; SAMPLE RATIO MISMATCH" if e.get("sampleRatioMismatch") else ""
        lines.append(f"  {_s(e.get('name'))}: {_s(e.get('phase') or 'Pending')}, {_s(e.get('strategy'))} on "
                     f"{_s(e.get('metric'))}; {p}; {leader}; decision: {_decision_text(e)}{srm}")
        lines += _table(["ARM", "VERSION", "WEIGHT", "REQUESTS", "OUTCOMES", "MEAN", "P(BEST)"],
                        [[a.get("name"), a.get("version"), f"{_s(a.get('weight'))}%", a.get("requests"),
                          a.get("outcomes"), _n(a.get("mean")), _n(a.get("probabilityBest"), ".3f")]
                         for a in e.get("arms") or []], indent="    ")
    total, shown = v.get("experimentsTotal", 0), len(v.get("experiments") or [])
    if total > shown:
        lines.append(f"  ({total - shown} older concluded or stopped not shown)")
    return lines or ["  None on this deployment."]


def _drift(v: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for m in v.get("driftMonitors") or []:
        detected = m.get("driftDetected")
        verdict = "drift detected" if detected is True else "no drift" if detected is False else "not checked yet"
        actions = ", ".join(_s(a) for a in m.get("actions") or []) or "Alert"
        lines.append(f"  {_s(m.get('name'))}: {verdict}, {_s(m.get('consecutiveBreaches'))} of "
                     f"{_s(m.get('consecutive'))} windows in breach before {actions}")
        last = m.get("lastReport")
        if last:
            drifted = last.get("driftedFeatures") or []
            lines.append(f"    last check {show_time(last.get('time'))}: {_s(last.get('windowSize'))} rows on "
                         f"{_s(last.get('version'))}, {len(drifted)} of {_s(last.get('features'))} features drifted"
                         + (f" ({', '.join(_s(f) for f in drifted)})" if drifted else ""))
        action = m.get("lastAction")
        if action:
            lines.append(f"    last action {_s(action.get('type'))} at {show_time(action.get('time'))}: "
                         f"{_s(action.get('message'))}")
        retrain = m.get("retrain")
        if retrain:
            lines.append(f"    retraining {_s(retrain.get('phase'))}: Job {_s(retrain.get('job'))}, "
                         f"ModelVersion {_s(retrain.get('modelVersion'))}")
    return lines or ["  No DriftMonitor watches this deployment."]


def _shadow(v: dict[str, Any]) -> list[str]:
    sh = v.get("shadow")
    if not sh:
        return ["  None."]
    line = f"  {_s(sh.get('version'))} at {_s(sh.get('percent'))}%: {_s(sh.get('phase'))}"
    if sh.get("message"):
        line += f" ({_s(sh['message'])})"
    out = [line, f"    {_s(sh.get('requests', 0))} mirrored, errors {_pct(sh.get('errorRate'))}, agreement "
                 f"{_pct(sh.get('agreement'))} [{_pct(sh.get('agreementLow'))}, {_pct(sh.get('agreementHigh'))}] "
                 f"on {_s(sh.get('compared', 0))} compared, {_s(sh.get('pairs', 0))} labelled pairs"]
    gate = sh.get("gate") or {}
    if gate:
        out.append(f"    promotion gate {_s(gate.get('result'))}: {_s(gate.get('message'))}")
    return out


def _decisions(v: dict[str, Any]) -> tuple[str, list[str]]:
    log = v.get("decisions") or []
    total = v.get("decisionsTotal", len(log))
    title = f"Decisions (last {len(log)} of {total}, oldest first)" if total > len(log) else "Decisions"
    if not log:
        return title, ["  None."]
    lines = _table(["TIME", "KIND", "FROM", "TO", "REASON", "MESSAGE"],
                   [[show_time(d.get("time")), d.get("kind"), d.get("from"), d.get("to"), d.get("reason"),
                     d.get("message")] for d in log])
    changes = [d.get("gitChange") for d in log if d.get("gitChange")]
    if changes:
        lines.append(f"  To bring Git in line: {_s(changes[-1])}")
    return title, lines


def render_text(view: dict[str, Any]) -> str:
    """The view for people: a header of what is wanted and served, then one section per part."""
    lines = _header(view)
    decisions_title, decisions = _decisions(view)
    for title, body in (("Conditions", _conditions(view)), ("Versions", _versions(view)),
                        ("Workloads", _workloads(view)), ("Experiments", _experiments(view)),
                        ("Drift", _drift(view)), ("Shadow", _shadow(view)), (decisions_title, decisions)):
        lines += ["", f"{title}:", *body]
    return "\n".join(lines) + "\n"


def _plain(x: Any) -> Any:
    if isinstance(x, (dt.datetime, dt.date)):
        return show_time(x) if isinstance(x, dt.datetime) else x.isoformat()
    raise TypeError(f"{type(x).__name__} is not JSON serializable")


def render(view: dict[str, Any], fmt: str = "text") -> str:
    """The view as `text`, `json` or `yaml` (the view's keys; timestamps as RFC 3339)."""
    if fmt == "json":
        return json.dumps(view, indent=2, default=_plain) + "\n"
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(json.loads(json.dumps(view, default=_plain)), sort_keys=False)
    if fmt == "text":
        return render_text(view)
    raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
