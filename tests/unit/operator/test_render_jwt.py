"""spec.auth.jwt rendered for the router: its JwtConfig (the mounted JWKS file and the watched Secret), the JWKS
volume, the Role naming each Secret it reads, and the rate limit keyed by token by default."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mlsteward_runtime.contracts import RouterConfig

from mlsteward_operator.api import ModelDeployment, ModelVersion
from mlsteward_operator.api.modeldeployment import TrafficEntry
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.modeldeployment import render

CFG = OperatorConfig(image="registry.local/mlsteward:1.2.3")
SHA = "3" * 64
JWT = {"jwksSecretRef": {"name": "idp-jwks"}, "issuer": "https://idp.example.com/realms/ml",
       "audiences": ["iris-api"]}


def _version() -> ModelVersion:
    m = ModelVersion.model_validate({
        "metadata": {"name": "iris-1-0-0", "namespace": "ml", "uid": "uid-mv", "generation": 1},
        "spec": {"model": "iris", "version": "1.0.0",
                 "artifact": {"uri": "file:///models/iris.skops", "sha256": SHA, "format": "skops"}},
    })
    return m.model_copy(update={"status": m.status.model_copy(update={
        "phase": "Ready", "golden": {"inputs": [[5.1, 3.5, 1.4, 0.2]], "outputs": [0]},
        "signature": {"inputs": [{"name": "sepal_length"}], "output": {"kind": "class", "classes": [0, 1, 2]}},
    })})


V1 = _version()


def children(auth: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    md = ModelDeployment.model_validate({
        "metadata": {"name": "iris", "namespace": "ml", "uid": "uid-md", "generation": 3},
        "spec": {"version": "iris-1-0-0", "auth": auth},
    })
    out = render.render_deployment(md, {"iris-1-0-0": V1}, ["iris-1-0-0"],
                                   [TrafficEntry(version="iris-1-0-0", weight=100)], "iris-1-0-0", CFG)
    return {(c["kind"], c["metadata"]["name"]): c for c in out}


def router_config(objs: dict[tuple[str, str], dict[str, Any]]) -> RouterConfig:
    return RouterConfig.model_validate_json(objs[("ConfigMap", "iris-router")]["data"]["router.json"])


def test_jwt_only_renders_the_jwks_file_the_secret_to_watch_and_the_defaults():
    objs = children({"jwt": JWT, "rateLimit": {"requestsPerSecond": 5}})
    config = router_config(objs)
    auth = config.auth
    assert auth is not None and auth.tokens_file is None and auth.secret_name is None
    jwt = auth.jwt
    assert jwt is not None
    assert jwt.jwks_file == "/etc/mlsteward-jwks/jwks.json"
    assert (jwt.secret_name, jwt.secret_key) == ("idp-jwks", "jwks")
    assert (jwt.issuer, jwt.audiences) == ("https://idp.example.com/realms/ml", ["iris-api"])
    assert jwt.algorithms == ["RS256", "ES256"] and jwt.leeway_s == 30.0 and jwt.client_claim == "sub"
    # With JWTs, a rate limit without `by` goes by the client (the JWT's claim), as with tokens.
    assert config.rate_limit is not None and config.rate_limit.by == "token"

    pod = objs[("Deployment", "iris-router")]["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "auth-jwks")
    assert volume["secret"] == {"secretName": "idp-jwks", "items": [{"key": "jwks", "path": "jwks.json"}],
                                "defaultMode": 0o440}
    assert all(v["name"] != "auth" for v in pod["volumes"])  # no tokens Secret to mount
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "auth-jwks")
    assert mount == {"name": "auth-jwks", "mountPath": "/etc/mlsteward-jwks", "readOnly": True}

    role = objs[("Role", "iris-router")]
    assert role["rules"][1] == {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["idp-jwks"],
                                "verbs": ["get", "list", "watch"]}
    predictor = objs[("Deployment", "iris-iris-1-0-0")]["spec"]["template"]["spec"]
    assert all(not v["name"].startswith("auth") for v in predictor["volumes"])


def test_tokens_and_jwts_together_name_both_secrets_once():
    jwt = {**JWT, "jwksSecretRef": {"name": "iris-auth", "key": "jwks.json"}, "algorithms": ["ES256"],
           "leeway": "1m30s", "clientClaim": "azp"}
    objs = children({"secretRef": {"name": "iris-auth", "key": "tokens"}, "jwt": jwt})
    auth = router_config(objs).auth
    assert auth is not None and auth.tokens_file == "/etc/mlsteward-auth/tokens"
    assert auth.jwt is not None and auth.jwt.algorithms == ["ES256"] and auth.jwt.leeway_s == 90.0
    assert auth.jwt.client_claim == "azp" and auth.jwt.secret_key == "jwks.json"
    assert objs[("Role", "iris-router")]["rules"][1]["resourceNames"] == ["iris-auth"]
    volumes = {v["name"]: v for v in objs[("Deployment", "iris-router")]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["auth"]["secret"]["items"] == [{"key": "tokens", "path": "tokens"}]
    assert volumes["auth-jwks"]["secret"]["items"] == [{"key": "jwks.json", "path": "jwks.json"}]

    both = children({"secretRef": {"name": "iris-tokens", "key": "tokens"}, "jwt": JWT})
    assert both[("Role", "iris-router")]["rules"][1]["resourceNames"] == ["idp-jwks", "iris-tokens"]


def test_a_change_of_the_jwt_settings_moves_the_router_generation():
    def generation(jwt: dict[str, Any]) -> str:
        cm = children({"jwt": jwt})[("ConfigMap", "iris-router")]
        return cm["metadata"]["annotations"]["mlsteward.io/router-generation"]

    base = generation(JWT)
    assert generation({**JWT, "audiences": ["iris-api", "batch"]}) != base
    assert generation({**JWT, "leeway": "10s"}) != base
    assert generation(dict(JWT)) == base


@pytest.mark.parametrize("auth, message", [
    ({"jwt": {**JWT, "leeway": "6m"}}, "auth.jwt.leeway must be a duration such as 30s or 1m, from 0s to 5m"),
    ({"jwt": {**JWT, "audiences": []}}, "at least 1 item"),
    ({"jwt": {**JWT, "algorithms": ["HS256"]}}, "'RS256' or 'ES256'"),
    ({"rateLimit": {"requestsPerSecond": 1, "by": "token"}}, "needs auth.secretRef or auth.jwt"),
])
def test_the_models_refuse_bad_jwt_settings(auth, message):
    with pytest.raises(ValidationError, match=message):
        children(auth)
