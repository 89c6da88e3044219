"""Strategy Canary (pure): traffic moves to the new version in steps, each judged on the router's statistics of
the new version (modeldeployment/decide.py's docstring has the steps, the gates and the rollback)."""

from __future__ import annotations

import datetime as dt

from mlsteward_operator.modeldeployment.rollout.analysis import _numbers, _thresholds, judge, measure
from mlsteward_operator.modeldeployment.rollout.base import (
    DecisionFacts,
    Observed,
    Plan,
    Problem,
    RolloutSpec,
    RolloutState,
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


def _canary(stable: str, new: str, observed: Observed, spec: RolloutSpec, prev: RolloutState,
            now: dt.datetime) -> Plan:
    steps = spec.steps if spec.strategy == "Canary" else (100,)
    same = prev.target == new and prev.phase in ("Progressing", "Paused") and prev.step is not None
    step = prev.step if same and prev.step is not None else 0
    live = (stable, new)

    def at(state: RolloutState, progressing: Problem | None, **kw: object) -> Plan:
        return Plan(live=live, router_target=new, serving=stable, stable=stable, progressing=progressing,
                    rollout=state, **kw)  # type: ignore[arg-type]

    if step >= len(steps):
        # Every step passed: the switch of strategy Immediate, the new version already warm.
        # The router is on the new version only with the table {new: 100} (the last step's {stable: 0, new: 100}
        # still falls back to the stable version, which must stay until that configuration is gone).
        on_new = new if observed.router_table is not None and dict(observed.router_table) == {new: 100} else None
        switch = plan_deployment(VersionFacts(new, exists=True, phase="Ready"), VersionFacts(stable, exists=True),
                                 Observed(predictor_ready=observed.predictor_ready, router_on=on_new))
        state = RolloutState("Progressing", new, step) if switch.serving != new else None
        return Plan(live=switch.live, router_target=switch.router_target, serving=switch.serving,
                    stable=switch.stable, progressing=switch.progressing, rollout=state)

    weight = steps[step]
    table = split(stable, new, weight)
    where = f"step {step + 1}/{len(steps)} ({weight}% to {new})"

    warm = (observed.predictor_full if spec.strategy == "BlueGreen" else observed.predictor_ready).get(new)
    if step == 0 and not (same and prev.step_started_at) and not warm:
        what = "every replica of " if spec.strategy == "BlueGreen" else ""
        return Plan(live=live, router_target=stable, serving=stable, stable=stable,
                    progressing=Problem("WarmingUp", f"waiting for {what}{new} to pass its readiness check"),
                    rollout=RolloutState("Progressing", new, 0))

    if same and prev.phase == "Paused":
        return at(prev, None, traffic=table, fallback=stable,
                  degraded=Problem("AnalysisFailed", f"{new} failed its analysis at {where}; traffic is held "
                                                     f"(rollback.onFailedAnalysis is off)"))

    started = prev.step_started_at if same and prev.step == step else None
    if started is None:
        if observed.router_table is None or dict(observed.router_table) != table:
            return at(RolloutState("Progressing", new, step), Problem("Stepping", f"router moving to {where}"),
                      traffic=table, fallback=stable)
        # The split is in effect on every router pod: the step begins; what the routers counted so far is not its.
        baseline = tuple(c for c in observed.router_stats or () if c.version == new)
        return at(RolloutState("Progressing", new, step, _whole(now), baseline),
                  Problem("Analysing", f"{where} began; judged after {spec.interval_s:g}s"),
                  traffic=table, fallback=stable)

    state = RolloutState("Progressing", new, step, started, prev.baseline)
    elapsed = (now - started).total_seconds()
    # Messages stay the same for the whole step (no countdown), so status is not rewritten on every reconcile.
    if elapsed < spec.interval_s:
        return at(state, Problem("Analysing", f"{where} began; judged after {spec.interval_s:g}s"),
                  traffic=table, fallback=stable)

    m = measure(observed.router_stats or (), prev.baseline, new)
    gates = spec.gates
    overdue = elapsed >= spec.interval_s * MAX_STEP_INTERVALS
    if m is None:
        verdict, why = ("fail", "no router replica answered for its statistics") if overdue else (
            "wait", "no router replica answered for its statistics")
        reason = "AnalysisUnavailable"
    else:
        verdict, why = judge(m, gates)
        reason = "AnalysisFailed"
        if verdict == "wait" and overdue:
            verdict, reason = "fail", "NotEnoughTraffic"
            why = f"{m.requests} requests in {elapsed:.0f}s, fewer than minRequests {gates.min_requests}"
    numbers, thresholds = _numbers(m, step, weight), _thresholds(gates)

    if verdict == "wait":
        short = "no router replica answered for its statistics" if m is None else \
            f"fewer than {gates.min_requests} requests so far"
        return at(state, Problem("WaitingForTraffic", f"{where}: {short}; the step lasts at most "
                                                      f"{spec.interval_s * MAX_STEP_INTERVALS:g}s"),
                  traffic=table, fallback=stable)
    if verdict == "pass":
        last = step + 1 == len(steps)
        decision = DecisionFacts("Rollout", stable, new, "StepPassed",
                                 f"{new} passed {where}: {why}" + ("; promoting it" if last else ""),
                                 numbers, thresholds)
        if last:
            return Plan(live=live, router_target=new, serving=stable, stable=stable,
                        progressing=Problem("Switching", f"router moving all traffic to {new}"),
                        rollout=RolloutState("Progressing", new, step + 1), decisions=(decision,))
        nxt = steps[step + 1]
        return at(RolloutState("Progressing", new, step + 1),
                  Problem("Stepping", f"router moving to step {step + 2}/{len(steps)} ({nxt}% to {new})"),
                  traffic=split(stable, new, nxt), fallback=stable, decisions=(decision,))

    if not spec.rollback:
        decision = DecisionFacts("Hold", stable, stable, reason,
                                 f"{new} failed {where}: {why}; traffic held (rollback.onFailedAnalysis is off)",
                                 numbers, thresholds, git_version=stable)
        return at(RolloutState("Paused", new, step, started, prev.baseline), None, traffic=table, fallback=stable,
                  degraded=Problem(reason, f"{new} failed {where}: {why}"), decisions=(decision,))
    decision = DecisionFacts("Rollback", new, stable, reason,
                             f"{new} failed {where}: {why}; rolled back to {stable}", numbers, thresholds,
                             git_version=stable)
    back = _rolled_back(stable, new, Observed(), RolloutState("RolledBack", new, step, started))
    return Plan(live=back.live, router_target=stable, serving=stable, stable=stable,
                degraded=Problem(reason, f"{new} failed {where}: {why}; rolled back to {stable}"),
                progressing=back.progressing, rollout=back.rollout, decisions=(decision,))
