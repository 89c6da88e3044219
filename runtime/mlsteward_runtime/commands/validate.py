"""`mlsteward validate`: the ModelVersion validation Job. Its verdict is a ValidationResult in the termination log."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from mlsteward_runtime.commands.termination import shorten_message

HELP = "Validate a model artifact (digest, load, signature, metrics vs thresholds) for a ModelVersion."
DESCRIPTION = """\
Validate a model artifact the way the ModelVersion controller's Job does, in order:
  1. fetch --uri (a path, file://, http(s)://, s3://)               -> FetchFailed
  2. check its sha256 against --sha256 before deserializing anything  -> DigestMismatch
  3. load it as --format (default: from the extension)              -> LoadFailed (UnverifiedRefused without a
                                                                        digest for joblib/pickle; UntrustedTypes
                                                                        for a skops file naming types outside the
                                                                        reviewed list; SklearnVersionSkew for a
                                                                        model saved by another sklearn major.minor
                                                                        unless --allow-version-skew)
  4. check --signature-json against the model (or infer one)         -> SignatureMismatch
  5. with --validation-data and --target: evaluate (accuracy, f1_macro, roc_auc for binary classifiers; r2, rmse,
     mae for regressors) and compare to each --threshold             -> BelowThreshold (InvalidValidationData when
                                                                        the data lack a column or a label)
  6. with --reference-out: write the reference profile of the validation data there (path, file:// or s3://)
  7. record a golden input (from the signature) and the model's output for readiness probes -> Validated

The result is one ValidationResult JSON (phase Ready|Failed, reason, message, sha256, metrics, signature, golden,
reference), kept under 4 KiB, written to --result-file (default /dev/termination-log when it exists, else stdout)
and echoed to stdout. Exit status: 0 when Ready, 1 when Failed, 2 on bad flags.

examples:
  mlsteward validate --uri s3://models/churn/1.1.0/model.skops --sha256 3f5a... --format skops \\
      --validation-data s3://data/churn/holdout.csv --target churned --threshold "accuracy>=0.8" \\
      --threshold "roc_auc >= 0.85" --reference-out s3://models/churn/1.1.0/profile.json
  mlsteward validate --uri model.skops --sha256 $(sha256sum model.skops | cut -c1-64) --result-file result.json
"""

TERMINATION_LOG = "/dev/termination-log"
MAX_RESULT_BYTES = 4096


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--uri", required=True, help="Artifact URI.")
    parser.add_argument("--sha256", help="Expected hex sha256 of the artifact (required for joblib and pickle).")
    parser.add_argument("--format", choices=("skops", "onnx", "joblib", "pickle"),
                        help="Artifact format (default: from the --uri extension: .skops, .onnx, .joblib, "
                             ".pkl or .pickle).")
    parser.add_argument("--signature-json", metavar="JSON",
                        help="The ModelVersion's spec.signature as JSON (or @FILE); inferred from the model if absent.")
    parser.add_argument("--validation-data", metavar="URI", help="Labelled CSV to evaluate on.")
    parser.add_argument("--target", metavar="COL", help="Label column of --validation-data.")
    parser.add_argument("--threshold", action="append", default=[], metavar="EXPR",
                        help='Metric threshold such as "accuracy>=0.7" (repeatable).')
    parser.add_argument("--reference-out", metavar="URI", help="Write the validation data's reference profile here.")
    parser.add_argument("--result-file", metavar="PATH",
                        help=f"Where to write the result (default {TERMINATION_LOG} when it exists, else stdout).")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="Load joblib/pickle without --sha256 (never in production).")
    parser.add_argument("--allow-version-skew", action="store_true",
                        help="Load a model saved by another scikit-learn major.minor (refused as "
                             "SklearnVersionSkew otherwise).")


class _Failed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _parse_signature(text: str | None) -> Any:
    from pydantic import ValidationError

    from mlsteward_runtime.contracts import Signature
    from mlsteward_runtime.errors import UsageError

    if not text:
        return None
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise UsageError(f"--signature-json {text}: cannot read ({exc.strerror or exc})") from None
    try:
        return Signature.model_validate_json(text)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise UsageError(f"--signature-json: {where}: {err['msg']}") from None


def _jsonable(values: Any) -> list[Any]:
    import numpy as np

    return np.asarray(values, dtype=object).tolist() if not hasattr(values, "tolist") else values.tolist()


def _checked_signature(model: Any, signature: Any) -> Any:
    """The given signature checked against the model, or the one inferred from it (_Failed SignatureMismatch)."""
    from mlsteward_runtime.signature import check_signature, infer_signature

    if signature is not None:
        problems = check_signature(signature, model)
        if problems:
            raise _Failed("SignatureMismatch", "; ".join(problems))
        return signature
    try:
        return infer_signature(model)
    except ValueError as exc:
        raise _Failed("SignatureMismatch", f"no signature given and none can be inferred: {exc}") from None


def _on_validation_data(args: argparse.Namespace, model: Any, signature: Any, inferred: bool,
                        result: dict[str, Any]) -> dict[str, float]:
    """The metrics on --validation-data (and the reference profile to --reference-out), recorded in `result`;
    an inferred signature takes the data's column names when the model knows none."""
    from mlsteward_runtime.contracts import ArtifactRef
    from mlsteward_runtime.errors import ModelLoadError, UsageError
    from mlsteward_runtime.signature import infer_signature
    from mlsteward_runtime.stats.evaluate import evaluate, feature_matrix, labelled_rows
    from mlsteward_runtime.stats.table import read_csv_uri

    try:
        table = read_csv_uri(args.validation_data)
        if inferred and model.feature_names is None:
            # A model fit on a plain array knows no names: its inputs are the data's columns in order.
            columns = [c for c in table.header if c != args.target]
            if len(columns) == len(signature.inputs):
                signature = infer_signature(model, feature_names=columns)
                result["signature"] = signature
        idx, y = labelled_rows(table, args.target, regression=not model.is_classifier)
        X = feature_matrix(table, signature, rows=idx)
    except ModelLoadError as exc:
        raise _Failed("FetchFailed", f"validation data: {exc.message}") from None
    except (UsageError, KeyError) as exc:
        raise _Failed("InvalidValidationData", str(exc).strip("'\"")) from None
    if len(y) == 0:
        raise _Failed("InvalidValidationData", f"{args.validation_data}: no labelled rows")
    try:
        metrics = evaluate(model, X, y)
    except (ValueError, TypeError) as exc:
        raise _Failed("EvaluationFailed", f"the model could not predict on the validation data: {exc}") \
            from None
    result["metrics"] = metrics
    if args.reference_out:
        result["reference"] = ArtifactRef(uri=args.reference_out,
                                          sha256=_write_reference(args.reference_out, table, signature))
    return metrics


def _write_reference(uri: str, table: Any, signature: Any) -> str:
    """The reference profile of the validation data written to `uri`; its sha256."""
    import hashlib

    from mlsteward_runtime.stats.profile import build_profile
    from mlsteward_runtime.stats.table import write_uri

    profile = build_profile({s.name: table.columns[s.name] for s in signature.inputs},
                            types={s.name: s.type for s in signature.inputs})
    body = json.dumps(profile.model_dump(mode="json", exclude_none=True), separators=(",", ":")).encode()
    try:
        write_uri(uri, body)
    except Exception as exc:  # noqa: BLE001 - any storage error is the same verdict for the operator
        raise _Failed("ReferenceWriteFailed", f"could not write {uri}: {exc}") from None
    return hashlib.sha256(body).hexdigest()


def validate(args: argparse.Namespace, thresholds: list[Any], signature: Any) -> Any:
    """Run the steps of the module description; returns a ValidationResult (never raises _Failed)."""
    import numpy as np

    from mlsteward_runtime.contracts import ArtifactRef, Golden, ValidationResult
    from mlsteward_runtime.errors import ModelLoadError
    from mlsteward_runtime.models import load_model
    from mlsteward_runtime.signature import golden_rows
    from mlsteward_runtime.stats.evaluate import check_thresholds

    result: dict[str, Any] = {"sha256": args.sha256}
    try:
        try:
            model = load_model(ArtifactRef(uri=args.uri, sha256=args.sha256, format=args.format),
                               allow_unverified=args.allow_unverified, allow_version_skew=args.allow_version_skew)
        except ModelLoadError as exc:
            raise _Failed(exc.reason, exc.message) from None
        result["sha256"] = model.sha256
        inferred = signature is None
        signature = _checked_signature(model, signature)
        result["signature"] = signature

        metrics: dict[str, float] = {}
        if args.validation_data:
            metrics = _on_validation_data(args, model, signature, inferred, result)
            signature = result["signature"]
        failures = check_thresholds(metrics, thresholds)
        if failures:
            raise _Failed("BelowThreshold", "; ".join(failures))

        rows = golden_rows(signature, n=1)
        try:
            X = np.asarray(rows, dtype=float) if all(isinstance(v, (int, float)) for v in rows[0]) else \
                np.asarray(rows, dtype=object)
            outputs = _jsonable(model.predict(X))
        except Exception as exc:  # noqa: BLE001 - a model that cannot answer a valid row is not servable
            raise _Failed("GoldenFailed", f"the model failed on the golden input {rows}: {exc}") from None
        result["golden"] = Golden(inputs=rows, outputs=outputs)
        summary = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()) or "no validation data"
        return ValidationResult(phase="Ready", reason="Validated", message=f"Validated: {summary}.", **result)
    except _Failed as exc:
        return ValidationResult(phase="Failed", reason=exc.reason, message=exc.message, **result)


def encode_result(result: Any, limit: int = MAX_RESULT_BYTES) -> str:
    """Compact JSON under `limit` bytes: drop the signature (the ModelVersion has it), then shorten the message,
    then drop the golden record, in that order, only as far as needed."""
    def dump(r: Any) -> str:
        return r.model_dump_json(exclude_none=True, exclude_defaults=True)

    text = dump(result)
    if len(text.encode()) <= limit:
        return text
    result, text = shorten_message(result.model_copy(update={"signature": None}), dump, limit)
    if len(text.encode()) > limit:
        text = dump(result.model_copy(update={"golden": None}))
    return text


def run(args: argparse.Namespace) -> int:
    from mlsteward_runtime.artifacts import require_format
    from mlsteward_runtime.errors import UsageError
    from mlsteward_runtime.stats.evaluate import parse_threshold

    try:
        thresholds = [parse_threshold(t) for t in args.threshold]
    except ValueError as exc:
        raise UsageError(f"--threshold: {exc}") from None
    if bool(args.validation_data) != bool(args.target):
        raise UsageError("--validation-data and --target go together: give both or neither")
    if thresholds and not args.validation_data:
        raise UsageError("--threshold needs --validation-data and --target to compute metrics")
    if args.reference_out and not args.validation_data:
        raise UsageError("--reference-out needs --validation-data to profile")
    signature = _parse_signature(args.signature_json)
    args.format = require_format(args.uri, args.format)
    result = validate(args, thresholds, signature)
    text = encode_result(result)
    target = args.result_file or (TERMINATION_LOG if os.path.exists(TERMINATION_LOG) else None)
    if target:
        try:
            with open(target, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise UsageError(f"--result-file {target}: cannot write ({exc.strerror or exc})") from None
    sys.stdout.write(text + "\n")
    return 0 if result.phase == "Ready" else 1
