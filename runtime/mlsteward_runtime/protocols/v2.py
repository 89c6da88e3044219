"""Open Inference Protocol (V2) REST with JSON tensors.

Inputs: either one tensor of shape [rows, features] (any name), or one tensor per feature named after it with
shape [rows] or [rows, 1]. `data` is flat (row-major) or nested. Outputs: `predict` and, for classifiers,
`predict_proba`; `outputs` in the request selects among them; `parameters` are passed back unchanged.
"""

from __future__ import annotations

import math
from itertools import chain
from operator import countOf
from typing import Any

import numpy as np

from mlsteward_runtime.contracts import FeatureType, Signature
from mlsteward_runtime.errors import InvalidInput
from mlsteward_runtime.signature import RowValidator

OUTPUTS = ("predict", "predict_proba")

_INT_RANGES: dict[str, tuple[int, int]] = {
    "INT8": (-(2**7), 2**7 - 1), "INT16": (-(2**15), 2**15 - 1), "INT32": (-(2**31), 2**31 - 1),
    "INT64": (-(2**63), 2**63 - 1), "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1), "UINT64": (0, 2**64 - 1),
}
_FLOATS = frozenset({"FP16", "FP32", "FP64"})
# Largest finite magnitude of each float datatype: a value past it would be infinite in the declared type.
_FLOAT_MAX = {"FP16": float(np.finfo(np.float16).max), "FP32": float(np.finfo(np.float32).max),
              "FP64": float(np.finfo(np.float64).max)}
DATATYPES = (*_INT_RANGES, *sorted(_FLOATS), "BOOL", "BYTES")

_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype", "data"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}
REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_SCHEMA},
        "outputs": {
            "type": "array",
            "items": {"type": "object", "required": ["name"],
                      "properties": {"name": {"type": "string", "enum": list(OUTPUTS)},
                                     "parameters": {"type": "object"}}},
        },
    },
}


class V2Request:
    __slots__ = ("X", "id", "parameters", "outputs")

    def __init__(self, X: np.ndarray, id_: str | None, parameters: Any, outputs: list[str] | None) -> None:
        self.X = X
        self.id = id_
        self.parameters = parameters
        self.outputs = outputs


def decode(body: Any, validator: RowValidator, bools_absent: bool = False) -> V2Request:
    """The validated request. `bools_absent` (the body's text holds no true/false, see
    endpoints.common.bools_absent) lets a float tensor of JSON numbers convert in one NumPy pass."""
    if type(body) is not dict:
        raise InvalidInput("the body must be a JSON object", field="body", rule="type")
    inputs = body.get("inputs")
    if type(inputs) is not list or not inputs:
        raise InvalidInput("inputs must be a non-empty list of tensors", field="inputs", rule="required")
    rid = body.get("id")
    if rid is not None and type(rid) is not str:
        raise InvalidInput("id must be a string", field="id", rule="type")
    params = body.get("parameters")
    if params is not None and type(params) is not dict:
        raise InvalidInput("parameters must be an object", field="parameters", rule="type")
    outputs = _requested_outputs(body.get("outputs"))
    bound = _Bound(validator)
    tensors = [_tensor(t, i, bound, bools_absent) for i, t in enumerate(inputs)]
    names = validator.names
    if len(tensors) == 1 and not (len(names) == 1 and tensors[0][0] == names[0] and len(tensors[0][2]) == 1):
        name, dtype, shape, arr = tensors[0]
        if len(shape) == 1 and shape[0] == validator.n:
            shape = [1, shape[0]]  # a single row sent as a vector
        if len(shape) != 2:
            raise InvalidInput(f"inputs[0] must have shape [rows, {validator.n}], got {shape}",
                               field="inputs[0].shape", rule="feature_count")
        arr = arr.reshape(shape)
        if arr.dtype.kind == "O":
            return V2Request(validator.rows(arr.tolist(), "inputs[0].data", bools_absent), rid, params, outputs)
        return V2Request(validator.matrix(arr, "inputs[0].data"), rid, params, outputs)
    # One tensor per feature, matched by name.
    by_name: dict[str, np.ndarray] = {}
    rows: int | None = None
    for i, (name, _dtype, shape, arr) in enumerate(tensors):
        if name not in validator._index:
            raise InvalidInput(f"inputs[{i}] is named {name!r}, which is not a feature ({names})",
                               field=f"inputs[{i}].name", rule="unknown_feature")
        if name in by_name:
            raise InvalidInput(f"feature {name!r} appears twice", field=f"inputs[{i}].name", rule="unique")
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidInput(f"inputs[{i}] ({name}) must have shape [rows] or [rows, 1], got {shape}",
                               field=f"inputs[{i}].shape", rule="shape")
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            raise InvalidInput(f"inputs[{i}] ({name}) has {shape[0]} rows; inputs[0] has {rows}",
                               field=f"inputs[{i}].shape", rule="shape")
        by_name[name] = arr.reshape(-1)
    missing = [n for n in names if n not in by_name and _required(validator.sig, n)]
    if missing:
        raise InvalidInput(f"feature {missing[0]!r} has no input tensor", field=f"inputs.{missing[0]}", rule="required")
    assert rows is not None
    cols = [by_name[n].tolist() if n in by_name else [None] * rows for n in names]
    return V2Request(validator.rows([list(r) for r in zip(*cols)] if rows else [], "inputs", bools_absent), rid,
                     params, outputs)


