"""What a model artifact may contain before anything in it is built, and what a built model must look like.

skops parses an artifact's schema into nodes without importing anything, audits every type the nodes name against
a list of trusted names (exact `module.Name` equality), and only then builds objects. The list the runtime passes
is skops' own defaults (builtin primitives and containers, scikit-learn's public estimators and loss internals,
NumPy and SciPy ufuncs and dtypes, random generators, sparse matrices) plus `REVIEWED_TYPES` below: classes only,
each one reviewed, each needed by an estimator the runtime serves. There is no prefix rule: a name under `sklearn.`
or `numpy.` is not trusted for its prefix, because both packages re-export functions that write files
(`numpy.savetxt`, `numpy.ndarray.tofile`) or import modules (`importlib.import_module` re-exported by scikit-learn
modules), and a skops node can call what it names.

On top of skops' audit, node kinds that build callables (`OperatorFuncNode`, `MethodNode`, `PartialNode`) are
refused outright whatever they name: no supported estimator stores one, and both 2025 skops advisories
(CVE-2025-54412, CVE-2025-54413) were about exactly these nodes building something other than what was audited.

Trusting `sklearn.tree._tree.Tree` has a cost skops documents: scikit-learn follows a tree's child and feature
indices without bounds checks, so a crafted tree can read out of bounds or loop at predict time. `check_trees`
therefore checks every tree of a built model (children after their parent and inside the tree, features inside the
input width the owning estimator validates) before the model predicts anything.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["REFUSED_NODES", "REVIEWED_TYPES", "SchemaFacts", "check_trees", "read_schema_facts", "skewed_versions"]

# Reviewed by saving fitted LogisticRegression, linear and GLM regressors, SGD*, Ridge*, DecisionTree*,
# RandomForest*, ExtraTrees*, GradientBoosting*, AdaBoost*, Bagging*, Voting*, Stacking*, CalibratedClassifierCV,
# naive Bayes, SVC/SVR, MLP*, LDA/QDA, dummies, and pipelines of imputers, scalers, encoders, PCA and column
# transformers, then reviewing each name `skops.io.get_untrusted_types` reported. Every entry is a class whose
# construction touches nothing outside the object. Deliberately left out: functions (e.g.
# `sklearn.feature_selection.f_classif`, stored by SelectKBest), `KDTree`/`BallTree` and HistGradientBoosting's
# `TreePredictor` (raw indices like Tree's, without a structural check here yet).
REVIEWED_TYPES: frozenset[str] = frozenset({
    # Node storage of every tree model; checked structurally after the build (check_trees).
    "sklearn.tree._tree.Tree",
    # Voting* and Stacking* keep their fitted estimators in a Bunch, a dict subclass.
    "sklearn.utils._bunch.Bunch",
    # CalibratedClassifierCV's fitted calibrators.
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    # MLP* keep their optimizer's state.
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    # TweedieRegressor's losses; skops trusts their siblings already.
    "sklearn._loss.loss.HalfTweedieLoss",
    "sklearn._loss.loss.HalfTweedieLossIdentity",
    # Imputers and encoders record the dtype they were fit on.
    "numpy.dtype",
})

# skops node kinds that build callables: refused whatever they name (see the module docstring).
REFUSED_NODES: frozenset[str] = frozenset({"OperatorFuncNode", "MethodNode", "PartialNode"})

_MAJOR_MINOR = re.compile(r"^(\d+)\.(\d+)(?:\D|$)")


class SchemaFacts:
    """What the schema of a skops artifact says, read without building anything."""

    def __init__(self) -> None:
        self.refused_nodes: set[str] = set()
        self.sklearn_versions: set[str] = set()


def read_schema_facts(data: bytes) -> SchemaFacts:
    """The callable-building nodes and the recorded scikit-learn versions in a skops artifact's schema.

    The walk is iterative: a deeply nested schema cannot exhaust the stack here.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        schema = json.loads(zf.read("schema.json"))
    facts = SchemaFacts()
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        loader = node.get("__loader__")
        if loader in REFUSED_NODES:
            name = f"{node.get('__module__')}.{node.get('__class__')}"
            func = node.get("content", {}).get("func") if isinstance(node.get("content"), dict) else None
            facts.refused_nodes.add(f"{name}.{func}" if loader == "MethodNode" and func else name)
        if loader == "DictNode" and isinstance(node.get("content"), dict):
            _record_version(node["content"].get("_sklearn_version"), facts)
        stack.extend(v for v in node.values() if isinstance(v, (dict, list)))
    return facts


def _record_version(value: Any, facts: SchemaFacts) -> None:
    if isinstance(value, dict) and value.get("__loader__") == "JsonNode" and isinstance(value.get("content"), str):
        try:
            version = json.loads(value["content"])
        except ValueError:
            return
        if isinstance(version, str):
            facts.sklearn_versions.add(version[:64])


