"""Access control of the router over real HTTP: tokens from a watched file, 401/403, rotation without a restart,
the rate limit's 429 and Retry-After, open health endpoints, and no token in logs or metrics."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mlsteward_runtime.contracts import RateLimitConfig
from mlsteward_runtime.router.access import RateLimiter, client_id, digest

from router_harness import config, wait_for

GOOD = "s3cr3t-token-alpha-0123456789"
OTHER = "s3cr3t-token-beta-9876543210"


def write_tokens(path: Path, *tokens: str) -> None:
    # Write-then-rename, as the kubelet swaps a Secret volume's files atomically.
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# accepted tokens\n" + "".join(f"  {t}\n\n" for t in tokens))
    tmp.replace(path)


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    write_tokens(path, GOOD)
    return path


def test_missing_wrong_and_right_tokens(backends, router_factory, tokens_file):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), auth={"tokens_file": str(tokens_file)}))

    missing = rr.predict()
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    body = missing.json()
    assert body["error"] == "unauthenticated" and body["field"] == "authorization" and "x-api-key" in body["rule"]

    wrong = rr.predict(headers={"authorization": f"Bearer {OTHER}"})
    assert wrong.status_code == 403
    assert wrong.json()["error"] == "forbidden" and wrong.json()["field"] == "authorization"
    assert rr.predict(headers={"authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    assert not a.received  # nothing refused reached a backend

    ok = rr.predict(headers={"authorization": f"Bearer {GOOD}"})
    assert ok.status_code == 200 and ok.headers["x-model-version"] == "v1"
    assert rr.predict(headers={"x-api-key": GOOD}).status_code == 200
    assert rr.predict(headers={"authorization": f"bearer {GOOD}"}).status_code == 200
    # Every protected path asks, metadata and feedback included.
    assert rr.client.get("/v2/models/iris").status_code == 401
    assert rr.client.post("/v1/feedback", json={"request_id": "x", "reward": 1}).status_code == 401
    assert rr.client.get("/v2/models/iris", headers={"x-api-key": GOOD}).status_code == 200
    # The credentials stay at the router.
    forwarded = [r["headers"] for r in a.received]
    assert len(forwarded) == 3
    assert all("authorization" not in h and "x-api-key" not in h for h in forwarded)

    metrics = rr.client.get("/metrics").text
    assert 'mlsteward_router_refusals_total{reason="unauthenticated"} 4.0' in metrics
    assert 'mlsteward_router_refusals_total{reason="forbidden"} 1.0' in metrics


def test_health_readiness_metrics_and_stats_stay_open(backends, router_factory, tokens_file):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), auth={"tokens_file": str(tokens_file)},
                               rate_limit={"requests_per_second": 0.01, "burst": 1}))
    assert rr.client.get("/healthz").status_code == 200
    wait_for(lambda: rr.client.get("/readyz").status_code == 200, what="router ready")
    for _ in range(3):
        assert rr.client.get("/metrics").status_code == 200
        assert rr.client.get("/v1/router/stats").status_code == 200
        assert rr.client.get("/healthz").status_code == 200


def test_rotation_applies_without_a_restart(backends, router_factory, tokens_file):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), auth={"tokens_file": str(tokens_file)}))
    old, new = {"authorization": f"Bearer {GOOD}"}, {"authorization": f"Bearer {OTHER}"}
    assert rr.predict(headers=old).status_code == 200
    assert rr.predict(headers=new).status_code == 403
    router_before = rr.router

    write_tokens(tokens_file, OTHER)
    wait_for(lambda: rr.predict(headers=new).status_code == 200, what="the new token accepted")
    assert rr.predict(headers=old).status_code == 403
    assert rr.router is router_before and rr.server.thread.is_alive()

    # An emptied file accepts nothing; a later valid one applies again.
    write_tokens(tokens_file)
    wait_for(lambda: rr.predict(headers=new).status_code == 403, what="no token accepted")
    write_tokens(tokens_file, GOOD, OTHER)
    wait_for(lambda: rr.predict(headers=old).status_code == 200, what="both tokens accepted")
    assert rr.predict(headers=new).status_code == 200


def test_rate_limit_answers_429_with_retry_after_per_token(backends, router_factory, tokens_file):
    a = backends("v1")
    write_tokens(tokens_file, GOOD, OTHER)
    rr = router_factory(config(("v1", a.url, 100), auth={"tokens_file": str(tokens_file)},
                               rate_limit={"requests_per_second": 0.5, "burst": 3, "by": "token"}))
    good = {"authorization": f"Bearer {GOOD}"}
    assert [rr.predict(headers=good).status_code for _ in range(3)] == [200, 200, 200]
    limited = rr.predict(headers=good)
    assert limited.status_code == 429
    # Empty bucket at 0.5/s: a whole token is two seconds away (ceil, never 0).
    assert limited.headers["retry-after"] == "2"
    body = limited.json()
    assert body["error"] == "rate_limited" and body["retry_after"] == 2 and body["field"] == "rate"
    assert "0.5 requests per second" in body["rule"] and "bursts of 3" in body["rule"]
    # Buckets are per token: another client still has its burst.
    assert rr.predict(headers={"x-api-key": OTHER}).status_code == 200
    assert len(a.received) == 4
    assert 'mlsteward_router_refusals_total{reason="rate_limited"} 1.0' in rr.client.get("/metrics").text


def test_rate_limit_without_auth_goes_by_source(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), rate_limit={"requests_per_second": 1, "burst": 2}))
    codes = [rr.predict().status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert rr.client.get("/healthz").status_code == 200


def test_rate_limit_by_token_needs_auth(backends, router_factory, tmp_path):
    from mlsteward_runtime.router.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="rate_limit.by: token needs auth"):
        parse_config('{"deployment": "d", "model": "m", "backends": [{"version": "v", "url": "http://x"}], '
                     '"rate_limit": {"requests_per_second": 1, "burst": 1, "by": "token"}}')


def test_no_token_in_logs_or_metrics(backends, router_factory, tokens_file, caplog):
    a = backends("v1")
    caplog.set_level(logging.DEBUG, logger="mlsteward")
    rr = router_factory(config(("v1", a.url, 100), auth={"tokens_file": str(tokens_file)},
                               rate_limit={"requests_per_second": 0.01, "burst": 1, "by": "token"}))
    rr.predict(headers={"authorization": f"Bearer {GOOD}"})
    rr.predict(headers={"authorization": f"Bearer {GOOD}"})  # rate limited
    rr.predict(headers={"x-api-key": OTHER})  # forbidden
    write_tokens(tokens_file, OTHER)
    wait_for(lambda: rr.predict(headers={"x-api-key": OTHER}).status_code == 200, what="rotation")
    text = caplog.text + rr.client.get("/metrics").text + rr.client.get("/v1/router/stats").text
    assert "Refused request reason=forbidden" in caplog.text  # the refusals were logged...
    assert client_id(digest(GOOD)) in caplog.text  # ...naming the client by a short hash
    for secret in (GOOD, OTHER, "s3cr3t"):
        assert secret not in text


def test_buckets_refill_and_stay_bounded():
    now = [0.0]
    limiter = RateLimiter(RateLimitConfig(requests_per_second=2, burst=2), max_keys=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 1]
    now[0] += 0.5  # one token back at 2/s
    assert limiter.take("a") == 0 and limiter.take("a") == 1
    for key in "bcdef":
        limiter.take(key)
    assert len(limiter) == 3  # the least recently used keys went first
    assert limiter.take("a") == 0  # "a" was pushed out and comes back with a full bucket
