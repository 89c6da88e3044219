"""Config reload, stats that merge across replicas, and bandit routing driven by feedback, over real HTTP."""

from __future__ import annotations

import random
from collections import Counter

from mlsteward_runtime.contracts import RouterStats
from mlsteward_runtime.router.stats import merge_version_stats

from router_harness import config, wait_for


def test_config_reload_moves_traffic_and_keeps_stats(backends, router_factory):
    a, b = backends("v1"), backends("v2")
    rr = router_factory(config(("v1", a.url, 100), ("v2", b.url, 0)))
    for _ in range(5):
        assert rr.predict().headers["x-model-version"] == "v1"
    started = rr.stats()["started"]
    rr.write_config(config(("v1", a.url, 0), ("v2", b.url, 100)))
    wait_for(lambda: rr.predict().headers["x-model-version"] == "v2", what="traffic on v2")
    assert all(rr.predict().headers["x-model-version"] == "v2" for _ in range(5))
    stats = rr.stats()
    assert stats["versions"]["v1"]["requests"] == len(a.received) >= 5 and stats["started"] == started


def test_invalid_config_is_rejected_and_the_old_one_kept(backends, router_factory):
    a, b = backends("v1"), backends("v2")
    rr = router_factory(config(("v1", a.url, 100), ("v2", b.url, 0)))
    rr.config_path.write_text('{"deployment": "iris", "model": "iris", "backends": []}')
    wait_for(lambda: 'mlsteward_router_config_reloads_total{result="invalid"} 1.0' in rr.client.get("/metrics").text,
             what="rejected reload")
    assert rr.predict().headers["x-model-version"] == "v1"
    rr.write_config(config(("v1", a.url, 0), ("v2", b.url, 100)))
    wait_for(lambda: rr.predict().headers["x-model-version"] == "v2", what="a later valid config applies")


def test_stats_of_replicas_merge_by_summing(backends, router_factory):
    a, b = backends("v1"), backends("v2", fail_status=500)
    cfg = config(("v1", a.url, 50), ("v2", b.url, 50), stable_version="v1")
    r1, r2 = router_factory(cfg), router_factory(cfg)
    for rr, n in ((r1, 30), (r2, 50)):
        for _ in range(n):
            assert rr.predict().status_code == 200
    s1, s2 = RouterStats.model_validate(r1.stats()), RouterStats.model_validate(r2.stats())
    assert s1.replica != s2.replica
    merged = merge_version_stats([s1, s2])
    # Every client request reached v1 either directly or by fallback, and every v2 attempt failed over.
    assert merged["v1"].requests == 80
    assert merged["v2"].requests == merged["v2"].errors == merged["v2"].fallbacks > 0
    for v, m in merged.items():
        buckets = list(m.latency_buckets.values())
        assert buckets == sorted(buckets) and buckets[-1] == m.requests, (v, m.latency_buckets)
        assert m.latency_buckets == {k: s1.versions[v].latency_buckets[k] + s2.versions[v].latency_buckets[k]
                                     for k in m.latency_buckets}
    q = s1.versions["v1"].latency_ms
    assert q.p50 is not None and q.p50 <= q.p95 <= q.p99


def test_thompson_routing_learns_from_feedback(backends, router_factory):
    a, b = backends("v1"), backends("v2")
    rr = router_factory(config(("v1", a.url, 50), ("v2", b.url, 50), strategy="ThompsonSampling",
                               metric_kind="binary"))
    rng = random.Random(3)
    p = {"v1": 0.2, "v2": 0.8}
    arms = []
    for _ in range(300):
        r = rr.predict()
        version = r.headers["x-model-version"]
        arms.append(version)
        reward = 1.0 if rng.random() < p[version] else 0.0
        assert rr.client.post("/v1/feedback", json={"request_id": r.headers["x-request-id"],
                                                     "reward": reward}).status_code == 200
    late = Counter(arms[-100:])
    assert late["v2"] >= 80, late


def test_bandit_starts_from_the_configured_priors(backends, router_factory):
    a, b = backends("v1"), backends("v2")
    priors = {"v1": {"n": 1000, "sum": 900, "sumsq": 900}, "v2": {"n": 1000, "sum": 100, "sumsq": 100}}
    rr = router_factory(config(("v1", a.url, 0), ("v2", b.url, 100), strategy="EpsilonGreedy", epsilon=0.0,
                               outcome_priors=priors))
    assert all(rr.predict().headers["x-model-version"] == "v1" for _ in range(20))
    # Minimizing flips the preference on the same evidence.
    rr.write_config(config(("v1", a.url, 0), ("v2", b.url, 100), strategy="EpsilonGreedy", epsilon=0.0,
                           outcome_priors=priors, goal="minimize"))
    wait_for(lambda: rr.router.state.config.goal == "minimize", what="reload")
    assert all(rr.predict().headers["x-model-version"] == "v2" for _ in range(20))
