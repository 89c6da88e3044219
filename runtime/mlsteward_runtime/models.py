"""Model artifacts: fetch by URI, verify the sha256, deserialize, and write (dump) them.

Fetching and digests live in `mlsteward_runtime.artifacts` (light: the operator uses them to read reference
profiles) and are re-exported here. `load_model` is the one way the runtime deserializes a model: `serve`,
`validate`, `register` and `train` all go through it, so they share one trust rule.

The order of operations is the security property of this module: the bytes are fetched in full, their sha256 is
compared with the expected digest, and only then is anything deserialized. joblib and pickle execute arbitrary code
on load: they are refused without a digest unless the caller explicitly allows unverified artifacts, and with one
they trust whoever wrote the ModelVersion completely. skops artifacts are audited before anything is built
(`mlsteward_runtime.trust`: skops' defaults plus an exact, reviewed list of classes; anything else is refused as
UntrustedTypes), and every tree of a built model is checked before it predicts. ONNX runs in onnxruntime with no
custom operator library registered, so a file cannot bring code of its own.

A model saved by a scikit-learn of another major.minor than the installed one is refused as SklearnVersionSkew
unless the caller allows the skew: unpickled estimators of another release can predict differently without error.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mlsteward_runtime.artifacts import fetch_artifact, format_from_uri, sha256_bytes, sha256_file
from mlsteward_runtime.contracts import ArtifactFormat, ArtifactRef
from mlsteward_runtime.errors import ModelLoadError, SklearnVersionSkew, UntrustedTypes

__all__ = [
    "LoadedModel",
    "dump_model",
    "fetch_artifact",
    "format_from_uri",
    "load_model",
    "sha256_bytes",
    "sha256_file",
]

# Classifiers whose predict() equals classes_[argmax(predict_proba())], so one call yields both outputs.
_ARGMAX_PROBA = frozenset({
    "LogisticRegression",
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "DecisionTreeClassifier",
    "ExtraTreeClassifier",
    "GaussianNB",
    "MultinomialNB",
    "BernoulliNB",
    "ComplementNB",
    "GradientBoostingClassifier",
    "HistGradientBoostingClassifier",
})


# --------------------------------------------------------------------------------------------------------------
# Loaded model
# --------------------------------------------------------------------------------------------------------------


class LoadedModel:
    """A deserialized model with the facts the runtime needs, behind one predict interface.

    `estimator` is the scikit-learn object, or an onnxruntime InferenceSession for ONNX artifacts.
    """

    def __init__(self, estimator: Any, fmt: ArtifactFormat, sha256: str | None) -> None:
        self.estimator = estimator
        self.format = fmt
        self.sha256 = sha256
        # The scikit-learn version that saved the model, as the artifact records it (None for ONNX).
        self.framework_version: str | None = None
        self.n_features: int | None = None
        self.feature_names: list[str] | None = None
        self.classes: list[Any] | None = None
        self.is_classifier = False
        self._onnx_input: str | None = None
        self._onnx_dtype: Any = np.float32
        self._onnx_label: str | None = None
        self._onnx_proba: str | None = None
        self._proba: Any = None
        self._argmax_proba = False
        self._classes_arr: np.ndarray | None = None
        if fmt == ArtifactFormat.onnx:
            self._init_onnx()
        else:
            self._init_sklearn()

    # -- scikit-learn -------------------------------------------------------------------------------------------

    def _init_sklearn(self) -> None:
        from sklearn.base import is_classifier

        est = self.estimator
        if not hasattr(est, "predict"):
            raise ModelLoadError("LoadFailed", f"the artifact holds a {type(est).__name__}, which has no predict()")
        n = getattr(est, "n_features_in_", None)
        self.n_features = int(n) if n is not None else None
        names = getattr(est, "feature_names_in_", None)
        self.feature_names = [str(x) for x in names] if names is not None else None
        self.is_classifier = bool(is_classifier(est))
        classes = getattr(est, "classes_", None)
        if self.is_classifier and classes is not None:
            self.classes = np.asarray(classes).tolist()
            self._classes_arr = np.asarray(classes)
        final = est.steps[-1][1] if hasattr(est, "steps") and est.steps else est
        self._argmax_proba = type(final).__name__ in _ARGMAX_PROBA and type(final).__module__.startswith("sklearn.")
        self._proba = getattr(est, "predict_proba", None) if self.is_classifier else None
        if self.feature_names is not None:
            # The runtime validates rows against the signature and passes plain arrays in signature order; the
            # warning about missing column names would otherwise be raised (and formatted) on every request.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")

    # -- ONNX ---------------------------------------------------------------------------------------------------

    def _init_onnx(self) -> None:
        sess = self.estimator
        inputs = sess.get_inputs()
        if len(inputs) != 1:
            raise ModelLoadError("LoadFailed", f"ONNX models with {len(inputs)} inputs are not supported (need 1)")
        inp = inputs[0]
        self._onnx_input = inp.name
        self._onnx_dtype = {
            "tensor(float)": np.float32,
            "tensor(double)": np.float64,
            "tensor(int64)": np.int64,
            "tensor(int32)": np.int32,
        }.get(inp.type, np.float32)
        shape = inp.shape
        if len(shape) == 2 and isinstance(shape[1], int):
            self.n_features = shape[1]
        outputs = sess.get_outputs()
        self._onnx_label = outputs[0].name
        if len(outputs) > 1:
            self._onnx_proba = outputs[1].name
            self.is_classifier = True
            # The classes are the keys of the ZipMap output (a list of dicts); a tensor output carries no labels, so
            # probe once with a zero row to learn them.
            if self.n_features is not None:
                try:
                    out = sess.run(None, {inp.name: np.zeros((1, self.n_features), dtype=self._onnx_dtype)})
                    proba = out[1]
                    if isinstance(proba, list) and proba and isinstance(proba[0], dict):
                        self.classes = list(proba[0].keys())
                except Exception:  # noqa: BLE001 - classes are optional metadata
                    self.classes = None

    # -- predict ------------------------------------------------------------------------------------------------

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self._onnx_input is not None:
            out = self.estimator.run([self._onnx_label], {self._onnx_input: X.astype(self._onnx_dtype, copy=False)})
            return np.asarray(out[0]).reshape(len(X))
        return np.asarray(self.estimator.predict(X))

    def predict_proba(self, X: np.ndarray) -> np.ndarray | None:
        if self._onnx_input is not None:
            if self._onnx_proba is None:
                return None
            out = self.estimator.run([self._onnx_proba], {self._onnx_input: X.astype(self._onnx_dtype, copy=False)})
            proba = out[0]
            if isinstance(proba, list):
                keys = self.classes if self.classes is not None else list(proba[0].keys()) if proba else []
                return np.array([[row[k] for k in keys] for row in proba], dtype=np.float64)
            return np.asarray(proba, dtype=np.float64)
        if self._proba is None:
            return None
        return np.asarray(self._proba(X))

    def predict_both(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions and probabilities, with one model call when that provably gives the same answer.

        For the estimators in `_ARGMAX_PROBA` scikit-learn's predict is the class at the argmax of predict_proba
        (forests and trees take it literally; linear models and naive Bayes apply a monotonic link to the same
        scores), so the runtime computes probabilities once. Anything else (an SVC with Platt scaling, say) calls
        both methods, because its predict may disagree with its probabilities.
        """
        if self._argmax_proba and self._proba is not None and self.classes is not None:
            proba = np.asarray(self._proba(X))
            return self._classes_arr.take(proba.argmax(axis=1)), proba
        return self.predict(X), self.predict_proba(X)

    def __repr__(self) -> str:
        kind = type(self.estimator).__name__
        return f"LoadedModel({kind}, format={self.format.value}, sha256={self.sha256}, n_features={self.n_features})"


