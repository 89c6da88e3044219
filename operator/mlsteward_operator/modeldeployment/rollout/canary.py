"""Strategy Canary (pure): traffic moves to the new version in steps, each judged on the router's statistics of
the new version (modeldeployment/decide.py's docstring has the steps, the gates and the rollback).

A rollout stands on what status.rollout remembers (target, step, when the step began, each router replica's
counters then) and on observations, never on memory, so an operator restarted in the middle of a step finishes the
same step at the same time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from mlsteward_operator.modeldeployment.rollout.analysis import _numbers, _thresholds, judge, measure
from mlsteward_operator.modeldeployment.rollout.base import (
    DecisionFacts,
    Observed,
    Plan,
    Problem,
    RolloutSpec,
    RolloutState,
    Strategy,
    VersionFacts,
    _rolled_back,
    _whole,
)
from mlsteward_operator.modeldeployment.rollout.immediate import plan_deployment

# A step short of minRequests is extended until it has lasted this many step intervals, then fails.
MAX_STEP_INTERVALS = 3


def split(stable: str, new: str, weight: int) -> dict[str, int]:
    """The router's weight table of a step: the stable version first (kept at 0 so it stays the fallback)."""
    return {stable: 100 - weight, new: weight}


@dataclass(frozen=True)
class _Step:
    """The step a reconcile is at, and what it needs to plan it."""

    stable: str
    new: str
    steps: tuple[int, ...]
    index: int
    same: bool  # status.rollout is about this target and still in progress (or paused)

    @property
    def weight(self) -> int:
        return self.steps[self.index]

    @property
    def table(self) -> dict[str, int]:
        return split(self.stable, self.new, self.weight)

    @property
    def where(self) -> str:
        return f"step {self.index + 1}/{len(self.steps)} ({self.weight}% to {self.new})"

    def at(self, state: RolloutState, progressing: Problem | None, **kw: Any) -> Plan:
        """Both versions live, the split of this step (unless `kw` says otherwise), the stable version serving."""
        kw.setdefault("traffic", self.table)
        kw.setdefault("fallback", self.stable)
        return Plan(live=(self.stable, self.new), router_target=self.new, serving=self.stable, stable=self.stable,
                    progressing=progressing, rollout=state, **kw)


class Canary(Strategy):
    name = "Canary"
    measures_traffic = True

    def steps(self, spec: RolloutSpec) -> tuple[int, ...]:
        """The new version's weight at each step (spec.rollout.steps)."""
        return spec.steps

    def warm(self, observed: Observed, new: str) -> bool:
        """Whether the new version may take its first step: its predictor is ready."""
        return bool(observed.predictor_ready.get(new))

    warming = ""  # what the WarmingUp message waits for, before the version's name

    def plan(self, stable: str, new: str, observed: Observed, spec: RolloutSpec, prev: RolloutState,
             now: dt.datetime) -> Plan:
        steps = self.steps(spec)
        same = prev.target == new and prev.phase in ("Progressing", "Paused") and prev.step is not None
        index = prev.step if same and prev.step is not None else 0
        if index >= len(steps):
            return _switch(stable, new, observed, index)
        s = _Step(stable, new, steps, index, same)
        if index == 0 and not (same and prev.step_started_at) and not self.warm(observed, new):
            return Plan(live=(stable, new), router_target=stable, serving=stable, stable=stable,
                        progressing=Problem("WarmingUp", f"waiting for {self.warming}{new} to pass its readiness "
                                                         "check"),
                        rollout=RolloutState("Progressing", new, 0))
        if same and prev.phase == "Paused":
            return s.at(prev, None, degraded=Problem(
                "AnalysisFailed", f"{new} failed its analysis at {s.where}; traffic is held "
                                  f"(rollback.onFailedAnalysis is off)"))
        started = prev.step_started_at if same and prev.step == index else None
        if started is None:
            return _begin(s, observed, spec, now)
        return _judge(s, observed, spec, prev, started, now)


def _switch(stable: str, new: str, observed: Observed, index: int) -> Plan:
    """Every step passed: the switch of strategy Immediate, the new version already warm.

    The router is on the new version only with the table {new: 100} (the last step's {stable: 0, new: 100} still
    falls back to the stable version, which must stay until that configuration is gone)."""
    on_new = new if observed.router_table is not None and dict(observed.router_table) == {new: 100} else None
    switch = plan_deployment(VersionFacts(new, exists=True, phase="Ready"), VersionFacts(stable, exists=True),
                             Observed(predictor_ready=observed.predictor_ready, router_on=on_new))
    state = RolloutState("Progressing", new, index) if switch.serving != new else None
    return Plan(live=switch.live, router_target=switch.router_target, serving=switch.serving,
                stable=switch.stable, progressing=switch.progressing, rollout=state)


