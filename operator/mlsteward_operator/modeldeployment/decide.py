"""What a ModelDeployment should look like right now, decided from observations only (pure, no I/O).

The reconcile layer gathers facts (the ModelVersions involved, whether each predictor Deployment is ready, which
router configuration every router pod runs) and asks `plan_deployment` what to do. Because the plan depends on
observed state and on nothing remembered in memory, an operator restarted in the middle of a switch makes the same
plan again and converges (DESIGN §4, level-based reconciles).

The switch to a new version (strategy Immediate) never drops a request:
1. the new version's predictor is applied next to the serving one; the router still sends it nothing;
2. once the new predictor is ready, the router configuration points at it; the router Deployment rolls its pods
   (a configuration hash on the pod template) with maxUnavailable 0, so old router pods keep serving the old
   version until new ones are ready;
3. once every router pod runs the new configuration, the new version is serving and stable, and the old
   predictor is removed.
A spec.version that is missing, not Ready, or of another model leaves the serving version in place and reports
Degraded (the operator never edits spec: status says what Git should change).

Strategies Canary and BlueGreen (`plan_rollout`) move traffic in steps and judge each step on the router's
statistics of the new version. BlueGreen is a canary with the single step 100 whose new version must first be
warm on every replica; its analysis, when set, is judged after the switch while the old version stays warm, so a
failure goes back at once. A rollout stands on what status.rollout remembers (target, step, when the step began,
each router replica's counters at that moment) and on observations, never on memory, so an operator restarted in
the middle of a step finishes the same step at the same time:
1. warm-up: the new predictor is applied; the router keeps sending everything to the stable version;
2. step i: the router configuration splits `100 - w_i` / `w_i`, with the stable version as fallback. The step
   begins when every router pod runs that split (`stepStartedAt`; the counters of each router replica are then
   recorded as the baseline);
3. once `stepInterval` has passed, the gates are judged on what the router replicas counted since the baseline,
   summed over replicas (a replica that restarted since, or that is new, counts from zero): error rate <=
   maxErrorRate, p99 (from the summed latency histogram) <= maxP99LatencyMs, requests >= minRequests.
   Too few requests extend the step, up to `MAX_STEP_INTERVALS` intervals in all; a canary still short of
   traffic then fails (NotEnoughTraffic): a version that could not be measured is not promoted. Router statistics
   that cannot be read at all hold the step the same way and then fail (AnalysisUnavailable);
4. pass: the next step, or after the last one the switch of strategy Immediate (the new version serves and is
   stable, the old one is retired once every router pod runs the new configuration);
5. fail, with spec.rollback.onFailedAnalysis (default): rollback. The router goes back to the stable version, the
   new predictor is removed once every router pod runs that configuration, status.rollout says RolledBack with
   the failed version, which is not tried again until spec.version changes (whatever the strategy says by
   then). With onFailedAnalysis off, the step is held as it is (Paused) for a person to decide.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field


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


def _why_not(desired: VersionFacts, serving: VersionFacts | None, model: str | None) -> Problem | None:
    if not desired.exists:
        return Problem("VersionNotFound", f"ModelVersion {desired.name} does not exist")
    if desired.phase == "Failed":
        return Problem("VersionFailed", f"ModelVersion {desired.name} failed validation ({desired.reason})")
    if desired.phase != "Ready":
        return Problem("VersionNotReady", f"ModelVersion {desired.name} is {desired.phase or 'Pending'}, not Ready")
    if model and desired.model != model:
        return Problem("ModelMismatch", f"ModelVersion {desired.name} is of model {desired.model}, but spec.model "
                                        f"says {model}")
    if serving is not None and serving.exists and serving.model and desired.model != serving.model:
        return Problem(
            "ModelMismatch",
            f"ModelVersion {desired.name} is of model {desired.model}, but this deployment serves model "
            f"{serving.model}; create a new ModelDeployment for another model",
        )
    return None


def plan_deployment(desired: VersionFacts, serving: VersionFacts | None, observed: Observed, *,
                    model: str | None = None) -> Plan:
    """Decide the live versions, the router target and the status versions for strategy Immediate.

    `serving` is the version status says is serving (None before the first switch completes); `model` is
    spec.model, a guard against serving another model by mistake.
    """
    serving_name = serving.name if serving is not None else None
    problem = _why_not(desired, serving, model)
    if problem is not None:
        if serving_name is None:
            return Plan(live=(), router_target=None, serving=None, stable=None, degraded=problem)
        return Plan(live=(serving_name,), router_target=serving_name, serving=serving_name, stable=serving_name,
                    degraded=problem)

    new = desired.name
    if serving_name in (None, new):
        # First deployment, or nothing to change: one version; it serves once its pods and the router are ready.
        if observed.predictor_ready.get(new) and observed.router_on == new:
            return Plan(live=(new,), router_target=new, serving=new, stable=new)
        return Plan(live=(new,), router_target=new, serving=serving_name, stable=serving_name,
                    progressing=Problem("RollingOut", f"waiting for {new} and the router to be ready"))

    # A switch from serving_name to new.
    if observed.router_on == new:
        return Plan(live=(new,), router_target=new, serving=new, stable=new)
    if not observed.predictor_ready.get(new):
        return Plan(live=(serving_name, new), router_target=serving_name, serving=serving_name,
                    stable=serving_name,
                    progressing=Problem("WarmingUp", f"waiting for {new} to pass its readiness check"))
    return Plan(live=(serving_name, new), router_target=new, serving=serving_name, stable=serving_name,
                progressing=Problem("Switching", f"router moving traffic from {serving_name} to {new}"))


# --------------------------------------------------------------------------------------------------------------
# Canary and BlueGreen
# --------------------------------------------------------------------------------------------------------------

# A step short of minRequests is extended until it has lasted this many step intervals, then fails.
MAX_STEP_INTERVALS = 3
# Tolerance when matching a replica's start time read back from status (a JSON number) with the router's.
_STARTED_TOLERANCE_S = 1e-3


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


@dataclass(frozen=True)
class Measurement:
    """What the router replicas counted for the target version during a step, summed."""

    requests: int
    errors: int
    p99_latency_ms: float | None  # None: no request measured
    replicas: int  # replicas that answered

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _bound(label: str) -> float:
    return math.inf if label in ("+Inf", "inf", "Inf") else float(label)


def histogram_quantile(q: float, buckets: Mapping[str, int]) -> float | None:
    """The q-quantile of a cumulative histogram {upper bound in ms: count}, as Prometheus' histogram_quantile:
    linear within the bucket that holds the rank (from 0 for the first bucket); a rank in the +Inf bucket gives
    the highest finite bound. None when the histogram is empty."""
    rows = sorted((_bound(k), c) for k, c in buckets.items())
    if not rows or rows[-1][1] <= 0:
        return None
    total = rows[-1][1]
    rank = q * total
    lower, below = 0.0, 0
    for upper, cum in rows:
        if cum >= rank and cum > below:
            if math.isinf(upper):
                finite = [b for b, _ in rows if not math.isinf(b)]
                return finite[-1] if finite else None
            return lower + (upper - lower) * (rank - below) / (cum - below)
        lower, below = upper, cum
    return None


def merge_counters(counters: tuple[Counters, ...] | list[Counters]) -> Counters:
    """The sum of several replicas' counters (all counts, so merging is addition)."""
    buckets: dict[str, int] = {}
    for c in counters:
        for k, n in c.latency_buckets.items():
            buckets[k] = buckets.get(k, 0) + n
    return Counters(replica="*", started=0.0, version=counters[0].version if counters else "",
                    requests=sum(c.requests for c in counters), errors=sum(c.errors for c in counters),
                    latency_buckets=buckets)


