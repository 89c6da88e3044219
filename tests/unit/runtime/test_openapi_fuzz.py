"""schemathesis against the app's own OpenAPI document, in-process over ASGI: no request may produce a 5xx, and every
answer (status, content type, headers, body) must be one the document declares."""

from __future__ import annotations

import os
import tempfile

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance
from hypothesis import HealthCheck, settings
from starlette.testclient import TestClient

from mlsteward_runtime.contracts import RuntimeConfig

from .helpers import loaded_app


def _app():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlsteward_runtime.models import dump_model

    X, y = load_iris(return_X_y=True)
    path = os.path.join(tempfile.mkdtemp(), "lr.skops")
    digest = dump_model(LogisticRegression(max_iter=1000).fit(X, y), path)
    cfg = RuntimeConfig(name="iris", version="1", artifact={"uri": path, "sha256": digest},
                        limits={"max_rows": 100})
    app, _ = loaded_app(cfg)
    return app


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


def test_openapi_documents_request_bodies():
    doc = APP.openapi()
    for path in ("/predict", "/v1/models/{name}:predict", "/v2/models/{name}/infer", "/v1/feedback"):
        assert doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]


def test_openapi_documents_every_client_and_server_error():
    doc = APP.openapi()
    for path in ("/predict", "/v1/models/{name}:predict", "/v2/models/{name}/infer",
                 "/v2/models/{name}/versions/{version}/infer", "/v1/feedback"):
        documented = set(doc["paths"][path]["post"]["responses"])
        assert {"400", "413", "415", "422"} <= documented, (path, documented)
    for path in ("/predict", "/v1/models/{name}:predict", "/v2/models/{name}/infer"):
        assert "503" in doc["paths"][path]["post"]["responses"], path
    assert {"404", "503"} <= set(doc["paths"]["/v2/models/{name}"]["get"]["responses"])
    assert "503" in doc["paths"]["/v1/drift/window"]["get"]["responses"]
    assert {"404", "409"} <= set(doc["paths"]["/v1/feedback"]["post"]["responses"])


def test_405_names_the_allowed_methods():
    client = TestClient(APP)
    for method, path, allowed in [("GET", "/predict", "POST"), ("DELETE", "/v1/stats", "GET"),
                                  ("PUT", "/v2/models/iris/infer", "POST")]:
        r = client.request(method, path)
        assert r.status_code == 405 and r.headers["allow"] == allowed, (method, path, r.headers)
        assert (r.json()["field"], r.json()["rule"]) == ("method", "allowed")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_conforms_to_the_document(case):
    # The request schemas are the protocols' (any rows); the model's signature (feature count, ranges) is checked at
    # run time and named in a 422, so a schema-valid body may rightly be refused: that one check does not apply.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
