"""`mlsteward register`: digest an artifact, infer its signature, profile its training data, print ModelVersion YAML."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from mlsteward_runtime.artifacts import FORMAT_BY_EXTENSION, require_format

HELP = "Describe a model artifact as ModelVersion YAML (sha256, signature, reference profile, metrics)."
DESCRIPTION = """\
Describe a model artifact as a ModelVersion (apiVersion mlsteward.io/v1alpha1) ready for `kubectl apply`.

Computes the artifact's sha256, loads it (skops with its trusted-types check; joblib and pickle with the digest
just computed), and infers the signature from the model. With --data and --target it also:
  - names the inputs after the CSV columns (all columns but the target, in order), marks non-numeric columns as
    categorical with the categories seen as allowed values;
  - writes the reference profile used by drift monitoring to --profile-out (default: beside the artifact,
    NAME.profile.json) and records its sha256 under spec.reference;
  - evaluates the model on that data and records spec.metrics (accuracy, f1_macro, roc_auc or r2, rmse, mae).
Note that metrics on the training data are optimistic; give held-out data for honest numbers.

The YAML goes to stdout (or --out). --uri sets the artifact URI the cluster will fetch (default: the path given);
--reference-uri does the same for the profile.

examples:
  mlsteward register model.skops --model churn --version 1.0.0 > mv.yaml
  mlsteward register model.skops --model churn --version 1.1.0 --data train.csv --target churned \\
      --uri s3://models/churn/1.1.0/model.skops --reference-uri s3://models/churn/1.1.0/profile.json
  kubectl apply -f mv.yaml
"""

_SEMVER = re.compile(r"^v?\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("artifact", metavar="ARTIFACT", help="The model file (skops, onnx, joblib or pickle).")
    parser.add_argument("--model", required=True, metavar="NAME", help="Model name; versions group by it.")
    parser.add_argument("--version", required=True, metavar="V", help="Semantic version, e.g. 1.2.0.")
    parser.add_argument("--format", choices=sorted(set(FORMAT_BY_EXTENSION.values())),
                        help="Artifact format (default: from the file extension).")
    parser.add_argument("--data", metavar="TRAIN.csv", help="Training (or held-out) CSV with a header.")
    parser.add_argument("--target", metavar="COL", help="Label column of --data.")
    parser.add_argument("--categorical", default="", metavar="COLS",
                        help="Comma-separated --data columns to treat as categorical.")
    parser.add_argument("--uri", help="Artifact URI written into the ModelVersion (default: ARTIFACT).")
    parser.add_argument("--profile-out", metavar="PATH", help="Where to write the reference profile.")
    parser.add_argument("--reference-uri", metavar="URI", help="Profile URI written into the ModelVersion.")
    parser.add_argument("--name", help="metadata.name (default: MODEL-VERSION made DNS-safe).")
    parser.add_argument("--namespace", help="metadata.namespace (default: none, kubectl's current namespace).")
    parser.add_argument("--description", help="Free text for the model card (spec.description).")
    parser.add_argument("--out", metavar="FILE", help="Write the YAML here instead of stdout.")


def dns_name(text: str) -> str:
    """A DNS-1123 label: lower case, [a-z0-9-], starting and ending alphanumeric, at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return re.sub(r"-{2,}", "-", name)[:63].rstrip("-") or "model"


def signature_from_data(model: Any, table: Any, features: list[str], types: dict[str, Any]) -> Any:
    """The model's inferred signature, named after the data's columns and typed by them.

    Non-numeric columns become categorical with the values seen as `allowed`; true/false columns boolean.
    Numeric columns stay `number` without bounds: a live value outside the training range is drift, not an error.
    """
    from mlsteward_runtime.contracts import FeatureType
    from mlsteward_runtime.signature import infer_signature
    from mlsteward_runtime.stats.table import is_missing

    sig = infer_signature(model, feature_names=features)
    for spec in sig.inputs:
        t = types[spec.name]
        if t == FeatureType.categorical:
            spec.type = FeatureType.categorical
            spec.allowed = sorted({v.strip() for v in table.columns[spec.name] if not is_missing(v)})
        elif t == FeatureType.boolean:
            spec.type = FeatureType.boolean
        if any(is_missing(v) for v in table.columns[spec.name]):
            spec.required = False
    return sig


