"""The router's configuration (pure): what `mlsteward route` reads from its ConfigMap (backends and their weights,
the stable version it falls back to, the shadow, an Experiment's arms and priors, the prediction cache, auth and
rate limit), and the volumes that mount the auth Secret's key as its tokens file and the JWKS Secret's key as its
JWKS file. render.py puts them into the router's children."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from mlsteward_runtime.contracts import (
    ArmOutcomes,
    AuthConfig,
    Backend,
    CacheConfig,
    JwtConfig,
    RateLimitConfig,
    RouterConfig,
    RouterStrategy,
    ShadowConfig,
    StickyConfig,
)

from mlsteward_operator.api.common import parse_duration
from mlsteward_operator.api.experiment import Experiment
from mlsteward_operator.api.modeldeployment import ModelDeployment, TrafficEntry
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.kernel.names import predictor_name

# The auth Secret's key is mounted here as one file: what a router starts with. It then watches the Secret itself
# through the API, so a rotation applies within seconds rather than at the kubelet's next sync.
AUTH_DIR = "/etc/mlsteward-auth"
TOKENS_FILE = "tokens"
# The same for the JWKS Secret's key (spec.auth.jwt.jwksSecretRef).
JWKS_DIR = "/etc/mlsteward-jwks"
JWKS_FILE = "jwks.json"


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
        cache=_cache(md),
        auth=auth,
        rate_limit=rate_limit,
        **arms,  # type: ignore[arg-type]
    )


def _cache(md: ModelDeployment) -> CacheConfig | None:
    """spec.cache as the router reads it. Rendered with an Experiment too: the router itself turns the cache off
    while `experiment` is set, so the rule lives in one place."""
    spec = md.spec.cache
    if spec is None:
        return None
    return CacheConfig(max_entries=spec.max_entries, max_bytes=spec.max_bytes, ttl_s=parse_duration(spec.ttl))


def _access(md: ModelDeployment) -> tuple[AuthConfig | None, RateLimitConfig | None]:
    """The router's auth and rate limit from spec.auth, with the defaults the CRD describes filled in."""
    spec = md.spec.auth
    if spec is None:
        return None, None
    ref = spec.secret_ref
    # The router watches the Secrets through the API (a rotation applies within seconds); the mounted files are
    # what it starts with.
    jwt = None
    if spec.jwt is not None:
        j = spec.jwt
        jwt = JwtConfig(
            jwks_file=f"{JWKS_DIR}/{JWKS_FILE}", secret_name=j.jwks_secret_ref.name, secret_key=j.jwks_secret_ref.key,
            issuer=j.issuer, audiences=list(j.audiences), algorithms=[a.value for a in j.algorithms],
            leeway_s=parse_duration(j.leeway), client_claim=j.client_claim,
        )
    auth = None
    if ref is not None or jwt is not None:
        auth = AuthConfig(
            tokens_file=f"{AUTH_DIR}/{TOKENS_FILE}" if ref else None, header=spec.header,
            secret_name=ref.name if ref else None, secret_key=ref.key if ref else "tokens", jwt=jwt,
        )
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
    """(volume, mount) of the auth Secret's key as the router's tokens file (with secretRef) and of the JWKS
    Secret's key as its JWKS file (with jwt)."""
    auth = md.spec.auth
    if auth is None:
        return []
    out = []
    # Not optional: without its Secret the router pod waits in ContainerCreating rather than start open (or, for
    # the JWKS, start refusing every JWT).
    if auth.secret_ref is not None:
        ref = auth.secret_ref
        volume = {"name": "auth", "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": TOKENS_FILE}],
                                             "defaultMode": 0o440}}
        out.append((volume, {"name": "auth", "mountPath": AUTH_DIR, "readOnly": True}))
    if auth.jwt is not None:
        jref = auth.jwt.jwks_secret_ref
        volume = {"name": "auth-jwks", "secret": {"secretName": jref.name,
                                                  "items": [{"key": jref.key, "path": JWKS_FILE}],
                                                  "defaultMode": 0o440}}
        out.append((volume, {"name": "auth-jwks", "mountPath": JWKS_DIR, "readOnly": True}))
    return out


def auth_secrets(md: ModelDeployment) -> list[str]:
    """The Secrets the router reads (tokens, JWKS), each once, sorted: its Role's resourceNames."""
    auth = md.spec.auth
    if auth is None:
        return []
    names = {auth.secret_ref.name} if auth.secret_ref is not None else set()
    if auth.jwt is not None:
        names.add(auth.jwt.jwks_secret_ref.name)
    return sorted(names)


def service_url(service: str, namespace: str | None, cfg: OperatorConfig) -> str:
    # Fully qualified, so a lookup does not walk the pod's DNS search path first.
    host = f"{service}.{namespace}.svc.{cfg.cluster_domain}" if namespace else service
    return f"http://{host}:{cfg.service_port}"


_BINARY = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def router_resources(md: ModelDeployment, resources: dict[str, Any]) -> dict[str, Any]:
    """The router container's resources: with spec.cache and no spec.router.resources, the default memory limit
    grows by cache.maxBytes, so a full cache never gets the pod OOM-killed. Resources the user set are kept as
    written (they are the user's to size; docs/rollouts.md says how)."""
    if md.spec.cache is None or md.spec.router.resources is not None:
        return resources
    limit = str((resources.get("limits") or {}).get("memory", ""))
    m = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|Ti)?", limit)
    if m is None:
        return resources
    total = int(m.group(1)) * _BINARY[m.group(2) or ""] + md.spec.cache.max_bytes
    return {**resources, "limits": {**resources["limits"], "memory": f"{-(-total // 2**20)}Mi"}}
