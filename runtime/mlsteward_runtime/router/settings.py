"""Router process settings, from the environment (prefix MLSTEWARD_ROUTER_), built once by `mlsteward route`.

The routing policy itself (backends, weights, strategy) lives in the RouterConfig file the operator renders;
these are the knobs of the process that runs it.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from pydantic import Field, field_validator, model_validator
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
        default=100_000, ge=1,
        description="Most recent request ids remembered to route feedback (see also served_max_bytes).",
    )
    feedback_max_body_bytes: int = Field(
        default=64 * 1024, ge=0, description="Largest served response kept to score a label against."
    )
    sticky_capacity: int = Field(default=100_000, ge=1, description="Sticky users remembered under a bandit.")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest accepted request body.")
    shadow_max_inflight: int = Field(
        default=256, ge=1, description="Most mirrored requests in flight; past it a mirror is dropped and counted."
    )
    shadow_max_inflight_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024,
        description="Most bytes of mirrored request bodies in flight; past it a mirror is dropped and counted.",
    )
    shadow_answers_capacity: int = Field(
        default=100_000, ge=1,
        description="Most mirrored requests whose shadow answer is kept for a label to score beside the served "
        "one (labelled pairs); past it, or past shadow_answers_max_bytes, the oldest are forgotten first and "
        "feedback for them makes no pair. Entries older than feedback_window_s are dropped.",
    )
    shadow_answers_max_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024,
        description="Byte budget of the kept shadow answers (ids, predictions and bookkeeping, about 440 "
        "bytes for an entry with a short answer, so some 75,000 of those fit the default). An answer whose "
        "predictions take more than feedback_max_body_bytes as JSON is not kept. 32 MiB, beside served_max_bytes "
        "and the in-flight mirrors, still leaves the router pod's default 256Mi memory limit room for the process.",
    )
    latency_window: int = Field(default=4096, ge=16, description="Recent latencies kept per version for quantiles.")
    pool_limit: int = Field(default=1024, ge=1, description="Most open connections to each backend.")
    rate_limit_max_keys: int = Field(
        default=100_000, ge=1, description="Most rate-limit buckets kept (least recently used go first)."
    )
    seed: int | None = Field(default=None, description="Seed of the assignment draws (tests and simulations).")
    served_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024,
        description="Byte budget of the request ids remembered for feedback (ids, kept response bodies and "
        "bookkeeping); past it the oldest are forgotten first. The default leaves most of the router pod's "
        "default 256Mi memory limit to the process itself.",
    )
    id_key_file: str | None = Field(
        default=None,
        description="File of the keys that sign request ids, one per line (the first signs, all verify), re-read "
        "when it changes; in Kubernetes the Secret <deployment>-router-key mounted at ids.ID_KEY_PATH. Every "
        "replica sharing it accepts feedback for any replica's ids. Unset: a random key per process, so feedback "
        "is accepted only by the replica that served the prediction, until it restarts.",
    )
    feedback_window_s: float = Field(
        default=24 * 3600.0, gt=0, le=366 * 24 * 3600.0,
        description="How long after a prediction feedback for it is accepted (older ids get 410).",
    )
    feedback_counted_capacity: int = Field(
        default=100_000, ge=1,
        description="Most request ids remembered as already given feedback (a repeat gets 409); past it, or past "
        "feedback_counted_max_bytes, the id counted longest ago is forgotten, and a repeat of it within the "
        "window would be counted again.",
    )
    feedback_counted_max_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Byte budget of the ids remembered as already given feedback."
    )
    reward_min: float = Field(default=-1e9, allow_inf_nan=False, description="Smallest reward feedback accepts.")
    reward_max: float = Field(default=1e9, allow_inf_nan=False, description="Largest reward feedback accepts.")
    auth_failure_burst: int = Field(
        default=30, ge=1, description="Failed authentications a source may make before it is slowed down."
    )
    auth_failure_per_s: float = Field(
        default=1.0, gt=0, description="Failed authentications per second a source may make after its burst."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDRs of proxies whose X-Forwarded-For names the client (JSON list). Empty: the "
        "header is ignored and the connection's peer is the client.",
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0,
        description="Longest a connection may take to send a request's headers before it is closed (slow clients "
        "holding connections open).",
    )
    kube_api_url: str | None = Field(
        default=None,
        description="Kubernetes API server URL for `--config-map`. Unset: https://$KUBERNETES_SERVICE_HOST:"
        "$KUBERNETES_SERVICE_PORT, as in a pod.",
    )
    kube_namespace: str | None = Field(
        default=None,
        description="Namespace of the ConfigMap and Secret. Unset: $POD_NAMESPACE, else the service account's "
        "namespace file.",
    )
    kube_serviceaccount_dir: str = Field(
        default="/var/run/secrets/kubernetes.io/serviceaccount",
        description="Directory of the service account's token (re-read when it changes), ca.crt and namespace.",
    )
    kube_watch_timeout_s: float = Field(
        default=300.0, ge=1, description="Longest a watch request lasts before it is renewed (with a fresh token)."
    )
    kube_backoff_max_s: float = Field(
        default=30.0, gt=0, description="Longest wait between retries while the Kubernetes API fails."
    )
    kube_startup_timeout_s: float = Field(
        default=60.0, gt=0,
        description="With `--config-map` and no `--config`: how long startup retries reading the ConfigMap "
        "before the process exits.",
    )

    drain_s: float = Field(
        default=5.0, ge=0, le=300,
        description="Seconds the router keeps serving after SIGTERM/SIGINT before it shuts down, with /readyz "
        "answering 503 and every response carrying Connection: close, so pooled client connections move to other "
        "pods cleanly while the endpoints catch up (see mlsteward_runtime.drain). 0 shuts down at once.",
    )
    shutdown_timeout_s: float = Field(
        default=15.0, gt=0, le=600,
        description="Once the drain has ended, the longest in-flight requests are waited for before they are "
        "cancelled. The pod's terminationGracePeriodSeconds must exceed drain_s + flush_timeout_s + "
        "shutdown_timeout_s.",
    )
    flush_timeout_s: float = Field(
        default=20.0, ge=0, le=300,
        description="After drain_s, a router that recorded outcomes since /v1/router/stats was last read keeps "
        "draining until it is read once more (the operator reads draining router pods too), for at most this many "
        "seconds: an Experiment's outcomes are not lost with the pod.",
    )

    @model_validator(mode="after")
    def _reward_range(self) -> RouterSettings:
        if self.reward_min >= self.reward_max:
            raise ValueError(f"reward_min ({self.reward_min:g}) must be below reward_max ({self.reward_max:g})")
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
        return value