def _since(current: Counters, baseline: tuple[Counters, ...]) -> Counters:
    """What one replica counted since its baseline. No baseline for this replica and start time (a new or
    restarted router), or counters below the baseline (a reset), mean it counted everything since it started."""
    base = next((b for b in baseline if b.replica == current.replica
                 and abs(b.started - current.started) <= _STARTED_TOLERANCE_S), None)
    if base is None or current.requests < base.requests or current.errors < base.errors:
        return current
    buckets = {k: max(0, n - base.latency_buckets.get(k, 0)) for k, n in current.latency_buckets.items()}
    return Counters(current.replica, current.started, current.version, current.requests - base.requests,
                    current.errors - base.errors, buckets)


def measure(stats: tuple[Counters, ...], baseline: tuple[Counters, ...], version: str) -> Measurement | None:
    """The step's measurement of `version` from the replicas' counters now and at the step's start.
    None when no replica answered."""
    if not stats:
        return None
    mine = [c for c in stats if c.version == version]
    total = merge_counters([_since(c, baseline) for c in mine])
    replicas = len({c.replica for c in stats})
    return Measurement(total.requests, total.errors, histogram_quantile(0.99, total.latency_buckets), replicas)


def judge(m: Measurement, gates: Gates) -> tuple[str, str]:
    """('pass' | 'fail' | 'wait', why). 'wait': fewer requests than min_requests. A gate without a measurement
    (no request, with min_requests 0) passes: there is nothing to hold against the version."""
    if m.requests < gates.min_requests:
        return "wait", f"{m.requests} of {gates.min_requests} requests"
    failed = []
    if gates.max_error_rate is not None and m.error_rate > gates.max_error_rate:
        failed.append(f"error rate {m.error_rate:.4g} > {gates.max_error_rate:g}")
    if gates.max_p99_latency_ms is not None and m.p99_latency_ms is not None \
            and m.p99_latency_ms > gates.max_p99_latency_ms:
        failed.append(f"p99 {m.p99_latency_ms:.4g} ms > {gates.max_p99_latency_ms:g} ms")
    if failed:
        return "fail", "; ".join(failed)
    return "pass", f"error rate {m.error_rate:.4g}, p99 " + (
        f"{m.p99_latency_ms:.4g} ms" if m.p99_latency_ms is not None else "n/a") + f" over {m.requests} requests"


