"""What every rollout strategy reads and returns (pure): the facts of the versions, what the cluster shows, what
status.rollout remembers, spec.rollout as read, and the Plan a strategy decides."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class VersionFacts:
    """What the operator knows of one ModelVersion."""

    name: str
    exists: bool
    model: str | None = None
    phase: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Counters:
    """One router replica's counters of one version (RouterStats), or a baseline of them."""

    replica: str
    started: float
    version: str = ""
    requests: int = 0
    errors: int = 0
    latency_buckets: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Observed:
    """What the cluster shows now."""

    predictor_ready: dict[str, bool] = field(default_factory=dict)
    # The version the router pods all run with (their configuration is fully rolled out), or None.
    router_on: str | None = None
    # Every replica of the predictor is available (BlueGreen warms the new version fully before the switch).
    predictor_full: dict[str, bool] = field(default_factory=dict)
    # The weight table every router pod runs with, once the router Deployment has rolled out; else None.
    router_table: Mapping[str, int] | None = None
    # Counters of each router replica that answered (None: not read; empty: no replica answered).
    router_stats: tuple[Counters, ...] | None = None


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass(frozen=True)
class RolloutState:
    """What status.rollout remembers between reconciles (None/empty when nothing is remembered)."""

    phase: str | None = None  # api RolloutPhase values: Stable, Waiting, Progressing, Paused, RolledBack
    target: str | None = None
    step: int | None = None
    step_started_at: dt.datetime | None = None
    baseline: tuple[Counters, ...] = ()


@dataclass(frozen=True)
class DecisionFacts:
    """A decision a plan took, for status.decisions and an Event. `git_version`: what spec.version should say."""

    kind: str  # api DecisionKind values: Rollout, Promote, Rollback, Hold
    from_: str | None
    to: str | None
    reason: str
    message: str
    numbers: Mapping[str, float] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)
    git_version: str | None = None


@dataclass(frozen=True)
class Plan:
    live: tuple[str, ...]           # versions whose predictor children must exist
    router_target: str | None       # version the router configuration sends all traffic to (canary: the new one)
    serving: str | None             # status.servingVersion after this reconcile
    stable: str | None              # status.stableVersion after this reconcile
    degraded: Problem | None = None
    progressing: Problem | None = None
    traffic: Mapping[str, int] | None = None  # a split weight table; None: all traffic to router_target
    fallback: str | None = None     # the router's stable (fallback) version; None: router_target
    rollout: RolloutState | None = None  # status.rollout to write; None: derived from the problems (Immediate)
    decisions: tuple[DecisionFacts, ...] = ()


@dataclass(frozen=True)
class Gates:
    """spec.rollout.analysis: None disables a gate; min_requests 0 judges whatever was served."""

    max_error_rate: float | None = None
    max_p99_latency_ms: float | None = None
    min_requests: int = 0


@dataclass(frozen=True)
class RolloutSpec:
    """spec.rollout and spec.rollback.onFailedAnalysis."""

    strategy: str = "Immediate"  # Immediate | Canary | BlueGreen
    steps: tuple[int, ...] = (10, 50, 100)
    interval_s: float = 60.0
    gates: Gates = Gates()
    rollback: bool = True


def _rolled_back(stable: str, failed: str, observed: Observed, prev: RolloutState) -> Plan:
    state = RolloutState("RolledBack", failed, prev.step, prev.step_started_at)
    degraded = Problem("AnalysisFailed", f"{failed} failed its analysis and was rolled back; {stable} keeps serving "
                                         f"until spec.version changes (see status.decisions)")
    if observed.router_table is not None and dict(observed.router_table) == {stable: 100}:
        return Plan(live=(stable,), router_target=stable, serving=stable, stable=stable, degraded=degraded,
                    rollout=state)
    return Plan(live=(stable, failed), router_target=stable, serving=stable, stable=stable, degraded=degraded,
                progressing=Problem("RollingBack", f"router moving all traffic back to {stable}"), rollout=state)


def _whole(now: dt.datetime) -> dt.datetime:
    # Status keeps seconds (Kubernetes timestamps); a finer start would move after a round trip.
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    return now.astimezone(dt.UTC).replace(microsecond=0)


class Strategy(ABC):
    """One way of moving the traffic of a ModelDeployment from its stable version to a new one (spec.rollout).

    A strategy is asked only about a switch between two servable versions: the first deployment, a spec.version
    that cannot be served and a version rolled back are decided before it (decide.plan_rollout). Subclasses
    register themselves under `name`, so a new strategy is one new module in this package (and its value in the
    API's RolloutStrategy enum).
    """

    name: ClassVar[str]
    # Whether a step is judged on the router's statistics: the reconcile reads them only for such a strategy.
    measures_traffic: ClassVar[bool] = False
    registry: ClassVar[dict[str, Strategy]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            Strategy.registry[cls.name] = cls()

    @abstractmethod
    def plan(self, stable: str, new: str, observed: Observed, spec: RolloutSpec, prev: RolloutState,
             now: dt.datetime) -> Plan:
        """The plan of this reconcile of a switch from `stable` (serving) to `new` (Ready, same model)."""