def _required(sig: Signature, name: str) -> bool:
    return next(s.required for s in sig.inputs if s.name == name)


def _requested_outputs(outputs: Any) -> list[str] | None:
    if outputs is None:
        return None
    if type(outputs) is not list:
        raise InvalidInput("outputs must be a list", field="outputs", rule="type")
    names: list[str] = []
    for i, o in enumerate(outputs):
        if type(o) is not dict or type(o.get("name")) is not str:
            raise InvalidInput("each output needs a name", field=f"outputs[{i}].name", rule="required")
        if o["name"] not in OUTPUTS:
            raise InvalidInput(f"unknown output {o['name']!r}; available: {list(OUTPUTS)}",
                               field=f"outputs[{i}].name", rule="allowed")
        names.append(o["name"])
    return names


class _Bound:
    """The largest tensor a request may declare: max_rows rows of all features, and no dimension above that."""

    __slots__ = ("rows", "elements", "dim")

    def __init__(self, validator: RowValidator) -> None:
        self.rows = validator.max_rows if validator.max_rows is not None else 2**31
        self.elements = self.rows * max(validator.n, 1)
        self.dim = max(self.rows, validator.n)


def _check_shape(shape: list[int], f: str, bound: _Bound) -> int:
    """The element count of `shape`, checked before any data is touched.

    Python integers do not overflow, so a product of huge dimensions is exact; the checks refuse a shape with no
    elements (whatever its other dimensions) and any dimension or product beyond the request limit, so nothing
    downstream (reshape, NumPy allocation) ever sees such a shape.
    """
    expected = math.prod(shape)
    if expected == 0:
        raise InvalidInput(f"{f}.shape {shape} holds no elements; send at least one row", field=f"{f}.shape",
                           rule="min_items")
    if max(shape) > bound.dim or expected > bound.elements:
        raise InvalidInput(f"{f}.shape {shape} exceeds the limit of {bound.rows} rows", field=f"{f}.shape",
                           rule="max_items")
    return expected