def _numbers(m: Measurement | None, step: int, weight: int) -> dict[str, float]:
    out: dict[str, float] = {"step": step, "weight": weight}
    if m is not None:
        out |= {"requests": m.requests, "errors": m.errors, "errorRate": round(m.error_rate, 6),
                "replicas": m.replicas}
        if m.p99_latency_ms is not None:
            out["p99LatencyMs"] = round(m.p99_latency_ms, 4)
    return out


def _thresholds(g: Gates) -> dict[str, float]:
    out: dict[str, float] = {"minRequests": g.min_requests}
    if g.max_error_rate is not None:
        out["maxErrorRate"] = g.max_error_rate
    if g.max_p99_latency_ms is not None:
        out["maxP99LatencyMs"] = g.max_p99_latency_ms
    return out


def split(stable: str, new: str, weight: int) -> dict[str, int]:
    """The router's weight table of a step: the stable version first (kept at 0 so it stays the fallback)."""
    return {stable: 100 - weight, new: weight}


def plan_rollout(desired: VersionFacts, serving: VersionFacts | None, observed: Observed, spec: RolloutSpec,
                 prev: RolloutState, now: dt.datetime, *, model: str | None = None) -> Plan:
    """Decide a reconcile of any strategy (see the module docstring for Canary and BlueGreen).

    `prev` is status.rollout as read; `now` the time of this reconcile. Immediate, a first deployment (nothing to
    compare with) and a spec.version that cannot be served are `plan_deployment`'s.
    """
    serving_name = serving.name if serving is not None else None
    if prev.phase == "RolledBack" and prev.target == desired.name and serving_name not in (None, desired.name):
        return _rolled_back(serving_name, desired.name, observed, prev)
    if (spec.strategy not in ("Canary", "BlueGreen") or serving_name in (None, desired.name)
            or _why_not(desired, serving, model) is not None):
        return plan_deployment(desired, serving, observed, model=model)
    assert serving_name is not None
    return _canary(serving_name, desired.name, observed, spec, prev, now)


def _rolled_back(stable: str, failed: str, observed: Observed, prev: RolloutState) -> Plan:
    state = RolloutState("RolledBack", failed, prev.step, prev.step_started_at)
    degraded = Problem("AnalysisFailed", f"{failed} failed its analysis and was rolled back; {stable} keeps serving "
                                         f"until spec.version changes (see status.decisions)")
    if observed.router_table is not None and dict(observed.router_table) == {stable: 100}:
        return Plan(live=(stable,), router_target=stable, serving=stable, stable=stable, degraded=degraded,
                    rollout=state)
    return Plan(live=(stable, failed), router_target=stable, serving=stable, stable=stable, degraded=degraded,
                progressing=Problem("RollingBack", f"router moving all traffic back to {stable}"), rollout=state)


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


def _whole(now: dt.datetime) -> dt.datetime:
    # Status keeps seconds (Kubernetes timestamps); a finer start would move after a round trip.
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    return now.astimezone(dt.UTC).replace(microsecond=0)


