"""`mlsteward profile`: compute the reference profile that drift monitoring compares live inputs against."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "Compute a reference profile (types, quantile bins, category counts, a bounded sample) of a CSV."
DESCRIPTION = """\
Compute the reference profile of a training or validation CSV (a header row, one column per feature).

Each numeric column gets count, missing, mean, std, min, max, decile bin edges with the reference share of each
bin (for PSI) and a uniform sample of at most --sample-size values (for KS and Wasserstein). Each categorical or
boolean column gets its category counts. Types are inferred from the data (all numbers -> numeric, all
true/false -> boolean, anything else -> categorical); --categorical forces numeric-looking codes to categorical.
The --target column is left out: the profile describes the model's inputs.

examples:
  mlsteward profile train.csv --out profile.json --target label
  mlsteward profile train.csv --out profile.json --categorical zip,segment --sample-size 10000
  mlsteward drift profile.json live.csv          # use it as the drift reference
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("data", metavar="DATA.csv", help="CSV with a header row.")
    parser.add_argument("--out", required=True, metavar="PROFILE.json", help="Where to write the profile (JSON).")
    parser.add_argument("--target", metavar="COL", help="Label column to leave out of the profile.")
    parser.add_argument("--categorical", metavar="COLS", default="",
                        help="Comma-separated columns to treat as categorical.")
    parser.add_argument("--sample-size", type=int, default=5000, metavar="N",
                        help="Largest sample kept per numeric feature (default 5000).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the sample (default 0).")


def split_names(value: str | None) -> list[str]:
    return [c.strip() for c in (value or "").split(",") if c.strip()]


def run(args: argparse.Namespace) -> int:
    from mlsteward_runtime.errors import UsageError
    from mlsteward_runtime.stats.profile import build_profile
    from mlsteward_runtime.stats.table import read_csv

    if args.sample_size < 1:
        raise UsageError(f"--sample-size must be at least 1, got {args.sample_size}")
    table = read_csv(args.data)
    categorical = split_names(args.categorical)
    types = table.infer_types(categorical=categorical)
    if args.target is not None:
        table.column(args.target)  # names the file and its columns when the target is missing
    names = [n for n in table.header if n != args.target]
    if not names:
        raise UsageError(f"{args.data}: no feature columns besides the target {args.target!r}")
    profile = build_profile({n: table.columns[n] for n in names}, types={n: types[n] for n in names},
                            sample_size=args.sample_size, seed=args.seed)
    write_json(args.out, profile.model_dump(mode="json", exclude_none=True))
    print(f"Wrote profile of {profile.rows} rows and {len(profile.features)} features to {args.out}.",
          file=sys.stderr)
    return 0


def write_json(path: str, data: object) -> None:
    from mlsteward_runtime.errors import UsageError

    try:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from None
