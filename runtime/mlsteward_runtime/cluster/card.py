"""Model cards: a ModelVersion and the objects around it in, Markdown out (`mlsteward card`).

Pure: plain dicts in the wire form (`kubectl get -o yaml`, or the kubernetes client's custom-object answers), a
string out, no I/O. It reads what the four kinds already record and judges nothing the operator has not measured:

- description: `spec.description`; intended use and limitations: the annotations `mlsteward.io/intended-use` and
  `mlsteward.io/limitations` (free text; `spec` is immutable, annotations are not, so a card can be improved
  after registration without a new version);
- signature: `spec.signature`, else the one the validation Job inferred (`status.signature`);
- training data and lineage: `spec.lineage`, followed parent by parent through the ModelVersions given, as far as
  they go (a missing parent or a cycle ends the chain, and the card says which);
- validation: each threshold of `spec.validation.thresholds` against the validated metric (`status.metrics`),
  pass or fail; a metric the validation did not measure is "not measured", with the training-time value beside it;
- serving: the ModelDeployments that want, serve, keep as stable or shadow it;
- drift: the DriftMonitors of those ModelDeployments (and any whose latest report tested this version): the latest
  report per feature, the history of checks, the last action and a retraining started from or ending in it;
- experiments: every Experiment with an arm on this version: arms, outcomes, the analysis and the winner.

The drift history of a monitor covers its ModelDeployment, whichever version was served at the time: history
entries do not record the version (the latest report does), and the card says so.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any

from mlsteward_runtime.cluster.inventory import KINDS, CardError, Inventory, dig, flatten, meta_of, name_of

__all__ = ["KINDS", "CardError", "Inventory", "dig", "flatten", "render_card", "threshold_results"]

ANNOTATION_INTENDED_USE = "mlsteward.io/intended-use"
ANNOTATION_LIMITATIONS = "mlsteward.io/limitations"


# --------------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------------


def _num(x: Any, spec: str = ".4g") -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        return format(x, spec)
    return _cell(x)


def _time(x: Any) -> str:
    if x is None or x == "":
        return "-"
    if isinstance(x, dt.datetime):
        if x.tzinfo is not None and x.utcoffset() == dt.timedelta(0):
            return x.replace(tzinfo=None).isoformat() + "Z"
        return x.isoformat()
    return str(x)


def _cell(x: Any) -> str:
    """A value safe inside a Markdown table cell: one line, pipes escaped."""
    if x is None:
        return "-"
    text = " ".join(str(x).split())
    return text.replace("|", "\\|") or "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


# --------------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------------


def _header(mv: dict[str, Any], inv: Inventory) -> list[str]:
    spec, status = mv.get("spec") or {}, mv.get("status") or {}
    model, version = spec.get("model", "?"), spec.get("version", "?")
    lines = [f"# Model card: {model} {version}", ""]
    where = f" in namespace `{inv.namespace}`" if inv.namespace else ""
    lines.append(f"ModelVersion `{name_of(mv)}`{where}.")
    lines.append("")
    phase = status.get("phase") or "Pending"
    reason = f" ({status['reason']})" if status.get("reason") else ""
    art = spec.get("artifact") or {}
    fw = spec.get("framework") or {}
    rows = [
        ["Model", _cell(model)],
        ["Version", _cell(version)],
        ["Phase", _cell(f"{phase}{reason}")],
        ["Artifact", _cell(f"{art.get('uri', '-')} ({art.get('format', 'skops')})")],
        ["sha256", _cell(art.get("sha256"))],
        ["Framework", _cell(" ".join(str(x) for x in (fw.get("name", "sklearn"), fw.get("version")) if x))],
        ["Created", _time(meta_of(mv).get("creationTimestamp"))],
    ]
    if status.get("message"):
        rows.insert(3, ["Verdict", _cell(status["message"])])
    return lines + _table(["Property", "Value"], rows) + [""]


def _description(mv: dict[str, Any]) -> list[str]:
    spec = mv.get("spec") or {}
    ann = meta_of(mv).get("annotations") or {}
    lines = ["## Description", ""]
    desc = str(spec.get("description") or "").strip()
    lines += [desc if desc else "No description (spec.description is empty).", ""]
    lines += ["## Intended use", ""]
    use = str(ann.get(ANNOTATION_INTENDED_USE) or "").strip()
    lines += [use if use else f"Not stated (annotation `{ANNOTATION_INTENDED_USE}`).", ""]
    limits = str(ann.get(ANNOTATION_LIMITATIONS) or "").strip()
    if limits:
        lines += ["### Limitations", "", limits, ""]
    return lines


def _signature(mv: dict[str, Any]) -> list[str]:
    spec, status = mv.get("spec") or {}, mv.get("status") or {}
    sig, source = spec.get("signature"), "spec.signature"
    if not sig:
        sig, source = status.get("signature"), "inferred by validation (status.signature)"
    lines = ["## Signature", ""]
    if not isinstance(sig, dict) or not sig.get("inputs"):
        return lines + ["No signature: neither spec.signature nor one inferred by validation.", ""]
    lines += [f"Source: {source}.", "", "Inputs, in the order the model expects:", ""]
    rows = []
    for i in sig.get("inputs") or []:
        kind = i.get("type", "number")
        if i.get("allowed") is not None:
            accepted = "one of " + ", ".join(str(v) for v in i["allowed"])
        elif i.get("min") is not None and i.get("max") is not None:
            accepted = f"[{_num(i['min'])}, {_num(i['max'])}]"
        elif i.get("min") is not None:
            accepted = f">= {_num(i['min'])}"
        elif i.get("max") is not None:
            accepted = f"<= {_num(i['max'])}"
        else:
            accepted = "any" if kind in ("number", "integer") else "-"
        rows.append([_cell(i.get("name")), _cell(kind), _cell(accepted), "yes" if i.get("required", True) else "no"])
    lines += _table(["Feature", "Type", "Accepted values", "Required"], rows) + [""]
    out = sig.get("output") or {}
    if out:
        classes = out.get("classes")
        extra = f", classes: {', '.join(str(c) for c in classes)}" if classes else ""
        lines += [f"Output: {out.get('kind', '?')}{extra}.", ""]
    else:
        lines += ["Output: not declared.", ""]
    return lines


def _lineage(mv: dict[str, Any], inv: Inventory) -> list[str]:
    spec, status = mv.get("spec") or {}, mv.get("status") or {}
    lin = spec.get("lineage") or {}
    lines = ["## Training data and lineage", ""]
    ref = spec.get("reference") or status.get("reference") or {}
    val = spec.get("validation") or {}
    rows = [
        ["Training data", _cell(lin.get("dataset"))],
        ["Trained by", _cell(lin.get("trainedBy"))],
        ["Trigger", _cell(lin.get("trigger"))],
        ["Reference profile (drift)", _cell(ref.get("uri"))],
        ["Validation set", _cell(f"{val['dataset']} (target `{val.get('target', '?')}`)" if val.get("dataset")
                                 else None)],
    ]
    lines += _table(["Property", "Value"], rows) + [""]
    chain: list[dict[str, Any]] = [mv]
    seen = {name_of(mv)}
    end = ""
    while True:
        parent = dig(chain[-1], "spec", "lineage", "parent")
        if not parent:
            break
        if parent in seen:
            end = f"lineage loops back to {parent}"
            break
        p = inv.get("ModelVersion", parent)
        if p is None:
            end = f"parent {parent} not found" + (f" in namespace {inv.namespace}" if inv.namespace else "")
            break
        chain.append(p)
        seen.add(parent)
    lines += ["Lineage, newest first:", ""]
    for depth, obj in enumerate(chain, start=1):
        s = obj.get("spec") or {}
        lin_ = s.get("lineage") or {}
        bits = [f"version {s.get('version', '?')}", f"phase {dig(obj, 'status', 'phase') or 'Pending'}"]
        if lin_.get("trigger"):
            bits.append(f"trigger {lin_['trigger']}")
        if lin_.get("dataset"):
            bits.append(f"data {lin_['dataset']}")
        lines.append(f"{depth}. `{name_of(obj)}` ({', '.join(bits)})")
    lines += ["", f"The chain ends here: {end}." if end else "The oldest version above has no parent.", ""]
    children = [o for o in inv.all("ModelVersion") if dig(o, "spec", "lineage", "parent") == name_of(mv)]
    if children:
        lines += ["Retrained into: " + ", ".join(f"`{name_of(c)}`" for c in children) + ".", ""]
    return lines


def threshold_results(mv: dict[str, Any]) -> list[tuple[str, float | None, str, float | None]]:
    """(threshold, validated value, result, training-time value) per threshold; result is pass, fail or
    `not measured` (the validation recorded no such metric)."""
    from mlsteward_runtime.stats.evaluate import parse_threshold

    spec, status = mv.get("spec") or {}, mv.get("status") or {}
    validated = status.get("metrics") or {}
    trained = spec.get("metrics") or {}
    out = []
    for text in dig(spec, "validation", "thresholds") or []:
        try:
            t = parse_threshold(str(text))
        except ValueError:
            out.append((str(text), None, "unparsable", None))
            continue
        got = validated.get(t.metric)
        result = "not measured" if got is None else ("pass" if t.holds(float(got)) else "fail")
        out.append((str(t), None if got is None else float(got), result, trained.get(t.metric)))
    return out


def _metrics(mv: dict[str, Any]) -> list[str]:
    spec, status = mv.get("spec") or {}, mv.get("status") or {}
    lines = ["## Validation metrics", ""]
    results = threshold_results(mv)
    validated = status.get("metrics") or {}
    trained = spec.get("metrics") or {}
    if results:
        passed = sum(r[2] == "pass" for r in results)
        lines += [f"{passed} of {len(results)} thresholds met on the validation set.", ""]
        lines += _table(["Threshold", "Validated", "Result", "As trained"],
                        [[_cell(t), _num(v), "**fail**" if res == "fail" else res, _num(tr)]
                         for t, v, res, tr in results]) + [""]
    else:
        lines += ["No thresholds (spec.validation.thresholds).", ""]
    names = sorted(set(validated) | set(trained))
    if names:
        lines += ["All metrics:", ""]
        lines += _table(["Metric", "Validated", "As trained"],
                        [[_cell(n), _num(validated.get(n)), _num(trained.get(n))] for n in names]) + [""]
    if not validated:
        lines += ["The validation recorded no metrics yet.", ""]
    return lines


def _roles(md: dict[str, Any], name: str) -> list[str]:
    spec, status = md.get("spec") or {}, md.get("status") or {}
    roles = []
    if status.get("servingVersion") == name:
        roles.append("serving")
    weight = next((t.get("weight") for t in status.get("traffic") or [] if t.get("version") == name), None)
    if weight is not None:
        roles.append(f"traffic {weight}%")
    if spec.get("version") == name:
        roles.append("spec.version")
    if status.get("stableVersion") == name:
        roles.append("stable")
    if status.get("previousVersion") == name:
        roles.append("previous stable")
    if dig(spec, "shadow", "version") == name:
        roles.append("shadow")
    return roles


def _serving(mv: dict[str, Any], inv: Inventory) -> tuple[list[str], list[str]]:
    name = name_of(mv)
    rows, mds = [], []
    for md in inv.all("ModelDeployment"):
        roles = _roles(md, name)
        if roles:
            mds.append(name_of(md))
            rows.append([f"`{name_of(md)}`", _cell(", ".join(roles)), _cell(dig(md, "status", "servingVersion")),
                         _cell(dig(md, "status", "url"))])
    lines = ["## Deployments", ""]
    if rows:
        lines += _table(["ModelDeployment", "Role of this version", "Serving now", "URL"], rows) + [""]
    else:
        lines += ["No ModelDeployment wants, serves or shadows this version.", ""]
    return lines, mds


def _drift(mv: dict[str, Any], inv: Inventory, deployments: list[str]) -> list[str]:
    name = name_of(mv)
    monitors = [dm for dm in inv.all("DriftMonitor")
                if dig(dm, "spec", "deployment") in deployments
                or dig(dm, "status", "lastReport", "version") == name
                or dig(dm, "status", "retrain", "parent") == name
                or dig(dm, "status", "retrain", "modelVersion") == name]
    lines = ["## Drift", ""]
    if not monitors:
        return lines + ["No DriftMonitor watches a ModelDeployment of this version.", ""]
    for dm in monitors:
        spec, status = dm.get("spec") or {}, dm.get("status") or {}
        lines += [f"### DriftMonitor `{name_of(dm)}` (ModelDeployment `{spec.get('deployment', '?')}`)", ""]
        actions = ", ".join(spec.get("actions") or ["Alert"])
        lines += [f"Checks every {spec.get('interval', '5m')}; acts ({actions}) after "
                  f"{spec.get('consecutive', 3)} windows in breach.", ""]
        report = status.get("lastReport")
        if isinstance(report, dict):
            on = report.get("version")
            which = ("this version" if on == name else f"`{on}`") if on else "an unrecorded version"
            verdict = "drift detected" if report.get("drifted") else "no drift"
            lines += [f"Latest report {_time(report.get('time'))} on {which}: {verdict}, "
                      f"{report.get('windowSize', 0)} rows.", ""]
            feats = report.get("features") or []
            if feats:
                lines += _table(["Feature", "Method", "Statistic", "p-value (adjusted)", "Effect size", "Drifted"],
                                [[_cell(f.get("name")), _cell(f.get("method")), _num(f.get("statistic")),
                                  _num(f.get("pValue")), _num(f.get("effectSize")),
                                  "**yes**" if f.get("drifted") else "no"] for f in feats]) + [""]
        else:
            lines += ["No report yet.", ""]
        history = [h for h in status.get("history") or [] if isinstance(h, dict)]
        if history:
            breaches = [h for h in history if h.get("drifted")]
            lines += [f"History: {len(history)} checks from {_time(history[0].get('time'))} to "
                      f"{_time(history[-1].get('time'))}, {len(breaches)} in breach (of the ModelDeployment, "
                      "whichever version it served then).", ""]
            if breaches:
                lines += _table(["Time", "Rows", "Drifted features"],
                                [[_time(h.get("time")), _num(h.get("windowSize")), _num(h.get("driftedFeatures"))]
                                 for h in breaches[-10:]]) + [""]
        act = status.get("lastAction")
        if isinstance(act, dict):
            lines += [f"Last action: {act.get('type', '?')} at {_time(act.get('time'))}"
                      + (f": {_cell(act['message'])}" if act.get("message") else "") + ".", ""]
        rt = status.get("retrain")
        if isinstance(rt, dict) and name in (rt.get("parent"), rt.get("modelVersion")):
            lines += [f"Retraining `{rt.get('job', '?')}` ({rt.get('phase', '?')}): from "
                      f"`{rt.get('parent') or '?'}` to `{rt.get('modelVersion') or '-'}`, trigger "
                      f"{rt.get('trigger', '?')}.", ""]
    return lines


def _experiments(mv: dict[str, Any], inv: Inventory) -> list[str]:
    name = name_of(mv)
    exps = [e for e in inv.all("Experiment")
            if any(v.get("version") == name for v in dig(e, "spec", "variants") or [])]
    lines = ["## Experiments", ""]
    if not exps:
        return lines + ["This version took part in no Experiment.", ""]
    for e in exps:
        spec, status = e.get("spec") or {}, e.get("status") or {}
        arms = spec.get("variants") or []
        ours = next(v.get("name") for v in arms if v.get("version") == name)
        metric = spec.get("metric") or {}
        lines += [f"### Experiment `{name_of(e)}` (ModelDeployment `{spec.get('deployment', '?')}`)", ""]
        lines += [f"Phase {status.get('phase') or 'Pending'}; metric {metric.get('name', 'reward')} "
                  f"({metric.get('kind', 'binary')}, {metric.get('goal', 'maximize')}); this version is arm "
                  f"`{ours}`.", ""]
        winner = status.get("winner")
        if winner:
            verdict = "this version won" if winner == ours else "this version lost"
            lines += [f"**Winner: `{winner}`** ({verdict}).", ""]
        elif status.get("leader"):
            lines += [f"No winner yet; leader `{status['leader']}` (P(best) {_num(status.get('probabilityBest'))}).",
                      ""]
        results = {v.get("name"): v for v in status.get("variants") or [] if isinstance(v, dict)}
        rows = []
        for v in arms:
            r = results.get(v.get("name"), {})
            ci = r.get("ci") or {}
            rows.append([f"`{_cell(v.get('name'))}`" + (" (this)" if v.get("name") == ours else ""),
                         _cell(v.get("version")), _num(r.get("weight", v.get("weight"))), _num(r.get("requests")),
                         _num(r.get("outcomes")), _num(r.get("mean")),
                         f"[{_num(ci.get('lower'))}, {_num(ci.get('upper'))}]" if ci else "-",
                         _num(r.get("probabilityBest"))])
        lines += _table(["Arm", "Version", "Weight %", "Requests", "Outcomes", "Mean", "95% CI", "P(best)"], rows)
        lines += [""]
        if status.get("test") or status.get("pValue") is not None:
            ci = status.get("effectCi") or {}
            lines += [f"Test {status.get('test', '-')}: p-value {_num(status.get('pValue'))}, effect "
                      f"{_num(status.get('effect'))}"
                      + (f" [{_num(ci.get('lower'))}, {_num(ci.get('upper'))}]" if ci else "") + ".", ""]
    return lines


def render_card(model_version: str, objects: Iterable[dict[str, Any]], *, namespace: str | None = None) -> str:
    """The Markdown model card of the ModelVersion named `model_version`, from `objects` (any of the four kinds,
    `List` documents included). CardError when there is no such ModelVersion."""
    inv = Inventory.of(objects, model_version, namespace)
    mv = inv.get("ModelVersion", model_version)
    if mv is None:
        known = sorted(inv.by_kind["ModelVersion"])
        where = f" in namespace {inv.namespace}" if inv.namespace else ""
        raise CardError(f"ModelVersion {model_version} not found{where}"
                        + (f" (ModelVersions: {', '.join(known[:20])})" if known else " (no ModelVersions at all)"))
    serving, deployments = _serving(mv, inv)
    lines = (_header(mv, inv) + _description(mv) + _signature(mv) + _lineage(mv, inv) + _metrics(mv) + serving
             + _drift(mv, inv, deployments) + _experiments(mv, inv))
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
