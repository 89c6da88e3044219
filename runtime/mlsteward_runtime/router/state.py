"""What the parts of the router share: the view derived from one config, and the attributes of the Router."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import aiohttp

from mlsteward_runtime.contracts import RouterConfig, ShadowConfig
from mlsteward_runtime.router.access import Network, RateLimiter, TokenFile
from mlsteward_runtime.router.feedback import CountedIds, ServedMap
from mlsteward_runtime.router.ids import IdKeys
from mlsteward_runtime.router.metrics import RouterMetrics
from mlsteward_runtime.router.settings import RouterSettings
from mlsteward_runtime.router.stats import StatsStore
from mlsteward_runtime.router.strategies import Assigner


@dataclass(frozen=True, slots=True)
class State:
    """Everything derived from one config, swapped as a whole on reload so a request sees one consistent view."""

    config: RouterConfig
    assigner: Assigner
    versions: list[str]
    urls: list[str]
    stable: int | None
    primary: int
    sticky_header: str | None
    sticky_body_key: str | None
    shadow: ShadowConfig | None
    timeout: aiohttp.ClientTimeout
    tokens: TokenFile | None
    limiter: RateLimiter | None
    strip: frozenset[str]  # request headers never forwarded (the credentials, with auth on)


class RouterCore:
    """The attributes every part of the Router uses (set in Router.__init__), declared once for the type checker."""

    settings: RouterSettings
    state: State
    stats: StatsStore
    metrics: RouterMetrics
    served: ServedMap
    ids: IdKeys
    counted: CountedIds
    session: aiohttp.ClientSession | None
    ready: dict[str, bool]
    outcome_at: float
    _random: random.Random
    _mirrors: set[asyncio.Task[None]]
    _mirror_bytes: int  # request and served bodies held by the mirrors in flight
    _req_children: dict[tuple[str, int], Any]
    _lat_children: dict[str, Any]
    _auth_failures: RateLimiter
    _trusted: tuple[Network, ...]
