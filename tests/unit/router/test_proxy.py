"""Proxying through the router over real HTTP: weights, ids, sticky users, fallback, errors, bad input."""

from __future__ import annotations

import math
from collections import Counter

from router_harness import config, dead_url, wait_for


def within_binomial(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_weights_split_traffic_and_versions_come_back(backends, router_factory):
    a, b = backends("v1"), backends("v2")
    rr = router_factory(config(("v1", a.url, 80), ("v2", b.url, 20), stable_version="v1"))
    n = 400
    seen = Counter(rr.predict().headers["x-model-version"] for _ in range(n))
    assert set(seen) == {"v1", "v2"}
    assert within_binomial(seen["v2"], n, 0.2), seen
    assert len(a.received) == seen["v1"] and len(b.received) == seen["v2"]
    stats = rr.stats()["versions"]
    assert stats["v1"]["requests"] == seen["v1"] and stats["v2"]["requests"] == seen["v2"]


def test_request_id_is_generated_once_and_passed_through(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)))
    r = rr.predict()
    rid = r.headers["x-request-id"]
    # The backend is sent the id's nonce (predictors take short ids); the client gets the signed id.
    assert rid and a.received[-1]["headers"]["x-request-id"] == rid.split(".")[0]
    assert r.headers["x-mlsteward-arm"] == "v1"
    # A client's own id never becomes the request id (feedback is joined by it); it travels as the correlation id.
    r = rr.predict(headers={"x-request-id": "client-chosen-1"})
    assert r.headers["x-request-id"] not in ("client-chosen-1", rid)
    assert r.headers["x-correlation-id"] == "client-chosen-1"
    assert a.received[-1]["headers"]["x-request-id"] == r.headers["x-request-id"].split(".")[0]
    assert a.received[-1]["headers"]["x-correlation-id"] == "client-chosen-1"


def test_every_protocol_path_is_proxied(backends, router_factory):
    a = backends("v1", label="setosa")
    rr = router_factory(config(("v1", a.url, 100)))
    r = rr.client.post("/v1/models/iris:predict", json={"instances": [[1, 2, 3, 4]]})
    assert r.status_code == 200 and r.json() == {"predictions": ["setosa"]}
    r = rr.client.post("/v2/models/iris/infer", json={"inputs": [{"name": "x", "shape": [1, 4],
                                                                 "datatype": "FP64", "data": [1, 2, 3, 4]}]})
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == ["setosa"]
    assert [x["path"] for x in a.received] == ["/v1/models/iris:predict", "/v2/models/iris/infer"]


def test_metadata_goes_to_the_stable_version(backends, router_factory):
    a, b = backends("v1"), backends("v2")
    rr = router_factory(config(("v1", a.url, 10), ("v2", b.url, 90), stable_version="v1"))
    for _ in range(10):
        r = rr.client.get("/v2/models/iris")
        assert r.status_code == 200 and r.json()["versions"] == ["v1"]


def test_sticky_header_keeps_a_user_on_one_arm(backends, router_factory):
    a, b = backends("v1"), backends("v2")
    rr = router_factory(config(("v1", a.url, 50), ("v2", b.url, 50), sticky={"header": "x-user"}))
    arms = {}
    for user in range(40):
        got = {rr.predict(headers={"x-user": f"user-{user}"}).headers["x-model-version"] for _ in range(5)}
        assert len(got) == 1, (user, got)
        arms[user] = got.pop()
    assert set(arms.values()) == {"v1", "v2"}


def test_sticky_body_key_and_stability_under_weight_changes(backends, router_factory):
    a, b = backends("v1"), backends("v2")
    rr = router_factory(config(("v1", a.url, 90), ("v2", b.url, 10), sticky={"body_key": "user"}))

    def arms() -> dict[int, str]:
        return {u: rr.predict({"user": u, "instances": [[1]]}).headers["x-model-version"] for u in range(200)}

    before = arms()
    rr.write_config(config(("v1", a.url, 50), ("v2", b.url, 50), sticky={"body_key": "user"}))
    wait_for(lambda: rr.router.state.config.backends[0].weight == 50, what="reload")
    after = arms()
    # Moving 40 points from v1 to v2 moves only v1 users, and about 40% of all users; nobody goes back to v1.
    moved = [u for u in before if before[u] != after[u]]
    assert all(before[u] == "v1" and after[u] == "v2" for u in moved)
    assert within_binomial(len(moved), 200, 0.4), len(moved)


