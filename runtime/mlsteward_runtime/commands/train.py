"""`mlsteward train`: the built-in trainer of retraining Jobs. Fit, evaluate on a holdout, write artifact and profile."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from mlsteward_runtime.commands.termination import shorten_message
from mlsteward_runtime.contracts import ArtifactRef, ProfileRef, Signature, TrainResult

HELP = "Fit an estimator on a CSV, evaluate it on a holdout, and write the artifact, its profile and a result."
DESCRIPTION = """\
Fit a scikit-learn estimator on a labelled CSV and publish it for a new ModelVersion, as a retraining Job does:
  1. read --data (a path, file://, http(s)://, s3://); the features are every column but --target, in order;
  2. build --estimator (an import path such as sklearn.ensemble.RandomForestClassifier) with --params (JSON);
  3. split off --test-size of the rows (stratified for classifiers, seeded by --seed), fit on the rest;
  4. write the artifact to --output (a path, file:// or s3://) in --format, reload it the way `mlsteward serve`
     does (digest checked, skops trusted types), and evaluate it on the holdout (accuracy, f1_macro, roc_auc or
     r2, rmse, mae);
  5. write the reference profile of the training data to --profile-out (default: beside --output,
     NAME.profile.json);
  6. print the result JSON (phase Succeeded|Failed, reason, artifact {uri, sha256, format}, reference {uri, sha256},
     metrics, signature, framework, rows) to stdout and to --result-file (default /dev/termination-log when it
     exists; kept under 4 KiB there by leaving out the signature if needed).
Exit status: 0 when Succeeded, 1 when Failed (FetchFailed, InvalidData, TrainingFailed, LoadFailed,
UntrustedTypes, WriteFailed), 2 on bad flags. UntrustedTypes: the estimator's skops file needs a type outside the
reviewed list (HistGradientBoosting*, KNeighbors* with a tree index, SelectKBest...), so serving would refuse it;
choose --format onnx, or joblib if whoever registers the model is trusted to run code. Categorical columns need an
estimator that accepts them (e.g. a Pipeline with a OneHotEncoder on column indices); plain numeric estimators get a
float matrix.

examples:
  mlsteward train --estimator sklearn.linear_model.LogisticRegression --params '{"max_iter": 500}' \\
      --data s3://data/churn/2024-06.csv --target churned --output s3://models/churn/1.2.0/model.skops
  mlsteward train --estimator sklearn.ensemble.RandomForestRegressor --params '{"n_estimators": 200}' \\
      --data train.csv --target price --output out/model.skops --test-size 0.2 --seed 7
"""

TERMINATION_LOG = "/dev/termination-log"
MAX_RESULT_BYTES = 4096


class _Failed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--estimator", required=True, metavar="IMPORT.PATH",
                        help="Estimator class, e.g. sklearn.linear_model.LogisticRegression.")
    parser.add_argument("--params", default="{}", metavar="JSON", help="Constructor parameters as a JSON object.")
    parser.add_argument("--data", required=True, metavar="URI", help="Labelled training CSV.")
    parser.add_argument("--target", required=True, metavar="COL", help="Label column.")
    parser.add_argument("--categorical", default="", metavar="COLS", help="Columns to treat as categorical.")
    parser.add_argument("--output", required=True, metavar="URI", help="Where to write the artifact.")
    parser.add_argument("--format", default="skops", choices=("skops", "joblib", "pickle", "onnx"),
                        help="Artifact format (default skops).")
    parser.add_argument("--profile-out", metavar="URI", help="Where to write the reference profile.")
    parser.add_argument("--test-size", type=float, default=0.25, help="Share of rows held out (default 0.25).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the split and of the estimator (default 0).")
    parser.add_argument("--result-file", metavar="PATH",
                        help=f"Where to write the result (default {TERMINATION_LOG} when it exists).")


def build_estimator(path: str, params: dict[str, Any], seed: int) -> Any:
    """Import and construct the estimator; UsageError naming the flag and the rule on failure."""
    import importlib

    from mlsteward_runtime.errors import UsageError

    module_name, _, cls_name = path.rpartition(".")
    if not module_name:
        raise UsageError(f"--estimator {path!r}: give a full import path, e.g. sklearn.linear_model.LogisticRegression")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--estimator {path!r}: cannot import ({exc})") from None
    if not isinstance(cls, type) or not hasattr(cls, "fit") or not hasattr(cls, "predict"):
        raise UsageError(f"--estimator {path!r}: not an estimator class with fit and predict")
    try:
        est = cls(**params)
    except TypeError as exc:
        raise UsageError(f"--params: {exc}") from None
    if "random_state" in est.get_params() and "random_state" not in params:
        est.set_params(random_state=seed)  # reproducible retraining unless the user chose otherwise
    return est


def _labels(raw: list[str], classifier: bool, source: str, target: str) -> Any:
    import numpy as np

    from mlsteward_runtime.stats.table import category_key, to_float_array

    if not classifier:
        return to_float_array(raw, what=f"{source}: target column {target!r}")
    keys = [category_key(v) for v in raw]
    try:
        return np.array([int(k) for k in keys])  # integer class labels stay integers in the served model
    except ValueError:
        return np.array(keys, dtype=object)


@dataclass
class _Data:
    """The training table read and checked: the feature matrix and the labels of the labelled rows."""

    table: Any
    features: list[str]
    types: dict[str, Any]
    X: Any
    y: Any
    classifier: bool


def _read_data(args: argparse.Namespace, est: Any) -> _Data:
    """--data read and checked (_Failed FetchFailed or InvalidData otherwise)."""
    import numpy as np
    from sklearn.base import is_classifier

    from mlsteward_runtime.commands.profile import split_names
    from mlsteward_runtime.contracts import FeatureType, InputSpec
    from mlsteward_runtime.errors import ModelLoadError, UsageError
    from mlsteward_runtime.stats.evaluate import feature_matrix
    from mlsteward_runtime.stats.table import is_missing, read_csv_uri

    try:
        table = read_csv_uri(args.data)
        labels = table.column(args.target)
        features = [c for c in table.header if c != args.target]
        if not features:
            raise UsageError(f"{args.data}: no feature columns besides the target {args.target!r}")
        types = table.infer_types(categorical=split_names(args.categorical))
        keep = np.array([not is_missing(v) for v in labels])
        if keep.sum() < 4:
            raise UsageError(f"{args.data}: {int(keep.sum())} labelled rows; need at least 4 to split and fit")
        draft = Signature(inputs=[InputSpec(name=f, type=types[f] if types[f] != FeatureType.integer
                                            else FeatureType.number) for f in features])
        X = feature_matrix(table, draft)[keep]
        classifier = is_classifier(est)
        y = _labels([v for v, k in zip(labels, keep) if k], classifier, args.data, args.target)
    except ModelLoadError as exc:
        raise _Failed("FetchFailed", exc.message) from None
    except (UsageError, KeyError) as exc:
        raise _Failed("InvalidData", str(exc).strip("'\"")) from None
    return _Data(table, features, types, X, y, classifier)


def _fit(args: argparse.Namespace, est: Any, data: _Data) -> tuple[Any, Any, Any, Any]:
    """(Xtr, Xte, ytr, yte) after fitting `est` on the training split (_Failed TrainingFailed otherwise)."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from mlsteward_runtime.contracts import FeatureType

    X, y = data.X, data.y
    stratify = None
    if data.classifier:
        _, counts = np.unique(y.astype(str), return_counts=True)
        stratify = y if counts.min() >= 2 else None
    try:
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=args.test_size, random_state=args.seed,
                                              stratify=stratify)
        est.fit(Xtr, ytr)
    except Exception as exc:  # noqa: BLE001 - whatever the estimator raises, the Job's verdict is the same
        cats = [f for f in data.features if data.types[f] in (FeatureType.categorical, FeatureType.boolean)]
        hint = (f" (categorical column(s) {', '.join(cats)} need an estimator that encodes them)"
                if cats and X.dtype == object else "")
        raise _Failed("TrainingFailed", f"{type(exc).__name__}: {exc}{hint}") from None
    return Xtr, Xte, ytr, yte


def _write_model(args: argparse.Namespace, est: Any) -> tuple[ArtifactRef, Any]:
    """The artifact written to --output after it reloaded the way serving loads it; (its ref, the loaded model)."""
    import tempfile

    from mlsteward_runtime.errors import ModelLoadError
    from mlsteward_runtime.models import dump_model, load_model
    from mlsteward_runtime.stats.table import write_uri

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "model." + args.format)
        try:
            sha = dump_model(est, local, args.format)
        except Exception as exc:  # noqa: BLE001 - e.g. an estimator skl2onnx cannot convert
            raise _Failed("WriteFailed", f"could not serialize as {args.format}: {exc}") from None
        ref = ArtifactRef(uri=args.output, sha256=sha, format=args.format)
        with open(local, "rb") as fh:
            blob = fh.read()
        try:
            loaded = load_model(ref, data=blob)
        except ModelLoadError as exc:
            raise _Failed(exc.reason, f"the written artifact does not load: {exc.message}") from None
    try:
        write_uri(args.output, blob)
    except Exception as exc:  # noqa: BLE001 - storage errors of any backend
        raise _Failed("WriteFailed", f"could not write {args.output}: {exc}") from None
    return ref, loaded


