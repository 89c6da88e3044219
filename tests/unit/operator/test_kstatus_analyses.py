"""kstatus verdicts (kstatus.py) on every Experiment and DriftMonitor status the operator writes; the rules wanted are
in test_kstatus.py's docstring.

- Experiment: waiting for its ModelDeployment (its split, its control version, another experiment) is InProgress;
  a ModelDeployment that does not exist is InProgress for REFERENCE_GRACE after the Experiment's creation (a GitOps
  sync may apply it in the same breath), then a bad reference, Failed. Running is Current: the split is live and the
  analysis runs, which is what the spec asks for, for as long as the stopping rules say (an Experiment that is
  InProgress for weeks would hold every Flux Kustomization that contains it unready). Concluded is Current;
  Stopped (sample-ratio mismatch, maxDuration without a result) is final and asks a person what next: Failed.
- DriftMonitor: a check with a verdict is Current, drift or not (drift is a fact about the inputs, shown by
  Degraded and Events, not a failure of the monitor). No verdict yet for want of windows, samples or a served
  version is InProgress; a spec naming features the reference profile lacks, or a deployment or version that does
  not exist (past the same grace), is Failed.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from kstatus import CURRENT, FAILED, IN_PROGRESS, compute, flux_violations
from mlsteward_runtime.contracts import DriftWindow, FeatureType, FeatureWindow, Profile
from mlsteward_runtime.stats.ab import ArmStats
from mlsteward_runtime.stats.profile import build_profile
from test_flows_on_fake import GV, Cluster, version

from mlsteward_operator.api import Experiment
from mlsteward_operator.api.common import ObjectMeta
from mlsteward_operator.api.driftmonitor import DriftMonitor, DriftMonitorSpec, DriftMonitorStatus
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.driftmonitor import analysis as dra
from mlsteward_operator.driftmonitor import actions as drift_actions
from mlsteward_operator.driftmonitor import decide as drd
from mlsteward_operator.driftmonitor import schedule as drs
from mlsteward_operator.experiment import analysis as exa
from mlsteward_operator.experiment import decide as exd
from mlsteward_operator.experiment import schedule as exs
from mlsteward_operator.experiment.reconcile import reconcile_experiment
from mlsteward_operator.kernel.conditions import REFERENCE_GRACE
from mlsteward_operator.kube.fake import FakeClient

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def verdict(obj: dict[str, Any]) -> tuple[str, str, set[str]]:
    result = compute(obj)
    return result.status, result.reason, flux_violations(obj)


def as_object(kind: str, generation: int, status: Any) -> dict[str, Any]:
    return {"kind": kind, "metadata": {"name": "x", "generation": generation}, "status": status.to_k8s()}


# ---- Experiment ----------------------------------------------------------------------------------------------


EXPERIMENT = {"apiVersion": GV, "kind": "Experiment", "metadata": {"name": "ab", "namespace": "ml"},
              "spec": {"deployment": "iris", "variants": [{"name": "control", "version": "iris-v1", "weight": 50},
                                                          {"name": "treatment", "version": "iris-v2", "weight": 50}],
                       "metric": {"name": "accuracy", "kind": "binary", "goal": "maximize"},
                       "stopping": {"confidence": 0.95, "minSamplesPerVariant": 100, "maxDuration": "2h"}}}


async def look(fake: FakeClient, now: dt.datetime = T0) -> dict[str, Any]:
    body = await fake.get(GV, "Experiment", "ml", "ab")
    assert body is not None
    new = await reconcile_experiment(body, fake, OperatorConfig(), now=now)
    if new is not None:
        await fake.patch_status(GV, "Experiment", "ml", "ab", new)
    out = await fake.get(GV, "Experiment", "ml", "ab")
    assert out is not None
    return out


async def test_an_experiment_without_its_deployment_waits_then_is_failed_and_recovers_when_it_appears():
    c = Cluster()
    await c.create(EXPERIMENT)
    body = await c.fake.get(GV, "Experiment", "ml", "ab")
    created = dt.datetime.fromisoformat(body["metadata"]["creationTimestamp"])
    exp = await look(c.fake, created + REFERENCE_GRACE / 2)
    assert exp["status"]["observedGeneration"] == exp["metadata"]["generation"] == 1
    assert verdict(exp) == (IN_PROGRESS, "DeploymentNotFound", set())
    assert "ModelDeployment iris does not exist yet" in compute(exp).message
    assert exs.next_look(exp, created + REFERENCE_GRACE / 2)[0] == created + REFERENCE_GRACE  # woken at its end
    exp = await look(c.fake, created + REFERENCE_GRACE)
    assert verdict(exp) == (FAILED, "DeploymentNotFound", set())
    for v in ("iris-v1", "iris-v2"):
        await c.create(version(v))
    await c.create({"apiVersion": GV, "kind": "ModelDeployment", "metadata": {"name": "iris", "namespace": "ml"},
                    "spec": {"model": "iris", "version": "iris-v1"}})
    exp = await look(c.fake, created + REFERENCE_GRACE)  # it serves nothing yet: the control is not served
    assert verdict(exp) == (IN_PROGRESS, "ControlNotServed", set())
    assert "Stalled" not in {x["type"] for x in exp["status"]["conditions"]}


def experiment(status: dict[str, Any] | None = None) -> Experiment:
    body = {**EXPERIMENT, "metadata": {"name": "ab", "namespace": "ml", "generation": 2}}
    if status:
        body["status"] = status
    return Experiment.model_validate(body)


def binary(requests: int, n: int, successes: int) -> exa.VersionTotals:
    return exa.VersionTotals(requests, ArmStats(n, float(successes), float(successes)))


RUNNING = {"phase": "Running", "startedAt": T0.isoformat()}


@pytest.mark.parametrize(("status", "totals", "now", "phase_and_expected"), [
    (None, {}, T0, ("Running", CURRENT, "")),  # waiting for outcomes
    (RUNNING, {"iris-v1": binary(3000, 3000, 300), "iris-v2": binary(3000, 3000, 420)}, T0,
     ("Concluded", CURRENT, "")),
    (RUNNING, {"iris-v1": binary(5600, 1000, 100), "iris-v2": binary(4400, 1000, 300)}, T0,
     ("Stopped", FAILED, "SampleRatioMismatch")),
    (RUNNING, {"iris-v1": binary(300, 300, 30), "iris-v2": binary(300, 300, 31)}, T0 + dt.timedelta(hours=2),
     ("Stopped", FAILED, "MaxDurationReached")),
])
def test_experiment_phases(status: dict[str, Any] | None, totals: dict[str, exa.VersionTotals], now: dt.datetime,
                           phase_and_expected: tuple[str, str, str]):
    phase, *rest = phase_and_expected
    expected = tuple(rest)
    exp = experiment(status)
    analysis = exa.analyse(exp, totals, now)
    decision = exd.decide(exp, analysis, now)
    new = exd.compute_status(exp, analysis, decision, now)
    assert new.phase == phase
    assert verdict(as_object("Experiment", 2, new)) == (*expected, set())
    # A later look at a Concluded or Stopped experiment keeps the verdict and moves no condition time.
    later = exp.model_copy(update={"status": new})
    again = exd.compute_status(later, analysis, exd.decide(later, analysis, now + dt.timedelta(minutes=5)),
                               now + dt.timedelta(minutes=5))
    assert verdict(as_object("Experiment", 2, again))[:2] == expected
    if new.phase != "Running":
        assert again.conditions == new.conditions


# ---- DriftMonitor --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference() -> Profile:
    rng = np.random.default_rng(1)
    return build_profile({"x1": rng.normal(0.0, 1.0, 5000).tolist()}, types={}, seed=0)


def monitor(status: DriftMonitorStatus | None = None, **spec: Any) -> DriftMonitor:
    return DriftMonitor(metadata=ObjectMeta(name="iris-drift", namespace="ml", generation=4),
                        spec=DriftMonitorSpec(deployment="iris", **{"consecutive": 2, **spec}),
                        status=status or DriftMonitorStatus())


def window(n: int, shift: float = 0.0, seed: int = 0) -> DriftWindow:
    values = np.random.default_rng(seed).normal(shift, 1.0, n).tolist()
    return DriftWindow(name="iris", version="iris-v1", replica="p-0", seen=n,
                       features={"x1": FeatureWindow(type=FeatureType.number, values=values)})


def check(dm: DriftMonitor, verdict_: dra.DriftVerdict, now: dt.datetime = T0) -> DriftMonitor:
    status = drd.compute_status(dm, verdict_, drd.decide(dm, verdict_, now), now)
    return dm.model_copy(update={"status": status})


@pytest.mark.parametrize(("windows", "spec", "expected"), [
    ([], {}, (IN_PROGRESS, "NoWindows")),
    ([window(20)], {"window": {"minSamples": 200, "maxSamples": 5000}}, (IN_PROGRESS, "InsufficientSamples")),
    ([window(600)], {}, (CURRENT, "")),
    ([window(600, shift=1.0)], {}, (CURRENT, "")),  # a breach, not yet confirmed
    ([window(600)], {"features": ["x1", "petal"]}, (FAILED, "UnknownFeatures")),
])
def test_drift_monitor_checks(reference: Profile, windows: list[DriftWindow], spec: dict[str, Any],
                              expected: tuple[str, str]):
    dm = check(monitor(**spec), dra.analyse(monitor(**spec), reference, windows, T0))
    assert verdict(as_object("DriftMonitor", 4, dm.status)) == (*expected, set())


@pytest.mark.parametrize(("reason", "expected"), [
    ("DeploymentNotFound", FAILED), ("VersionNotFound", FAILED), ("NotServing", IN_PROGRESS),
    ("NoReference", IN_PROGRESS),
])
def test_drift_monitor_without_a_verdict(reason: str, expected: str):
    dm = check(monitor(), dra.no_verdict(T0, reason, f"{reason} (test)"))
    assert verdict(as_object("DriftMonitor", 4, dm.status)) == (expected, reason, set())


@pytest.mark.parametrize("reason", ["DeploymentNotFound", "VersionNotFound"])
def test_drift_monitor_waits_for_a_reference_applied_with_it_then_is_failed(reason: str):
    created = monitor().model_copy(update={"metadata": ObjectMeta(name="iris-drift", namespace="ml", generation=4,
                                                                  creation_timestamp=T0)})
    soon = T0 + REFERENCE_GRACE - dt.timedelta(seconds=1)
    dm = check(created, dra.no_verdict(soon, reason, f"{reason} (test)"), soon)
    assert verdict(as_object("DriftMonitor", 4, dm.status)) == (IN_PROGRESS, reason, set())
    dm = dm.model_copy(update={"status": dm.status.model_copy(update={"last_check": soon})})  # as _check records
    body = {**dm.to_k8s(), "metadata": {"name": "iris-drift", "namespace": "ml", "generation": 4,
                                        "creationTimestamp": T0.isoformat()}}
    assert drs.next_look(body, soon)[0] == T0 + REFERENCE_GRACE  # woken when the grace ends
    assert drift_actions.check_due(dm, soon)  # and every wake-up before looks again (the object may be there)
    late = T0 + REFERENCE_GRACE
    dm = check(dm, dra.no_verdict(late, reason, f"{reason} (test)"), late)
    assert verdict(as_object("DriftMonitor", 4, dm.status)) == (FAILED, reason, set())
    dm = dm.model_copy(update={"status": dm.status.model_copy(update={"last_check": late})})
    assert not drift_actions.check_due(dm, late)


def test_confirmed_drift_is_current_with_degraded_and_a_recovery_moves_nothing_twice(reference: Profile):
    dm = monitor(actions=["Alert"])
    for i in range(2):
        now = T0 + dt.timedelta(minutes=5 * i)
        dm = check(dm, dra.analyse(dm, reference, [window(600, shift=1.0, seed=i)], now), now)
    conds = {c.type: c for c in dm.status.conditions}
    assert (conds["Degraded"].status, conds["Degraded"].reason) == ("True", "DriftConfirmed")
    assert verdict(as_object("DriftMonitor", 4, dm.status)) == (CURRENT, "", set())
    # Windows dry up: InProgress (Reconciling), then a verdict again: Current, and no Reconciling left behind.
    later = T0 + dt.timedelta(minutes=15)
    dm = check(dm, dra.analyse(dm, reference, [], later), later)
    assert verdict(as_object("DriftMonitor", 4, dm.status))[:2] == (IN_PROGRESS, "NoWindows")
    dm = check(dm, dra.analyse(dm, reference, [window(600, seed=9)], later), later)
    assert {c.type for c in dm.status.conditions} == {"Ready", "Progressing", "Degraded"}


async def test_a_stopped_experiment_from_before_stalled_existed_becomes_failed_once():
    c = Cluster()
    old_ready = {"type": "Ready", "status": "False", "reason": "SampleRatioMismatch", "message": "split is off",
                 "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"}
    await c.create({**EXPERIMENT, "status": {"phase": "Stopped", "observedGeneration": 1, "conditions": [old_ready]}})
    assert verdict(await c.fake.get(GV, "Experiment", "ml", "ab"))[0] == IN_PROGRESS  # what kstatus read before
    exp = await look(c.fake)
    assert verdict(exp) == (FAILED, "SampleRatioMismatch", set())
    assert exp["status"]["phase"] == "Stopped" and exp["status"]["conditions"][0] == old_ready
    body = await c.fake.get(GV, "Experiment", "ml", "ab")
    assert await reconcile_experiment(body, c.fake, OperatorConfig(), now=T0 + STEP_LATER) is None  # idempotent


STEP_LATER = dt.timedelta(minutes=5)
