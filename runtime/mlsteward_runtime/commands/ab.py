"""`mlsteward ab`: the offline A/B comparison of two CSVs of outcomes."""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "Compare a treatment against a control from two CSVs of outcomes (z-test or Welch's t-test)."
DESCRIPTION = """\
Compare the outcomes of a treatment against a control. Each CSV has a header and a column of outcomes
(--column, default `value`): 0/1 for --metric binary (conversion, accuracy), numbers for --metric continuous
(revenue, latency). Missing cells are skipped.

binary:     two-proportion z-test (pooled) and the Wald 95% CI of p_treatment - p_control.
continuous: Welch's t-test and its 95% CI of mean_treatment - mean_control.
Both: lift = (treatment - control) / |control|, and the Bayesian probability that the treatment is better
(Beta posteriors for binary outcomes, normal for continuous ones; --goal minimize when lower is better).

Output (--format json): {"test": "two_proportion_z"|"welch_t", "control": {"n", "mean"}, "treatment": {"n",
"mean"}, "lift", "p_value", "ci95": [lo, hi], "prob_treatment_better", "significant"} (p < --alpha).
Exit status: 0, or 2 on bad input.

examples:
  mlsteward ab control.csv treatment.csv --metric binary
  mlsteward ab a.csv b.csv --metric continuous --column revenue --format table
  mlsteward ab a.csv b.csv --metric continuous --column latency_ms --goal minimize
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("control", metavar="CONTROL.csv", help="Outcomes of the control arm.")
    parser.add_argument("treatment", metavar="TREATMENT.csv", help="Outcomes of the treatment arm.")
    parser.add_argument("--metric", choices=("binary", "continuous"), required=True, help="Kind of outcome.")
    parser.add_argument("--column", default="value", help="Column holding the outcomes (default value).")
    parser.add_argument("--format", choices=("json", "table"), default="json", help="Output format (default json).")
    parser.add_argument("--alpha", type=float, default=0.05, help="Significance level (default 0.05).")
    parser.add_argument("--goal", choices=("maximize", "minimize"), default="maximize",
                        help="Whether higher outcomes are better (default maximize); sets prob_treatment_better.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the Monte Carlo posterior draws (default 0).")


def _outcomes(path: str, column: str, metric: str) -> Any:
    import numpy as np

    from mlsteward_runtime.errors import UsageError
    from mlsteward_runtime.stats.ab import ArmStats
    from mlsteward_runtime.stats.table import read_csv

    table = read_csv(path)
    x = table.numeric(column)
    x = x[~np.isnan(x)]
    need = 1 if metric == "binary" else 2
    if x.size < need:
        raise UsageError(f"{path}: column {column!r} has {x.size} outcome(s); {metric} needs at least {need}")
    if metric == "binary":
        bad = np.flatnonzero((x != 0) & (x != 1))
        if bad.size:
            raise UsageError(f"{path}: column {column!r} must hold 0 or 1 for --metric binary, found {x[bad[0]]:g}")
    return ArmStats.from_values(x)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from mlsteward_runtime.commands.drift import finite
    from mlsteward_runtime.errors import UsageError
    from mlsteward_runtime.stats.comparison import compare

    if not 0 < args.alpha < 1:
        raise UsageError(f"--alpha must be between 0 and 1, got {args.alpha}")
    control = _outcomes(args.control, args.column, args.metric)
    treatment = _outcomes(args.treatment, args.column, args.metric)
    result = compare(control, treatment, args.metric, alpha=args.alpha, goal=args.goal,
                     rng=np.random.default_rng(args.seed))
    out = finite(result.to_dict())
    if args.format == "json":
        print(json.dumps(out, indent=2, allow_nan=False))
        return 0
    lo, hi = out["ci95"]
    lift = "-" if out["lift"] is None else f"{out['lift']:+.2%}"
    print(f"test                   {out['test']}")
    print(f"control                n={out['control']['n']}  mean={out['control']['mean']:.6g}")
    print(f"treatment              n={out['treatment']['n']}  mean={out['treatment']['mean']:.6g}")
    print(f"difference (95% CI)    {result.test.difference:+.6g}  [{lo:+.6g}, {hi:+.6g}]")
    print(f"lift                   {lift}")
    print(f"p-value                {out['p_value']:.4g}  ({'significant' if out['significant'] else 'not significant'}"
          f" at alpha {args.alpha:g})")
    print(f"P(treatment better)    {out['prob_treatment_better']:.3f}")
    return 0
