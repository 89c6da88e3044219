"""Drift computation: the DriftMonitor check next to Evidently's DataDriftPreset, on the same data.

Data: 20 features (16 numeric, 4 categorical), a 50,000-row reference and current windows of 10k, 100k and 1M rows,
each drawn once with no shift and once with four material shifts and two immaterial ones (`make_data`). All of it
is written as .npy files in a temporary directory that both sides read, so they see identical values.

- mlsteward: the reference profile is built as `mlsteward register --data` builds it (`build_profile` with the
  signature's types), and the check is the operator's `analyse(dm, reference, windows, now)`: one replica's window
  (a `DriftWindow` holding all the rows, as `GET /v1/drift/window` returns it), pooled, tested against the profile,
  decided. It runs twice: with `window.maxSamples` equal to the window, so every row is tested as in Evidently,
  and with the spec's default `maxSamples` (5,000), which is what a DriftMonitor does out of the box.
- Evidently: `Report([DataDriftPreset()])` over the raw reference and current DataFrames (numerical and categorical
  columns declared), in its own venv (~/.cache/mlsteward/bench/evidently-venv, created once, versions pinned below);
  timed from the DataFrames to the snapshot's dict, which is where the verdicts can be read.

Each measurement runs in its own child process, which loads the data in the form its side holds it (lists in a
DriftWindow; pandas DataFrames), runs one untimed warm-up on a 2,000-row slice, then the timed repeats. Time is
wall time, median of the repeats. Memory is the peak resident set size of the child during the repeats (Linux's
VmHWM, reset through /proc/self/clear_refs just before them) and what the check added on top of the RSS it
started from (which includes the interpreter, the libraries and the loaded data). Both sides are measured the same
way. The profile is built once per model version, not per check, so its cost is reported on its own.

Reproduce:  python bench/drift.py [--quick] [--sizes 10000 100000 1000000] [--repeats N] [--no-evidently]
                                  [--out bench/results/drift.md]
"""

from __future__ import annotations

# Only the standard library at the top: the Evidently child imports this file in a venv without our packages.
import argparse
import gc
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

EVIDENTLY_VERSION = "0.7.23"
# Evidently 0.7's legacy modules import `pandas.core.dtypes.common.infer_dtype_from_object`, which pandas 3 removed,
# so the import fails with pandas 3; 2.3.3 is the last pandas 2 release.
EVIDENTLY_PINS = [f"evidently=={EVIDENTLY_VERSION}", "pandas==2.3.3"]
EVIDENTLY_VENV = Path.home() / ".cache" / "mlsteward" / "bench" / "evidently-venv"

SEED = 0
REFERENCE_ROWS = 50_000
SIZES = (10_000, 100_000, 1_000_000)
SCENARIOS = ("no-shift", "shifted")
WARMUP_ROWS = 2_000

# 16 numeric features: (name, kind, parameters). Integer features have ties, which exercise uneven PSI bins.
NUMERIC = (
    [(f"x{i:02d}", "normal", (float(i), 1.0 + 0.25 * i)) for i in range(6)]
    + [(f"x{i:02d}", "lognormal", (0.0, 0.5)) for i in range(6, 10)]
    + [(f"x{i:02d}", "uniform", (0.0, 10.0)) for i in range(10, 12)]
    + [(f"x{i:02d}", "poisson", (float(i - 10),)) for i in range(12, 16)]
)
# 4 categorical features with 3, 5, 8 and 12 categories, Zipf-like shares.
CATEGORIES = {"c0": 3, "c1": 5, "c2": 8, "c3": 12}
# The shifted windows. Material: x00 mean +0.5 sd, x06 log-sd 0.5 -> 0.7, x12 Poisson 2 -> 3, c0 shares moved.
# Immaterial (below every effect threshold of both tools, though a large window makes them significant): x03 mean
# +0.03 sd, c2 one category's share +0.01.
MATERIAL = ("x00", "x06", "x12", "c0")
IMMATERIAL = ("x03", "c2")


def _zipf(k: int) -> list[float]:
    w = [1.0 / (i + 1) for i in range(k)]
    return [x / sum(w) for x in w]


def _shares(name: str, shifted: bool) -> list[float]:
    p = _zipf(CATEGORIES[name])
    if shifted and name == "c0":
        p = [0.30, 0.30, 0.40]
    if shifted and name == "c2":
        p = [p[0] - 0.01] + p[1:-1] + [p[-1] + 0.01]
    return p


