"""The generated CRDs: structural, documented, with the columns, names and CEL rules DESIGN §2 asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsteward_operator import crdgen
from mlsteward_operator.api import KINDS
from mlsteward_operator.api.modeldeployment import QUANTITY_RE

ROOT = Path(__file__).resolve().parents[3]
BAD = ROOT / "tests" / "fixtures" / "bad"
EXPECT = "mlsteward.io/test-expect"
# Bounds pydantic checks itself (with its own words) before our validators run.
PYDANTIC_WORDS_DIFFER = {"exp-one-variant.yaml"}


def _crds() -> dict[str, dict[str, Any]]:
    return {name: yaml.safe_load(text) for name, text in crdgen.render_all().items()}


def _walk(node: Any, path: str = ""):
    """Yield (path, schema node) for every node of a schema."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _rules(crd: dict[str, Any]) -> dict[str, str]:
    """CEL message -> rule, over the whole schema."""
    return {
        r["message"]: r["rule"]
        for _, node in _walk(_schema(crd))
        for r in node.get("x-kubernetes-validations", [])
    }


@pytest.mark.parametrize("subdir", ["crds", "charts/mlsteward/crds"])
def test_committed_crds_match_the_models(subdir: str) -> None:
    committed = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / subdir).glob("*.yaml"))}
    assert committed == crdgen.render_all(), "run `make crds` and commit the result"


def test_regeneration_is_deterministic(tmp_path: Path) -> None:
    crdgen.main(["--out", str(tmp_path / "a"), "--chart", str(tmp_path / "chart")])
    crdgen.main(["--out", str(tmp_path / "b")])
    a = {p.name: p.read_bytes() for p in (tmp_path / "a").iterdir()}
    assert a == {p.name: p.read_bytes() for p in (tmp_path / "b").iterdir()}
    assert a == {p.name: p.read_bytes() for p in (tmp_path / "chart" / "crds").iterdir()}
    assert crdgen.main(["--out", str(tmp_path / "a"), "--check"]) == 0
    (tmp_path / "a" / "mlsteward.io_modelversions.yaml").write_text("stale\n")
    assert crdgen.main(["--out", str(tmp_path / "a"), "--check"]) == 1


def test_one_crd_per_kind_with_names_and_category() -> None:
    crds = _crds()
    assert sorted(crds) == [
        "mlsteward.io_driftmonitors.yaml",
        "mlsteward.io_experiments.yaml",
        "mlsteward.io_modeldeployments.yaml",
        "mlsteward.io_modelversions.yaml",
    ]
    short = {c["spec"]["names"]["kind"]: c["spec"]["names"]["shortNames"] for c in crds.values()}
    assert short == {"ModelVersion": ["mv"], "ModelDeployment": ["md"], "Experiment": ["exp"], "DriftMonitor": ["dm"]}
    for crd in crds.values():
        spec = crd["spec"]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.mlsteward.io"
        assert spec["group"] == "mlsteward.io" and spec["scope"] == "Namespaced"
        assert spec["names"]["categories"] == ["mlsteward"]
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize(
    ("kind", "columns"),
    [
        ("ModelVersion", ["Model", "Version", "Phase", "Age"]),
        ("ModelDeployment", ["Serving", "Traffic", "Ready", "URL", "Age"]),
        ("Experiment", ["Deployment", "Phase", "Leader", "P(best)", "Age"]),
        ("DriftMonitor", ["Deployment", "Drift", "Last Check", "Last Action", "Age"]),
    ],
)
def test_printer_columns(kind: str, columns: list[str]) -> None:
    (crd,) = [c for c in _crds().values() if c["spec"]["names"]["kind"] == kind]
    shown = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"] if not c.get("priority")]
    assert shown == columns
    schema = _schema(crd)
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        # Every column points at a field the schema declares (a typo would show an empty column forever).
        head = column["jsonPath"].lstrip(".").split("[")[0].split(".")
        if head[0] == "metadata":
            continue
        node = schema
        for part in head:
            node = node["properties"][part]
        if "[" not in column["jsonPath"]:
            assert {"date": "string"}.get(column["type"], column["type"]) == node["type"]


