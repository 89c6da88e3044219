"""Trains two versions of a breast-cancer classifier on scikit-learn's bundled dataset and writes what the demo
and the end-to-end tests register: the skops artifacts, the training and validation CSVs, and a shifted CSV
that a DriftMonitor should flag.

    python examples/train.py --out DIR

Version 1.0.0 is a scaled LogisticRegression; 1.1.0 a RandomForest. Both use the dataset's 30 named features,
so a client may send positional rows or named objects. Training is seeded, but a skops archive records the time it
was written, so the script keeps an artifact that already exists: a re-run leaves every sha256 unchanged and
re-applying the ModelVersions is a no-op. Pass --force to retrain.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlsteward_runtime.models import dump_model, sha256_file

SEED = 7


def _safe(name: str) -> str:
    return name.replace(" ", "_")


def write_csv(path: Path, names: list[str], X: np.ndarray, y: np.ndarray | None, target: str = "target") -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names + ([target] if y is not None else []))
        for i, row in enumerate(X):
            w.writerow([repr(float(v)) for v in row] + ([int(y[i])] if y is not None else []))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="Directory for artifacts and CSVs.")
    ap.add_argument("--force", action="store_true", help="Retrain and overwrite existing artifacts.")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    data = load_breast_cancer()
    names = [_safe(n) for n in data.feature_names]
    X_train, X_val, y_train, y_val = train_test_split(
        data.data, data.target, test_size=0.3, random_state=SEED, stratify=data.target
    )
    write_csv(out / "train.csv", names, X_train, y_train)
    write_csv(out / "validation.csv", names, X_val, y_val)
    # A shifted sample of live inputs: the size features grow by about 40%, as if a new scanner measured them.
    rng = np.random.default_rng(SEED)
    shifted = X_val[rng.integers(0, len(X_val), size=400)].copy()
    for j, n in enumerate(names):
        if "radius" in n or "area" in n or "perimeter" in n:
            shifted[:, j] *= 1.4
    write_csv(out / "shifted.csv", names, shifted, None)

    models = {
        "1.0.0": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=SEED)),
        "1.1.0": RandomForestClassifier(n_estimators=50, max_depth=6, random_state=SEED),
    }
    summary = {}
    for version, est in models.items():
        # Fitted on plain arrays (no pandas in the image); feature names come from the CSV header at registration.
        est.fit(X_train, y_train)
        path = out / f"breast-cancer-{version}.skops"
        digest = sha256_file(path) if path.exists() and not args.force else dump_model(est, path)
        accuracy = float((est.predict(X_val) == y_val).mean())
        summary[version] = {"artifact": path.name, "sha256": digest, "accuracy": round(accuracy, 4)}
    (out / "models.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