def make_data(rows: int, seed: int, shifted: bool) -> tuple[Any, Any]:
    """(numeric float64 [rows, 16], categorical str [rows, 4]) drawn from the reference law, or the shifted one."""
    import numpy as np

    rng = np.random.default_rng(seed)
    num = np.empty((rows, len(NUMERIC)))
    for j, (name, kind, params) in enumerate(NUMERIC):
        if kind == "normal":
            mu, sd = params
            if shifted and name == "x00":
                mu += 0.5 * sd
            if shifted and name == "x03":
                mu += 0.03 * sd
            num[:, j] = rng.normal(mu, sd, rows)
        elif kind == "lognormal":
            mu, sd = params
            num[:, j] = rng.lognormal(mu, 0.7 if shifted and name == "x06" else sd, rows)
        elif kind == "uniform":
            num[:, j] = rng.uniform(*params, rows)
        else:
            (lam,) = params
            num[:, j] = rng.poisson(lam + 1.0 if shifted and name == "x12" else lam, rows)
    cat = np.empty((rows, len(CATEGORIES)), dtype="<U3")
    for j, name in enumerate(CATEGORIES):
        labels = np.array([f"k{i}" for i in range(CATEGORIES[name])])
        cat[:, j] = rng.choice(labels, size=rows, p=_shares(name, shifted))
    return num, cat


def write_data(tmp: Path, sizes: list[int]) -> None:
    import numpy as np

    num, cat = make_data(REFERENCE_ROWS, SEED, False)
    np.save(tmp / "reference-num.npy", num)
    np.save(tmp / "reference-cat.npy", cat)
    for n in sizes:
        for k, scenario in enumerate(SCENARIOS):
            num, cat = make_data(n, SEED + 1 + 2 * n + k, scenario == "shifted")
            np.save(tmp / f"{n}-{scenario}-num.npy", num)
            np.save(tmp / f"{n}-{scenario}-cat.npy", cat)


def _load(tmp: Path, stem: str, rows: int | None = None) -> tuple[Any, Any]:
    import numpy as np

    num, cat = np.load(tmp / f"{stem}-num.npy"), np.load(tmp / f"{stem}-cat.npy")
    return (num, cat) if rows is None else (num[:rows], cat[:rows])


