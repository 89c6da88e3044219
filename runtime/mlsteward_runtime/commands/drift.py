"""`mlsteward drift`: the offline drift report between a reference (CSV or profile) and current data (CSV)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELP = "Test current data against a reference (CSV or profile) for drift, feature by feature."
DESCRIPTION = """\
Compare CURRENT (a CSV with a header) against REFERENCE (a CSV with a header, or a profile JSON written by
`mlsteward profile`), feature by feature.

Numeric features: Kolmogorov-Smirnov, Wasserstein (also divided by the reference std) and PSI on the reference
deciles. Categorical features: chi-square on the table of counts, Jensen-Shannon distance (base 2) and PSI over the
categories. A feature drifts only when all three hold:
  1. both sides have at least --min-samples values;
  2. the effect is material: PSI >= --psi or Wasserstein/std >= --wasserstein (numeric),
     Jensen-Shannon >= --jensen-shannon or PSI >= --psi (categorical);
  3. its p-value (KS or chi-square), adjusted across features (--correction holm|bh), is below --alpha.
So a huge window with a negligible shift is not drift, and neither is a noisy small one.

Output (--format json): {"drift_detected", "n_reference", "n_current", "features": {NAME: {"type", "drift",
"tests"}}}. --format table adds the adjusted p-value and the reason of each verdict.
Exit status: 0, or 1 with --exit-code when drift is detected; 2 on bad input.

examples:
  mlsteward drift train.csv live.csv
  mlsteward drift profile.json live.csv --format table
  mlsteward drift train.csv live.csv --categorical zip,segment --min-samples 500 --exit-code
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("reference", metavar="REFERENCE", help="Reference CSV with a header, or a profile JSON.")
    parser.add_argument("current", metavar="CURRENT", help="Current CSV with a header.")
    parser.add_argument("--categorical", default="", metavar="COL,...",
                        help="Columns to treat as categorical (a CSV reference; a profile carries its types).")
    parser.add_argument("--target", metavar="COL", help="Label column to leave out (a CSV reference).")
    parser.add_argument("--features", default="", metavar="COL,...", help="Test only these features.")
    parser.add_argument("--format", choices=("json", "table"), default="json", help="Output format (default json).")
    parser.add_argument("--alpha", type=float, default=0.05, help="Significance level (default 0.05).")
    parser.add_argument("--correction", choices=("holm", "bh"), default="holm",
                        help="Multiple-testing correction across features (default holm).")
    parser.add_argument("--min-samples", type=int, default=100, help="Fewest values to test a feature (default 100).")
    parser.add_argument("--psi", type=float, default=0.2, help="PSI threshold (default 0.2).")
    parser.add_argument("--wasserstein", type=float, default=0.1,
                        help="Normalized Wasserstein threshold, in reference standard deviations (default 0.1).")
    parser.add_argument("--jensen-shannon", type=float, default=0.1,
                        help="Jensen-Shannon distance threshold, base 2 (default 0.1).")
    parser.add_argument("--exit-code", action="store_true", help="Exit 1 when drift is detected.")


def _load_reference(path: str) -> Any:
    """A Profile when the file is a profile JSON, else a Table read as CSV."""
    from pydantic import ValidationError

    from mlsteward_runtime.contracts import Profile
    from mlsteward_runtime.errors import UsageError
    from mlsteward_runtime.stats.table import read_csv

    p = Path(path)
    try:
        head = p.read_bytes()[:4096].lstrip()
    except FileNotFoundError:
        raise UsageError(f"{path}: file not found") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if head.startswith(b"{"):
        try:
            return Profile.model_validate_json(p.read_bytes())
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise UsageError(f"{path}: not a profile written by `mlsteward profile` ({where}: {err['msg']})") from None
    return read_csv(path)


def run(args: argparse.Namespace) -> int:
    from mlsteward_runtime.commands.profile import split_names
    from mlsteward_runtime.contracts import Profile
    from mlsteward_runtime.errors import UsageError
    from mlsteward_runtime.stats.drift import DriftThresholds, drift_report
    from mlsteward_runtime.stats.table import read_csv

    try:
        thresholds = DriftThresholds(alpha=args.alpha, correction=args.correction, min_samples=args.min_samples,
                                     psi=args.psi, wasserstein=args.wasserstein, jensen_shannon=args.jensen_shannon)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    ref = _load_reference(args.reference)
    cur = read_csv(args.current)
    categorical = split_names(args.categorical)
    if isinstance(ref, Profile):
        ref_names = list(ref.features)
        reference: Any = ref
        types = None
    else:
        ref_names = list(ref.header)
        reference = ref.columns
        types = ref.infer_types(categorical=categorical)
    features = split_names(args.features) or [n for n in ref_names if n in cur.columns and n != args.target]
    for n in features:
        if n not in ref_names:
            raise UsageError(f"{args.reference}: no feature {n!r} (features: {', '.join(ref_names)})")
        if n not in cur.columns:
            raise UsageError(f"{args.current}: no column {n!r} (columns: {', '.join(cur.header)})")
    if not features:
        raise UsageError(f"{args.current}: shares no column with {args.reference} (reference: {', '.join(ref_names)})")
    report = drift_report(reference, {n: cur.columns[n] for n in features}, thresholds=thresholds,
                          features=features, types=types)
    if args.format == "json":
        print(json.dumps(finite(report.to_dict()), indent=2, allow_nan=False))
    else:
        print(_table(report))
    return 1 if (args.exit_code and report.drift_detected) else 0


def finite(obj: Any) -> Any:
    """Replace NaN and infinities with null, so the output is strict JSON."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def _table(report: Any) -> str:
    rows = [("FEATURE", "TYPE", "STATISTIC", "P", "P_ADJ", "EFFECT", "DRIFT", "REASON")]
    for name, f in report.features.items():
        t = f.tests
        if f.kind == "numeric":
            stat = f"ks={_fmt(t['ks']['statistic'])}"
            effect = f"psi={_fmt(t['psi']['value'])} w/std={_fmt(t['wasserstein']['normalized'])}"
        else:
            stat = f"chi2={_fmt(t['chi2']['statistic'])}"
            effect = f"psi={_fmt(t['psi']['value'])} js={_fmt(t['jensen_shannon']['value'])}"
        rows.append((name, f.kind, stat, _fmt(f.p_value), _fmt(f.p_adjusted), effect, "yes" if f.drift else "no",
                     f.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    verdict = "drift detected in " + ", ".join(report.drifted_features) if report.drift_detected else "no drift"
    lines.append(f"reference rows {report.n_reference}, current rows {report.n_current}: {verdict}")
    return "\n".join(lines)
