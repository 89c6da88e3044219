"""Model signatures: infer them from a model, check them against one, and validate request rows with them.

`RowValidator` is on the request path. It validates with NumPy first (one conversion, vectorised range and finiteness
checks) and only when that fast path finds something wrong does it walk the rows in Python to name the exact field
and rule. Both paths apply the same rules, so the answer never depends on which path ran.
"""

from __future__ import annotations

import math
from itertools import chain
from operator import countOf
from typing import Any

import numpy as np

from mlsteward_runtime.contracts import FeatureType, InputSpec, OutputKind, OutputSpec, Signature
from mlsteward_runtime.errors import InvalidInput

__all__ = ["RowValidator", "check_signature", "golden_rows", "infer_signature"]

_NUMERIC_TYPES = frozenset({float, int})


def _model_facts(model: Any) -> tuple[int | None, list[str] | None, list[Any] | None, bool]:
    """(n_features, feature_names, classes, is_classifier) of a LoadedModel or a plain estimator."""
    from mlsteward_runtime.models import LoadedModel

    if isinstance(model, LoadedModel):
        return model.n_features, model.feature_names, model.classes, model.is_classifier
    from sklearn.base import is_classifier

    n = getattr(model, "n_features_in_", None)
    names = getattr(model, "feature_names_in_", None)
    classes = getattr(model, "classes_", None)
    clf = bool(is_classifier(model))
    return (
        int(n) if n is not None else None,
        [str(x) for x in names] if names is not None else None,
        np.asarray(classes).tolist() if (clf and classes is not None) else None,
        clf,
    )


def infer_signature(model: Any, feature_names: list[str] | None = None) -> Signature:
    """A signature from what the model knows: feature count, names, classes. All inputs are numbers.

    Names come from `feature_names`, else the model's `feature_names_in_`, else `x0`, `x1`, ...
    """
    n, names, classes, clf = _model_facts(model)
    if feature_names is not None:
        names = list(feature_names)
        if n is not None and len(names) != n:
            raise ValueError(f"{len(names)} feature names given but the model expects {n} features")
    if names is None:
        if n is None:
            raise ValueError("the model does not record its number of features; give a signature")
        names = [f"x{i}" for i in range(n)]
    output = OutputSpec(kind=OutputKind.class_, classes=classes) if clf else OutputSpec(kind=OutputKind.regression)
    return Signature(inputs=[InputSpec(name=x) for x in names], output=output)


def check_signature(sig: Signature, model: Any) -> list[str]:
    """Problems that make `sig` inconsistent with `model`; empty when they agree."""
    problems: list[str] = []
    n, names, classes, clf = _model_facts(model)
    if n is not None and len(sig.inputs) != n:
        problems.append(f"signature has {len(sig.inputs)} inputs but the model expects {n} features")
    if names is not None and sig.names != names:
        problems.append(f"signature input names {sig.names} differ from the model's feature names {names}")
    seen: set[str] = set()
    for spec in sig.inputs:
        if spec.name in seen:
            problems.append(f"input {spec.name!r} appears more than once")
        seen.add(spec.name)
        if spec.min is not None and spec.max is not None and spec.min > spec.max:
            problems.append(f"input {spec.name!r} has min {spec.min} > max {spec.max}")
        if spec.type == FeatureType.categorical and not spec.allowed:
            problems.append(f"categorical input {spec.name!r} lists no allowed values")
    if sig.output is not None:
        if sig.output.kind == OutputKind.regression and clf:
            problems.append("signature says regression but the model is a classifier")
        if sig.output.kind != OutputKind.regression and not clf and n is not None:
            problems.append(f"signature says {sig.output.kind.value} but the model is not a classifier")
        if sig.output.classes is not None and classes is not None:
            if [_norm(c) for c in sig.output.classes] != [_norm(c) for c in classes]:
                problems.append(f"signature classes {sig.output.classes} differ from the model's classes {classes}")
    return problems


def _norm(v: Any) -> Any:
    # Classes written in YAML may come back as strings or floats; compare them by their text form.
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def golden_rows(sig: Signature, n: int = 1) -> list[list[Any]]:
    """`n` rows that satisfy `sig`, for a readiness check when no recorded golden input exists.

    Numbers sit at the middle of their range (or at the bound, or zero); categoricals cycle through `allowed`.
    """
    rows: list[list[Any]] = []
    for i in range(n):
        row: list[Any] = []
        for spec in sig.inputs:
            if spec.type == FeatureType.categorical:
                allowed = spec.allowed or [""]
                row.append(allowed[i % len(allowed)])
            elif spec.type == FeatureType.boolean:
                row.append(bool(i % 2))
            else:
                lo, hi = spec.min, spec.max
                if lo is not None and hi is not None:
                    v = lo + (hi - lo) * ((i % 3) + 1) / 4
                elif lo is not None:
                    v = lo + i
                elif hi is not None:
                    v = hi - i
                else:
                    v = float(i)
                if spec.type == FeatureType.integer:
                    v2 = math.ceil(v) if lo is not None else math.floor(v)
                    if hi is not None and v2 > hi:
                        v2 = math.floor(hi)
                    if lo is not None and v2 < lo:
                        v2 = math.ceil(lo)
                    row.append(int(v2))
                else:
                    row.append(float(v))
        rows.append(row)
    return rows


