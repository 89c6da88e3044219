"""Model files written by an attacker: nothing they name outside the reviewed types is ever built or run.

Each crafted file is a real skops file with one node rewritten. The checks look at the world afterwards (the target
file does not exist, an existing file keeps its bytes, a module was not imported), not only at the error.
"""

from __future__ import annotations

import hashlib
import importlib
import sys

import numpy as np
import pytest
import sklearn
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.tree import DecisionTreeClassifier

from mlsteward_runtime.contracts import ArtifactRef
from mlsteward_runtime.errors import ModelLoadError, SklearnVersionSkew, UntrustedTypes
from mlsteward_runtime.models import load_model
from mlsteward_runtime.trust import REFUSED_NODES, REVIEWED_TYPES

from .trust_files import (
    call_node,
    first_array_node,
    json_node,
    other_minor,
    read_schema,
    tuple_node,
    with_attribute,
    with_sklearn_version,
    with_tree_nodes,
)


def _load(data: bytes, **kw):
    return load_model(ArtifactRef(uri="crafted.skops", sha256=hashlib.sha256(data).hexdigest()), data=data, **kw)


@pytest.fixture(scope="module")
def lr_bytes():
    import skops.io as sio

    X, y = load_iris(return_X_y=True)
    from sklearn.linear_model import LogisticRegression

    return sio.dumps(LogisticRegression(max_iter=1000).fit(X, y))


def _method_node(array: dict, func: str) -> dict:
    return {"__class__": "ndarray", "__module__": "numpy", "__loader__": "MethodNode",
            "content": {"func": func, "obj": array}}


def _operator_call(func: dict, *args: object) -> dict:
    # operator.call(func, *args) calls func at build time (Python 3.11+).
    return {"__class__": "call", "__module__": "operator", "__loader__": "OperatorFuncNode",
            "attrs": tuple_node(func, *(json_node(a) for a in args))}


FILE_WRITERS = {
    # Names a prefix rule on "numpy." lets through: none of them is the exact name "numpy.save".
    "numpy.savetxt": lambda target, _: call_node("numpy", "savetxt", str(target), [[1.0, 2.0]]),
    "numpy.savez": lambda target, _: call_node("numpy", "savez", str(target)),
    "numpy.memmap": lambda target, _: call_node("numpy", "memmap", str(target), "uint8", "w+", 0, [64]),
    # A bound ndarray.tofile, called at build time through operator.call.
    "numpy.ndarray.tofile": lambda target, schema: _operator_call(
        _method_node(first_array_node(schema), "tofile"), str(target)),
}


@pytest.mark.parametrize("name", sorted(FILE_WRITERS))
def test_file_writers_are_refused_and_write_nothing(lr_bytes, tmp_path, name):
    target = tmp_path / "written"
    data = with_attribute(lr_bytes, FILE_WRITERS[name](target, read_schema(lr_bytes)))
    with pytest.raises(UntrustedTypes) as ei:
        _load(data)
    assert ei.value.reason == "UntrustedTypes" and name in ei.value.types and name in ei.value.message
    assert not target.exists() and not (tmp_path / "written.npz").exists()


def test_existing_file_is_not_truncated(lr_bytes, tmp_path):
    victim = tmp_path / "config.yaml"
    victim.write_bytes(b"keep: me\n")
    data = with_attribute(lr_bytes, call_node("numpy", "savetxt", str(victim), [[0.0]]))
    with pytest.raises(UntrustedTypes):
        _load(data)
    assert victim.read_bytes() == b"keep: me\n"


def test_builtins_exit_is_refused_without_exiting(lr_bytes):
    # A list node builds its named type from the items: builtins.exit([...]) would end the process.
    node = {"__class__": "exit", "__module__": "builtins", "__loader__": "ListNode", "content": [json_node(0)]}
    with pytest.raises(UntrustedTypes) as ei:
        _load(with_attribute(lr_bytes, node))
    assert ei.value.types == ["builtins.exit"]


