"""Pure analysis of an Experiment (DESIGN §2 Experiment, §3.4, §4, §5): router counters in, status and decision out.

No I/O, no kopf, no clock: `now` is an argument, so the same inputs always give the same status. The controller
(polling the routers, configuring them, writing status, promoting) wires these four functions together:

1. `merge_router_stats(previous, reports)`: restart-safe totals per version across router replicas.
2. `analyse(exp, totals, now)` (analysis.py): per-arm n, mean, 95% CI and posterior; control against each treatment
   (two-proportion z or Welch t, effect, CI of the difference); chi-square across N binary arms; Bayesian P(best);
   the sample-ratio-mismatch check; the always-valid p-value when `stopping.sequential`.
3. `decide(exp, analysis, now)`: the stopping rules and the winner, and with `onSuccess: Promote` the promotion
   as data (never a spec write).
4. `compute_status(exp, analysis, decision, now)`: the whole status, written once.

Merging (why it is restart-safe). Each router process reports counters that are cumulative since it `started`.
Status keeps the running totals (`status.variants`) and the last counters read from every router process
(`status.checkpoints`, keyed by replica and `started`). A merge adds, per process, what it counted since its
checkpoint: a restarted router (same pod name, new `started`) counts from zero again, so all of its counters are
new; reading the same counters twice adds nothing, so an operator restart (or a failed status write followed by a
retry) reaches the same totals. A router process that was already running before the split took effect (`since`)
contributes only what it counts after it was first read, so traffic the control version served before the
experiment never enters the comparison.

Decision rules (`decide`), in this order; Concluded and Stopped are final:
- Sample-ratio mismatch (p < 0.001 against the configured weights, Weighted strategy without sticky assignment)
  stops the experiment (Stopped, SampleRatioMismatch): the assignment is broken and every other number is suspect.
- Until every arm has `stopping.minSamplesPerVariant` outcomes nothing is concluded (CollectingSamples).
- Sequential (`stopping.sequential`, the default): at every look, a treatment is significant when its mSPRT
  always-valid p-value, Bonferroni-adjusted for the number of treatments, is below alpha = 1 - confidence. Looking
  after every poll keeps the false-positive rate at alpha. Without a significant result the experiment keeps
  running.
- Fixed horizon (`sequential: false`): the analysis is done once, at the first look where every arm has its minimum
  samples (looking again would inflate false positives): pairwise tests at alpha / (number of treatments), gated by
  the chi-square test across arms for N > 2 binary arms. Nothing significant concludes without a winner.
- Winner: among the treatments significantly better than control in the direction of `metric.goal`, the one with
  the highest P(best); when every treatment is significantly worse, control.
- `stopping.maxDuration` elapsed since `status.startedAt` without a conclusion: Stopped (MaxDurationReached).
- A winner other than control with `onSuccess: Promote` yields a `Promotion`: the ModelDeployment, the version, and
  the `Decision` record (numbers, thresholds, the one-line gitChange) for the ModelDeployment's decision log.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mlsteward_runtime.contracts import RouterStats
from mlsteward_runtime.stats import ab

from mlsteward_operator.api.common import MAX_MESSAGE, Condition, ConditionType, parse_duration
from mlsteward_operator.api.experiment import (
    Experiment,
    ExperimentPhase,
    ExperimentStatus,
    Goal,
    Interval,
    OnSuccess,
    ReplicaCheckpoint,
    SampleRatio,
    StrategyType,
    VariantStatus,
)
from mlsteward_operator.api.modeldeployment import Decision, DecisionKind
from mlsteward_operator.experiment.analysis import (
    SRM_ALPHA,
    Comparison,
    ExperimentAnalysis,
    VersionTotals,
    _finite,
)
from mlsteward_operator.kernel.conditions import second, set_condition, set_kstatus

MAX_CHECKPOINTS = 64  # router processes remembered; a pod unseen for longer is assumed gone for good

# --------------------------------------------------------------------------------------------------------------
# Merging router counters
# --------------------------------------------------------------------------------------------------------------


def totals_from_status(status: ExperimentStatus) -> dict[str, VersionTotals]:
    """The running totals kept in `status.variants`, by version."""
    out: dict[str, VersionTotals] = {}
    for v in status.variants:
        out[v.version] = out.get(v.version, VersionTotals()) + VersionTotals(
            v.requests, ab.ArmStats(v.outcomes, v.outcome_sum, v.outcome_sumsq, v.outcome_m2)
        )
    return out


def _counters(v: VariantStatus) -> VersionTotals:
    return VersionTotals(v.requests, ab.ArmStats(v.outcomes, v.outcome_sum, v.outcome_sumsq, v.outcome_m2))


def merge_router_stats(
    previous: ExperimentStatus,
    reports: Sequence[RouterStats],
    *,
    arms: Mapping[str, str] | None = None,
    since: float | None = None,
) -> tuple[dict[str, VersionTotals], list[ReplicaCheckpoint]]:
    """Totals per version after adding what each router process counted since it was last read.

    - `previous`: the Experiment's status (running totals in `variants`, last counters in `checkpoints`).
    - `reports`: the RouterStats of the replicas that answered this time (a missing replica loses nothing: its
      checkpoint is kept and its next answer adds what it counted meanwhile).
    - `arms`: version -> arm name; only these versions are counted (default: every version reported).
    - `since`: Unix time the experiment's split took effect. A process first read now that started before it
      contributes nothing yet (its counters so far are a baseline); one started after it contributes everything.
    Returns the new totals and the new checkpoints (at most MAX_CHECKPOINTS, newest processes kept).
    """
    totals = totals_from_status(previous)
    checkpoints = {(c.replica, c.started): c for c in previous.checkpoints}
    newest: dict[str, float] = {}
    for c in previous.checkpoints:
        newest[c.replica] = max(newest.get(c.replica, c.started), c.started)

    for report in sorted(reports, key=lambda r: (r.replica, r.started)):
        if report.started < newest.get(report.replica, report.started):
            continue  # a stale answer from a process that has since restarted
        seen = checkpoints.get((report.replica, report.started))
        baseline_only = seen is None and since is not None and report.started < since
        last = {v.version: v for v in seen.variants} if seen is not None else {}
        variants: list[VariantStatus] = []
        for version, vs in sorted(report.versions.items()):
            if arms is not None and version not in arms:
                continue
            current = VersionTotals(vs.requests, ab.ArmStats.from_version_stats(vs))
            before = _counters(last[version]) if version in last else VersionTotals()
            counted_down = current.requests < before.requests or current.outcomes.n < before.outcomes.n
            if not (baseline_only or counted_down):
                # The inverse of Chan's merge: what this process counted since its checkpoint, M2 included.
                delta = VersionTotals(current.requests - before.requests, current.outcomes - before.outcomes)
                totals[version] = totals.get(version, VersionTotals()) + delta
            variants.append(VariantStatus(
                name=(arms or {}).get(version, version), version=version, requests=vs.requests,
                outcomes=vs.outcomes, outcome_sum=vs.outcome_sum, outcome_sumsq=vs.outcome_sumsq,
                outcome_m2=current.outcomes.m2,
            ))
        # Versions this process reported before but not now keep their last counters.
        reported = {v.version for v in variants}
        variants.extend(v for version, v in sorted(last.items()) if version not in reported)
        checkpoints[(report.replica, report.started)] = ReplicaCheckpoint(
            replica=report.replica, started=report.started, variants=variants
        )
        newest[report.replica] = report.started

    # A replica's older processes are dead (their counts are in the totals already); keep only the newest.
    kept = [c for (replica, started), c in checkpoints.items() if started == newest[replica]]
    kept.sort(key=lambda c: (-c.started, c.replica))
    kept = sorted(kept[:MAX_CHECKPOINTS], key=lambda c: (c.replica, c.started))
    return totals, kept


# --------------------------------------------------------------------------------------------------------------
# Decision
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Promotion:
    """Make the winner the served version of a ModelDeployment: status and decisions only, never spec.

    `decision` goes into the ModelDeployment's `status.decisions` (status.append_decision); its `from_` is the
    control's version, which the controller replaces by the ModelDeployment's servingVersion when it knows it.
    """

    deployment: str
    namespace: str | None
    arm: str
    version: str
    decision: Decision


@dataclass(frozen=True)
class ExperimentDecision:
    phase: ExperimentPhase
    reason: str  # CamelCase, also the conditions' reason
    message: str
    winner: str | None = None
    promotion: Promotion | None = None


def git_change(namespace: str | None, deployment: str, version: str) -> str:
    """The one-line spec change that makes Git say what is served (same wording as status.git_change)."""
    where = f"{namespace}/{deployment}" if namespace else deployment
    return f"set spec.version: {version} in ModelDeployment {where}"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _describe(analysis: ExperimentAnalysis, c: Comparison) -> str:
    p = f"always-valid p={_fmt(c.sequential_p)}" if analysis.sequential else f"p={_fmt(c.p_value)}"
    ci = c.sequential_ci if analysis.sequential else c.ci95
    ci_text = f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
    return f"{c.treatment} vs control: difference {_fmt(c.difference)}{ci_text}, {p}"


def decide(exp: Experiment, analysis: ExperimentAnalysis, now: dt.datetime) -> ExperimentDecision:
    """The stopping rules and the winner (module docstring); Concluded and Stopped are kept as they are."""
    spec, prev = exp.spec, exp.status
    if prev.phase in (ExperimentPhase.concluded, ExperimentPhase.stopped):
        ready = prev.condition(ConditionType.ready)
        promotion = None
        if prev.phase == ExperimentPhase.concluded and prev.winner:
            promotion = _promotion(exp, analysis, prev.winner, prev.concluded_at or second(now))
        return ExperimentDecision(prev.phase, ready.reason if ready else prev.phase.value,
                                  ready.message if ready else "", prev.winner, promotion)

    if analysis.srm is not None and analysis.srm.mismatch:
        observed = ", ".join(f"{a.name}={a.requests}" for a in analysis.arms)
        expected = ", ".join(f"{a.name}={e:.0f}" for a, e in zip(analysis.arms, analysis.srm.expected))
        return ExperimentDecision(
            ExperimentPhase.stopped, "SampleRatioMismatch",
            f"requests per arm ({observed}) do not follow the configured weights (expected {expected}; "
            f"p={analysis.srm.p_value:.3g} < {SRM_ALPHA}): assignment is broken, so no result is trusted",
        )

    max_s = parse_duration(spec.stopping.max_duration) if spec.stopping.max_duration else None
    timed_out = max_s is not None and analysis.elapsed_s >= max_s
    need = spec.stopping.min_samples_per_variant
    if analysis.min_outcomes < need:
        if timed_out:
            return _timed_out(spec.stopping.max_duration, f"arms have {_counts(analysis)} of {need} outcomes")
        reason = "WaitingForOutcomes" if all(a.stats.n == 0 for a in analysis.arms) else "CollectingSamples"
        return ExperimentDecision(ExperimentPhase.running, reason,
                                  f"outcomes per arm: {_counts(analysis)}; {need} needed per arm")

    better = [c for c in analysis.comparisons if c.significant and c.better]
    gate = analysis.sequential or analysis.chi_square is None or analysis.chi_square[1] < analysis.alpha
    if better and gate:
        pb = {a.name: a.probability_best or 0.0 for a in analysis.arms}
        best = max(better, key=lambda c: (pb[c.treatment], c.difference if analysis.goal == Goal.maximize
                                          else -(c.difference or 0.0)))
        winner = best.treatment
        message = f"{winner} wins: {_describe(analysis, best)}, P(best)={_fmt(pb[winner])}"
        promotion = None
        if spec.on_success == OnSuccess.promote:
            promotion = _promotion(exp, analysis, winner, second(now))
            message += f"; promoting {analysis.arm(winner).version}"
        return ExperimentDecision(ExperimentPhase.concluded, "WinnerFound", message, winner, promotion)
    if analysis.comparisons and gate and all(c.significant and c.better is False for c in analysis.comparisons):
        control = analysis.arms[0].name
        worse = "; ".join(_describe(analysis, c) for c in analysis.comparisons)
        return ExperimentDecision(ExperimentPhase.concluded, "ControlWins",
                                  f"every treatment is worse than {control}: {worse}", control)
    summary = "; ".join(_describe(analysis, c) for c in analysis.comparisons)
    if not analysis.sequential:
        return ExperimentDecision(
            ExperimentPhase.concluded, "NoSignificantDifference",
            f"no treatment beats control at alpha {analysis.alpha:.3g} with {_counts(analysis)} outcomes "
            f"(fixed horizon, analysed once): {summary}",
        )
    if timed_out:
        return _timed_out(spec.stopping.max_duration, f"no significant difference: {summary}")
    return ExperimentDecision(ExperimentPhase.running, "NotSignificantYet",
                              f"no significant difference yet at alpha {analysis.alpha:.3g}: {summary}")


def _counts(analysis: ExperimentAnalysis) -> str:
    return ", ".join(f"{a.name}={a.stats.n}" for a in analysis.arms)


def _timed_out(max_duration: str | None, why: str) -> ExperimentDecision:
    return ExperimentDecision(ExperimentPhase.stopped, "MaxDurationReached",
                              f"stopped after stopping.maxDuration {max_duration} without a conclusion: {why}")


def _promotion(exp: Experiment, analysis: ExperimentAnalysis, winner: str, when: dt.datetime) -> Promotion | None:
    if exp.spec.on_success != OnSuccess.promote or winner == analysis.arms[0].name:
        return None
    control, arm = analysis.arms[0], analysis.arm(winner)
    c = analysis.comparison(winner)
    ci = (c.sequential_ci if analysis.sequential else c.ci95) if c is not None else None
    raw: dict[str, float | None] = {
        "pValue": c.sequential_p if analysis.sequential else c.p_value,
        "effect": c.difference,
        "effectLower": ci[0] if ci else None,
        "effectUpper": ci[1] if ci else None,
        "lift": c.lift,
        "probabilityBest": arm.probability_best,
        "controlMean": control.mean,
        "winnerMean": arm.mean,
        "controlSamples": float(control.stats.n),
        "winnerSamples": float(arm.stats.n),
    } if c is not None else {}
    numbers = {key: float(v) for key, v in raw.items() if v is not None and math.isfinite(v)}
    thresholds = {
        "alpha": analysis.alpha,
        "confidence": exp.spec.stopping.confidence,
        "minSamplesPerVariant": float(exp.spec.stopping.min_samples_per_variant),
        "srmAlpha": SRM_ALPHA,
    }
    namespace, deployment = exp.metadata.namespace, exp.spec.deployment
    decision = Decision(
        time=when, kind=DecisionKind.promote, from_=control.version, to=arm.version, reason="ExperimentConcluded",
        message=f"Experiment {exp.metadata.name} concluded: {arm.name} ({arm.version}) beats {control.name} "
        f"({control.version}) on {exp.spec.metric.name.value} ({exp.spec.metric.goal.value}); "
        f"{_describe(analysis, c) if c else ''}",
        numbers=numbers, thresholds=thresholds, git_change=git_change(namespace, deployment, arm.version),
    )
    return Promotion(deployment=deployment, namespace=namespace, arm=arm.name, version=arm.version, decision=decision)


# --------------------------------------------------------------------------------------------------------------
# Status
# --------------------------------------------------------------------------------------------------------------


def _conditions(exp: Experiment, decision: ExperimentDecision, now: dt.datetime) -> list[Condition]:
    """Ready (unless Stopped), Progressing (while Running) and Degraded (on a sample-ratio mismatch)."""
    phase, generation = decision.phase, exp.metadata.generation
    conds = list(exp.status.conditions)
    message = decision.message[:MAX_MESSAGE]
    conds = set_condition(conds, ConditionType.ready, phase != ExperimentPhase.stopped, decision.reason, message,
                          generation=generation, now=now)
    conds = set_condition(conds, ConditionType.progressing, phase == ExperimentPhase.running, decision.reason,
                          message, generation=generation, now=now)
    degraded = decision.reason == "SampleRatioMismatch"
    conds = set_condition(conds, ConditionType.degraded, degraded, decision.reason if degraded else "AsExpected",
                          message if degraded else "assignment follows the configuration",
                          generation=generation, now=now)
    # kstatus (docs/gitops.md): Running and Concluded are Current; Stopped never resumes (Stalled, so Failed).
    stopped = (decision.reason, message) if phase == ExperimentPhase.stopped else None
    return set_kstatus(conds, reconciling=None, stalled=stopped, generation=generation, now=now)


def _variants(exp: Experiment, analysis: ExperimentAnalysis) -> list[VariantStatus]:
    """status.variants: each arm's counts and statistics; a bandit's weight is the share it actually gave."""
    total_requests = sum(a.requests for a in analysis.arms)
    variants = []
    for a in analysis.arms:
        weight = a.weight
        if exp.spec.strategy.type != StrategyType.weighted and total_requests:
            weight = round(100 * a.requests / total_requests)  # bandits: the share they actually gave
        variants.append(VariantStatus(
            name=a.name, version=a.version, weight=weight, requests=a.requests, outcomes=a.stats.n,
            outcome_sum=a.stats.sum, outcome_sumsq=a.stats.sumsq, outcome_m2=a.stats.m2, mean=a.mean,
            ci=Interval(lower=a.ci95[0], upper=a.ci95[1]) if a.ci95 else None,
            posterior=a.posterior, probability_best=a.probability_best,
        ))
    return variants


def _shown_comparison(analysis: ExperimentAnalysis, decision: ExperimentDecision) -> Comparison | None:
    """The comparison whose effect status shows: the winner's, else the treatment most likely to be best."""
    if not analysis.comparisons:
        return None
    pb = {a.name: a.probability_best or 0.0 for a in analysis.arms}
    shown = max(analysis.comparisons, key=lambda c: pb[c.treatment])
    if decision.winner and analysis.comparison(decision.winner) is not None:
        shown = analysis.comparison(decision.winner)
    return shown


