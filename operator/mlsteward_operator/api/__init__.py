"""The four custom resources as pydantic models: the source of `crds/` and what the operator parses objects into.

`KINDS` lists them in a fixed order (crdgen writes one CRD per entry; the kopf layer registers one controller per
entry). Parse an object from the API server with e.g. `ModelDeployment.model_validate(body)`; dump a status with
`status.to_k8s()`.
"""

from __future__ import annotations

from mlsteward_operator.api import driftmonitor, experiment, modeldeployment, modelversion
from mlsteward_operator.api.common import API_VERSION, CATEGORY, GROUP, VERSION, Condition, KindInfo, ObjectMeta
from mlsteward_operator.api.driftmonitor import DriftMonitor, DriftMonitorSpec, DriftMonitorStatus
from mlsteward_operator.api.experiment import Experiment, ExperimentSpec, ExperimentStatus
from mlsteward_operator.api.modeldeployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from mlsteward_operator.api.modelversion import ModelVersion, ModelVersionSpec, ModelVersionStatus

KINDS: tuple[KindInfo, ...] = (modelversion.INFO, modeldeployment.INFO, experiment.INFO, driftmonitor.INFO)

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "KINDS",
    "VERSION",
    "Condition",
    "DriftMonitor",
    "DriftMonitorSpec",
    "DriftMonitorStatus",
    "Experiment",
    "ExperimentSpec",
    "ExperimentStatus",
    "KindInfo",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelVersion",
    "ModelVersionSpec",
    "ModelVersionStatus",
    "ObjectMeta",
]
