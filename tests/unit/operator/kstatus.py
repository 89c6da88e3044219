"""kstatus's verdict on a custom resource, and Flux's stricter condition checks, in plain Python (tests only).

`compute` ports `Compute` of kubernetes-sigs/cli-utils pkg/kstatus/status (status.go: `Compute`,
`checkReadyCondition`; generic.go: `checkGenericProperties`, `checkGeneration`), the library Flux's health checks
(through its fork github.com/fluxcd/cli-utils) and `kubectl wait`-style tools read. For a kind without built-in rules
(core.go has none for ours), in this order:
1. `metadata.deletionTimestamp` set -> Terminating;
2. `status.observedGeneration` present and != `metadata.generation` -> InProgress (LatestGenerationNotObserved);
   skipped when either is absent;
3. the first condition in list order that is `Reconciling=True` -> InProgress, or `Stalled=True` -> Failed;
4. a `Ready` condition: True -> Current, False or Unknown -> InProgress (never Failed);
5. otherwise Current (no conditions at all reads as Current: "abnormal-true").

`flux_violations` ports the checks Flux's controllers run on their own objects in their tests
(fluxcd/pkg runtime/conditions/check/fail.go), those that apply to a controller that writes
status.observedGeneration with every status write: FAIL0002 Ready present, FAIL0003 Ready=False while
Reconciling=True, FAIL0004 Ready=False while Stalled=True, FAIL0005 never both Reconciling and Stalled present,
FAIL0006 observedGeneration <= generation, FAIL0007/0008 not Ready=True on an older generation (root or any
condition), FAIL0009 every condition's observedGeneration equal to the root one when Ready=True.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CURRENT, IN_PROGRESS, FAILED, TERMINATING = "Current", "InProgress", "Failed", "Terminating"


@dataclass(frozen=True)
class Result:
    status: str
    reason: str
    message: str


def _conditions(obj: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return (obj.get("status") or {}).get("conditions") or []


def _get(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    return next((c for c in _conditions(obj) if c.get("type") == type_), None)


def compute(obj: Mapping[str, Any]) -> Result:
    """kstatus `Compute` for a custom resource (module docstring)."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return Result(TERMINATING, "", "Resource scheduled for deletion")
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return Result(IN_PROGRESS, "LatestGenerationNotObserved",
                      f"{obj.get('kind')} generation is {generation}, but latest observed generation is {observed}")
    for c in _conditions(obj):
        if c.get("type") == "Reconciling" and c.get("status") == "True":
            return Result(IN_PROGRESS, c.get("reason", ""), c.get("message", ""))
        if c.get("type") == "Stalled" and c.get("status") == "True":
            return Result(FAILED, c.get("reason", ""), c.get("message", ""))
    for c in _conditions(obj):
        if c.get("type") != "Ready":
            continue
        if c.get("status") == "True":
            return Result(CURRENT, "", "Resource is Ready")
        if c.get("status") in ("False", "Unknown"):
            return Result(IN_PROGRESS, c.get("reason", ""), c.get("message", ""))
    return Result(CURRENT, "", "Resource is current")


def flux_violations(obj: Mapping[str, Any]) -> set[str]:
    """The fail.go checks `obj` breaks (module docstring), by Flux's check id."""
    out: set[str] = set()
    generation = (obj.get("metadata") or {}).get("generation") or 0
    observed = (obj.get("status") or {}).get("observedGeneration") or 0
    ready, reconciling, stalled = _get(obj, "Ready"), _get(obj, "Reconciling"), _get(obj, "Stalled")
    is_ready = ready is not None and ready.get("status") == "True"
    if ready is None:
        out.add("FAIL0002")
    if ready is not None and reconciling is not None and reconciling.get("status") == "True" \
            and ready.get("status") != "False":
        out.add("FAIL0003")
    if ready is not None and stalled is not None and stalled.get("status") == "True" \
            and ready.get("status") != "False":
        out.add("FAIL0004")
    if reconciling is not None and stalled is not None:
        out.add("FAIL0005")
    if observed > generation:
        out.add("FAIL0006")
    if observed < generation and is_ready:
        out.add("FAIL0007")
    if is_ready and any((c.get("observedGeneration") or 0) < generation for c in _conditions(obj)):
        out.add("FAIL0008")
    if is_ready and any((c.get("observedGeneration") or 0) != observed for c in _conditions(obj)):
        out.add("FAIL0009")
    return out