# ------------------------------------------------------------------------------------------------- measurement


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakRss:
    """Peak RSS over a block: VmHWM after resetting it (Linux >= 4.0), or ru_maxrss when the reset is refused."""

    def __enter__(self) -> PeakRss:
        gc.collect()
        self.start_kb = _status_kb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM"
        except OSError:
            self.method = "ru_maxrss"
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_kb = (_status_kb("VmHWM") if self.method == "VmHWM"
                        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _timed(fn: Any, repeats: int) -> tuple[list[float], Any, PeakRss]:
    times: list[float] = []
    out = None
    with PeakRss() as mem:
        for _ in range(repeats):
            out = None
            gc.collect()
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    return times, out, mem


def _result(times: list[float], mem: PeakRss, **extra: Any) -> dict[str, Any]:
    return {"times_s": times, "median_s": statistics.median(times), "peak_rss_mb": mem.peak_kb / 1024,
            "added_rss_mb": max(0, mem.peak_kb - mem.start_kb) / 1024, "rss_method": mem.method, **extra}


# ------------------------------------------------------------------------------------------ mlsteward (child)


def _types() -> dict[str, Any]:
    from mlsteward_runtime.contracts import FeatureType

    t = {name: FeatureType.integer if kind == "poisson" else FeatureType.number for name, kind, _ in NUMERIC}
    t.update({name: FeatureType.categorical for name in CATEGORIES})
    return t


def _columns(num: Any, cat: Any) -> dict[str, list[Any]]:
    """Columns as Python values, the form a parsed CSV or JSON request gives the product."""
    cols: dict[str, list[Any]] = {}
    for j, (name, kind, _) in enumerate(NUMERIC):
        cols[name] = num[:, j].astype(int).tolist() if kind == "poisson" else num[:, j].tolist()
    for j, name in enumerate(CATEGORIES):
        cols[name] = cat[:, j].tolist()
    return cols


def run_profile(tmp: Path, repeats: int) -> dict[str, Any]:
    from mlsteward_runtime.stats.profile import build_profile

    cols = _columns(*_load(tmp, "reference"))
    types = _types()
    build_profile(dict(list(cols.items())[:2]), types=types)  # warm-up: imports and first calls
    times, _, mem = _timed(lambda: build_profile(cols, types=types), repeats)
    return _result(times, mem)


def run_ours(tmp: Path, rows: int, scenario: str, repeats: int) -> dict[str, Any]:
    import datetime as dt

    from mlsteward_operator.api.common import ObjectMeta
    from mlsteward_operator.api.driftmonitor import DriftMonitor, DriftMonitorSpec, Window
    from mlsteward_operator.driftmonitor.analysis import analyse
    from mlsteward_runtime.contracts import DriftWindow, FeatureWindow
    from mlsteward_runtime.stats.profile import build_profile

    types = _types()
    reference = build_profile(_columns(*_load(tmp, "reference")), types=types)

    def window(n: int) -> DriftWindow:
        cols = _columns(*_load(tmp, f"{rows}-{scenario}", n))
        return DriftWindow(name="bench", version="bench-v1", replica="bench-0", seen=n,
                           features={k: FeatureWindow(type=types[k], values=v) for k, v in cols.items()})

    def monitor(max_samples: int) -> DriftMonitor:
        return DriftMonitor(metadata=ObjectMeta(name="bench", namespace="bench", uid="bench-uid"),
                            spec=DriftMonitorSpec(deployment="bench",
                                                  window=Window(min_samples=200, max_samples=max_samples)))

    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    analyse(monitor(WARMUP_ROWS), reference, [window(WARMUP_ROWS)], now)
    windows = [window(rows)]
    out: dict[str, Any] = {}
    for key, dm in (("full", monitor(rows)), ("default", monitor(Window().max_samples))):
        times, verdict, mem = _timed(lambda: analyse(dm, reference, windows, now), repeats)
        assert verdict.report is not None, verdict.message
        out[key] = _result(times, mem, tested_rows=verdict.window_size, max_samples=dm.spec.window.max_samples,
                           flagged=sorted(verdict.drifted_features))
    return out


# ------------------------------------------------------------------------------------------- Evidently (child)


def run_evidently(tmp: Path, rows: int, scenario: str, repeats: int) -> dict[str, Any]:
    import evidently
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    def frame(num: Any, cat: Any) -> pd.DataFrame:
        cols: dict[str, Any] = {}
        for j, (name, kind, _) in enumerate(NUMERIC):
            cols[name] = num[:, j].astype("int64") if kind == "poisson" else num[:, j]
        for j, name in enumerate(CATEGORIES):
            cols[name] = cat[:, j].astype(object)
        return pd.DataFrame(cols)

    definition = DataDefinition(numerical_columns=[n for n, _, _ in NUMERIC], categorical_columns=list(CATEGORIES))

    def report(cur: pd.DataFrame, ref: pd.DataFrame) -> dict[str, Any]:
        snapshot = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=definition),
                                                   Dataset.from_pandas(ref, data_definition=definition))
        return snapshot.dict()

    ref = frame(*_load(tmp, "reference"))
    report(frame(*_load(tmp, f"{rows}-{scenario}", WARMUP_ROWS)), ref)
    cur = frame(*_load(tmp, f"{rows}-{scenario}"))
    times, snap, mem = _timed(lambda: report(cur, ref), repeats)

    flagged, methods, share, drift_share = [], set(), None, None
    for m in snap["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith(":DriftedColumnsCount"):
            share, drift_share = m["value"]["share"], cfg["drift_share"]
        elif cfg["type"].endswith(":ValueDrift"):
            methods.add(f"{cfg['method']} >= {cfg['threshold']:g}" if "p_value" not in cfg["method"]
                        else f"{cfg['method']} < {cfg['threshold']:g}")
            value, threshold = m["value"], cfg["threshold"]
            if (value < threshold) if "p_value" in cfg["method"] else (value >= threshold):
                flagged.append(cfg["column"])
    assert share is not None and abs(share - len(flagged) / (len(NUMERIC) + len(CATEGORIES))) < 1e-9, \
        "per-column verdicts disagree with DriftedColumnsCount"
    return _result(times, mem, flagged=sorted(flagged), share=share, dataset_drift=share >= drift_share,
                   drift_share=drift_share, methods=sorted(methods), version=evidently.__version__,
                   pandas=pd.__version__)


# ----------------------------------------------------------------------------------------------- orchestration


def ensure_evidently() -> tuple[Path | None, str]:
    """The Python of Evidently's venv (created once, reused while the pins match), or None and why not."""
    import shutil

    py = EVIDENTLY_VENV / "bin" / "python"
    stamp = EVIDENTLY_VENV / "mlsteward-bench-pins.txt"
    if py.exists() and stamp.exists() and stamp.read_text().split() == EVIDENTLY_PINS:
        return py, "reused " + " ".join(EVIDENTLY_PINS)
    shutil.rmtree(EVIDENTLY_VENV, ignore_errors=True)
    EVIDENTLY_VENV.parent.mkdir(parents=True, exist_ok=True)
    print(f"installing {' '.join(EVIDENTLY_PINS)} into ~/{EVIDENTLY_VENV.relative_to(Path.home())} ...",
          file=sys.stderr, flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [[base, "-m", "venv", str(EVIDENTLY_VENV)],
             [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *EVIDENTLY_PINS],
             [str(py), "-c", "import evidently.presets"]]
    for step in steps:
        r = subprocess.run(step, capture_output=True, text=True)
        if r.returncode != 0:
            why = (r.stderr or r.stdout).strip().splitlines()[-3:]
            return None, f"`{shlex.join(step[1:])}` failed: " + " | ".join(why)
    stamp.write_text("\n".join(EVIDENTLY_PINS) + "\n")
    return py, "installed " + " ".join(EVIDENTLY_PINS)


def _child(python: str, mode: str, tmp: Path, rows: int, scenario: str, repeats: int, pythonpath: bool) -> Any:
    env = dict(os.environ)
    if pythonpath:
        # This checkout's code, ahead of whatever copy the venv has installed.
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "runtime"), str(ROOT / "operator"),
                                             *filter(None, [env.get("PYTHONPATH")])])
    else:
        env.pop("PYTHONPATH", None)
    cmd = [python, str(Path(__file__).resolve()), f"--_{mode}", str(tmp), "--_rows", str(rows), "--_scenario",
           scenario, "--repeats", str(repeats)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{mode} {rows} {scenario} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _fmt_s(s: float) -> str:
    return f"{s * 1000:.0f} ms" if s < 1 else f"{s:.2f} s"


def _fmt_times(r: dict[str, Any]) -> str:
    """Median, and the fastest and slowest repeat: the machine is shared, the spread shows how much that moved."""
    lo, hi = min(r["times_s"]), max(r["times_s"])
    if len(r["times_s"]) < 2:
        return _fmt_s(r["median_s"])
    return f"{_fmt_s(r['median_s'])} ({_fmt_s(lo)}-{_fmt_s(hi)})"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.1f}x"


