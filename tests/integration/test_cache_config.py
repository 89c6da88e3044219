"""spec.cache on a real API server: the CRD's defaults and descriptions, and the router configuration the operator
renders from the object the API server stored."""

from __future__ import annotations

from typing import Any

from .test_controllers import GV, custom


def _rendered_cache(md_doc: dict[str, Any]) -> Any:
    from mlsteward_operator.api.modeldeployment import ModelDeployment, TrafficEntry
    from mlsteward_operator.config import OperatorConfig
    from mlsteward_operator.modeldeployment.render import render_router
    from mlsteward_runtime.contracts import RouterConfig

    md = ModelDeployment.model_validate(md_doc)
    objects = render_router(md, "iris", [TrafficEntry(version="iris-1", weight=100)], "iris-1", OperatorConfig())
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"]
    return RouterConfig.model_validate_json(config_map["data"]["router.json"]).cache


def test_an_empty_cache_gets_the_documented_defaults_and_reaches_the_router(kube: Any, namespace: str):
    created = custom(kube).create_namespaced_custom_object(*GV, namespace, "modeldeployments", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris"},
        "spec": {"version": "iris-1", "cache": {}}})
    # Defaulted by the API server from the CRD, not by the operator.
    assert created["spec"]["cache"] == {"maxEntries": 10000, "maxBytes": 64 * 1024 * 1024, "ttl": "5m"}
    cache = _rendered_cache(created)
    assert (cache.max_entries, cache.max_bytes, cache.ttl_s) == (10000, 64 * 1024 * 1024, 300.0)
    stored = custom(kube).create_namespaced_custom_object(*GV, namespace, "modeldeployments", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "iris-small"},
        "spec": {"version": "iris-1", "cache": {"maxBytes": 1024, "ttl": "1h30m"}}})
    cache = _rendered_cache(stored)
    assert (cache.max_entries, cache.max_bytes, cache.ttl_s) == (10000, 1024, 5400.0)


def test_kubectl_explain_says_what_the_cache_does(kube: Any):
    from kubernetes import client

    from mlsteward_runtime.router.cache import ENTRY_OVERHEAD

    crd = client.ApiextensionsV1Api(kube).read_custom_resource_definition("modeldeployments.mlsteward.io")
    spec = crd.spec.versions[0].schema.open_apiv3_schema.properties["spec"].properties
    cache = spec["cache"]
    for words in ("canonical form", "Cache-Control: no-cache", "x-cache: hit", "Experiment", "not mirrored"):
        assert words in cache.description, words
    assert f"{ENTRY_OVERHEAD} bytes" in cache.properties["maxBytes"].description
    assert "least recently used" in cache.properties["maxEntries"].description
    assert "checked when the entry is read" in cache.properties["ttl"].description
