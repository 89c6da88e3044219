"""status.shadow (pure): the router replicas' shadow counters merged, the paired statistics on them, and the verdict
of spec.shadow.promote.

- Merge: every router replica reports, per shadow version, counts and moments (contracts.ShadowStats). The status
  is their sum over the replicas answering now: counts add, latency histograms add bucket by bucket, moments merge
  with Chan's formula. A replica counts from its own start, so when one restarts its counts start from zero and the
  totals go down; nothing is carried over (a restart loses what that replica counted, and the gate judges what is
  left, which only makes it slower to decide). Conversely a replica keeps a version's counters for as long as it
  runs, so a version mirrored before, stopped and mirrored again starts from what was counted the first time.
- Statistics (mlsteward_runtime.stats.paired, scipy underneath; imported with this module, which the reconcile
  imports only while a deployment has a shadow): the agreement's Wilson interval; for classifiers the paired table
  of labelled requests (served and shadow accuracy, Newcombe's interval of their difference, McNemar's exact p);
  for regressors the mean |served - shadow| and the paired t interval of |shadow error| - |served error|. Every
  interval is two-sided at the gate's confidence (0.95 without a gate).
- Gate (`judge`): Pending until `minRequests` compared requests and `minPairs` labelled pairs. Passed when the
  agreement's lower bound reaches minAgreement (if set) and, with notWorse, the shadow is shown not worse by more
  than `margin` (classification: the interval's low of shadow - served accuracy >= -margin; regression: the
  interval's high of the mean error difference <= margin). Failed when the agreement's upper bound is below
  minAgreement, or with notWorse when the shadow is significantly worse beyond the margin (classification: high <
  -margin; regression: low > margin). Otherwise Pending. The gate is judged at every look (about every 10 s):
  like any repeated look at a fixed-level interval, that raises the chance of an early wrong verdict, which
  `minRequests` and `minPairs` bound by fixing how much must be seen first. A Failed verdict holds until the spec
  changes (its generation), a Passed one until the shadow version changes: a verdict is acted on once.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlsteward_runtime.contracts import RouterStats, ShadowStats
from mlsteward_runtime.stats import paired
from mlsteward_runtime.stats.moments import Moments

from mlsteward_operator.api.shadow import (
    DEFAULT_SHADOW_CONFIDENCE,
    ShadowGate,
    ShadowGateResult,
    ShadowPhase,
    ShadowPromote,
    ShadowStatus,
)
from mlsteward_operator.kernel.conditions import second
from mlsteward_operator.modeldeployment.rollout.analysis import histogram_quantile

# The fields of ShadowStatus that are measurements (updatedAt moves only when one of them does).
_NUMBERS = ("replicas", "requests", "errors", "error_rate", "dropped", "p99_ms", "compared", "agreement",
            "agreement_low", "agreement_high", "mean_abs_diff", "pairs", "served_accuracy", "shadow_accuracy",
            "accuracy_diff", "accuracy_diff_low", "accuracy_diff_high", "mcnemar_p", "mean_error_diff",
            "mean_error_diff_low", "mean_error_diff_high", "p_value")


def merge(answers: Sequence[RouterStats], version: str) -> tuple[ShadowStats, int]:
    """The counters of `version` summed over the replicas that answered, and how many answered."""
    counts = dict.fromkeys(("mirrored", "errors", "dropped", "compared", "agreed", "rows_compared", "rows_agreed",
                            "pairs", "both_correct", "served_only", "shadow_only", "neither"), 0)
    diff, error_diff = Moments(), Moments()
    buckets: dict[str, int] = {}
    kind = None
    for answer in answers:
        s = (answer.shadow or {}).get(version)
        if s is None:
            continue
        for k in counts:
            counts[k] += getattr(s, k)
        diff = diff.merge(Moments(s.diff_n, s.diff_mean, s.diff_m2))
        error_diff = error_diff.merge(Moments(s.error_diff_n, s.error_diff_mean, s.error_diff_m2))
        for bound, n in s.latency_buckets.items():
            buckets[bound] = buckets.get(bound, 0) + n
        kind = kind or s.kind
    merged = ShadowStats(version=version, kind=kind, latency_buckets=buckets, diff_n=diff.n, diff_mean=diff.mean,
                         diff_m2=diff.m2, error_diff_n=error_diff.n, error_diff_mean=error_diff.mean,
                         error_diff_m2=error_diff.m2, **counts)
    return merged, len(answers)


def _r(x: float | None) -> float | None:
    """Six significant digits: a status that does not change in the noise of float sums is not rewritten."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def measure(s: ShadowStats, replicas: int, kind: str, confidence: float) -> dict[str, Any]:
    """The measurement fields of ShadowStatus from merged counters (`kind`: classification or regression)."""
    out: dict[str, Any] = {"replicas": replicas, "requests": s.mirrored, "errors": s.errors, "dropped": s.dropped,
                           "compared": s.compared, "pairs": s.pairs}
    if s.mirrored and s.errors <= s.mirrored:  # (a report that says otherwise gets no rate rather than a crash)
        out["error_rate"] = _r(s.errors / s.mirrored)
    out["p99_ms"] = _r(histogram_quantile(0.99, s.latency_buckets))
    agreement = paired.wilson(s.agreed, s.compared, confidence=confidence) if s.agreed <= s.compared else None
    if agreement is not None:
        out.update(agreement=_r(s.agreed / s.compared), agreement_low=_r(agreement[0]),
                   agreement_high=_r(agreement[1]))
    if kind == "regression":
        if s.diff_n:
            out["mean_abs_diff"] = _r(max(0.0, s.diff_mean))
        t = paired.paired_t(Moments(s.error_diff_n, s.error_diff_mean, s.error_diff_m2), confidence=confidence)
        if s.error_diff_n:
            out["mean_error_diff"] = _r(s.error_diff_mean)
        if t is not None:
            out.update(mean_error_diff_low=_r(t.ci[0]), mean_error_diff_high=_r(t.ci[1]), p_value=_r(t.p_value))
        return out
    cells = (s.both_correct, s.served_only, s.shadow_only, s.neither)
    if sum(cells) != s.pairs:
        return out  # an inconsistent report: no accuracy rather than a wrong one
    res = paired.paired_proportions(*cells, confidence=confidence)
    if res is not None:
        out.update(served_accuracy=_r(res.served_accuracy), shadow_accuracy=_r(res.shadow_accuracy),
                   accuracy_diff=_r(res.difference), accuracy_diff_low=_r(res.ci[0]),
                   accuracy_diff_high=_r(res.ci[1]), mcnemar_p=_r(res.mcnemar_p))
    return out


