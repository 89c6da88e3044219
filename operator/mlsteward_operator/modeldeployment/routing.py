"""The router's configuration (pure): what `mlsteward route` reads from its ConfigMap (backends and their weights,
the stable version it falls back to, the shadow, an Experiment's arms and priors, auth and rate limit), and the
volume that mounts the auth Secret's key as its tokens file. render.py puts them into the router's children."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mlsteward_runtime.contracts import (
    ArmOutcomes,
    AuthConfig,
    Backend,
    RateLimitConfig,
    RouterConfig,
    RouterStrategy,
    ShadowConfig,
    StickyConfig,
)

from mlsteward_operator.api.experiment import Experiment
from mlsteward_operator.api.modeldeployment import ModelDeployment, TrafficEntry
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel.names import predictor_name

# The auth Secret's key is mounted here as one file: what a router starts with. It then watches the Secret itself
# through the API, so a rotation applies within seconds rather than at the kubelet's next sync.
AUTH_DIR = "/etc/mlsteward-auth"
TOKENS_FILE = "tokens"


def router_config(
    md: ModelDeployment,
    model: str,
    traffic: Sequence[TrafficEntry],
    stable: str | None,
    cfg: OperatorConfig,
    shadow: str | None = None,
    experiment: Experiment | None = None,
    *,
    shadow_kind: str | None = None,
) -> RouterConfig:
    """The router's weight table: one backend per version in `traffic`, pointing at that version's Service.

    With an Experiment running on it, the router also gets the assignment strategy, sticky key, metric kind and
    goal, and each arm's outcome statistics merged so far (status.variants) as the bandits' priors. With a
    `shadow` version, the router mirrors spec.shadow.percent of the requests to it and compares its answers as
    `shadow_kind` (classification or regression; None: the router's default, classification).
    """
    namespace = md.metadata.namespace
    arms: dict[str, object] = {}
    if experiment is not None:
        spec = experiment.spec
        arms = {
            "strategy": RouterStrategy(spec.strategy.type.value),
            "epsilon": spec.strategy.epsilon,
            "sticky": StickyConfig(header=spec.sticky.header, body_key=spec.sticky.body_key) if spec.sticky else None,
            "experiment": experiment.metadata.name,
            "metric_kind": spec.metric.kind.value,
            "goal": spec.metric.goal.value,
            "outcome_priors": {
                v.version: ArmOutcomes(n=v.outcomes, sum=v.outcome_sum, sumsq=max(0.0, v.outcome_sumsq),
                                       m2=v.outcome_m2)
                for v in experiment.status.variants if v.outcomes
            },
        }
    auth, rate_limit = _access(md)
    return RouterConfig(
        deployment=md.metadata.name,
        model=model,
        backends=[
            Backend(version=t.version, url=service_url(predictor_name(md.metadata.name, t.version), namespace, cfg),
                    weight=t.weight)
            for t in traffic
        ],
        stable_version=stable,
        fallback=md.spec.fallback,
        shadow=(
            ShadowConfig(
                version=shadow,
                url=service_url(predictor_name(md.metadata.name, shadow), namespace, cfg),
                percent=md.spec.shadow.percent if md.spec.shadow else 100,
                kind=shadow_kind,  # type: ignore[arg-type]
            )
            if shadow
            else None
        ),
        auth=auth,
        rate_limit=rate_limit,
        **arms,  # type: ignore[arg-type]
    )


def _access(md: ModelDeployment) -> tuple[AuthConfig | None, RateLimitConfig | None]:
    """The router's auth and rate limit from spec.auth, with the defaults the CRD describes filled in."""
    spec = md.spec.auth
    if spec is None:
        return None, None
    ref = spec.secret_ref
    # The router watches the Secret through the API (a rotation applies within seconds); the mounted file is what
    # it starts with.
    auth = AuthConfig(tokens_file=f"{AUTH_DIR}/{TOKENS_FILE}", header=spec.header, secret_name=ref.name,
                      secret_key=ref.key) if ref else None
    rate_limit = None
    if spec.rate_limit is not None:
        rl = spec.rate_limit
        by = rl.by.value if rl.by is not None else ("token" if auth is not None else "source")
        rate_limit = RateLimitConfig(
            requests_per_second=rl.requests_per_second,
            burst=rl.burst if rl.burst is not None else max(1, math.ceil(rl.requests_per_second)),
            by=by,  # type: ignore[arg-type]
        )
    return auth, rate_limit


def auth_volume(md: ModelDeployment) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(volume, mount) of the auth Secret's key as the router's tokens file, or nothing without secretRef."""
    if md.spec.auth is None or md.spec.auth.secret_ref is None:
        return []
    ref = md.spec.auth.secret_ref
    volume = {
        "name": "auth",
        # Not optional: without its Secret the router pod waits in ContainerCreating rather than start open.
        "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": TOKENS_FILE}], "defaultMode": 0o440},
    }
    return [(volume, {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True})]


def service_url(service: str, namespace: str | None, cfg: OperatorConfig) -> str:
    # Fully qualified, so a lookup does not walk the pod's DNS search path first.
    host = f"{service}.{namespace}.svc.{cfg.cluster_domain}" if namespace else service
    return f"http://{host}:{cfg.service_port}"
