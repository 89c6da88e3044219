"""Shadow mirroring and feedback joining over real HTTP."""

from __future__ import annotations

import json
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from router_harness import config, wait_for


def test_shadow_never_changes_responses_and_is_scored(backends, router_factory):
    served, shadow = backends("v1", label="setosa"), backends("v2", label="virginica")
    rr = router_factory(config(("v1", served.url, 100), shadow={"version": "v2", "url": shadow.url, "percent": 100}))
    for _ in range(20):
        r = rr.predict()
        assert r.status_code == 200 and r.json() == {"predictions": ["setosa"]}
        assert r.headers["x-model-version"] == "v1"
    s = wait_for(lambda: (x := rr.stats()["shadow"]["v2"])["compared"] == 20 and x, what="shadow scored")
    assert (s["mirrored"], s["errors"], s["compared"], s["agreed"]) == (20, 0, 20, 0)
    assert s["latency_buckets"]["+Inf"] == 20
    # The mirror carries the served request's id and says it is a mirror.
    assert shadow.received[0]["headers"]["x-mlsteward-shadow"] == "true"
    assert {x["headers"]["x-request-id"] for x in shadow.received} == \
        {x["headers"]["x-request-id"] for x in served.received}
    # The shadow's numbers never leak into the served arms.
    assert set(rr.stats()["versions"]) == {"v1"}


def test_shadow_agreement_counts_matching_predictions(backends, router_factory):
    served, shadow = backends("v1", label=1), backends("v2", label=1.0)
    rr = router_factory(config(("v1", served.url, 100), shadow={"version": "v2", "url": shadow.url, "percent": 100}))
    for _ in range(10):
        rr.client.post("/v2/models/iris/infer", json={"inputs": [1, 2]})
    s = wait_for(lambda: (x := rr.stats()["shadow"]["v2"])["compared"] == 10 and x, what="shadow scored")
    assert s["agreed"] == s["compared"] == 10 and s["rows_compared"] == s["rows_agreed"] == 20


def test_slow_or_failing_shadow_does_not_delay_or_fail_clients(backends, router_factory):
    served, slow = backends("v1"), backends("v2", delay_s=1.0, fail_status=500)
    rr = router_factory(config(("v1", served.url, 100), shadow={"version": "v2", "url": slow.url, "percent": 100}))
    t0 = time.perf_counter()
    for _ in range(10):
        assert rr.predict().status_code == 200
    assert time.perf_counter() - t0 < 0.9  # ten sequential requests, each would take 1 s if the mirror were awaited
    s = wait_for(lambda: (x := rr.stats()["shadow"]["v2"])["mirrored"] == 10 and x, what="mirrors done")
    assert s["errors"] == 10 and s["compared"] == 0


def test_shadow_percent_is_respected_and_overflow_is_dropped(backends, router_factory):
    served, shadow = backends("v1"), backends("v2", delay_s=0.5)
    rr = router_factory(config(("v1", served.url, 100), shadow={"version": "v2", "url": shadow.url, "percent": 30}),
                        shadow_max_inflight=5)
    for _ in range(200):
        rr.predict()
    s = wait_for(lambda: (x := rr.stats()["shadow"]["v2"])["mirrored"] + x["dropped"] >= 30 and
                 not rr.router._mirrors and x, timeout=10, what="mirrors settled")
    total = s["mirrored"] + s["dropped"]
    assert 30 <= total <= 90, s  # 30% of 200, five sigmas either side
    assert s["dropped"] > 0 and s["mirrored"] <= total