# --------------------------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------------------------


def load_model(ref: ArtifactRef, *, allow_unverified: bool = False, allow_version_skew: bool = False,
               data: bytes | None = None) -> LoadedModel:
    """Fetch (unless `data` is given), verify, then deserialize the artifact `ref` points at.

    Raises ModelLoadError with reason FetchFailed, DigestMismatch, UnverifiedRefused, UntrustedTypes (a skops
    artifact naming anything outside the trusted types), SklearnVersionSkew (saved by another scikit-learn
    major.minor, unless `allow_version_skew`) or LoadFailed.
    """
    fmt = ArtifactFormat(ref.format)
    if ref.sha256 is None and fmt in (ArtifactFormat.joblib, ArtifactFormat.pickle) and not allow_unverified:
        # Refused before fetching: there is no reason to download bytes we will not deserialize.
        raise ModelLoadError(
            "UnverifiedRefused",
            f"{fmt.value} artifacts run code when loaded; refusing {ref.uri} without a sha256 "
            "(give the digest, or allow unverified artifacts explicitly)",
        )
    if data is None:
        data = fetch_artifact(ref.uri)
    actual = sha256_bytes(data)
    if ref.sha256 is not None and actual != ref.sha256.lower():
        raise ModelLoadError(
            "DigestMismatch",
            f"sha256 mismatch for {ref.uri}: expected {ref.sha256.lower()}, got {actual}; the artifact was not loaded",
        )
    try:
        estimator, recorded = _deserialize(data, fmt, ref.uri, allow_version_skew)
        if fmt != ArtifactFormat.onnx:
            from mlsteward_runtime.trust import check_trees

            check_trees(estimator)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken artifact is a load failure, whatever the library raises
        raise ModelLoadError("LoadFailed", f"could not load {ref.uri} as {fmt.value}: {type(exc).__name__}: {exc}") from exc
    model = LoadedModel(estimator, fmt, actual)
    model.framework_version = recorded
    return model


