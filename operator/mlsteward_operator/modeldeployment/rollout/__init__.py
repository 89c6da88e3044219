"""Rollout strategies behind one interface (base.Strategy), one module each: immediate, canary, bluegreen."""

from __future__ import annotations

import importlib
import pkgutil

from mlsteward_operator.modeldeployment.rollout.base import Strategy


def strategy_for(name: str) -> Strategy:
    """The strategy spec.rollout.strategy names. Every module of this package is imported once, so a strategy is
    found by its module alone."""
    if name not in Strategy.registry:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
    return Strategy.registry[name]
