"""Outcomes nobody can forge or break: random request ids a client cannot choose, feedback only with the token
of the prediction, bounded rewards, no token valid once the tokens file is gone, failed authentications slowed
down per source."""

from __future__ import annotations

import math
from pathlib import Path

from router_harness import config, wait_for

GOOD = "s3cr3t-token-alpha-0123456789"
OTHER = "s3cr3t-token-beta-9876543210"


def write_tokens(path: Path, *tokens: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{t}\n" for t in tokens))
    tmp.replace(path)


def test_request_ids_are_random_and_a_client_cannot_choose_one(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)))
    # The random part of a signed id is its nonce (the id the backend is sent).
    ids = [rr.predict().headers["x-request-id"].split(".")[0] for _ in range(40)]
    assert len(set(ids)) == 40 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # 128 random bits: consecutive ids differ in about half their bits, never by a small step.
    flips = [bin(int(x, 16) ^ int(y, 16)).count("1") for x, y in zip(ids, ids[1:])]
    assert 40 < sum(flips) / len(flips) < 88 and min(abs(int(x, 16) - int(y, 16)) for x, y in zip(ids, ids[1:])) > 2**64
    # A client sending someone's id as its own x-request-id gets a fresh one; feedback to the chosen id is a 404.
    r = rr.predict(headers={"x-request-id": "victim-0001"})
    assert r.headers["x-request-id"] != "victim-0001" and r.headers["x-correlation-id"] == "victim-0001"
    assert rr.client.post("/v1/feedback", json={"request_id": "victim-0001", "reward": 1}).status_code == 404
    ok = rr.client.post("/v1/feedback", json={"request_id": r.headers["x-request-id"], "reward": 1})
    assert ok.status_code == 200 and ok.json()["version"] == "v1"


def test_feedback_needs_the_token_of_the_prediction(backends, router_factory, tmp_path: Path):
    a = backends("v1")
    tokens = tmp_path / "tokens"
    write_tokens(tokens, GOOD, OTHER)
    rr = router_factory(config(("v1", a.url, 100), auth={"tokens_file": str(tokens)}))
    rid = rr.predict(headers={"authorization": f"Bearer {GOOD}"}).headers["x-request-id"]
    body = {"request_id": rid, "reward": 1.0}
    assert rr.client.post("/v1/feedback", json=body).status_code == 401
    assert rr.client.post("/v1/feedback", json=body, headers={"authorization": "Bearer nope"}).status_code == 403
    other = rr.client.post("/v1/feedback", json=body, headers={"authorization": f"Bearer {OTHER}"})
    assert other.status_code == 403 and other.json()["field"] == "request_id"
    assert rr.stats()["versions"]["v1"]["outcomes"] == 0
    ok = rr.client.post("/v1/feedback", json=body, headers={"x-api-key": GOOD})
    assert ok.status_code == 200 and rr.stats()["versions"]["v1"]["outcomes"] == 1


def test_rewards_are_bounded_and_statistics_stay_finite(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)))
    rids = [rr.predict().headers["x-request-id"] for _ in range(4)]
    for reward in (1e10, -1e10, 1e308, 10**30):
        r = rr.client.post("/v1/feedback", json={"request_id": rids[0], "reward": reward})
        assert r.status_code == 422, (reward, r.text)
        assert r.json()["field"] == "reward" and "[-1e+09, 1e+09]" in r.json()["rule"]
    # At the bounds they are accepted, and the statistics stay finite.
    for rid, reward in zip(rids, (1e9, 1e9, -1e9, 1e9)):
        assert rr.client.post("/v1/feedback", json={"request_id": rid, "reward": reward}).status_code == 200
    v = rr.stats()["versions"]["v1"]
    assert v["outcomes"] == 4 and all(math.isfinite(x) for x in v.values() if isinstance(x, float))


def test_the_reward_range_is_a_setting(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)), reward_min=0.0, reward_max=10.0)
    rid = rr.predict().headers["x-request-id"]
    r = rr.client.post("/v1/feedback", json={"request_id": rid, "reward": 10.5})
    assert r.status_code == 422 and r.json()["rule"] == "finite number within [0, 10]"
    assert rr.client.post("/v1/feedback", json={"request_id": rid, "reward": 10}).status_code == 200


def test_a_deleted_tokens_file_means_no_token_is_valid(backends, router_factory, tmp_path: Path):
    a = backends("v1")
    tokens = tmp_path / "tokens"
    write_tokens(tokens, GOOD)
    rr = router_factory(config(("v1", a.url, 100), auth={"tokens_file": str(tokens)}))
    assert rr.predict(headers={"x-api-key": GOOD}).status_code == 200
    tokens.unlink()
    wait_for(lambda: rr.predict(headers={"x-api-key": GOOD}).status_code == 403, what="token revoked")
    write_tokens(tokens, GOOD)
    wait_for(lambda: rr.predict(headers={"x-api-key": GOOD}).status_code == 200, what="token back")


def test_failed_authentications_are_rate_limited_per_source(backends, router_factory, tmp_path: Path):
    a = backends("v1")
    tokens = tmp_path / "tokens"
    write_tokens(tokens, GOOD)
    # A trusted proxy (loopback) lets the test speak for two sources.
    rr = router_factory(config(("v1", a.url, 100), auth={"tokens_file": str(tokens)}),
                        auth_failure_burst=3, auth_failure_per_s=0.01, trusted_proxies=["127.0.0.1"])
    attacker = {"x-forwarded-for": "203.0.113.7"}
    codes = [rr.predict(headers={**attacker, "x-api-key": f"guess-{i}"}).status_code for i in range(5)]
    assert codes == [403, 403, 403, 429, 429]
    blocked = rr.predict(headers={**attacker, "x-api-key": GOOD})
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert blocked.json()["field"] == "rate"
    # Another source is not held back by the attacker's failures.
    assert rr.predict(headers={"x-forwarded-for": "203.0.113.8", "x-api-key": GOOD}).status_code == 200
    assert 'mlsteward_router_refusals_total{reason="auth_failures"} 3.0' in rr.client.get("/metrics").text
