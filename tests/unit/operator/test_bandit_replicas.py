"""Bandits across router replicas, simulated with the real parts: each replica is a `Router` (its stats store and
its assigner), the operator's look is `experiment.decide.merge_router_stats` over the replicas' /v1/router/stats,
and the merged totals reach every replica as the configuration's priors through `routing.router_config` and
`Router.apply`, as the ConfigMap watch delivers them.

The claim: N replicas that share the merged posterior behave like one bandit. Measured as regret (the expected
reward lost against always serving the best arm) over the same number of requests, averaged over seeds: three
replicas stay within 1.5x of one replica, where three replicas that never get the merged counts (each a bandit of
its own, learning from a third of the traffic) lose clearly more. The second half is the control that shows the
measure can tell the two apart.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from mlsteward_runtime.router.app import Router
from mlsteward_runtime.router.settings import RouterSettings

from mlsteward_operator.api import Experiment, ModelDeployment
from mlsteward_operator.api.experiment import ExperimentStatus, VariantStatus
from mlsteward_operator.api.modeldeployment import TrafficEntry
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.experiment.decide import merge_router_stats
from mlsteward_operator.modeldeployment.routing import router_config

RATES = {"iris-a": 0.35, "iris-b": 0.50}
BEST = max(RATES.values())
REQUESTS = 1500
LOOK_EVERY = 60  # requests between two operator looks (about 5 s of traffic at 12 requests per second)
SEEDS = range(16)


def _md() -> ModelDeployment:
    return ModelDeployment.model_validate({"metadata": {"name": "iris", "namespace": "ml", "uid": "u"},
                                           "spec": {"version": "iris-a"}})


def _experiment(variants: list[VariantStatus]) -> Experiment:
    return Experiment.model_validate({
        "metadata": {"name": "ab", "namespace": "ml"},
        "spec": {"deployment": "iris", "strategy": {"type": "ThompsonSampling"},
                 "metric": {"name": "reward", "kind": "binary", "goal": "maximize"},
                 "variants": [{"name": "a", "version": "iris-a", "weight": 50},
                              {"name": "b", "version": "iris-b", "weight": 50}]},
        "status": {"variants": [v.model_dump(by_alias=True) for v in variants]},
    })


def _config(variants: list[VariantStatus]) -> Any:
    traffic = [TrafficEntry(version=v, weight=50) for v in RATES]
    return router_config(_md(), "iris", traffic, "iris-a", OperatorConfig(), experiment=_experiment(variants))


def regret(replicas: int, seed: int, *, share: bool) -> float:
    rng = random.Random(seed)
    routers = [Router(RouterSettings(replica=f"r{i}", seed=seed * 10 + i), config=_config([]))
               for i in range(replicas)]
    status = ExperimentStatus()
    lost = 0.0
    for i in range(REQUESTS):
        router = routers[rng.randrange(replicas)]  # the Service spreads requests over the replicas
        state = router.state
        version = state.versions[state.assigner.choose(None)]
        lost += BEST - RATES[version]
        router.stats.arm(version).record_outcome(1.0 if rng.random() < RATES[version] else 0.0)
        if share and (i + 1) % LOOK_EVERY == 0:
            totals, checkpoints = merge_router_stats(status, [r.stats.export() for r in routers],
                                                     arms={v: v for v in RATES}, since=0.0)
            variants = [VariantStatus(name=v, version=v, outcomes=t.outcomes.n, outcome_sum=t.outcomes.sum,
                                      outcome_sumsq=t.outcomes.sumsq, outcome_m2=t.outcomes.m2)
                        for v, t in totals.items()]
            status = ExperimentStatus(variants=variants, checkpoints=checkpoints)
            for r in routers:
                r.apply(_config(variants))
    return lost


@pytest.fixture(scope="module")
def mean_regret() -> dict[str, float]:
    runs = {
        "one": [regret(1, s, share=True) for s in SEEDS],
        "three": [regret(3, s, share=True) for s in SEEDS],
        "three_apart": [regret(3, s, share=False) for s in SEEDS],
    }
    return {k: sum(v) / len(v) for k, v in runs.items()}


def test_three_replicas_sharing_the_merged_posterior_are_within_1_5x_of_one(mean_regret: dict[str, float]):
    assert mean_regret["three"] <= 1.5 * mean_regret["one"], mean_regret


def test_replicas_that_do_not_share_lose_more(mean_regret: dict[str, float]):
    # The control: without the merged counts each replica learns from a third of the traffic.
    assert mean_regret["three_apart"] > 1.5 * mean_regret["one"], mean_regret
    assert mean_regret["three_apart"] > mean_regret["three"], mean_regret
