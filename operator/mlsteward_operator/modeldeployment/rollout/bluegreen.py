"""Strategy BlueGreen (pure): a canary with the single step 100 whose new version must first be warm on every
replica. Its analysis, when set, is judged after the switch while the old version stays warm, so a failure goes
back at once."""

from __future__ import annotations

from mlsteward_operator.modeldeployment.rollout.base import Observed, RolloutSpec
from mlsteward_operator.modeldeployment.rollout.canary import Canary


class BlueGreen(Canary):
    name = "BlueGreen"
    warming = "every replica of "

    def steps(self, spec: RolloutSpec) -> tuple[int, ...]:
        return (100,)

    def warm(self, observed: Observed, new: str) -> bool:
        return bool(observed.predictor_full.get(new))