def _deserialize(data: bytes, fmt: ArtifactFormat, uri: str, allow_skew: bool) -> tuple[Any, str | None]:
    """The deserialized object and the scikit-learn version that saved it (None for ONNX)."""
    if fmt == ArtifactFormat.skops:
        import skops.io as sio

        from mlsteward_runtime.trust import REVIEWED_TYPES, read_schema_facts

        # Everything here reads the schema only; nothing in the file is imported or built before the audit passes.
        facts = read_schema_facts(data)
        refused = (set(sio.get_untrusted_types(data=data)) - REVIEWED_TYPES) | facts.refused_nodes
        if refused:
            raise UntrustedTypes(uri, sorted(refused))
        _check_skew(uri, facts.sklearn_versions, allow_skew)
        # skops audits the tree again against the same list before it builds anything.
        return _load_sklearn(lambda: sio.loads(data, trusted=sorted(REVIEWED_TYPES)), uri, allow_skew,
                             facts.sklearn_versions)
    if fmt == ArtifactFormat.onnx:
        return _onnx_session(data), None
    if fmt == ArtifactFormat.joblib:
        import joblib

        return _load_sklearn(lambda: joblib.load(io.BytesIO(data)), uri, allow_skew, set())
    if fmt == ArtifactFormat.pickle:
        import pickle

        # Only reached after the digest check or an explicit opt-in.
        return _load_sklearn(lambda: pickle.loads(data), uri, allow_skew, set())  # noqa: S301
    raise ModelLoadError("LoadFailed", f"unknown format {fmt}")


def _onnx_session(data: bytes) -> Any:
    import tempfile

    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread per session: the runtime scales by workers and batching, and onnxruntime's default thread pool
    # would oversubscribe the cores that uvicorn workers share. No custom operator library is registered, so a
    # node of an unknown domain fails the session instead of running code the file names.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="mlsteward-onnx-") as empty:
        # A model loaded from bytes may name "external data" files, which onnxruntime reads relative to the working
        # directory: a crafted model could read any file under it (a token, a key) into a tensor and answer it back
        # in predictions. Pointing that folder at an empty directory makes every external reference fail.
        opts.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
        return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])


def _load_sklearn(load: Callable[[], Any], uri: str, allow_skew: bool, recorded: set[str]) -> tuple[Any, str]:
    """Run `load`, noting the versions scikit-learn reports as different from its own while unpickling state."""
    import sklearn
    from sklearn.exceptions import InconsistentVersionWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        obj = load()
    seen = set(recorded)
    for w in caught:
        if isinstance(w.message, InconsistentVersionWarning):
            seen.add(str(w.message.original_sklearn_version))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    _check_skew(uri, seen, allow_skew)
    return obj, ", ".join(sorted(seen)) if seen else sklearn.__version__


def _check_skew(uri: str, recorded: set[str], allow_skew: bool) -> None:
    import sklearn

    from mlsteward_runtime.trust import skewed_versions

    skewed = skewed_versions(recorded, sklearn.__version__)
    if skewed and not allow_skew:
        raise SklearnVersionSkew(uri, skewed, sklearn.__version__)


# --------------------------------------------------------------------------------------------------------------
# Dump
# --------------------------------------------------------------------------------------------------------------


def dump_model(
    estimator: Any, path: str | os.PathLike[str], fmt: ArtifactFormat | str = ArtifactFormat.skops
) -> str:
    """Write `estimator` to `path` in `fmt` and return the sha256 of the written file.

    ONNX conversion needs skl2onnx (a test and tooling dependency, not a serving one).
    """
    fmt = ArtifactFormat(fmt)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == ArtifactFormat.skops:
        import skops.io as sio

        sio.dump(estimator, path)
    elif fmt == ArtifactFormat.joblib:
        import joblib

        joblib.dump(estimator, path)
    elif fmt == ArtifactFormat.pickle:
        import pickle

        with open(path, "wb") as fh:
            pickle.dump(estimator, fh, protocol=pickle.HIGHEST_PROTOCOL)
    elif fmt == ArtifactFormat.onnx:
        from skl2onnx import to_onnx

        n = int(estimator.n_features_in_)
        onx = to_onnx(estimator, np.zeros((1, n), dtype=np.float32), target_opset=None)
        path.write_bytes(onx.SerializeToString())
    else:  # pragma: no cover - ArtifactFormat is closed
        raise ValueError(f"unknown format {fmt}")
    return sha256_file(path)