def test_schemas_are_structural_and_documented() -> None:
    for name, crd in _crds().items():
        schema = _schema(crd)
        assert schema["type"] == "object" and schema["description"]
        text = yaml.safe_dump(schema)
        assert "$ref" not in text and "anyOf" not in text and "oneOf" not in text and "allOf" not in text, name
        assert "'null'" not in text and "title:" not in text, name
        for path, node in _walk(schema):
            if path == ".metadata":
                assert node == {"type": "object"}
                continue
            if path and not path.endswith(("[]", "{}")):
                assert node.get("description"), f"{name}: {path} has no description"
            assert (
                node.get("type") or node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
            ), f"{name}: {path} has no type"
            assert node.get("additionalProperties") is not False, f"{name}: {path}"
            if node.get("type") == "integer":
                assert node["format"] in ("int32", "int64"), f"{name}: {path}"
            if node.get("type") == "number":
                assert node["format"] == "double", f"{name}: {path}"
            if node.get("x-kubernetes-validations"):
                # CEL cost is estimated from these bounds; an unbounded list or string in a rule is refused.
                if node.get("type") == "array":
                    assert "maxItems" in node, f"{name}: {path}"
                if node.get("type") == "string":
                    assert "maxLength" in node, f"{name}: {path}"


def test_free_form_only_where_intended() -> None:
    free = {
        (name, path)
        for name, crd in _crds().items()
        for path, node in _walk(_schema(crd))
        if node.get("x-kubernetes-preserve-unknown-fields")
    }
    assert free == {
        # Categorical values and class labels may be strings, numbers or booleans.
        ("mlsteward.io_modelversions.yaml", ".spec.signature.inputs[].allowed[]"),
        ("mlsteward.io_modelversions.yaml", ".spec.signature.output.classes[]"),
        ("mlsteward.io_modelversions.yaml", ".status.signature.inputs[].allowed[]"),
        ("mlsteward.io_modelversions.yaml", ".status.signature.output.classes[]"),
        # Golden rows hold the feature values of one request.
        ("mlsteward.io_modelversions.yaml", ".status.golden.inputs[][]"),
        ("mlsteward.io_modelversions.yaml", ".status.golden.outputs[]"),
        # A whole Job spec, with the path to its containers declared so that a CEL rule can see them.
        ("mlsteward.io_driftmonitors.yaml", ".spec.retrain.template"),
        ("mlsteward.io_driftmonitors.yaml", ".spec.retrain.template.template"),
        ("mlsteward.io_driftmonitors.yaml", ".spec.retrain.template.template.spec"),
        ("mlsteward.io_driftmonitors.yaml", ".spec.retrain.template.template.spec.containers[]"),
    }


def test_metrics_maps_are_numbers() -> None:
    mv = _schema(_crds()["mlsteward.io_modelversions.yaml"])
    assert mv["properties"]["spec"]["properties"]["metrics"]["additionalProperties"] == {
        "type": "number",
        "format": "double",
    }
    assert mv["properties"]["status"]["properties"]["metrics"]["additionalProperties"]["type"] == "number"


def test_quantities_are_int_or_string() -> None:
    md = _schema(_crds()["mlsteward.io_modeldeployments.yaml"])
    requests = md["properties"]["spec"]["properties"]["resources"]["properties"]["requests"]
    # A string must be a quantity and an integer not negative (a Pod refuses anything else).
    quantity = requests["additionalProperties"]
    assert quantity["x-kubernetes-int-or-string"] is True and quantity["minimum"] == 0
    assert set(quantity) == {"x-kubernetes-int-or-string", "minimum", "pattern"}
    assert quantity["pattern"] == QUANTITY_RE


