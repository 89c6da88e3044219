"""The router's outcome statistics stay exact for a metric with a large mean: two real routers record rewards
near the bound, their /v1/router/stats merge (as the operator merges replicas) to numpy's mean and variance."""

from __future__ import annotations

import numpy as np
import pytest
from mlsteward_runtime.contracts import RouterStats
from mlsteward_runtime.router.stats import merge_version_stats
from mlsteward_runtime.stats.ab import ArmStats

from router_harness import config


def test_rewards_near_the_bound_merge_to_numpys_variance(backends, router_factory):
    a = backends("v1")
    routers = [router_factory(config(("v1", a.url, 100))) for _ in range(2)]
    rng = np.random.default_rng(2)
    rewards = 1e9 - rng.integers(0, 20, size=60).astype(float)
    for i, reward in enumerate(rewards):
        rr = routers[i % 3 == 0]
        rid = rr.predict().headers["x-request-id"]
        assert rr.client.post("/v1/feedback", json={"request_id": rid, "reward": reward}).status_code == 200
    merged = merge_version_stats([RouterStats.model_validate(rr.stats()) for rr in routers])["v1"]
    arm = ArmStats.from_version_stats(merged)
    assert arm.n == rewards.size
    assert arm.mean == pytest.approx(float(np.mean(rewards)), rel=1e-12)
    assert arm.var == pytest.approx(float(np.var(rewards, ddof=1)), rel=1e-6)
    assert merged.outcome_m2 == pytest.approx(float(np.sum((rewards - rewards.mean()) ** 2)), rel=1e-6)
