"""The shadow's kept answers (bounded by count, bytes and time), the pair rules, and the exported ShadowStats."""

from __future__ import annotations

import math
import secrets
import tracemalloc

import numpy as np
import orjson
import pytest

from mlsteward_runtime.contracts import ShadowStats
from mlsteward_runtime.router.pairs import (
    ANSWER_OVERHEAD,
    ANSWERED,
    PENDING,
    TOO_LARGE,
    ShadowAnswers,
    error_diffs,
    paired_cell,
)
from mlsteward_runtime.router.stats import ShadowCounters


def accounted(m: ShadowAnswers) -> int:
    return sum(e.cost(n) for n, e in m._items.items())


def test_count_bound_forgets_the_oldest():
    m = ShadowAnswers(capacity=3, max_bytes=10**9, window_s=60, max_answer_bytes=1000)
    for i in range(5):
        m.mirrored(f"n{i}", "v2", None, now=100.0)
    assert len(m) == 3 and m.evicted == 2
    assert [m.get(f"n{i}") is not None for i in range(5)] == [False, False, True, True, True]
    assert m.bytes == accounted(m)


def test_byte_bound_is_never_exceeded():
    predictions = [0.5] * 10
    one = ANSWER_OVERHEAD + 32 + len(orjson.dumps(predictions))
    m = ShadowAnswers(capacity=10**6, max_bytes=3 * one + 10, window_s=60, max_answer_bytes=1000)
    nonces = [secrets.token_hex(16) for _ in range(10)]
    for n in nonces:
        m.mirrored(n, "v2", None, now=1.0)
        assert m.bytes <= m.max_bytes
        assert m.answered(n, ANSWERED, predictions, now=1.0)
        assert m.bytes <= m.max_bytes and m.bytes == accounted(m)
    assert len(m) == 3 and m.evicted == 7
    assert [m.get(n) is not None for n in nonces] == [False] * 7 + [True] * 3
    assert orjson.loads(m.get(nonces[-1]).body) == predictions


def test_answers_older_than_the_window_are_dropped_not_evicted():
    m = ShadowAnswers(capacity=100, max_bytes=10**9, window_s=60, max_answer_bytes=1000)
    m.mirrored("old", "v2", None, now=0.0)
    m.mirrored("recent", "v2", None, now=30.0)
    m.mirrored("new", "v2", None, now=61.0)
    assert m.get("old") is None and m.get("recent") is not None and len(m) == 2
    assert m.evicted == 0 and m.bytes == accounted(m)


def test_large_answers_are_not_kept_and_taken_entries_stay_gone():
    m = ShadowAnswers(capacity=100, max_bytes=10**9, window_s=60, max_answer_bytes=16)
    m.mirrored("a", "v2", "regression", now=1.0)
    assert m.get("a").state == PENDING
    assert m.answered("a", ANSWERED, [1.0] * 10, now=1.0)
    assert (m.get("a").state, m.get("a").body) == (TOO_LARGE, None)
    assert m.take("a").kind == "regression"
    assert m.take("a") is None and not m.answered("a", ANSWERED, [1.0], now=1.0)
    assert len(m) == 0 and m.bytes == 0


def test_accounted_bytes_cover_what_is_allocated():
    n = 5000
    m = ShadowAnswers(capacity=10**6, max_bytes=10**12, window_s=60, max_answer_bytes=10**6)
    m.mirrored("warm" * 8, "v2", None, now=1.0)  # the map's first allocations aside
    m.answered("warm" * 8, ANSWERED, [1.0], now=1.0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            nonce = secrets.token_hex(16)
            m.mirrored(nonce, "v2", "regression", now=1.0 + i * 1e-6)
            m.answered(nonce, ANSWERED, [1.5, float(i)], now=1.0 + i * 1e-6)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used <= m.bytes, (used / n, m.bytes / n)


def test_pair_rules():
    assert paired_cell("a", ["a"], ["b"]) == "served_only"
    assert paired_cell(["a", "b"], ["a", "b"], ["a", "b"]) == "both_correct"
    assert paired_cell(["a", "b"], ["a", "c"], ["a", "b"]) == "shadow_only"  # every row must match
    assert paired_cell(["a", "b"], ["a", "c"], ["a"]) == "neither"
    assert error_diffs(1.0, [3.0], [0.0]) == [-1.0]
    assert error_diffs([1.0, 2.0], [1.0], [1.0]) == []  # row counts differ
    # Not numbers (booleans, strings, integers past the float range) leave their row out.
    assert error_diffs([1.0, True, "x", 10**400, 2.0], [0.0, 1, 1, 1, 2.0], [1.0, 1, 1, 1, 5.0]) == [-1.0, 3.0]


def test_export_is_exactly_shadow_stats_with_kind():
    c = ShadowCounters("v2", 16)
    c.kind = "regression"
    c.mirrored, c.compared, c.agreed, c.rows_compared, c.rows_agreed = 3, 3, 1, 6, 2
    for x in (1.0, 3.0, 8.0):
        c.add_diff(x)
    c.add_error_pair([0.5, -0.5, 2.0])
    c.latency.observe(2.0)
    out = c.export()
    assert isinstance(out, ShadowStats)
    assert ShadowStats.model_validate(orjson.loads(out.model_dump_json())) == out
    assert out.kind == "regression" and (out.diff_n, out.pairs, out.error_diff_n) == (3, 1, 3)
    assert out.diff_mean == pytest.approx(np.mean([1.0, 3.0, 8.0]))
    assert out.diff_m2 == pytest.approx(np.var([1.0, 3.0, 8.0]) * 3)
    assert out.error_diff_m2 == pytest.approx(np.var([0.5, -0.5, 2.0]) * 3)
    plain = ShadowCounters("v3", 16)
    plain.add_pair("shadow_only")
    out = plain.export()
    assert (out.kind, out.pairs, out.shadow_only) == ("classification", 1, 1)


def test_differences_near_the_float_limits_never_make_the_stats_infinite():
    c = ShadowCounters("v2", 16)
    c.kind = "regression"
    assert c.add_diff(1e200) and not c.add_diff(0.0) and not c.add_diff(math.inf)
    assert c.add_error_pair([1e200, -1e200, 1.0]) == 1 and c.add_error_pair([math.nan]) == 0
    out = c.export()
    assert (out.diff_n, out.error_diff_n, out.pairs) == (1, 1, 1)
    values = orjson.loads(out.model_dump_json())
    assert all(math.isfinite(values[k]) for k in ("diff_mean", "diff_m2", "error_diff_mean", "error_diff_m2"))