def _begin(s: _Step, observed: Observed, spec: RolloutSpec, now: dt.datetime) -> Plan:
    """The router moves to the step's split; once every router pod runs it, the step begins."""
    if observed.router_table is None or dict(observed.router_table) != s.table:
        return s.at(RolloutState("Progressing", s.new, s.index), Problem("Stepping", f"router moving to {s.where}"))
    # The split is in effect on every router pod: the step begins; what the routers counted so far is not its.
    baseline = tuple(c for c in observed.router_stats or () if c.version == s.new)
    return s.at(RolloutState("Progressing", s.new, s.index, _whole(now), baseline),
                Problem("Analysing", f"{s.where} began; judged after {spec.interval_s:g}s"))


def _judge(s: _Step, observed: Observed, spec: RolloutSpec, prev: RolloutState, started: dt.datetime,
           now: dt.datetime) -> Plan:
    """A step under way: wait for its interval, then pass it, wait for traffic, or fail it."""
    state = RolloutState("Progressing", s.new, s.index, started, prev.baseline)
    elapsed = (now - started).total_seconds()
    # Messages stay the same for the whole step (no countdown), so status is not rewritten on every reconcile.
    if elapsed < spec.interval_s:
        return s.at(state, Problem("Analysing", f"{s.where} began; judged after {spec.interval_s:g}s"))

    m = measure(observed.router_stats or (), prev.baseline, s.new)
    gates = spec.gates
    overdue = elapsed >= spec.interval_s * MAX_STEP_INTERVALS
    if m is None:
        verdict, why = ("fail" if overdue else "wait"), "no router replica answered for its statistics"
        reason = "AnalysisUnavailable"
    else:
        verdict, why = judge(m, gates)
        reason = "AnalysisFailed"
        if verdict == "wait" and overdue:
            verdict, reason = "fail", "NotEnoughTraffic"
            why = f"{m.requests} requests in {elapsed:.0f}s, fewer than minRequests {gates.min_requests}"
    numbers, thresholds = _numbers(m, s.index, s.weight), _thresholds(gates)

    if verdict == "wait":
        short = "no router replica answered for its statistics" if m is None else \
            f"fewer than {gates.min_requests} requests so far"
        return s.at(state, Problem("WaitingForTraffic", f"{s.where}: {short}; the step lasts at most "
                                                        f"{spec.interval_s * MAX_STEP_INTERVALS:g}s"))
    if verdict == "pass":
        return _passed(s, DecisionFacts("Rollout", s.stable, s.new, "StepPassed",
                                        f"{s.new} passed {s.where}: {why}"
                                        + ("; promoting it" if s.index + 1 == len(s.steps) else ""),
                                        numbers, thresholds))
    return _failed(s, spec, prev, started, reason, why, numbers, thresholds)


def _passed(s: _Step, decision: DecisionFacts) -> Plan:
    if s.index + 1 == len(s.steps):
        return Plan(live=(s.stable, s.new), router_target=s.new, serving=s.stable, stable=s.stable,
                    progressing=Problem("Switching", f"router moving all traffic to {s.new}"),
                    rollout=RolloutState("Progressing", s.new, s.index + 1), decisions=(decision,))
    nxt = s.steps[s.index + 1]
    return s.at(RolloutState("Progressing", s.new, s.index + 1),
                Problem("Stepping", f"router moving to step {s.index + 2}/{len(s.steps)} ({nxt}% to {s.new})"),
                traffic=split(s.stable, s.new, nxt), decisions=(decision,))


def _failed(s: _Step, spec: RolloutSpec, prev: RolloutState, started: dt.datetime, reason: str, why: str,
            numbers: dict[str, float], thresholds: dict[str, float]) -> Plan:
    """Rollback (spec.rollback.onFailedAnalysis, the default), else the step held as it is for a person."""
    new, stable, where = s.new, s.stable, s.where
    if not spec.rollback:
        decision = DecisionFacts("Hold", stable, stable, reason,
                                 f"{new} failed {where}: {why}; traffic held (rollback.onFailedAnalysis is off)",
                                 numbers, thresholds, git_version=stable)
        return s.at(RolloutState("Paused", new, s.index, started, prev.baseline), None,
                    degraded=Problem(reason, f"{new} failed {where}: {why}"), decisions=(decision,))
    decision = DecisionFacts("Rollback", new, stable, reason,
                             f"{new} failed {where}: {why}; rolled back to {stable}", numbers, thresholds,
                             git_version=stable)
    back = _rolled_back(stable, new, Observed(), RolloutState("RolledBack", new, s.index, started))
    return Plan(live=back.live, router_target=stable, serving=stable, stable=stable,
                degraded=Problem(reason, f"{new} failed {where}: {why}; rolled back to {stable}"),
                progressing=back.progressing, rollout=back.rollout, decisions=(decision,))