@dataclass(frozen=True)
class Verdict:
    result: ShadowGateResult
    message: str
    numbers: Mapping[str, float] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=dict)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def judge(m: Mapping[str, Any], promote: ShadowPromote, kind: str) -> Verdict:
    """spec.shadow.promote's verdict on a measurement (`measure`'s fields; see the module docstring)."""
    thresholds = {"minRequests": float(promote.min_requests), "minPairs": float(promote.min_pairs),
                  "notWorse": 1.0 if promote.not_worse else 0.0, "margin": promote.margin,
                  "confidence": promote.confidence}
    if promote.min_agreement is not None:
        thresholds["minAgreement"] = promote.min_agreement
    numbers = {_camel(k): float(v) for k, v in m.items() if v is not None and k in _NUMBERS}
    compared, pairs = m.get("compared", 0), m.get("pairs", 0)
    if compared < promote.min_requests or pairs < promote.min_pairs:
        return Verdict(ShadowGateResult.pending, f"{compared} of {promote.min_requests} compared requests, {pairs} "
                       f"of {promote.min_pairs} labelled pairs", numbers, thresholds)
    failed, passed, open_ = [], [], []
    if promote.min_agreement is not None:
        lo, hi, at = m.get("agreement_low"), m.get("agreement_high"), m.get("agreement")
        text = f"agreement {_fmt(at)} [{_fmt(lo)}, {_fmt(hi)}] over {compared} requests"
        if hi is not None and hi < promote.min_agreement:
            failed.append(f"{text}: upper bound below minAgreement {promote.min_agreement:g}")
        elif lo is not None and lo >= promote.min_agreement:
            passed.append(f"{text} >= minAgreement {promote.min_agreement:g}")
        else:
            open_.append(f"{text}: not yet conclusive against minAgreement {promote.min_agreement:g}")
    if promote.not_worse:
        _not_worse(m, promote.margin, kind, failed, passed, open_)
    if failed:
        return Verdict(ShadowGateResult.failed, "; ".join(failed + passed + open_), numbers, thresholds)
    if open_:
        return Verdict(ShadowGateResult.pending, "; ".join(open_ + passed), numbers, thresholds)
    return Verdict(ShadowGateResult.passed, "; ".join(passed), numbers, thresholds)


