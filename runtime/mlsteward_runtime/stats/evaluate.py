"""Model evaluation on a labelled table, and metric thresholds, for `register`, `validate` and `train`.

Metrics (scikit-learn's implementations):
- classifiers: `accuracy`, `f1_macro` (unweighted mean of per-class F1), and `roc_auc` for binary classifiers with
  predict_proba (the positive class is the model's second class; left out when the data hold one class only);
- regressors: `r2`, `rmse`, `mae`.

Labels are compared by their text form (`stats.table.category_key`), because a CSV label "1" must equal the class 1
of a model trained on integers, and "1.0" must too.

Thresholds are strings such as `accuracy >= 0.7` or `rmse<5`: a metric name, one of >=, >, <=, <, ==, a number.
`f1` and `auc` are accepted for `f1_macro` and `roc_auc`.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlsteward_runtime.contracts import FeatureType, Signature
from mlsteward_runtime.stats.table import NUMERIC_TYPES, Table, category_key, is_missing, to_float_array

CLASSIFIER_METRICS = ("accuracy", "f1_macro", "roc_auc")
REGRESSOR_METRICS = ("r2", "rmse", "mae")
_ALIASES = {"f1": "f1_macro", "auc": "roc_auc"}
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
_THRESHOLD = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Threshold:
    metric: str
    op: str
    value: float

    def holds(self, actual: float) -> bool:
        return bool(_OPS[self.op](actual, self.value))

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


def parse_threshold(text: str) -> Threshold:
    """Parse `metric OP number`; ValueError naming the rule otherwise."""
    m = _THRESHOLD.match(text)
    if not m:
        raise ValueError(f"threshold {text!r} is not `METRIC OP NUMBER` with OP one of >=, >, <=, <, ==")
    name = m.group(1).lower()
    return Threshold(_ALIASES.get(name, name), m.group(2), float(m.group(3)))


def check_thresholds(metrics: dict[str, float], thresholds: Sequence[Threshold]) -> list[str]:
    """Human-readable failures: a threshold whose metric is missing or whose comparison does not hold."""
    failures = []
    for t in thresholds:
        if t.metric not in metrics:
            failures.append(f"{t}: metric {t.metric!r} was not computed (computed: {', '.join(sorted(metrics))})")
        elif not t.holds(metrics[t.metric]):
            failures.append(f"{t}: got {metrics[t.metric]:.4g}")
    return failures


def feature_matrix(table: Table, signature: Signature, *, rows: np.ndarray | None = None) -> np.ndarray:
    """The model input in signature order: float64 when every input is numeric or boolean, else an object array.

    Categorical values are mapped back to the signature's allowed values (so an allowed integer code stays an
    integer); missing numeric cells become NaN. Raises KeyError naming a signature input absent from the table.
    """
    missing = [f.name for f in signature.inputs if f.name not in table.columns]
    if missing:
        raise KeyError(f"{table.source}: no column for signature input(s) {', '.join(missing)} "
                       f"(columns: {', '.join(table.header)})")
    cols: list[Any] = []
    numeric = True
    for spec in signature.inputs:
        raw = table.columns[spec.name]
        if spec.type in NUMERIC_TYPES or spec.type == FeatureType.boolean:
            cols.append(to_float_array(raw, what=f"{table.source}: column {spec.name!r}"))
        else:
            numeric = False
            lookup = {category_key(a): a for a in (spec.allowed or [])}
            cols.append(np.array([None if is_missing(v) else lookup.get(category_key(v), v) for v in raw],
                                 dtype=object))
    X = np.column_stack(cols) if numeric else np.column_stack([c.astype(object) for c in cols])
    return X if rows is None else X[rows]


def labelled_rows(table: Table, target: str, *, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    """(row indices with a label, labels): floats for regression, text keys for classification."""
    raw = table.column(target)
    keep = np.array([not is_missing(v) for v in raw], dtype=bool)
    idx = np.flatnonzero(keep)
    if regression:
        return idx, to_float_array([raw[i] for i in idx], what=f"{table.source}: target column {target!r}")
    return idx, np.array([category_key(raw[i]) for i in idx], dtype=object)


def evaluate(model: Any, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Metrics of a `models.LoadedModel` on (X, y); `y` from `labelled_rows`. See the module docstring."""
    from sklearn import metrics as skm

    if len(y) == 0:
        raise ValueError("no labelled rows to evaluate on")
    if not model.is_classifier:
        pred = np.asarray(model.predict(X), dtype=float)
        return {
            "r2": float(skm.r2_score(y, pred)) if len(y) > 1 else math.nan,
            "rmse": float(math.sqrt(skm.mean_squared_error(y, pred))),
            "mae": float(skm.mean_absolute_error(y, pred)),
        }
    pred = np.array([category_key(p) for p in np.asarray(model.predict(X)).tolist()], dtype=object)
    out = {
        "accuracy": float(skm.accuracy_score(y, pred)),
        "f1_macro": float(skm.f1_score(y, pred, average="macro", zero_division=0)),
    }
    classes = model.classes or []
    if len(classes) == 2 and len(set(y.tolist())) == 2:
        proba = model.predict_proba(X)
        if proba is not None:
            positive = category_key(classes[1])
            out["roc_auc"] = float(skm.roc_auc_score(y == positive, np.asarray(proba)[:, 1]))
    return {k: v for k, v in out.items() if not math.isnan(v)}