def test_fallback_on_5xx_goes_to_stable_and_is_counted(backends, router_factory):
    a, b = backends("v1"), backends("v2", fail_status=500)
    rr = router_factory(config(("v1", a.url, 0), ("v2", b.url, 100), stable_version="v1"))
    for _ in range(5):
        r = rr.predict()
        assert r.status_code == 200 and r.headers["x-model-version"] == "v1"
        assert r.headers["x-mlsteward-arm"] == "v2" and r.headers["x-mlsteward-fallback"] == "true"
    # The retry carries the same request id, so both backends' logs join up.
    assert a.received[-1]["headers"]["x-request-id"] == b.received[-1]["headers"]["x-request-id"]
    v = rr.stats()["versions"]
    assert (v["v2"]["requests"], v["v2"]["errors"], v["v2"]["fallbacks"]) == (5, 5, 5)
    assert (v["v1"]["requests"], v["v1"]["errors"]) == (5, 0)
    assert 'mlsteward_router_fallbacks_total{from_version="v2",to_version="v1"} 5.0' in rr.client.get("/metrics").text


def test_fallback_on_connect_error_and_timeout(backends, router_factory):
    a, slow = backends("v1"), backends("v3", delay_s=2.0)
    rr = router_factory(config(("v1", a.url, 0), ("v2", dead_url(), 100), stable_version="v1", timeout_s=0.3))
    r = rr.predict()
    assert r.status_code == 200 and r.headers["x-model-version"] == "v1"
    rr.write_config(config(("v1", a.url, 0), ("v3", slow.url, 100), stable_version="v1", timeout_s=0.3))
    wait_for(lambda: rr.router.state.versions == ["v1", "v3"], what="reload")
    r = rr.predict()
    assert r.status_code == 200 and r.headers["x-model-version"] == "v1"
    assert r.elapsed.total_seconds() < 1.5
    assert rr.stats()["versions"]["v3"]["fallbacks"] == 1


def test_502_names_the_backend_when_every_attempt_fails(backends, router_factory):
    a, b = backends("v1", fail_status=503), backends("v2", fail_status=500)
    rr = router_factory(config(("v1", a.url, 0), ("v2", b.url, 100), stable_version="v1"))
    r = rr.predict()
    assert r.status_code == 502
    body = r.json()
    assert body["error"] == "bad_gateway" and body["backend"] == "v1"
    assert [(x["version"], x["reason"]) for x in body["attempts"]] == [("v2", "http_500"), ("v1", "http_503")]
    assert body["request_id"] == r.headers["x-request-id"]


def test_no_fallback_when_switched_off(backends, router_factory):
    a, b = backends("v1"), backends("v2", fail_status=500)
    rr = router_factory(config(("v1", a.url, 0), ("v2", b.url, 100), stable_version="v1", fallback=False))
    r = rr.predict()
    assert r.status_code == 502 and r.json()["backend"] == "v2"
    assert a.received == []


def test_backend_client_errors_pass_through_without_fallback(backends, router_factory):
    a, b = backends("v1"), backends("v2")
    rr = router_factory(config(("v1", a.url, 0), ("v2", b.url, 100), stable_version="v1"))
    r = rr.client.post("/predict", content=b"not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body"
    assert a.received == []
    assert rr.stats()["versions"]["v2"]["errors"] == 0


def test_router_refuses_bad_requests_with_named_fields(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)), max_body_bytes=1024)
    r = rr.client.post("/predict", content=b"x" * 5000)
    assert r.status_code == 413 and r.json()["field"] == "body"
    r = rr.client.get("/predict")
    assert r.status_code == 405 and r.json()["rule"] == "POST"
    r = rr.client.get("/nowhere")
    assert r.status_code == 404 and r.json()["field"] == "path"
    assert a.received == []


def test_health_readiness_and_metrics(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)))
    assert rr.client.get("/healthz").status_code == 200
    wait_for(lambda: rr.client.get("/readyz").status_code == 200, what="ready")
    a.ready = False
    body = wait_for(lambda: (r := rr.client.get("/readyz")).status_code == 503 and r.json(), what="unready")
    assert body["backends"] == {"v1": False}
    rr.predict()
    text = rr.client.get("/metrics").text
    assert 'mlsteward_router_requests_total{status="200",version="v1"} 1.0' in text
    assert 'mlsteward_router_backend_latency_seconds_count{version="v1"} 1.0' in text


def test_router_with_no_live_backend_is_not_ready(router_factory):
    rr = router_factory(config(("v1", dead_url(), 100)))
    body = wait_for(lambda: (r := rr.client.get("/readyz")).status_code == 503 and r.json().get("backends"),
                    what="probe result")
    assert body == {"v1": False}