def test_feedback_reaches_the_serving_arm_and_updates_outcomes(backends, router_factory):
    a, b = backends("v1", label="setosa"), backends("v2", label="virginica")
    rr = router_factory(config(("v1", a.url, 50), ("v2", b.url, 50)))
    served = {}
    for i in range(40):
        r = rr.predict()
        served[r.headers["x-request-id"]] = r.headers["x-model-version"]
    rewards = {"v1": 0.0, "v2": 0.0}
    for i, (rid, version) in enumerate(served.items()):
        reward = float(i % 3)
        rewards[version] += reward
        # Half the clients forget the content type; the router still forwards JSON the backend accepts.
        body = json.dumps({"request_id": rid, "reward": reward}).encode()
        headers = {"content-type": "application/json"} if i % 2 else {}
        r = rr.client.post("/v1/feedback", content=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == version and r.json()["forwarded"] is True
    # Forwarded under the nonce, the id the predictor was sent.
    assert {f["request_id"] for f in a.feedback} == {rid.split(".")[0] for rid, v in served.items() if v == "v1"}
    assert {f["request_id"] for f in b.feedback} == {rid.split(".")[0] for rid, v in served.items() if v == "v2"}
    stats = rr.stats()["versions"]
    for v in ("v1", "v2"):
        n = sum(1 for x in served.values() if x == v)
        assert stats[v]["outcomes"] == n and stats[v]["outcome_sum"] == rewards[v]
        assert stats[v]["outcome_sumsq"] == sum(float(i % 3) ** 2 for i, x in enumerate(served.values()) if x == v)


def test_label_feedback_scores_against_the_served_prediction(backends, router_factory):
    a = backends("v1", label="setosa")
    rr = router_factory(config(("v1", a.url, 100)))
    right, wrong = rr.predict().headers["x-request-id"], rr.predict().headers["x-request-id"]
    assert rr.client.post("/v1/feedback", json={"request_id": right, "label": "setosa"}).json()["outcome"] == 1.0
    assert rr.client.post("/v1/feedback", json={"request_id": wrong, "label": "versicolor"}).json()["outcome"] == 0.0
    v = rr.stats()["versions"]["v1"]
    assert (v["outcomes"], v["outcome_sum"]) == (2, 1.0)
    r = rr.client.post("/v1/feedback", json={"request_id": right, "label": "setosa"})
    assert r.status_code == 409 and r.json()["field"] == "request_id"
    assert rr.stats()["versions"]["v1"]["outcomes"] == 2


def test_unknown_request_id_is_404_naming_the_field(backends, router_factory):
    a, failing = backends("v1"), backends("v2", fail_status=400)
    rr = router_factory(config(("v1", a.url, 100)))
    first = rr.predict().headers["x-request-id"]
    # A response that served no prediction carries the bare nonce, which no feedback can name.
    rr.write_config(config(("v2", failing.url, 100)))
    wait_for(lambda: rr.router.state.versions == ["v2"], what="reload")
    refused = rr.predict()
    assert refused.status_code == 400 and len(refused.headers["x-request-id"]) == 32
    for rid in ("never-seen", refused.headers["x-request-id"], first.split(".")[0], first + "x"):
        r = rr.client.post("/v1/feedback", json={"request_id": rid, "reward": 1})
        assert r.status_code == 404 and r.json()["field"] == "request_id", r.text
    assert a.feedback == [] and failing.feedback == []


def test_feedback_validation_names_field_and_rule(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)))
    rid = rr.predict().headers["x-request-id"]
    cases = [
        (b"{", 400, "body"),
        (b"[1]", 422, "body"),
        (b'{"reward": 1}', 422, "request_id"),
        (b'{"request_id": "%s"}' % rid.encode(), 422, "reward"),
        (b'{"request_id": "%s", "reward": 1, "label": 1}' % rid.encode(), 422, "label"),
        (b'{"request_id": "%s", "reward": "high"}' % rid.encode(), 422, "reward"),
        (b'{"request_id": "%s", "reward": true}' % rid.encode(), 422, "reward"),
        (b'{"request_id": "%s", "reward": NaN}' % rid.encode(), 400, "body"),
    ]
    for body, status, field in cases:
        r = rr.client.post("/v1/feedback", content=body)
        assert (r.status_code, r.json()["field"]) == (status, field), (body, r.text)
        assert "rule" in r.json()
    assert rr.stats()["versions"]["v1"]["outcomes"] == 0


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4)
    | st.dictionaries(st.sampled_from(["request_id", "reward", "label", "x"]), c, max_size=4),
    max_leaves=8,
)


def test_no_feedback_body_makes_the_router_fail(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)))
    known = rr.predict().headers["x-request-id"]

    @settings(max_examples=80, deadline=None)
    @given(body=st.one_of(
        st.binary(max_size=200),
        _JSONISH.map(lambda d: json.dumps(d).encode()),
        st.fixed_dictionaries({"request_id": st.sampled_from([known, "nope", ""])},
                              optional={"reward": _JSONISH, "label": _JSONISH}).map(lambda d: json.dumps(d).encode()),
    ))
    def check(body: bytes) -> None:
        r = rr.client.post("/v1/feedback", content=body)
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert "field" in r.json() and "rule" in r.json()

    check()