def _write_profile(args: argparse.Namespace, data: _Data, sig: Signature) -> ProfileRef:
    """The reference profile of the training data, written to --profile-out (or beside the artifact)."""
    import hashlib

    from mlsteward_runtime.stats.profile import build_profile
    from mlsteward_runtime.stats.table import sibling_uri, write_uri

    profile = build_profile({f: data.table.columns[f] for f in data.features},
                            types={s.name: s.type for s in sig.inputs}, seed=args.seed)
    body = json.dumps(profile.model_dump(mode="json", exclude_none=True), separators=(",", ":")).encode()
    profile_uri = args.profile_out or sibling_uri(args.output, ".profile.json")
    try:
        write_uri(profile_uri, body)
    except Exception as exc:  # noqa: BLE001
        raise _Failed("WriteFailed", f"could not write {profile_uri}: {exc}") from None
    return ProfileRef(uri=profile_uri, sha256=hashlib.sha256(body).hexdigest())


def train(args: argparse.Namespace, est: Any, params: dict[str, Any]) -> TrainResult:
    import numpy as np
    import sklearn

    from mlsteward_runtime.commands.register import signature_from_data
    from mlsteward_runtime.stats.evaluate import evaluate
    from mlsteward_runtime.stats.table import category_key

    base: dict[str, Any] = {"estimator": args.estimator, "params": params, "data": args.data, "target": args.target,
                            "framework": {"name": "sklearn", "version": sklearn.__version__}}
    try:
        data = _read_data(args, est)
        _, Xte, ytr, yte = _fit(args, est, data)
        base["rows"] = {"train": int(len(ytr)), "test": int(len(yte))}
        base["artifact"], loaded = _write_model(args, est)
        yte_keys = yte if not data.classifier else np.array([category_key(v) for v in yte.tolist()], dtype=object)
        base["metrics"] = evaluate(loaded, Xte, yte_keys)
        sig = signature_from_data(loaded, data.table, data.features, data.types)
        base["signature"] = sig
        base["reference"] = _write_profile(args, data, sig)
        summary = ", ".join(f"{k}={v:.4g}" for k, v in base["metrics"].items())
        return TrainResult(phase="Succeeded", reason="Trained",
                           message=f"Trained {args.estimator} on {len(ytr)} rows; holdout {summary}.", **base)
    except _Failed as exc:
        return TrainResult(phase="Failed", reason=exc.reason, message=exc.message, **base)