def skewed_versions(recorded: Iterable[str], installed: str) -> list[str]:
    """The recorded versions whose major.minor differs from `installed` (an unparsable one counts as different)."""
    want = _MAJOR_MINOR.match(installed)
    out = []
    for version in recorded:
        got = _MAJOR_MINOR.match(version)
        if want is None or got is None or got.groups() != want.groups():
            out.append(version)
    return sorted(set(out))


# --------------------------------------------------------------------------------------------------------------
# Trees of a built model
# --------------------------------------------------------------------------------------------------------------


class MalformedTree(ValueError):
    """A tree whose indices scikit-learn would follow out of bounds."""


def check_trees(model: Any) -> None:
    """Raise MalformedTree unless every tree in `model` is one scikit-learn can walk safely.

    An estimator holding a tree (`tree_`) or sub-estimators (`estimators_`) validates the width of its input
    against `n_features_in_`; ensembles then hand the same rows to their sub-estimators without checking again
    (forests pass check_input=False, gradient boosting reads the trees directly). So along that chain each
    `n_features_in_` must exist and be at most its parent's, and each tree's features must lie below it.
    """
    from sklearn.ensemble import BaseEnsemble
    from sklearn.tree._tree import Tree

    # An object reached under two different widths is checked under both: the narrower may be the one it gets.
    seen: set[tuple[int, int | None]] = set()
    stack: list[tuple[Any, int | None, str]] = [(model, None, type(model).__name__)]
    while stack:
        obj, bound, where = stack.pop()
        if (id(obj), bound) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None))):
            continue
        seen.add((id(obj), bound))
        if isinstance(obj, Tree):
            _check_tree(obj, bound, where)
            continue
        holds_trees = isinstance(getattr(obj, "__dict__", None), dict) and (
            "tree_" in obj.__dict__ or "estimators_" in obj.__dict__)
        if holds_trees:
            # Voting* and Stacking* call each estimator's own (validating) predict and record no width of their
            # own; trees and the homogeneous ensembles (forests, boosting, bagging) must record theirs.
            required = "tree_" in obj.__dict__ or isinstance(obj, BaseEnsemble)
            bound = _width(obj, bound, where, required)
        container = isinstance(obj, (dict, list, tuple, np.ndarray))
        for key, child in _children(obj):
            # Containers pass the width on; an estimator passes it only to its trees and sub-estimators, since
            # any other part of it (a pipeline step, a final estimator) validates its own input.
            keep = container or (holds_trees and key in ("tree_", "estimators_"))
            stack.append((child, bound if keep else None, f"{where}.{key}"))


def _width(obj: Any, bound: int | None, where: str, required: bool) -> int | None:
    n = obj.__dict__.get("n_features_in_")
    if not isinstance(n, (int, np.integer)) or n < 1:
        if required and bound is None:
            raise MalformedTree(f"{where} holds trees but records no valid n_features_in_ ({n!r})")
        return bound
    if bound is not None and n > bound:
        raise MalformedTree(f"{where} expects {n} features but its ensemble passes it {bound}")
    return int(n)


def _children(obj: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(obj, dict):
        return ((str(k), v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return ((f"[{i}]", v) for i, v in enumerate(obj))
    if isinstance(obj, np.ndarray):
        return ((f"[{i}]", v) for i, v in enumerate(obj.flat)) if obj.dtype == object else ()
    attrs = getattr(obj, "__dict__", None)
    return attrs.items() if isinstance(attrs, dict) else ()


def _check_tree(tree: Any, bound: int | None, where: str) -> None:
    count, capacity, width = int(tree.node_count), int(tree.capacity), int(tree.n_features)
    if not 1 <= count <= capacity:
        raise MalformedTree(f"{where}: node_count {count} outside 1..{capacity} (the nodes stored)")
    if bound is None:
        raise MalformedTree(f"{where}: a tree outside an estimator that validates its input width")
    if width > bound:
        raise MalformedTree(f"{where}: tree of {width} features under an estimator of {bound}")
    left, right, feature = (np.asarray(a, dtype=np.int64) for a in (tree.children_left, tree.children_right,
                                                                     tree.feature))
    ids = np.arange(count)
    leaf = left == -1
    inner = ~leaf
    if not (right[leaf] == -1).all():
        raise MalformedTree(f"{where}: a leaf with a right child")
    for name, child in (("left", left), ("right", right)):
        # Children come after their parent: the walk from the root always ends, inside the node array.
        bad = inner & ((child <= ids) | (child >= count))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise MalformedTree(f"{where}: node {i}'s {name} child {int(child[i])} is outside {i + 1}..{count - 1}")
    bad = inner & ((feature < 0) | (feature >= width))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise MalformedTree(f"{where}: node {i} splits on feature {int(feature[i])}, outside 0..{width - 1}")
