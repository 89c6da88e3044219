"""Signature inference, consistency checks, golden rows and row validation (with property tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlsteward_runtime.contracts import FeatureType, InputSpec, OutputKind, Signature
from mlsteward_runtime.errors import InvalidInput
from mlsteward_runtime.signature import RowValidator, check_signature, golden_rows, infer_signature

MIXED = Signature(
    inputs=[
        InputSpec(name="age", type=FeatureType.integer, min=0, max=130),
        InputSpec(name="income", min=0.0),
        InputSpec(name="plan", type=FeatureType.categorical, allowed=["basic", "pro"]),
        InputSpec(name="active", type=FeatureType.boolean),
        InputSpec(name="score", required=False),
    ]
)


def test_infer_and_check(iris_lr):
    sig = infer_signature(iris_lr)
    assert sig.names == ["x0", "x1", "x2", "x3"]
    assert sig.output.kind == OutputKind.class_ and sig.output.classes == [0, 1, 2]
    assert check_signature(sig, iris_lr) == []
    named = infer_signature(iris_lr, ["a", "b", "c", "d"])
    assert named.names == ["a", "b", "c", "d"]
    bad = Signature(inputs=sig.inputs[:3], output=sig.output)
    assert any("3 inputs" in p for p in check_signature(bad, iris_lr))
    wrong_classes = Signature(inputs=sig.inputs, output={"kind": "class", "classes": [0, 1]})
    assert any("classes" in p for p in check_signature(wrong_classes, iris_lr))


def test_infer_regression(iris_reg):
    sig = infer_signature(iris_reg)
    assert sig.output.kind == OutputKind.regression and len(sig.inputs) == 3
    assert check_signature(Signature(inputs=sig.inputs, output={"kind": "class"}), iris_reg)


def test_golden_rows_validate():
    rows = golden_rows(MIXED, n=5)
    X = RowValidator(MIXED).rows(rows)
    assert X.shape == (5, 5)


@pytest.mark.parametrize(
    "rows,field,rule",
    [
        ([[1, 2.0, "basic", True]], "instances[0]", "feature_count"),
        ([[1.5, 2.0, "basic", True, None]], "instances[0].age", "integer"),
        ([[200, 2.0, "basic", True, None]], "instances[0].age", "maximum"),
        ([[1, -1, "basic", True, None]], "instances[0].income", "minimum"),
        ([[1, "2", "basic", True, None]], "instances[0].income", "type"),
        ([[1, 2, "gold", True, None]], "instances[0].plan", "allowed"),
        ([[1, 2, "basic", "yes", None]], "instances[0].active", "type"),
        ([[None, 2, "basic", True, None]], "instances[0].age", "required"),
        ([{"age": 1, "income": 2, "plan": "pro", "active": False, "zip": 1}], "instances[0].zip", "unknown_feature"),
        ([{"income": 2, "plan": "pro", "active": False}], "instances[0].age", "required"),
        ([], "instances", "min_items"),
        ("x", "instances", "type"),
        ([[1, 2, "basic", True, None], 7], "instances[1]", "type"),
    ],
)
def test_mixed_errors_name_field_and_rule(rows, field, rule):
    with pytest.raises(InvalidInput) as ei:
        RowValidator(MIXED).rows(rows)
    assert (ei.value.field, ei.value.rule) == (field, rule)
    assert ei.value.status_code == 422


def test_named_objects_and_optional():
    X = RowValidator(MIXED).rows([{"age": 3, "income": 1.5, "plan": "pro", "active": True}])
    assert X.dtype == object and X[0, 0] == 3 and X[0, 3] == 1.0 and math.isnan(X[0, 4])


def test_max_rows():
    v = RowValidator(Signature(inputs=[InputSpec(name="a")]), max_rows=3)
    with pytest.raises(InvalidInput) as ei:
        v.rows([[1]] * 4)
    assert ei.value.rule == "max_items"


NUM = Signature(inputs=[InputSpec(name="a", min=-10, max=10), InputSpec(name="b"), InputSpec(name="n", type="integer")])
json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
)


def _reference_ok(row) -> bool:
    """The rules for NUM written independently of the validator, to compare against it."""
    if not isinstance(row, list) or len(row) != 3:
        return False
    for j, v in enumerate(row):
        if type(v) not in (int, float):
            return False
        x = float(v) if abs(v) < 1e308 else math.inf
        if not math.isfinite(x):
            return False
        if j == 0 and not -10 <= x <= 10:
            return False
        if j == 2 and not x.is_integer():
            return False
    return True


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.lists(json_scalar, min_size=2, max_size=4), json_scalar), min_size=1, max_size=5))
def test_numeric_validator_matches_reference(rows):
    v = RowValidator(NUM)
    ok = all(_reference_ok(r) for r in rows)
    try:
        X = v.rows(rows)
    except InvalidInput as exc:
        assert not ok, exc.to_json()
        assert exc.field and exc.rule
        return
    assert ok
    np.testing.assert_array_equal(X, np.array(rows, dtype=np.float64))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.floats(-10, 10), min_size=3, max_size=3), min_size=1, max_size=20))
def test_matrix_equals_rows(rows):
    rows = [[a, b, float(round(c))] for a, b, c in rows]
    v = RowValidator(NUM)
    np.testing.assert_array_equal(v.matrix(np.array(rows)), v.rows(rows))