def _dataset(e: dict[str, Any] | None) -> str:
    return "n/a" if e is None else f"{'yes' if e['dataset_drift'] else 'no'} (share {e['share']:.2f})"


def _flags(names: list[str]) -> str:
    return f"{len(names)}: {', '.join(names)}" if names else "0"


def render(profile: dict[str, Any], results: dict[tuple[int, str], dict[str, Any]], notes: list[str],
           command: str) -> str:
    import numpy
    import scipy

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    ev = next((r["evidently"] for r in results.values() if r.get("evidently")), None)
    rss_how = ("VmHWM, reset just before them" if next(iter(results.values()))["ours"]["full"]["rss_method"] == "VmHWM"
               else "ru_maxrss: the kernel refused the reset, so this is the child's peak over its whole life")
    lines = [
        "# Drift computation benchmark",
        "",
        f"Machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}; "
        f"mlsteward side: NumPy {numpy.__version__}, SciPy {scipy.__version__}"
        + (f"; Evidently {ev['version']} with pandas {ev['pandas']} in its own venv." if ev else "."),
        f"Data: {len(NUMERIC)} numeric + {len(CATEGORIES)} categorical features, a {REFERENCE_ROWS:,}-row "
        "reference, windows drawn with no shift and with a shift of "
        f"{', '.join(MATERIAL)} (material) and {', '.join(IMMATERIAL)} (immaterial), the same .npy files for both "
        "sides. One process per cell, one at a time; wall time is the median of the repeats after a warm-up; "
        f"memory is the child's peak RSS during the repeats ({rss_how}) and, in brackets, what the check added "
        "over the RSS it started from.",
        "",
        f"Reproduce: `{command}`",
        "",
        "## Time and memory of one check",
        "",
        "mlsteward: the operator's `analyse` with `window.maxSamples` = the window, so every row is tested. "
        "Evidently: `Report([DataDriftPreset()])` from the DataFrames to the snapshot dict. Time: median "
        "(fastest-slowest repeat). Ratios are Evidently / mlsteward, of the medians and of the peaks.",
        "",
        "| window | rows | repeats | mlsteward time | Evidently time | time ratio | mlsteward peak RSS (added) "
        "| Evidently peak RSS (added) | peak RSS ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (rows, scenario), r in results.items():
        o, e = r["ours"]["full"], r.get("evidently")
        lines.append(
            f"| {scenario} | {rows:,} | {len(o['times_s'])} | {_fmt_times(o)} | "
            f"{_fmt_times(e) if e else 'n/a'} | {_ratio(e and e['median_s'], o['median_s'])} | "
            f"{o['peak_rss_mb']:,.0f} MB ({o['added_rss_mb']:,.0f}) | "
            + (f"{e['peak_rss_mb']:,.0f} MB ({e['added_rss_mb']:,.0f}) | " if e else "n/a | ")
            + f"{_ratio(e and e['peak_rss_mb'], o['peak_rss_mb'])} |")
    lines += [
        "",
        "## Verdicts",
        "",
        "Features flagged as drifted (of 20). mlsteward flags a feature on an effect past its threshold *and* "
        "significance after Holm's correction (DriftMonitor defaults: PSI 0.2, Wasserstein 0.1 sd, KS 0.1, "
        "Jensen-Shannon 0.1, pValue 0.01); a window is in breach when any feature is flagged."
        + (f" Evidently flags a column by its per-column method ({', '.join(ev['methods'])}) and calls the "
           f"dataset drifted when at least {ev['drift_share']:g} of the columns are." if ev else ""),
        "",
        "| window | rows | mlsteward (all rows) | mlsteward (default maxSamples 5,000) | Evidently columns "
        "| Evidently dataset drift |",
        "|---|---:|---|---|---|---|",
    ]
    for (rows, scenario), r in results.items():
        o, d, e = r["ours"]["full"], r["ours"]["default"], r.get("evidently")
        lines.append(f"| {scenario} | {rows:,} | {_flags(o['flagged'])} | {_flags(d['flagged'])} | "
                     f"{_flags(e['flagged']) if e else 'n/a'} | "
                     f"{_dataset(e)} |")
    lines += [
        "",
        "## mlsteward at the default window.maxSamples",
        "",
        "Out of the box a DriftMonitor tests a uniform 5,000-row subsample of the pooled window; the pooling "
        "still reads every row.",
        "",
        "| window | rows | time | peak RSS (added) |",
        "|---|---:|---:|---:|",
    ]
    for (rows, scenario), r in results.items():
        d = r["ours"]["default"]
        lines.append(f"| {scenario} | {rows:,} | {_fmt_times(d)} | {d['peak_rss_mb']:,.0f} MB "
                     f"({d['added_rss_mb']:,.0f}) |")
    lines += [
        "",
        f"Reference profile (`build_profile` over the {REFERENCE_ROWS:,} reference rows, once per model version, "
        f"as `mlsteward register --data` does): {_fmt_s(profile['median_s'])}, peak RSS "
        f"{profile['peak_rss_mb']:,.0f} MB ({profile['added_rss_mb']:,.0f} added). Evidently has no such step: "
        "every report reads the raw reference again.",
        "",
    ]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 10k and 100k rows, 2 repeats")
    parser.add_argument("--sizes", type=int, nargs="+", help="window rows (default 10000 100000 1000000)")
    parser.add_argument("--repeats", type=int, help="timed repeats per cell (default 5, 3 from 1M rows)")
    parser.add_argument("--no-evidently", action="store_true", help="measure mlsteward only")
    parser.add_argument("--out", help="write the Markdown report here (default bench/results/drift.md, "
                        "not written by --quick unless given)")
    parser.add_argument("--_profile", help=argparse.SUPPRESS)
    parser.add_argument("--_ours", help=argparse.SUPPRESS)
    parser.add_argument("--_evidently", help=argparse.SUPPRESS)
    parser.add_argument("--_rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--_scenario", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._profile:
        print(json.dumps(run_profile(Path(args._profile), args.repeats)))
        return 0
    if args._ours:
        print(json.dumps(run_ours(Path(args._ours), args._rows, args._scenario, args.repeats)))
        return 0
    if args._evidently:
        print(json.dumps(run_evidently(Path(args._evidently), args._rows, args._scenario, args.repeats)))
        return 0

    sizes = args.sizes or ([10_000, 100_000] if args.quick else list(SIZES))
    out = args.out if args.out is not None else (None if args.quick else str(HERE / "results" / "drift.md"))
    command = "python bench/drift.py" + ("" if len(sys.argv) == 1 else " " + shlex.join(sys.argv[1:]))
    notes: list[str] = []

    def repeats(rows: int) -> int:
        return args.repeats or (2 if args.quick else 3 if rows >= 1_000_000 else 5)

    ev_python: Path | None = None
    if args.no_evidently:
        notes.append("Evidently not measured (--no-evidently).")
    else:
        ev_python, how = ensure_evidently()
        if ev_python is None:
            notes.append(f"Evidently not measured: {how}")
        else:
            notes.append(f"Evidently: {how} (own venv under ~/.cache/mlsteward/bench); `DataDriftPreset()` with "
                         "its defaults, the columns declared numerical or categorical in a `DataDefinition`.")
    notes.append("mlsteward: the window reaches `analyse` as one replica's `DriftWindow` (values as Python lists, "
                 "as parsed from `GET /v1/drift/window`); its peak RSS includes those lists, Evidently's includes "
                 "its DataFrames. The reference profile keeps a 5,000-value sample per numeric feature (KS and "
                 "Wasserstein are computed against it) and exact bins and category counts; Evidently reads all "
                 f"{REFERENCE_ROWS:,} reference rows.")

    started = time.monotonic()
    results: dict[tuple[int, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="mlsteward-bench-drift-") as tmpdir:
        tmp = Path(tmpdir)
        print(f"writing data for windows of {', '.join(f'{n:,}' for n in sizes)} rows ...", file=sys.stderr,
              flush=True)
        write_data(tmp, sizes)
        profile = _child(sys.executable, "profile", tmp, REFERENCE_ROWS, "reference", 5, True)
        for rows in sizes:
            for scenario in SCENARIOS:
                cell: dict[str, Any] = {}
                print(f"{rows:>9,} {scenario:<8} mlsteward ...", file=sys.stderr, flush=True)
                cell["ours"] = _child(sys.executable, "ours", tmp, rows, scenario, repeats(rows), True)
                if ev_python is not None:
                    print(f"{rows:>9,} {scenario:<8} Evidently ...", file=sys.stderr, flush=True)
                    cell["evidently"] = _child(str(ev_python), "evidently", tmp, rows, scenario, repeats(rows), False)
                results[(rows, scenario)] = cell

    for (rows, scenario), r in results.items():
        if scenario == "no-shift" and r["ours"]["full"]["flagged"]:
            notes.append(f"WARNING: mlsteward flagged {', '.join(r['ours']['full']['flagged'])} in the no-shift "
                         f"window of {rows:,} rows.")
        if scenario == "shifted" and r["ours"]["full"]["flagged"] != sorted(MATERIAL):
            notes.append(f"WARNING: mlsteward flagged {r['ours']['full']['flagged']} in the shifted window of "
                         f"{rows:,} rows; the material shifts are {', '.join(MATERIAL)}.")
    if any(n <= 10_000 for n in sizes):
        notes.append("Windows of at most 10,000 rows: SciPy's `ks_2samp` (method 'auto') uses the exact "
                     "distribution when both samples have at most 10,000 values (here the 5,000-value reference "
                     "sample and the window), which is slow when the statistic is large; that is why a shifted "
                     "10,000-row window takes longer than an unshifted one.")
    notes.append(f"Whole run: {time.monotonic() - started:.0f} s.")
    report = render(profile, results, notes, command)
    print(report)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(report)
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