def test_status_has_no_defaults_and_spec_has_effective_defaults() -> None:
    for crd in _crds().values():
        status = dict(_schema(crd)["properties"]["status"])
        # The one default: a status not written yet reads "generation not observed" to kstatus (docs/gitops.md).
        assert status.pop("default") == {"observedGeneration": 0}
        assert "default" not in yaml.safe_dump(status)
    md = _schema(_crds()["mlsteward.io_modeldeployments.yaml"])
    rollout = md["properties"]["spec"]["properties"]["rollout"]
    assert rollout["default"] == {"strategy": "Immediate", "steps": [10, 50, 100], "stepInterval": "1m",
                                  "progressDeadline": "10m"}
    assert rollout["properties"]["strategy"]["enum"] == ["Canary", "BlueGreen", "Immediate"]


def test_conditions_are_a_map_list_keyed_by_type() -> None:
    for crd in _crds().values():
        conditions = _schema(crd)["properties"]["status"]["properties"]["conditions"]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        assert set(conditions["items"]["required"]) >= {"type", "status", "reason", "lastTransitionTime"}
        assert conditions["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_cel_rules_present() -> None:
    crds = _crds()
    mv = _rules(crds["mlsteward.io_modelversions.yaml"])
    md = _rules(crds["mlsteward.io_modeldeployments.yaml"])
    exp = _rules(crds["mlsteward.io_experiments.yaml"])
    dm = _rules(crds["mlsteward.io_driftmonitors.yaml"])
    assert mv["spec is immutable: a new model is a new ModelVersion (create one under a new name)"] == "self == oldSelf"
    assert "self.matches('^[0-9a-f]{64}$')" in mv.values()
    assert md["set either replicas or autoscaling, not both"] == "!(has(self.replicas) && has(self.autoscaling))"
    assert md["autoscaling.minReplicas must not exceed autoscaling.maxReplicas"] == "self.minReplicas <= self.maxReplicas"
    assert "rollout.steps must end at 100" in md
    assert "rollout.steps must strictly ascend, e.g. [10, 50, 100]" in md
    assert exp["variant weights must sum to 100"] == "self.map(v, v.weight).sum() == 100"
    assert exp["an experiment needs at least two variants (control first)"] == "size(self) >= 2"
    assert exp["stopping.confidence must be strictly between 0 and 1, e.g. 0.95"] == "self > 0.0 && self < 1.0"
    assert exp["strategy.epsilon must be between 0 and 1"] == "self >= 0.0 && self <= 1.0"
    assert dm["thresholds.pValue must be strictly between 0 and 1, e.g. 0.01"] == "self > 0.0 && self < 1.0"
    assert "window.minSamples must not exceed window.maxSamples" in dm


def test_every_cel_rule_has_a_bad_yaml_fixture() -> None:
    """Each rule's message is expected by at least one fixture; the integration tier applies them for real."""
    expected = []
    for path in sorted(BAD.glob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        expected.append(docs[-1]["metadata"]["annotations"][EXPECT])
    messages = {m for crd in _crds().values() for m in _rules(crd)}
    uncovered = {m for m in messages if not any(e in m for e in expected)}
    assert not uncovered
    assert all(any(e in m for m in messages) for e in expected), "a fixture expects a message no rule has"


def test_bad_fixtures_are_refused_by_the_models_too() -> None:
    """Pydantic enforces the same rules, so the operator never acts on an object the API server would refuse."""
    from pydantic import ValidationError

    by_kind = {info.kind: info.spec for info in KINDS}
    for path in sorted(BAD.glob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        if len(docs) > 1 or path.name == "md-name-not-a-service-name.yaml":
            continue  # transition rules and metadata rules exist only at admission
        with pytest.raises(ValidationError) as caught:
            by_kind[docs[-1]["kind"]].model_validate(docs[-1]["spec"])
        if path.name not in PYDANTIC_WORDS_DIFFER:
            assert docs[-1]["metadata"]["annotations"][EXPECT] in str(caught.value), path.name