def _tensor(t: Any, i: int, bound: _Bound, bools_absent: bool = False) -> tuple[str, str, list[int], np.ndarray]:
    f = f"inputs[{i}]"
    if type(t) is not dict:
        raise InvalidInput(f"{f} must be a tensor object", field=f, rule="type")
    name, shape, dtype, data = t.get("name"), t.get("shape"), t.get("datatype"), t.get("data")
    if type(name) is not str:
        raise InvalidInput(f"{f}.name must be a string", field=f"{f}.name", rule="required")
    if type(shape) is not list or not shape or any(type(d) is not int or d < 0 for d in shape):
        raise InvalidInput(f"{f}.shape must be a list of non-negative integers", field=f"{f}.shape", rule="type")
    if dtype not in DATATYPES:
        raise InvalidInput(f"{f}.datatype must be one of {list(DATATYPES)}", field=f"{f}.datatype", rule="allowed")
    if type(data) is not list:
        raise InvalidInput(f"{f}.data must be a list", field=f"{f}.data", rule="type")
    expected = _check_shape(shape, f, bound)
    if len(data) > expected:
        raise InvalidInput(f"{f}.data has more than the {expected} elements shape {shape} needs",
                           field=f"{f}.data", rule="shape")
    if bools_absent and dtype in _FLOATS:
        arr = _numbers_at_once(data, len(shape), expected)
        if arr is not None:
            # JSON numbers parse to finite doubles (orjson refuses the rest) or integers below 2**64, all inside
            # FP64's range: only the narrower float types need the check.
            return name, dtype, shape, arr if dtype == "FP64" else _in_float_range(arr, dtype, f)
    flat, kinds = _flatten(data, f, len(shape), expected)
    if len(flat) != expected:
        raise InvalidInput(f"{f}.data has {len(flat)} elements but shape {shape} needs {expected}",
                           field=f"{f}.data", rule="shape")
    return name, dtype, shape, _typed(flat, kinds, dtype, f)


def _flatten(data: list[Any], f: str, rank: int, expected: int) -> tuple[list[Any], set[type]]:
    """The values in row-major order and the set of their Python types.

    The common shapes (flat, or a list of flat rows) are handled with C-level passes (map, chain); a Python loop
    over every value cost about 2 µs per row of 30 features, more than the model call for a linear model. Nesting
    deeper than the tensor's rank, or more values than its shape needs, stops the walk at once (rule max_depth or
    shape) rather than after walking everything a hostile body holds.
    """
    if not data or type(data[0]) is not list:
        kinds = _kinds(data)
        if list in kinds:
            raise InvalidInput(f"{f}.data mixes nested lists and values", field=f"{f}.data", rule="shape")
        return data, kinds
    if all(type(row) is list for row in data):
        flat = list(chain.from_iterable(data))
        kinds = _kinds(flat)
        if list not in kinds:
            return flat, kinds
    out: list[Any] = []

    # Depth-first, row-major flattening, bounded by the rank (depth) and the element count the shape declares.
    def walk(x: list[Any], depth: int) -> None:
        if depth > rank:
            raise InvalidInput(f"{f}.data is nested {depth} deep; shape has rank {rank}", field=f"{f}.data",
                               rule="max_depth")
        for v in x:
            if type(v) is list:
                walk(v, depth + 1)
            else:
                out.append(v)
        if len(out) > expected:
            raise InvalidInput(f"{f}.data has more than the {expected} elements its shape needs",
                               field=f"{f}.data", rule="shape")
    walk(data, 1)
    return out, set(map(type, out))


_ONLY_FLOAT = frozenset({float})


def _kinds(values: list[Any]) -> frozenset[type] | set[type]:
    """The set of the values' Python types. A tensor of JSON numbers with fractions is all float: counting the
    float types (one C-level pass of identity comparisons) proves that in about two thirds of the time it takes to
    build the set, which is only built when the count falls short."""
    if countOf(map(type, values), float) == len(values):
        return _ONLY_FLOAT
    return set(map(type, values))


def _numbers_at_once(data: list[Any], rank: int, expected: int) -> np.ndarray | None:
    """The tensor's values as flat float64 in one NumPy pass, or None when that pass cannot prove them JSON
    numbers laid out as the shape says; the value-by-value path then finds and names the problem.

    Only for a body proven free of booleans (NumPy would read true as 1.0): then a numeric dtype means every value
    was an int or a float; a string, null, object or an integer past 64 bits gives another dtype, ragged or mixed
    nesting a ValueError, nesting deeper than the rank more dimensions.
    """
    try:
        arr = np.array(data)
    except (ValueError, OverflowError, TypeError):
        return None
    if arr.dtype.kind not in "fiu" or arr.ndim > rank or arr.size != expected:
        return None
    return arr.astype(np.float64, copy=False).reshape(-1)


