"""Every custom resource in examples/ is one the operator's models (the source of the CRDs) accept."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlsteward_operator.api import DriftMonitor, Experiment, ModelDeployment, ModelVersion

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MODELS = {"ModelVersion": ModelVersion, "ModelDeployment": ModelDeployment, "Experiment": Experiment,
          "DriftMonitor": DriftMonitor}


def _documents() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion", "").startswith("mlsteward.io/"):
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


@pytest.mark.parametrize("where,doc", _documents(), ids=[w for w, _ in _documents()])
def test_example_is_accepted(where: str, doc: dict) -> None:
    obj = MODELS[doc["kind"]].model_validate(doc)
    assert obj.metadata.name == doc["metadata"]["name"]


def test_every_kind_has_an_example() -> None:
    assert {doc["kind"] for _, doc in _documents()} >= {"ModelDeployment", "Experiment", "DriftMonitor"}
