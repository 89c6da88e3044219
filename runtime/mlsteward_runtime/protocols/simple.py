"""POST /predict: `{"instances": [...]}` or a bare list of rows or named objects."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlsteward_runtime.errors import InvalidInput
from mlsteward_runtime.signature import RowValidator

REQUEST_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"oneOf": [{"type": "array", "items": {}}, {"type": "object"}]},
                    "description": "Rows: positional lists in signature order, or objects keyed by feature name.",
                }
            },
        },
        {"type": "array", "minItems": 1, "items": {}},
    ]
}


def decode(body: Any, validator: RowValidator, bools_absent: bool = False) -> np.ndarray:
    if type(body) is dict:
        if "instances" not in body:
            raise InvalidInput('the body needs an "instances" list', field="instances", rule="required")
        extra = [k for k in body if k != "instances"]
        if extra:
            raise InvalidInput(f"unknown key {extra[0]!r}", field=extra[0], rule="unknown_field")
        return validator.rows(body["instances"], "instances", bools_absent)
    if type(body) is list:
        return validator.rows(body, "instances", bools_absent)
    raise InvalidInput('the body must be an object with "instances" or a list of rows', field="body", rule="type")


def encode(pred: np.ndarray, proba: np.ndarray | None, version: str, request_id: str, ts: float) -> dict[str, Any]:
    out: dict[str, Any] = {"predictions": _arr(pred)}
    if proba is not None:
        out["probabilities"] = proba
    out["version"] = version
    out["timestamp"] = ts
    out["request_id"] = request_id
    return out


def _arr(a: np.ndarray) -> Any:
    # orjson serializes numeric arrays natively (fast); object arrays (text labels) go through lists.
    return a.tolist() if a.dtype.kind in "OUS" else a