class RowValidator:
    """Validates request rows against a signature and returns the model's input matrix.

    Rows are positional lists in signature order or objects keyed by feature name. The result is float64, or
    object dtype when the signature has categorical inputs (categories are passed to the model as they are).
    Errors are InvalidInput with `field` like `instances[3].age` and `rule` one of: type, feature_count, required,
    unknown_feature, finite, minimum, maximum, integer, allowed, min_items, max_items.
    """

    def __init__(self, sig: Signature, max_rows: int | None = None) -> None:
        self.sig = sig
        self.specs = list(sig.inputs)
        self.names = [s.name for s in self.specs]
        self.n = len(self.specs)
        self.max_rows = max_rows
        self._index = {name: i for i, name in enumerate(self.names)}
        self._required = frozenset(s.name for s in self.specs if s.required)
        self._optional = any(not s.required for s in self.specs)
        types = {s.type for s in self.specs}
        self.categorical = FeatureType.categorical in types
        # The NumPy fast path covers signatures of plain numbers and integers; booleans and categoricals need the
        # per-value walk because JSON true/false and strings must be told apart from numbers.
        self._fast = types <= {FeatureType.number, FeatureType.integer}
        lo = np.array([s.min if s.min is not None else -np.inf for s in self.specs], dtype=np.float64)
        hi = np.array([s.max if s.max is not None else np.inf for s in self.specs], dtype=np.float64)
        self._bounded = bool(np.isfinite(lo).any() or np.isfinite(hi).any())
        self._lo, self._hi = lo, hi
        self._int_cols = np.array([i for i, s in enumerate(self.specs) if s.type == FeatureType.integer], dtype=np.intp)
        self._allowed: list[frozenset[Any] | None] = [
            frozenset(_cat_key(v) for v in s.allowed) if s.type == FeatureType.categorical and s.allowed else None
            for s in self.specs
        ]

    # -- entry points -------------------------------------------------------------------------------------------

    def rows(self, payload: Any, field_prefix: str = "instances", bools_absent: bool = False) -> np.ndarray:
        """Validate `payload` (a list of rows or of named objects) and return the input matrix.

        `bools_absent`: the caller proved that no value is a JSON boolean (the body's text holds no true/false),
        so a numeric matrix converts in one NumPy pass with no type check per value.
        """
        if type(payload) is not list:
            raise InvalidInput(f"{field_prefix} must be a list of rows", field=field_prefix, rule="type")
        self._check_count(len(payload), field_prefix)
        if type(payload[0]) is dict:
            return self._objects(payload, field_prefix)
        if self._fast:
            X = self._numeric_at_once(payload) if bools_absent else self._fast_rows(payload)
            if X is not None:
                return X
        return self._slow_rows(payload, field_prefix)

    def matrix(self, X: np.ndarray, field_prefix: str = "inputs") -> np.ndarray:
        """Validate an already numeric 2-D array (V2 tensors) and return it as float64 (or object)."""
        if X.ndim != 2 or X.shape[1] != self.n:
            raise InvalidInput(
                f"{field_prefix} must have shape [rows, {self.n}], got {list(X.shape)}",
                field=field_prefix, rule="feature_count",
            )
        self._check_count(X.shape[0], field_prefix)
        if X.dtype.kind not in "fiub":
            raise InvalidInput(f"{field_prefix} must be numeric", field=field_prefix, rule="type")
        if self._fast and X.dtype.kind in "fiu":
            Xf = X.astype(np.float64, copy=False)
            if self._fast_checks_pass(Xf):
                return Xf
        return self._slow_rows(X.tolist(), field_prefix)

    # -- fast path ----------------------------------------------------------------------------------------------

    def _check_count(self, k: int, field_prefix: str) -> None:
        if k == 0:
            raise InvalidInput(f"{field_prefix} is empty; send at least one row", field=field_prefix, rule="min_items")
        if self.max_rows is not None and k > self.max_rows:
            raise InvalidInput(
                f"{field_prefix} has {k} rows; at most {self.max_rows} are accepted",
                field=field_prefix, rule="max_items",
            )

    def _fast_rows(self, payload: list[Any]) -> np.ndarray | None:
        # One C-level pass over the values decides whether all are JSON numbers (bool is a subclass of int, and
        # NumPy would silently turn true into 1.0, so the exact type matters). Rows that are not lists make
        # chain() see other iterables; the shape check below catches those.
        try:
            # Values with fractions are all float: counting them (identity comparisons) is cheaper than a set.
            if countOf(map(type, chain.from_iterable(payload)), float) != sum(map(len, payload)):
                if not set(map(type, chain.from_iterable(payload))) <= _NUMERIC_TYPES:
                    return None
        except TypeError:
            return None
        try:
            X = np.array(payload, dtype=np.float64)
        except (ValueError, OverflowError, TypeError):
            return None
        if X.ndim != 2 or X.shape[1] != self.n:
            return None
        return X if self._fast_checks_pass(X) else None

    def _numeric_at_once(self, payload: list[Any]) -> np.ndarray | None:
        # No value is a bool (the caller proved it), so a numeric dtype from NumPy's own type discovery means every
        # value was an int or a float; strings, nulls, objects and ragged rows give another dtype or an error.
        try:
            X = np.array(payload)
        except (ValueError, OverflowError, TypeError):
            return None
        if X.dtype.kind not in "fiu" or X.ndim != 2 or X.shape[1] != self.n:
            return None
        X = X.astype(np.float64, copy=False)
        return X if self._fast_checks_pass(X) else None

    def _fast_checks_pass(self, X: np.ndarray) -> bool:
        if not np.isfinite(X).all():
            return False
        if self._bounded and ((X < self._lo).any() or (X > self._hi).any()):
            return False
        if self._int_cols.size:
            cols = X[:, self._int_cols]
            if (cols != np.floor(cols)).any():
                return False
        return True

    # -- slow path (also the reference implementation of the rules) ---------------------------------------------

    def _objects(self, payload: list[Any], prefix: str) -> np.ndarray:
        names, index, required = self.names, self._index, self._required
        rows: list[list[Any]] = []
        for r, obj in enumerate(payload):
            if type(obj) is not dict:
                raise InvalidInput(f"{prefix}[{r}] must be an object like {prefix}[0]", field=f"{prefix}[{r}]", rule="type")
            if len(obj) != self.n or obj.keys() != index.keys():
                unknown = [k for k in obj if k not in index]
                if unknown:
                    raise InvalidInput(
                        f"{prefix}[{r}] has unknown feature {unknown[0]!r}; expected {names}",
                        field=f"{prefix}[{r}].{unknown[0]}", rule="unknown_feature",
                    )
                missing = [k for k in names if k in required and k not in obj]
                if missing:
                    raise InvalidInput(
                        f"{prefix}[{r}] is missing required feature {missing[0]!r}",
                        field=f"{prefix}[{r}].{missing[0]}", rule="required",
                    )
            rows.append([obj.get(k) for k in names])
        if self._fast and not self._optional:
            X = self._fast_rows(rows)
            if X is not None:
                return X
        return self._slow_rows(rows, prefix)

    def _slow_rows(self, payload: list[Any], prefix: str) -> np.ndarray:
        out: list[list[Any]] = []
        n = self.n
        for r, row in enumerate(payload):
            if type(row) is not list:
                raise InvalidInput(
                    f"{prefix}[{r}] must be a list of {n} values or an object keyed by feature name",
                    field=f"{prefix}[{r}]", rule="type",
                )
            if len(row) != n:
                raise InvalidInput(
                    f"{prefix}[{r}] has {len(row)} values; the model expects {n} ({', '.join(self.names)})",
                    field=f"{prefix}[{r}]", rule="feature_count",
                )
            out.append([self._value(v, j, r, prefix) for j, v in enumerate(row)])
        if self.categorical:
            X = np.empty((len(out), n), dtype=object)
            X[:] = out
            return X
        return np.array(out, dtype=np.float64)

    def _value(self, v: Any, j: int, r: int, prefix: str) -> Any:
        spec = self.specs[j]
        field = f"{prefix}[{r}].{spec.name}"
        t = spec.type
        if v is None:
            if spec.required:
                raise InvalidInput(f"{field} is required", field=field, rule="required")
            return None if t == FeatureType.categorical else math.nan
        if t == FeatureType.categorical:
            allowed = self._allowed[j]
            if type(v) not in (str, int, float, bool) or (allowed is not None and _cat_key(v) not in allowed):
                raise InvalidInput(
                    f"{field} is {v!r}, not one of the allowed values {spec.allowed}", field=field, rule="allowed"
                )
            return v
        if t == FeatureType.boolean:
            if type(v) is bool:
                return 1.0 if v else 0.0
            if type(v) in _NUMERIC_TYPES and v in (0, 1):
                return float(v)
            raise InvalidInput(f"{field} must be true or false, got {v!r}", field=field, rule="type")
        if type(v) not in _NUMERIC_TYPES:
            raise InvalidInput(f"{field} must be a number, got {type(v).__name__}", field=field, rule="type")
        try:
            x = float(v)
        except OverflowError:
            x = math.inf
        if not math.isfinite(x):
            raise InvalidInput(f"{field} must be a finite number", field=field, rule="finite")
        if spec.min is not None and x < spec.min:
            raise InvalidInput(f"{field} is {v}, below the minimum {spec.min}", field=field, rule="minimum")
        if spec.max is not None and x > spec.max:
            raise InvalidInput(f"{field} is {v}, above the maximum {spec.max}", field=field, rule="maximum")
        if t == FeatureType.integer and not x.is_integer():
            raise InvalidInput(f"{field} must be an integer, got {v}", field=field, rule="integer")
        return x


def _cat_key(v: Any) -> Any:
    # 1, 1.0 and True hash equal in Python; keep the type in the key so "allowed: [1]" does not admit true.
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, (int, float)):
        return ("n", float(v))
    return ("s", v)
