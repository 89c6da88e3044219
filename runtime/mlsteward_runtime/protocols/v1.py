"""KServe V1: POST /v1/models/{name}:predict with {"instances": [...]} -> {"predictions": [...]}."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlsteward_runtime.errors import InvalidInput
from mlsteward_runtime.protocols.simple import _arr
from mlsteward_runtime.signature import RowValidator

REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["instances"],
    "properties": {
        "instances": {
            "type": "array",
            "minItems": 1,
            "items": {"oneOf": [{"type": "array", "items": {}}, {"type": "object"}]},
        }
    },
}


def decode(body: Any, validator: RowValidator, bools_absent: bool = False) -> np.ndarray:
    if type(body) is not dict:
        raise InvalidInput('the body must be an object with "instances"', field="body", rule="type")
    if "instances" not in body:
        raise InvalidInput('the body needs an "instances" list', field="instances", rule="required")
    return validator.rows(body["instances"], "instances", bools_absent)


def encode(pred: np.ndarray) -> dict[str, Any]:
    return {"predictions": _arr(pred)}


def model_info(name: str, version: str, ready: bool) -> dict[str, Any]:
    return {"name": name, "version": version, "ready": ready}
