"""A performance report rendered for people (`text`, aligned columns; `markdown`) or programs (`json`, the Report
model's fields). Pure: a Report in, a string out."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mlsteward_runtime.cluster.inventory import fnum, parse_time

if TYPE_CHECKING:  # the report module imports this one to offer `render` beside `build_report`
    from mlsteward_runtime.cluster.report import Report

__all__ = ["render", "show_time"]


def show_time(x: Any) -> str:
    """A timestamp of an object as `YYYY-MM-DDTHH:MM:SSZ`; anything else as it came, '-' when missing."""
    t = parse_time(x)
    if t is None:
        return "-" if x in (None, "") else str(x)
    return t.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def _n(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def _count(x: float | None, estimate: bool) -> str:
    if x is None:
        return "-"
    return f"~{x:.0f}" if estimate else f"{x:.0f}"


def _cell(x: Any) -> str:
    return (" ".join(str(x).split()).replace("|", "\\|")) or "-"


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return out + ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    rows = [[" ".join(str(c).split()) or "-" for c in r] for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]


def render(report: Report, fmt: str = "text") -> str:
    """The report as `text` (aligned columns), `markdown` or `json` (the Report model's fields)."""
    if fmt == "json":
        return json.dumps(report.model_dump(mode="json"), indent=2) + "\n"
    md = fmt == "markdown"
    h1, h2 = ("# ", "## ") if md else ("", "")
    est = report.source == "status"
    where = f" (namespace {report.namespace})" if report.namespace else ""
    lines = [f"{h1}Performance report: {report.deployment}{where}", ""]
    lines.append(f"Range: {show_time(report.since)} to {show_time(report.until)}; traffic figures from {report.source}"
                 + (" (estimates from samples, marked ~)" if est else "") + ".")
    if report.covered_since is not None:
        lines.append(f"Health samples in range: {show_time(report.covered_since)} to {show_time(report.covered_until)}.")
    if report.serving_version:
        lines.append(f"Serving now: {report.serving_version}.")
    lines.append("")
    lines += [f"{h2}Traffic", ""]
    rows = [[t.version, _count(t.requests, est), _count(t.errors, est),
             _n(None if t.error_rate is None else 100 * t.error_rate, ".2f") + ("%" if t.error_rate is not None
                                                                               else ""),
             _n(t.p50_ms), _n(t.p95_ms), _n(t.p99_ms), _count(t.feedback, est), _n(t.accuracy), _n(t.mean_reward)]
            for t in [*report.versions, report.total]]
    lines += _table(["Version", "Requests", "Errors", "Error rate", "p50 ms", "p95 ms", "p99 ms", "Feedback",
                     "Accuracy", "Mean reward"], rows, md) + [""]

    drift_rows = [[d.monitor, str(d.checks), str(d.drifted), str(d.max_drifted_features),
                   f"{d.last_action.get('type', '?')} at {show_time(d.last_action.get('time'))}" if d.last_action else "-"]
                  for d in report.drift]
    sections = [
        ("Decisions", ["Time", "Kind", "From", "To", "Reason", "Message"],
         [[show_time(d.get("time")), str(d.get("kind", "-")), str(d.get("from") or "-"), str(d.get("to") or "-"),
           str(d.get("reason", "-")), str(d.get("message") or "-")] for d in report.decisions],
         "None in the range."),
        ("Alerts firing now", ["Rule", "Metric", "Value", "Threshold", "Since", "Message"],
         [[str(a.get("rule", "-")), str(a.get("metric", "-")), _n(fnum(a.get("value"))),
           _n(fnum(a.get("threshold"))), show_time(a.get("since")), str(a.get("message") or "-")] for a in report.alerts],
         "None."),
        ("Drift", ["DriftMonitor", "Checks", "Drifted", "Most drifted features", "Action in range"], drift_rows,
         "No DriftMonitor watches this deployment."),
        ("Experiments", ["Experiment", "Variants", "Phase", "Started", "Concluded", "Winner"],
         [[e.name, ", ".join(e.variants), e.phase or "-", show_time(e.started_at), show_time(e.concluded_at), e.winner or "-"]
          for e in report.experiments], "None ran in the range."),
    ]
    for title, header, rows, empty in sections:
        lines += [f"{h2}{title}", ""]
        lines += (_table(header, rows, md) if rows else [empty]) + [""]

    lines += [f"{h2}Sources", ""]
    lines += [f"- {k}: {v}" for k, v in report.sources.items()]
    if report.notes:
        lines += ["", f"{h2}Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines).rstrip() + "\n"