def test_importlib_reexported_under_sklearn_imports_nothing(lr_bytes):
    # sklearn.utils.discovery does `from importlib import import_module`: the name starts with "sklearn." and runs
    # any installed module's top-level code.
    module = "this"
    assert module not in sys.modules
    with pytest.raises(UntrustedTypes) as ei:
        _load(with_attribute(lr_bytes, call_node("sklearn.utils.discovery", "import_module", module)))
    assert ei.value.types == ["sklearn.utils.discovery.import_module"]
    assert module not in sys.modules


def test_callable_building_nodes_are_refused_by_kind(lr_bytes):
    # A partial of a trusted ufunc and an attrgetter: harmless names, but no supported model stores such nodes.
    partial = {"__class__": "partial", "__module__": "functools", "__loader__": "PartialNode", "content": {
        "func": {"__class__": "sqrt", "__module__": "numpy", "__loader__": "FunctionNode"},
        "args": tuple_node(), "kwds": {"__class__": "dict", "__module__": "builtins", "__loader__": "JsonNode",
                                       "content": "{}", "is_json": True},
        "namespace": json_node(None)}}
    getter = {"__class__": "attrgetter", "__module__": "operator", "__loader__": "OperatorFuncNode",
              "attrs": tuple_node(json_node("real"))}
    for node, name in ((partial, "functools.partial"), (getter, "operator.attrgetter")):
        with pytest.raises(UntrustedTypes) as ei:
            _load(with_attribute(lr_bytes, node))
        assert name in ei.value.types
    assert REFUSED_NODES >= {"OperatorFuncNode", "MethodNode", "PartialNode"}


def test_reviewed_types_are_classes_only():
    for name in sorted(REVIEWED_TYPES):
        module, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(module), attr)
        assert isinstance(obj, type), f"{name} is not a class"
        assert not any(name.startswith(p) for p in ("builtins.", "operator.", "functools.", "importlib."))


# --------------------------------------------------------------------------------------------------------------
# Trees: a trusted type whose content scikit-learn follows without bounds checks
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree_bytes():
    import skops.io as sio

    X, y = load_iris(return_X_y=True)
    return sio.dumps(DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y))


def _set(field: str, value: int, node: int = 0):
    def edit(nodes: np.ndarray) -> None:
        nodes[field][node] = value
    return edit


@pytest.mark.parametrize("edit,words", [
    (_set("left_child", 10**6), "left child 1000000"),  # read far past the node array
    (_set("right_child", 0), "right child 0"),  # the root again: predict never returns
    (_set("feature", 10**6), "feature 1000000"),  # read far past the input row
    (_set("feature", -5), "feature -5"),
], ids=["child-out-of-range", "cycle", "feature-out-of-range", "negative-feature"])
def test_malformed_tree_is_refused_before_it_predicts(tree_bytes, edit, words):
    with pytest.raises(ModelLoadError) as ei:
        _load(with_tree_nodes(tree_bytes, edit))
    assert ei.value.reason == "LoadFailed" and words in ei.value.message


def test_forest_narrower_than_its_trees_is_refused(cancer_rf):
    # A forest validates rows against its own n_features_in_, then hands them to its trees unchecked: a forest
    # claiming one feature over trees that split on thirty would read past every row.
    import skops.io as sio

    from .trust_files import rewrite

    def narrow(schema: dict) -> None:
        schema["content"]["content"]["n_features_in_"] = json_node(1)

    with pytest.raises(ModelLoadError) as ei:
        _load(rewrite(sio.dumps(cancer_rf[0]), narrow))
    assert ei.value.reason == "LoadFailed" and "expects 30 features but its ensemble passes it 1" in ei.value.message


# --------------------------------------------------------------------------------------------------------------
# Version skew
# --------------------------------------------------------------------------------------------------------------


def test_skops_saved_by_another_minor_is_refused_unless_allowed(lr_bytes, iris, iris_lr):
    old = other_minor(sklearn.__version__)
    data = with_sklearn_version(lr_bytes, old)
    with pytest.raises(SklearnVersionSkew) as ei:
        _load(data)
    assert ei.value.reason == "SklearnVersionSkew" and old in ei.value.message and sklearn.__version__ in \
        ei.value.message
    m = _load(data, allow_version_skew=True)
    np.testing.assert_array_equal(m.predict(iris[0]), iris_lr.predict(iris[0]))
    assert m.framework_version == old


