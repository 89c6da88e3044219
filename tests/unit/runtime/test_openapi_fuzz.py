"""schemathesis against the app's own OpenAPI document, in-process over ASGI: no request may produce a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from mlsteward_runtime.contracts import RuntimeConfig

from .helpers import loaded_app


def _app():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    import tempfile, os

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


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_5xx(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, case.body, response.text)
