"""Router process settings, from the environment (prefix MLSTEWARD_ROUTER_), built once by `mlsteward route`.

The routing policy itself (backends, weights, strategy) lives in the RouterConfig file the operator renders;
these are the knobs of the process that runs it.
"""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_replica() -> str:
    # The operator renders POD_NAME from the downward API; outside Kubernetes the hostname identifies the process.
    return os.environ.get("POD_NAME") or socket.gethostname()


class RouterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSTEWARD_ROUTER_", extra="ignore")

    replica: str = Field(default_factory=_default_replica, description="Name reported as RouterStats.replica.")
    reload_interval_s: float = Field(default=2.0, gt=0, description="How often the config file's mtime is polled.")
    readiness_interval_s: float = Field(
        default=5.0, gt=0, description="How often each backend's /v2/health/ready is probed."
    )
    feedback_capacity: int = Field(
        default=100_000, ge=1, description="Most recent request ids remembered to route feedback."
    )
    feedback_max_body_bytes: int = Field(
        default=64 * 1024, ge=0, description="Largest served response kept to score a label against."
    )
    sticky_capacity: int = Field(default=100_000, ge=1, description="Sticky users remembered under a bandit.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    shadow_max_inflight: int = Field(
        default=256, ge=1, description="Most mirrored requests in flight; past it a mirror is dropped and counted."
    )
    latency_window: int = Field(default=4096, ge=16, description="Recent latencies kept per version for quantiles.")
    pool_limit: int = Field(default=1024, ge=1, description="Most open connections to each backend.")
    rate_limit_max_keys: int = Field(
        default=100_000, ge=1, description="Most rate-limit buckets kept (least recently used go first)."
    )
    seed: int | None = Field(default=None, description="Seed of the assignment draws (tests and simulations).")
