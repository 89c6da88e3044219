"""The prediction cache over real HTTP: hits never reach a backend, versions never mix, Experiments and errors are
never cached, hostile bodies stay within the budget."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from router_harness import ServerThread, config, wait_for
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CACHE = {"max_entries": 100, "max_bytes": 1 << 20, "ttl_s": 300}


class Predictor:
    """A backend that parses bodies as the predictor does (orjson: malformed or too deep is a 400, never a 500) and
    writes its request id into the body, as the simple protocol does."""

    def __init__(self) -> None:
        self.calls: list[str] = []

        async def predict(request: Request) -> JSONResponse:
            rid = request.headers["x-request-id"]
            self.calls.append(rid)
            try:
                orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                return JSONResponse({"error": "bad_request", "field": "body"}, status_code=400)
            return JSONResponse({"predictions": [0], "version": "1.0.0", "request_id": rid},
                                headers={"x-model-version": "1.0.0"})

        self.server = ServerThread(Starlette(routes=[Route("/predict", predict, methods=["POST"])])).start()
        self.url = self.server.url


@pytest.fixture
def predictor() -> Iterator[Predictor]:
    p = Predictor()
    yield p
    p.server.stop()


def sample(rr: Any, name: str, **labels: str) -> float:
    return rr.router.metrics.registry.get_sample_value(name, labels or None) or 0.0


def results(rr: Any) -> dict[str, float]:
    return {r: sample(rr, "mlsteward_router_cache_requests_total", result=r) for r in ("hit", "miss", "bypass")}


def test_second_identical_request_is_a_hit_that_never_reaches_the_backend(backends, router_factory):
    a = backends("v1", label="setosa")
    rr = router_factory(config(("v1", a.url, 100), cache=CACHE))
    first = rr.client.post("/predict", content=b'{"instances": [[1.0, 2.0]], "user": "u"}',
                           headers={"content-type": "application/json"})
    assert first.status_code == 200 and first.headers["x-cache"] == "miss"
    # The same document, keys in another order and other whitespace.
    second = rr.client.post("/predict", content=b'{ "user":"u", "instances":[[1.00,2.0]] }',
                            headers={"content-type": "application/json"})
    assert second.status_code == 200 and second.headers["x-cache"] == "hit"
    assert second.content == first.content and second.json() == {"predictions": ["setosa"]}
    assert second.headers["content-type"] == first.headers["content-type"]
    assert second.headers["x-model-version"] == "v1" and second.headers["x-mlsteward-arm"] == "v1"
    assert len(a.received) == 1
    # A fresh signed id, which feedback is attributed by, as for a miss.
    assert second.headers["x-request-id"] != first.headers["x-request-id"]
    assert len(second.headers["x-request-id"].split(".")) == 3
    r = rr.client.post("/v1/feedback", json={"request_id": second.headers["x-request-id"], "label": "setosa"})
    assert r.status_code == 200 and r.json()["version"] == "v1" and r.json()["outcome"] == 1.0
    assert rr.stats()["versions"]["v1"]["outcomes"] == 1
    # Another input, another path: misses.
    assert rr.predict({"instances": [[9.0, 2.0]]}).headers["x-cache"] == "miss"
    assert rr.client.post("/v1/models/iris:predict", json={"instances": [[1.0, 2.0]], "user": "u"}) \
        .headers["x-cache"] == "miss"
    assert len(a.received) == 3
    assert results(rr) == {"hit": 1, "miss": 3, "bypass": 0}
    assert sample(rr, "mlsteward_router_cache_entries") == 3
    # Hits are not the backend's traffic: the version's statistics count the 3 calls it served.
    assert rr.stats()["versions"]["v1"]["requests"] == 3
    assert sample(rr, "mlsteward_router_requests_total", version="v1", status="200") == 4


def test_a_change_of_version_answers_from_the_new_version(backends, router_factory):
    a, b = backends("v1", label="setosa"), backends("v2", label="virginica")
    rr = router_factory(config(("v1", a.url, 100), cache=CACHE))
    assert rr.predict().json() == {"predictions": ["setosa"]}
    assert rr.predict().headers["x-cache"] == "hit"
    rr.write_config(config(("v2", b.url, 100), cache=CACHE))
    r = wait_for(lambda: (x := rr.predict()).headers["x-model-version"] == "v2" and x, what="v2 serving")
    assert r.headers["x-cache"] == "miss" and r.json() == {"predictions": ["virginica"]}
    assert rr.predict().headers["x-cache"] == "hit" and len(b.received) == 1


def test_a_canary_split_never_mixes_versions(backends, router_factory):
    a, b = backends("v1", label="v1"), backends("v2", label="v2")
    rr = router_factory(config(("v1", a.url, 50), ("v2", b.url, 50), cache=CACHE))
    seen = Counter()
    for _ in range(60):
        r = rr.predict()
        assert r.json() == {"predictions": [r.headers["x-model-version"]]}
        seen[(r.headers["x-model-version"], r.headers["x-cache"])] += 1
    # Each version computed the answer once; every other request was a hit of the version it was assigned.
    assert len(a.received) == len(b.received) == 1
    assert seen[("v1", "miss")] == seen[("v2", "miss")] == 1 and seen[("v1", "hit")] + seen[("v2", "hit")] == 58


def test_an_experiment_never_caches(backends, router_factory):
    a, b = backends("v1"), backends("v2")
    rr = router_factory(config(("v1", a.url, 50), ("v2", b.url, 50), cache=CACHE, experiment="iris-ab"))
    for _ in range(20):
        assert "x-cache" not in rr.predict().headers
    assert len(a.received) + len(b.received) == 20
    assert results(rr) == {"hit": 0, "miss": 0, "bypass": 0}
    # When the Experiment ends the cache comes back.
    rr.write_config(config(("v1", a.url, 100), cache=CACHE))
    wait_for(lambda: rr.predict().headers.get("x-cache") == "hit", what="cache on again")


def test_errors_are_never_cached(backends, router_factory):
    a = backends("v1", fail_status=500)
    rr = router_factory(config(("v1", a.url, 100), cache=CACHE))
    for _ in range(3):
        assert rr.predict().status_code == 502
    a.fail_status = 400
    for _ in range(3):
        r = rr.predict()
        assert r.status_code == 400 and r.headers["x-cache"] == "miss"
    assert len(a.received) == 6 and sample(rr, "mlsteward_router_cache_entries") == 0
    a.fail_status = None
    assert rr.predict().headers["x-cache"] == "miss"
    assert rr.predict().headers["x-cache"] == "hit" and len(a.received) == 7


def test_a_fallback_answer_is_not_stored_under_the_failing_version(backends, router_factory):
    a, b = backends("v1", label="v1"), backends("v2", label="v2", fail_status=503)
    rr = router_factory(config(("v1", a.url, 0), ("v2", b.url, 100), cache=CACHE, stable_version="v1"))
    for _ in range(3):
        r = rr.predict()
        assert r.status_code == 200 and r.headers["x-mlsteward-fallback"] == "true" and r.json()["predictions"] == ["v1"]
    assert len(b.received) == 3 and sample(rr, "mlsteward_router_cache_entries") == 0


def test_cache_control_no_cache_and_no_store(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), cache=CACHE))
    assert rr.predict(headers={"cache-control": "no-store"}).headers["x-cache"] == "miss"
    assert rr.predict(headers={"cache-control": "no-store"}).headers["x-cache"] == "miss"  # nothing was stored
    assert rr.predict(headers={"cache-control": "no-cache"}).headers["x-cache"] == "bypass"  # not looked up...
    assert len(a.received) == 3
    assert rr.predict().headers["x-cache"] == "hit"  # ...but stored
    assert rr.predict(headers={"cache-control": "no-cache"}).headers["x-cache"] == "bypass"
    assert len(a.received) == 4


def test_hits_are_not_mirrored_to_the_shadow(backends, router_factory):
    served, shadow = backends("v1"), backends("v2")
    rr = router_factory(config(("v1", served.url, 100), cache=CACHE,
                               shadow={"version": "v2", "url": shadow.url, "percent": 100}))
    first = rr.predict()
    hit = rr.predict()
    third = rr.predict(headers={"cache-control": "no-cache"})
    assert (first.headers["x-cache"], hit.headers["x-cache"], third.headers["x-cache"]) == ("miss", "hit", "bypass")
    wanted = {r.headers["x-request-id"].split(".")[0] for r in (first, third)}
    got = wait_for(lambda: wanted <= (x := {m["headers"]["x-request-id"] for m in shadow.received}) and x,
                   what="both real calls mirrored")
    assert hit.headers["x-request-id"].split(".")[0] not in got and len(shadow.received) == 2
    s = wait_for(lambda: (x := rr.stats()["shadow"]["v2"])["mirrored"] == 2 and x, what="shadow counted")
    assert s["mirrored"] == 2


def test_the_predictors_request_id_in_the_body_is_the_hits_own(predictor, router_factory):
    """The simple protocol writes its request id (the nonce) into the body; a hit's body carries the hit's."""
    rr = router_factory(config(("iris-1-0-0", predictor.url, 100), cache=CACHE))
    miss, hit = rr.predict([[1.0]]), rr.predict([[1.0]])
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit") and len(predictor.calls) == 1
    for r in (miss, hit):
        assert r.json()["request_id"] == r.headers["x-request-id"].split(".")[0]
        assert r.headers["x-model-version"] == "1.0.0"  # the predictor's own header, stored with the answer
    assert miss.json()["request_id"] != hit.json()["request_id"]


def test_hostile_bodies_never_fail_and_never_pass_the_budget(predictor, router_factory):
    a = predictor
    budget = 16 * 1024
    rr = router_factory(config(("v1", a.url, 100), cache={"max_entries": 1000, "max_bytes": budget, "ttl_s": 300}),
                        max_body_bytes=4 * 1024 * 1024)
    statuses = Counter()

    def post(body: bytes) -> str | None:
        r = rr.client.post("/predict", content=body, headers={"content-type": "application/json"})
        statuses[r.status_code] += 1
        return r.headers.get("x-cache")

    assert post(b"not json at all") == "bypass"  # the backend's 400 passes through
    assert post(b"\xff\xfe\x00") == "bypass"
    assert post(b"[" * 300 + b"]" * 300) == "bypass"  # parses, too deep to write back
    assert post(b"[" * 100_000 + b"]" * 100_000) == "bypass"
    huge = json.dumps({"instances": [[float(i), 1.0] for i in range(120_000)]}).encode()
    assert len(huge) > 1024 * 1024 and post(huge) == "bypass"
    assert rr.client.post("/predict", content=b"[" * (5 * 1024 * 1024)).status_code == 413
    for i in range(300):  # many distinct entries through a small budget
        assert post(json.dumps({"instances": [[float(i), 2.0]], "pad": "x" * (i % 7) * 100}).encode()) == "miss"
    assert all(s < 500 for s in statuses), statuses
    assert 0 < sample(rr, "mlsteward_router_cache_bytes") <= budget
    assert sample(rr, "mlsteward_router_cache_entries") == len(rr.router._cache or ())
    assert sample(rr, "mlsteward_router_cache_evictions_total", reason="bytes") > 0
    assert results(rr)["bypass"] == 5


def test_a_new_cache_config_rebuilds_the_cache_and_the_same_one_keeps_it(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), cache=CACHE, generation="g1"))
    rr.predict()
    assert rr.predict().headers["x-cache"] == "hit"
    rr.write_config(config(("v1", a.url, 100), cache=CACHE, generation="g2"))  # same cache settings
    wait_for(lambda: rr.stats()["generation"] == "g2", what="g2 loaded")
    assert rr.predict().headers["x-cache"] == "hit"
    rr.write_config(config(("v1", a.url, 100), cache={**CACHE, "ttl_s": 60}, generation="g3"))
    wait_for(lambda: rr.stats()["generation"] == "g3", what="g3 loaded")
    assert rr.predict().headers["x-cache"] == "miss"
    rr.write_config(config(("v1", a.url, 100), generation="g4"))  # no cache
    wait_for(lambda: rr.stats()["generation"] == "g4", what="g4 loaded")
    assert "x-cache" not in rr.predict().headers
    assert sample(rr, "mlsteward_router_cache_entries") == 0 and sample(rr, "mlsteward_router_cache_bytes") == 0