def test_patch_level_difference_is_not_skew(lr_bytes):
    major, minor, _ = sklearn.__version__.split(".", 2)
    assert _load(with_sklearn_version(lr_bytes, f"{major}.{minor}.99")).framework_version == f"{major}.{minor}.99"


def test_pickle_saved_by_another_minor_is_refused(iris_lr):
    import pickle

    data = pickle.dumps(iris_lr).replace(sklearn.__version__.encode(), other_minor(sklearn.__version__).encode())
    ref = ArtifactRef(uri="m.pkl", sha256=hashlib.sha256(data).hexdigest(), format="pickle")
    with pytest.raises(SklearnVersionSkew):
        load_model(ref, data=data)
    assert load_model(ref, data=data, allow_version_skew=True).framework_version == other_minor(sklearn.__version__)


# --------------------------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------------------------


def test_onnx_cannot_read_files_as_external_data(tmp_path, monkeypatch):
    # onnxruntime resolves an ONNX model's "external data" against the working directory when the model comes as
    # bytes: a crafted model would return the file's bytes (a token, a key) as its prediction.
    from onnx import TensorProto, helper

    (tmp_path / "token").write_bytes(b"s3cr3t!!")
    monkeypatch.chdir(tmp_path)
    w = helper.make_tensor("W", TensorProto.UINT8, [8], vals=b"\0" * 8, raw=True)
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for key, value in (("location", "token"), ("offset", "0"), ("length", "8")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Identity", ["W"], ["Y"])], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1])],
                              [helper.make_tensor_value_info("Y", TensorProto.UINT8, [8])], [w])
    data = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    with pytest.raises(ModelLoadError) as ei:
        load_model(ArtifactRef(uri="m.onnx", sha256=hashlib.sha256(data).hexdigest(), format="onnx"), data=data)
    assert ei.value.reason == "LoadFailed" and "s3cr3t" not in ei.value.message


# --------------------------------------------------------------------------------------------------------------
# Legitimate models still load, predict as scikit-learn does, and record the version that saved them
# --------------------------------------------------------------------------------------------------------------


def _legit():
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import (
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        RandomForestClassifier,
        VotingClassifier,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    return {
        # examples/train.py's two versions.
        "scaled-logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0)),
        "random-forest": RandomForestClassifier(n_estimators=5, max_depth=6, random_state=0),
        "gradient-boosting": GradientBoostingClassifier(n_estimators=5, random_state=0),
        "extra-trees-regressor": ExtraTreesRegressor(n_estimators=3, random_state=0),
        "imputed-calibrated": make_pipeline(SimpleImputer(), CalibratedClassifierCV(LogisticRegression(max_iter=500),
                                                                                    cv=3)),
        "voting": VotingClassifier([("lr", LogisticRegression(max_iter=500)),
                                    ("tree", DecisionTreeClassifier(random_state=0))], voting="soft"),
        "mlp": MLPClassifier(hidden_layer_sizes=(4,), max_iter=30, random_state=0),
        "one-hot-columns": make_pipeline(ColumnTransformer([("oh", OneHotEncoder(handle_unknown="ignore"), [0])],
                                                           remainder="passthrough"),
                                         RandomForestClassifier(n_estimators=3, random_state=0)),
    }


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("name", sorted(_legit()))
def test_supported_models_load_and_predict_like_sklearn(name):
    import skops.io as sio

    est = _legit()[name]
    X, y = load_breast_cancer(return_X_y=True)
    X = X[:, :6]
    if name == "one-hot-columns":
        X = np.column_stack([np.round(X[:, 0] / 5.0), X[:, 1:]])
    est.fit(X, X[:, 1] if name.endswith("regressor") else y)
    m = _load(sio.dumps(est))
    np.testing.assert_array_equal(m.predict(X), est.predict(X))
    assert m.framework_version == sklearn.__version__