def _not_worse(m: Mapping[str, Any], margin: float, kind: str, failed: list[str], passed: list[str],
               open_: list[str]) -> None:
    if kind == "regression":
        lo, hi = m.get("mean_error_diff_low"), m.get("mean_error_diff_high")
        text = (f"mean |shadow error| - |served error| {_fmt(m.get('mean_error_diff'))} [{_fmt(lo)}, {_fmt(hi)}] "
                f"(p={_fmt(m.get('p_value'))})")
        if lo is None or hi is None:
            open_.append("no labelled rows scored both answers yet")
        elif lo > margin:
            failed.append(f"{text}: the shadow's errors are larger beyond the margin {margin:g}")
        elif hi <= margin:
            passed.append(f"{text} <= margin {margin:g}")
        else:
            open_.append(f"{text}: not yet shown within the margin {margin:g}")
        return
    lo, hi = m.get("accuracy_diff_low"), m.get("accuracy_diff_high")
    text = (f"accuracy shadow - served {_fmt(m.get('accuracy_diff'))} [{_fmt(lo)}, {_fmt(hi)}] over "
            f"{m.get('pairs', 0)} pairs (McNemar p={_fmt(m.get('mcnemar_p'))})")
    if lo is None or hi is None:
        open_.append("no labelled pairs scored both answers yet")
    elif hi < -margin:
        failed.append(f"{text}: the shadow is less accurate beyond the margin {margin:g}")
    elif lo >= -margin:
        passed.append(f"{text} >= -margin {-margin:g}")
    else:
        open_.append(f"{text}: not yet shown within the margin {margin:g}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def shadow_status(prev: ShadowStatus | None, *, version: str, percent: int, phase: ShadowPhase, message: str,
                  kind: str | None, promote: ShadowPromote | None, generation: int | None, now: dt.datetime,
                  answers: Sequence[RouterStats] | None) -> tuple[ShadowStatus, Verdict | None]:
    """status.shadow after this look, and the gate's verdict when it changed now (to act on once).

    `answers`: the router replicas' stats, read while the shadow is mirrored (None otherwise: the numbers of `prev`
    for the same version are kept, as they were when mirroring stopped).
    """
    same = prev is not None and prev.version == version
    kind_ = kind or "classification"
    confidence = promote.confidence if promote is not None else DEFAULT_SHADOW_CONFIDENCE
    if answers is not None:
        numbers = measure(*merge(answers, version), kind_, confidence)
    elif same and prev is not None:
        numbers = {k: getattr(prev, k) for k in _NUMBERS}
    else:
        numbers = {}
    gate, verdict = _gate(prev.gate if same and prev is not None else None, numbers, promote, kind_, phase,
                          generation, now)
    changed = not same or prev is None or any(getattr(prev, k) != numbers.get(k, _DEFAULTS.get(k)) for k in _NUMBERS)
    updated = second(now) if changed and numbers else (prev.updated_at if same and prev is not None else None)
    status = ShadowStatus(version=version, percent=percent, phase=phase, message=message, kind=kind_, gate=gate,
                          updated_at=updated, **numbers)
    return status, verdict


_DEFAULTS = {k: ShadowStatus.model_fields[k].default for k in _NUMBERS}


def _gate(prev: ShadowGate | None, numbers: Mapping[str, Any], promote: ShadowPromote | None, kind: str,
          phase: ShadowPhase, generation: int | None, now: dt.datetime) -> tuple[ShadowGate | None, Verdict | None]:
    if promote is None:
        return None, None
    if prev is not None and (prev.result == ShadowGateResult.passed or (
            prev.result == ShadowGateResult.failed and prev.observed_generation == generation)):
        return prev, None  # acted on once; see the module docstring
    if phase != ShadowPhase.mirroring or not numbers:
        return prev, None
    verdict = judge(numbers, promote, kind)
    if prev is not None and prev.result == verdict.result:
        gate = prev.model_copy(update={"message": verdict.message[:4096], "observed_generation": generation})
        return gate, None
    gate = ShadowGate(result=verdict.result, message=verdict.message[:4096], since=second(now),
                      observed_generation=generation)
    return gate, (verdict if verdict.result != ShadowGateResult.pending else None)


def evidence(status: ShadowStatus, promote: ShadowPromote) -> Verdict:
    """The gate's numbers and thresholds on a status already judged (for a promotion request made again)."""
    return judge({k: getattr(status, k) for k in _NUMBERS}, promote, status.kind or "classification")