def _check_flags(args: argparse.Namespace) -> None:
    from mlsteward_runtime.errors import UsageError

    if not _SEMVER.match(args.version):
        raise UsageError(f"--version {args.version!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.2.0)")
    if bool(args.data) != bool(args.target):
        raise UsageError("--data and --target go together: give both or neither")
    if (args.profile_out or args.reference_uri) and not args.data:
        raise UsageError("--profile-out and --reference-uri need --data and --target to profile")


def _from_data(args: argparse.Namespace, model: Any, path: str) -> dict[str, Any]:
    """signature, reference and metrics of the spec from --data: the profile is written beside the artifact (or to
    --profile-out) and the metrics measured on the labelled rows."""
    from mlsteward_runtime.commands.profile import split_names, write_json
    from mlsteward_runtime.errors import UsageError
    from mlsteward_runtime.models import sha256_file
    from mlsteward_runtime.stats.evaluate import evaluate, feature_matrix, labelled_rows
    from mlsteward_runtime.stats.profile import build_profile
    from mlsteward_runtime.stats.table import read_csv, sibling_uri

    table = read_csv(args.data)
    table.column(args.target)
    features = [c for c in table.header if c != args.target]
    types = table.infer_types(categorical=split_names(args.categorical))
    try:
        sig = signature_from_data(model, table, features, types)
    except ValueError as exc:
        raise UsageError(f"{args.data}: {exc} (columns other than --target {args.target!r} are the features)") \
            from None
    profile = build_profile({n: table.columns[n] for n in features}, types={s.name: s.type for s in sig.inputs})
    profile_out = args.profile_out or sibling_uri(path, ".profile.json")
    write_json(profile_out, profile.model_dump(mode="json", exclude_none=True))
    idx, y = labelled_rows(table, args.target, regression=not model.is_classifier)
    try:
        metrics = evaluate(model, feature_matrix(table, sig, rows=idx), y)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{args.data}: the model could not predict on the data ({exc})") from None
    print(f"Wrote reference profile to {profile_out}.", file=sys.stderr)
    return {"signature": sig.model_dump(mode="json", exclude_none=True),
            "reference": {"uri": args.reference_uri or profile_out, "sha256": sha256_file(profile_out)},
            "metrics": {k: round(v, 6) for k, v in metrics.items()}}


def _manifest(args: argparse.Namespace, spec: dict[str, Any]) -> str:
    """The ModelVersion as YAML."""
    import yaml

    metadata: dict[str, Any] = {"name": args.name or dns_name(f"{args.model}-{args.version}"),
                                "labels": {"mlsteward.io/model": dns_name(args.model)}}
    if args.namespace:
        metadata["namespace"] = args.namespace
    doc = {"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelVersion", "metadata": metadata, "spec": spec}
    return yaml.safe_dump(doc, sort_keys=False)


def run(args: argparse.Namespace) -> int:
    import sklearn

    from mlsteward_runtime.contracts import ArtifactRef
    from mlsteward_runtime.errors import ModelLoadError, UsageError
    from mlsteward_runtime.models import load_model, sha256_file
    from mlsteward_runtime.signature import infer_signature

    _check_flags(args)
    path = args.artifact
    if not Path(path).is_file():
        raise UsageError(f"{path}: no such file")
    fmt = require_format(path, args.format)
    sha = sha256_file(path)
    try:
        model = load_model(ArtifactRef(uri=path, sha256=sha, format=fmt))
    except ModelLoadError as exc:
        raise UsageError(f"{path}: {exc.reason}: {exc.message}") from None

    spec: dict[str, Any] = {
        "model": args.model,
        "version": args.version,
        "artifact": {"uri": args.uri or path, "sha256": sha, "format": fmt},
        # The version the artifact records (ONNX records none: the one installed here is the best statement).
        "framework": {"name": "sklearn", "version": model.framework_version or sklearn.__version__},
    }
    if args.data:
        spec.update(_from_data(args, model, path))
    else:
        try:
            spec["signature"] = infer_signature(model).model_dump(mode="json", exclude_none=True)
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}; give --data and --target to name the inputs") from None
    if args.description:
        spec["description"] = args.description
    text = _manifest(args, spec)
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"{args.out}: cannot write ({exc.strerror or exc})") from None
    else:
        sys.stdout.write(text)
    return 0