# --------------------------------------------------------------------------------------------------------------
# Serving requests (promotion by an Experiment, rollback by a DriftMonitor) and Experiment splits
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A ServingRequest read from an Experiment's or a DriftMonitor's status (api.common.ServingRequest)."""

    source: str  # e.g. Experiment/iris-ab
    kind: str  # Promote | Rollback
    version: str | None
    from_version: str
    time: dt.datetime
    reason: str
    message: str = ""
    numbers: Mapping[str, float] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Override:
    """status.override: `version` is served instead of spec.version while spec.version is `spec_version`."""

    version: str
    spec_version: str
    kind: str
    source: str
    time: dt.datetime
    ended_at: dt.datetime | None = None

    def holds(self, spec_version: str) -> bool:
        return self.ended_at is None and self.spec_version == spec_version


def resolve_override(spec_version: str, serving: str | None, stable: str | None, previous: str | None,
                     rollout_target: str | None, current: Override | None, requests: tuple[Request, ...],
                     ready: Mapping[str, bool], now: dt.datetime) -> tuple[Override | None, DecisionFacts | None]:
    """The override after this reconcile, and the decision when a request was applied now (pure).

    - An override ends (kept, with `ended_at`, as the record of the last request applied) once spec.version is no
      longer the one it was applied under: Git has moved on, and spec.version is what is wanted again.
    - A request applies once (only requests newer than the last one applied), and only while its `from_version`
      is still the served version: a stale request never moves traffic.
    - Promote serves `version`. Rollback serves the stable version while a rollout to `rollout_target` is under
      way (the canary is abandoned), else the previous stable version. A target that is not Ready, or no target
      at all, leaves things as they are and the request waits (a later reconcile may apply it).
    """
    if current is not None and current.ended_at is None and current.spec_version != spec_version:
        current = Override(current.version, current.spec_version, current.kind, current.source, current.time,
                           ended_at=_whole(now))
    last_time = current.time if current is not None else None
    for req in sorted(requests, key=lambda r: (r.time, r.source)):
        if last_time is not None and req.time <= last_time:
            continue
        if serving is None or req.from_version != serving:
            continue
        leaving = serving
        if req.kind == "Promote":
            target = req.version
        elif rollout_target not in (None, serving):
            target, leaving = stable, rollout_target  # abandon the canary: the stable version alone
        else:
            target = previous if stable == serving else stable
        if target is None or target == leaving or not ready.get(target):
            continue
        override = Override(target, spec_version, req.kind, req.source, req.time)
        where = f"{req.source}: " if req.source else ""
        decision = DecisionFacts(req.kind, leaving, target, req.reason,
                                 f"{where}{req.message or req.reason}; serving {target} instead of {leaving}",
                                 dict(req.numbers), dict(req.thresholds), git_version=target)
        return override, decision
    return current, None


def effective_version(spec_version: str, override: Override | None) -> str:
    """The version the plan works towards: an override's while it holds, else spec.version."""
    return override.version if override is not None and override.holds(spec_version) else spec_version


def experiment_blocker(plan: Plan, control: str, versions: Mapping[str, VersionFacts], model: str | None) -> str | None:
    """Why an Experiment's split cannot run on top of `plan` now, or None when it can.

    It runs only on a settled deployment (no rollout, nothing degraded), whose served version is the control's,
    with every variant's ModelVersion Ready and of the served model.
    """
    if plan.serving is None:
        return "the ModelDeployment serves nothing yet"
    if plan.progressing is not None or plan.degraded is not None or plan.rollout is not None:
        problem = plan.progressing or plan.degraded
        return f"the ModelDeployment is not settled ({problem.reason if problem else 'rollout under way'})"
    if control != plan.serving:
        return f"the control version {control} is not the served version {plan.serving}"
    for name, facts in versions.items():
        if not facts.exists:
            return f"ModelVersion {name} does not exist"
        if facts.phase != "Ready":
            return f"ModelVersion {name} is {facts.phase or 'Pending'}, not Ready"
        if model and facts.model != model:
            return f"ModelVersion {name} is of model {facts.model}, not {model}"
    return None


def with_experiment(plan: Plan, arms: Mapping[str, int], control: str) -> Plan:
    """`plan` with the Experiment's split: a predictor per arm, the arms' weight table, the control as fallback."""
    live = tuple(dict.fromkeys([*plan.live, *arms]))
    return Plan(live=live, router_target=plan.router_target, serving=plan.serving, stable=plan.stable,
                traffic=dict(arms), fallback=control, rollout=plan.rollout, decisions=plan.decisions)
