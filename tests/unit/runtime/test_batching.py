"""Micro-batching: results equal one model call per request; a full queue answers 503 with Retry-After."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlsteward_runtime.batching import Batcher
from mlsteward_runtime.errors import Overloaded


def _predictor(est):
    def predict(X):
        return est.predict(X), est.predict_proba(X)
    return predict


def _waiting_regime(b: Batcher) -> None:
    # Calls that look expensive and arrivals that look frequent: the first request of a batch waits for company.
    b.cost.fixed = 1.0
    b.gap = 1e-3
    b._avg_requests = 2.0


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=1, max_size=25), max_batch=st.integers(1, 40),
       wait_ms=st.sampled_from([0.0, 0.5, 2.0]), seed=st.integers(0, 2**16))
def test_batched_equals_unbatched(cancer_rf, sizes, max_batch, wait_ms, seed):
    est, X = cancer_rf
    rng = np.random.default_rng(seed)
    chunks = [X[rng.integers(0, len(X), n)] + rng.normal(0, 0.1, (n, X.shape[1])) for n in sizes]
    calls: list[int] = []

    async def main():
        b = Batcher(_predictor(est), max_batch_size=max_batch, max_wait_ms=wait_ms, on_batch=calls.append)
        _waiting_regime(b)  # so both flush modes are exercised
        return await asyncio.gather(*(b.submit(c) for c in chunks))

    results = asyncio.run(main())
    for c, (pred, proba) in zip(chunks, results):
        np.testing.assert_array_equal(pred, est.predict(c))
        np.testing.assert_array_equal(proba, est.predict_proba(c))
    assert sum(calls) == sum(sizes)
    if len(sizes) > 1 and max_batch >= 2 * max(sizes):
        assert len(calls) < len(sizes)  # some requests really shared a model call


def test_full_queue_is_overloaded(iris_lr):
    async def main():
        b = Batcher(_predictor(iris_lr), max_batch_size=1000, max_wait_ms=50, max_queue=3)
        _waiting_regime(b)
        X = np.zeros((1, 4))
        tasks = [asyncio.ensure_future(b.submit(X)) for _ in range(5)]
        return await asyncio.gather(*tasks, return_exceptions=True)

    out = asyncio.run(main())
    errors = [r for r in out if isinstance(r, Overloaded)]
    assert len(errors) == 2 and errors[0].status_code == 503 and errors[0].headers["Retry-After"] == "1"
    assert sum(1 for r in out if isinstance(r, tuple)) == 3


def test_one_bad_request_does_not_fail_the_batch():
    def predict(X):
        if (X < 0).any():
            raise ValueError("negative")
        return X[:, 0] * 2, None

    async def main():
        b = Batcher(predict, max_batch_size=10, max_wait_ms=5)
        _waiting_regime(b)
        return await asyncio.gather(b.submit(np.array([[1.0]])), b.submit(np.array([[-1.0]])),
                                    b.submit(np.array([[3.0]])), return_exceptions=True)

    a, bad, c = asyncio.run(main())
    assert a[0].tolist() == [2.0] and c[0].tolist() == [6.0] and isinstance(bad, ValueError)