def encode_result(result: TrainResult, limit: int = MAX_RESULT_BYTES) -> str:
    """Compact JSON under `limit` bytes (a termination message holds 4 KiB), always whole JSON: drop the signature
    (the operator takes the parent version's), then the estimator's params, then shorten the message, only as far
    as needed. The artifact, reference and metrics, which the operator needs, are never dropped."""
    def dump(r: TrainResult) -> str:
        return r.model_dump_json(exclude_none=True)

    text = dump(result)
    for update in ({"signature": None}, {"params": {}}):
        if len(text.encode()) <= limit:
            return text
        result = result.model_copy(update=update)
        text = dump(result)
    return shorten_message(result, dump, limit)[1]


def run(args: argparse.Namespace) -> int:
    from mlsteward_runtime.errors import UsageError

    try:
        params = json.loads(args.params)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--params: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(params, dict):
        raise UsageError("--params: must be a JSON object of constructor parameters, e.g. '{\"max_iter\": 500}'")
    if not 0 < args.test_size < 1:
        raise UsageError(f"--test-size must be between 0 and 1, got {args.test_size}")
    est = build_estimator(args.estimator, params, args.seed)
    result = train(args, est, params)
    full = result.model_dump_json(exclude_none=True)
    target = args.result_file or (TERMINATION_LOG if os.path.exists(TERMINATION_LOG) else None)
    if target:
        try:
            with open(target, "w", encoding="utf-8") as fh:
                fh.write(encode_result(result))
        except OSError as exc:
            raise UsageError(f"--result-file {target}: cannot write ({exc.strerror or exc})") from None
    sys.stdout.write(full + "\n")
    return 0 if result.phase == "Succeeded" else 1
