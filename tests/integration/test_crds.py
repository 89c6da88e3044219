"""The CRDs on a real API server: they install, explain themselves, and refuse each bad object with its rule's
message (CEL and schema), so bad YAML never reaches the operator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BAD = sorted((ROOT / "tests/fixtures/bad").glob("*.yaml"))
PLURALS = {"ModelVersion": "modelversions", "ModelDeployment": "modeldeployments", "Experiment": "experiments",
           "DriftMonitor": "driftmonitors"}


def _custom(kube: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(kube)


def test_every_kind_is_served_with_short_names_and_category(kube: Any):
    from kubernetes import client

    ext = client.ApiextensionsV1Api(kube)
    crds = {c.spec.names.kind: c for c in ext.list_custom_resource_definition().items
            if c.spec.group == "mlsteward.io"}
    assert set(crds) == set(PLURALS)
    shorts = {k: c.spec.names.short_names for k, c in crds.items()}
    assert shorts == {"ModelVersion": ["mv"], "ModelDeployment": ["md"], "Experiment": ["exp"],
                      "DriftMonitor": ["dm"]}
    for crd in crds.values():
        assert "mlsteward" in crd.spec.names.categories
        version = crd.spec.versions[0]
        assert version.subresources.status is not None
        assert version.additional_printer_columns, crd.metadata.name


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_object_is_refused_with_its_message(kube: Any, namespace: str, path: Path):
    from kubernetes.client import ApiException

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    expect = docs[-1]["metadata"]["annotations"]["mlsteward.io/test-expect"]
    api = _custom(kube)
    plural = PLURALS[docs[0]["kind"]]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
    if len(docs) == 2:
        # A transition rule: the first object is valid; replacing it with the second must fail.
        first = api.create_namespaced_custom_object("mlsteward.io", "v1alpha1", namespace, plural, docs[0])
        docs[1]["metadata"]["resourceVersion"] = first["metadata"]["resourceVersion"]
        call = lambda: api.replace_namespaced_custom_object(  # noqa: E731
            "mlsteward.io", "v1alpha1", namespace, plural, docs[1]["metadata"]["name"], docs[1])
    else:
        call = lambda: api.create_namespaced_custom_object(  # noqa: E731
            "mlsteward.io", "v1alpha1", namespace, plural, docs[0])
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == 422, info.value.body
    assert expect in info.value.body, f"expected {expect!r} in {info.value.body}"


# Edge values (tests/fixtures/admission.yaml): the operator's models agree on each (tests/unit/operator/test_api_models.py).
ADMISSION = yaml.safe_load((ROOT / "tests/fixtures/admission.yaml").read_text())
NAMES = {"ModelVersion": "iris-1-0-0", "ModelDeployment": "iris", "Experiment": "iris-ab", "DriftMonitor": "iris-drift"}


def _create(kube: Any, namespace: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = {"apiVersion": "mlsteward.io/v1alpha1", "kind": kind,
            "metadata": {"name": NAMES[kind], "namespace": namespace}, "spec": spec}
    return _custom(kube).create_namespaced_custom_object("mlsteward.io", "v1alpha1", namespace, PLURALS[kind], body)


@pytest.mark.parametrize("case", ADMISSION["accepted"], ids=[c["what"] for c in ADMISSION["accepted"]])
def test_edge_values_are_accepted_as_written(kube: Any, namespace: str, case: dict[str, Any]):
    created = _create(kube, namespace, case["kind"], case["spec"])
    # Nothing pruned or rewritten: every field sent comes back as it was (defaults may add others).
    assert _kept(created["spec"], case["spec"]), (created["spec"], case["spec"])


def _kept(got: Any, sent: Any) -> bool:
    """Whether every value of `sent` is in `got`, at the same place (objects may have gained defaulted fields)."""
    if isinstance(sent, dict):
        return isinstance(got, dict) and all(k in got and _kept(got[k], v) for k, v in sent.items())
    if isinstance(sent, list):
        return isinstance(got, list) and len(got) == len(sent) and all(map(_kept, got, sent))
    return got == sent and type(got) is type(sent) or (isinstance(sent, float) and got == sent)


@pytest.mark.parametrize("case", ADMISSION["refused"], ids=[c["what"] for c in ADMISSION["refused"]])
def test_edge_values_are_refused_naming_their_rule(kube: Any, namespace: str, case: dict[str, Any]):
    from kubernetes.client import ApiException

    with pytest.raises(ApiException) as info:
        _create(kube, namespace, case["kind"], case["spec"])
    assert info.value.status == 422, info.value.body
    assert case["expect"] in info.value.body, f"expected {case['expect']!r} in {info.value.body}"


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_admitted(kube: Any, namespace: str, path: Path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d["apiVersion"].startswith("mlsteward.io/")]
    assert docs, path.name
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        created = _custom(kube).create_namespaced_custom_object("mlsteward.io", "v1alpha1", namespace,
                                                                PLURALS[doc["kind"]], doc)
        assert _kept(created["spec"], doc["spec"]), (path.name, created["spec"])