def _in_float_range(arr: np.ndarray, dtype: str, f: str) -> np.ndarray:
    if arr.size and float(np.abs(arr).max()) > _FLOAT_MAX[dtype]:
        raise InvalidInput(f"{f}.data holds a value outside the range of {dtype}", field=f"{f}.data", rule="range")
    return arr


def _typed(flat: list[Any], kinds: set[type], dtype: str, f: str) -> np.ndarray:
    field = f"{f}.data"
    if dtype in _FLOATS:
        if not kinds <= {int, float}:
            raise InvalidInput(f"{field} must hold numbers for {dtype}", field=field, rule="type")
        try:
            arr = np.array(flat, dtype=np.float64)
        except OverflowError as exc:
            raise InvalidInput(f"{field} holds a number too large for {dtype}", field=field, rule="finite") from exc
        return _in_float_range(arr, dtype, f)
    if dtype in _INT_RANGES:
        if not kinds <= {int}:
            raise InvalidInput(f"{field} must hold integers for {dtype}", field=field, rule="type")
        lo, hi = _INT_RANGES[dtype]
        if flat and (min(flat) < lo or max(flat) > hi):
            raise InvalidInput(f"{field} holds a value outside the range of {dtype}", field=field, rule="range")
        return np.array(flat, dtype=np.float64)
    if dtype == "BOOL":
        if not kinds <= {bool}:
            raise InvalidInput(f"{field} must hold true/false for BOOL", field=field, rule="type")
        return np.array(flat, dtype=object)
    # BYTES: JSON strings; the signature decides which features may be categorical text.
    if not kinds <= {str, int, float, bool, type(None)}:
        raise InvalidInput(f"{field} must hold strings for BYTES", field=field, rule="type")
    return np.array(flat, dtype=object)


def datatype_of(a: np.ndarray) -> str:
    k = a.dtype.kind
    if k == "b":
        return "BOOL"
    if k in "iu":
        return "INT64"
    if k == "f":
        return "FP64"
    return "BYTES"


def encode(model_name: str, version: str, req: V2Request, pred: np.ndarray, proba: np.ndarray | None) -> dict[str, Any]:
    wanted = req.outputs if req.outputs is not None else list(OUTPUTS)
    outs: list[dict[str, Any]] = []
    n = len(pred)
    for name in wanted:
        if name == "predict":
            dt = datatype_of(pred)
            data = pred.tolist() if dt == "BYTES" else pred
            if dt == "BYTES":
                data = [str(v) for v in data]
            outs.append({"name": "predict", "shape": [n], "datatype": dt, "data": data})
        elif name == "predict_proba":
            if proba is None:
                raise InvalidInput("predict_proba is only available for classifiers", field="outputs",
                                   rule="allowed")
            outs.append({"name": "predict_proba", "shape": list(proba.shape), "datatype": "FP64",
                         "data": proba.reshape(-1)})
    resp: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": outs}
    if req.id is not None:
        resp["id"] = req.id
    if req.parameters is not None:
        resp["parameters"] = req.parameters
    return resp


def model_metadata(name: str, version: str, sig: Signature, classes: list[Any] | None,
                   is_classifier: bool) -> dict[str, Any]:
    if any(s.type == FeatureType.categorical for s in sig.inputs):
        inputs = [{"name": s.name, "datatype": "BYTES" if s.type == FeatureType.categorical else "FP64",
                   "shape": [-1]} for s in sig.inputs]
    else:
        inputs = [{"name": "input-0", "datatype": "FP64", "shape": [-1, len(sig.inputs)],
                   "parameters": {"features": sig.names}}]
    outputs: list[dict[str, Any]] = [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    if classes is not None:
        outputs[0]["datatype"] = datatype_of(np.asarray(classes))
    if is_classifier:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(classes or [])]})
    return {"name": name, "versions": [version], "platform": "sklearn", "inputs": inputs, "outputs": outputs}