def compute_status(
    exp: Experiment,
    analysis: ExperimentAnalysis,
    decision: ExperimentDecision,
    now: dt.datetime,
    *,
    checkpoints: Sequence[ReplicaCheckpoint] | None = None,
) -> ExperimentStatus:
    """The whole status of `exp` after this look (`checkpoints`: from merge_router_stats; None keeps the old ones).

    A Concluded or Stopped experiment keeps its recorded results; only observedGeneration and conditions follow.
    """
    prev, generation = exp.status, exp.metadata.generation
    kept = list(prev.checkpoints) if checkpoints is None else list(checkpoints)
    phase = decision.phase
    conds = _conditions(exp, decision, now)
    if prev.phase in (ExperimentPhase.concluded, ExperimentPhase.stopped):
        return prev.model_copy(update={"observed_generation": generation, "conditions": conds})

    variants = _variants(exp, analysis)
    shown = _shown_comparison(analysis, decision)
    effect_ci = None
    if shown is not None:
        ci = shown.sequential_ci if analysis.sequential else shown.ci95
        effect_ci = Interval(lower=ci[0], upper=ci[1]) if ci else None

    srm = SampleRatio(p_value=_finite(analysis.srm.p_value), mismatch=analysis.srm.mismatch) \
        if analysis.srm is not None else None
    final = phase in (ExperimentPhase.concluded, ExperimentPhase.stopped)
    return ExperimentStatus(
        observed_generation=generation,
        conditions=conds,
        phase=phase,
        started_at=analysis.started_at,
        concluded_at=second(now) if final else None,
        variants=variants,
        test=analysis.test,
        p_value=analysis.p_value,
        effect=shown.difference if shown is not None else None,
        effect_ci=effect_ci,
        sample_ratio=srm,
        leader=analysis.leader,
        probability_best=analysis.probability_best,
        winner=decision.winner,
        checkpoints=kept,
    )
