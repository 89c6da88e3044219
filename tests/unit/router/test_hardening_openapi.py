"""schemathesis over the router's own OpenAPI document, over real HTTP to a real router and backend: every
response must be documented (status, content type, body, Allow on 405) and none may be a 5xx. Also: a backend's
4xx passes through without counting as the arm's error."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from router_harness import config, wait_for


def test_the_router_conforms_to_its_openapi_document(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), model="iris"))
    wait_for(lambda: rr.client.get("/readyz").status_code == 200, what="router ready")
    schema = schemathesis.openapi.from_url(rr.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # Every documented operation but the document itself (schemathesis leaves out the URL it loaded).
    assert len(operations) == 15, " ".join(o.label for o in operations)

    for operation in operations:
        # One hypothesis run per operation, each with the full set of schemathesis checks.
        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case):
            case.call_and_validate()

        conforms()


def test_every_status_the_router_makes_is_documented(router_factory, backends):
    from mlsteward_runtime.router.openapi import document

    doc = document()
    assert {"400", "401", "403", "404", "405", "409", "410", "413", "422", "429"} <= set(doc["paths"]["/v1/feedback"]["post"]["responses"])
    for path in ("/predict", "/v2/models/{name}/infer"):
        assert {"404", "405", "413", "429", "502", "4XX"} <= set(doc["paths"][path]["post"]["responses"])
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)))
    assert rr.client.get("/openapi.json").json()["paths"].keys() == doc["paths"].keys()


def test_a_predictors_4xx_is_the_clients_not_the_arms(backends, router_factory):
    a, b = backends("v1"), backends("v2", fail_status=422)
    rr = router_factory(config(("v1", a.url, 0), ("v2", b.url, 100), stable_version="v1"))
    for _ in range(4):
        assert rr.predict().status_code == 422
    v2 = rr.stats()["versions"]["v2"]
    assert (v2["requests"], v2["errors"], v2["fallbacks"]) == (4, 0, 0)
    assert a.hits == []  # no fallback on a client error
    metrics = rr.client.get("/metrics").text
    assert "mlsteward_router_backend_errors_total{" not in metrics
