"""Bearer JWTs at the router over real HTTP: 401 invalid_token naming the rule, static tokens and JWTs together,
the rate limit keyed by the JWT's client claim, and JWKS rotation (file and watched Secret) without a restart."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from mlsteward_runtime.router.app import Router
from mlsteward_runtime.router.kubewatch import KubeEndpoint
from mlsteward_runtime.router.settings import RouterSettings

from fake_kube import FakeKubeApi
from jwt_tokens import AUDIENCE, ISSUER, claims, ec_key, forged, jwks, rsa_key, write_jwks
from router_harness import RunningRouter, ServerThread, client, config, wait_for

STATIC = "s3cr3t-static-token-0123456789"
RSA, EC = rsa_key("rsa-1"), ec_key("ec-1")


def auth(tmp_path: Path, *keys: Any, **jwt: Any) -> dict[str, Any]:
    tokens, path = tmp_path / "tokens", tmp_path / "jwks.json"
    tokens.write_text(STATIC + "\n")
    if not path.exists():
        write_jwks(path, jwks(*(keys or (RSA, EC))))
    return {"tokens_file": str(tokens),
            "jwt": {"jwks_file": str(path), "issuer": ISSUER, "audiences": [AUDIENCE], **jwt}}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def metric(rr: RunningRouter, line_prefix: str) -> float:
    for line in rr.client.get("/metrics").text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_invalid_jwts_get_401_invalid_token_naming_the_rule(backends, router_factory, tmp_path):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), auth=auth(tmp_path)))
    cases = {
        "expired": (RSA.token(exp=int(time.time()) - 600), "the token has expired"),
        "aud": (EC.token(aud="billing"), "the token's aud names no accepted audience"),
        "alg none": (forged({"alg": "none", "kid": RSA.kid}, claims(), None), "the token's alg is not accepted"),
        "hs256": (forged({"alg": "HS256", "kid": RSA.kid}, claims(), RSA.public_pem()),
                  "the token's alg is not accepted"),
        "kid": (RSA.token(kid="nope"), "no key of the JWKS has the token's kid"),
        "malformed": ("eyJhbGciOiJSUzI1NiJ9.e30.!!", "the token is not a well-formed JWT"),
    }
    for name, (token, message) in cases.items():
        r = rr.predict(headers=bearer(token))
        assert r.status_code == 401, (name, r.text)
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge, name
        assert f'error_description="{message}"' in challenge, name
        body = r.json()
        assert body["error"] == "invalid_token" and body["field"] == "authorization", name
        assert body["message"] == message and body["rule"], name
    assert not a.received
    assert metric(rr, 'mlsteward_router_refusals_total{reason="invalid_token"}') == len(cases)


def test_static_tokens_and_jwts_work_together(backends, router_factory, tmp_path):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), auth=auth(tmp_path)))
    assert rr.predict(headers=bearer(STATIC)).status_code == 200
    assert rr.predict(headers={"x-api-key": STATIC}).status_code == 200
    assert rr.predict(headers=bearer(RSA.token())).status_code == 200
    assert rr.predict(headers=bearer(EC.token())).status_code == 200
    # Neither a listed token nor shaped like a JWT: the token check's 403, as without jwt.
    other = rr.predict(headers=bearer("not-a-listed-token"))
    assert other.status_code == 403 and "JWKS" in other.json()["rule"]
    # A JWT goes in Authorization: Bearer only; as an API key it is just an unlisted token.
    assert rr.predict(headers={"x-api-key": RSA.token()}).status_code == 403
    assert len(a.received) == 4
    assert all("authorization" not in r["headers"] for r in a.received)


def test_jwt_only_auth_without_a_tokens_file(backends, router_factory, tmp_path):
    a = backends("v1")
    cfg = auth(tmp_path)
    del cfg["tokens_file"]
    rr = router_factory(config(("v1", a.url, 100), auth=cfg))
    assert rr.predict(headers=bearer(RSA.token())).status_code == 200
    assert rr.predict(headers=bearer(STATIC)).status_code == 403
    assert rr.predict().status_code == 401


def test_the_rate_limit_is_keyed_by_the_jwt_client_claim(backends, router_factory, tmp_path):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), auth=auth(tmp_path),
                               rate_limit={"requests_per_second": 0.01, "burst": 2, "by": "token"}))
    # Three different JWTs of one subject share its bucket (a refreshed token is the same client)...
    alice = [RSA.token(jti=str(i)) for i in range(3)]
    assert len(set(alice)) == 3
    assert [rr.predict(headers=bearer(t)).status_code for t in alice] == [200, 200, 429]
    # ...whoever signed them; another subject, and a static token, have buckets of their own.
    assert rr.predict(headers=bearer(EC.token())).status_code == 429
    assert rr.predict(headers=bearer(EC.token(sub="bob"))).status_code == 200
    assert rr.predict(headers=bearer(STATIC)).status_code == 200


def test_jwks_file_rotation_applies_without_a_restart(backends, router_factory, tmp_path):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), auth=auth(tmp_path, RSA)))
    router_before = rr.router
    new = rsa_key("rsa-2")
    assert rr.predict(headers=bearer(RSA.token())).status_code == 200
    assert rr.predict(headers=bearer(new.token())).status_code == 401

    write_jwks(tmp_path / "jwks.json", jwks(new))
    wait_for(lambda: rr.predict(headers=bearer(new.token())).status_code == 200, what="the new key accepted")
    old = rr.predict(headers=bearer(RSA.token()))
    assert old.status_code == 401 and old.json()["message"] == "no key of the JWKS has the token's kid"
    assert rr.router is router_before and rr.server.thread.is_alive()

    # A JWKS that does not parse keeps the keys in use, and is counted.
    write_jwks(tmp_path / "jwks.json", "{not json")
    wait_for(lambda: metric(rr, 'mlsteward_router_jwks_loads_total{result="invalid"}') == 1, what="counted")
    assert rr.predict(headers=bearer(new.token())).status_code == 200


# ------------------------------------------------------------------------------------ the JWKS Secret, watched

def test_the_jwks_secret_is_watched_and_a_rotation_applies_within_seconds(backends, tmp_path):
    a = backends("v1")
    api = FakeKubeApi().start()
    # The mounted file (what a router starts with) holds the RSA key; the Secret takes over once read.
    write_jwks(tmp_path / "jwks.json", jwks(RSA))
    jwt_cfg = {"jwks_file": str(tmp_path / "jwks.json"), "secret_name": "iris-auth", "secret_key": "jwks",
               "issuer": ISSUER, "audiences": [AUDIENCE]}
    # One Secret holds both the tokens and the JWKS: it is watched once and feeds both.
    auth_cfg = {"secret_name": "iris-auth", "secret_key": "tokens", "jwt": jwt_cfg}
    cfg = config(("v1", a.url, 100), generation="g1", auth=auth_cfg)
    path = tmp_path / "router.json"
    path.write_text(json.dumps(cfg))
    (tmp_path / "token").write_text("token-1\n")  # what FakeKubeApi accepts

    def secret(tokens: str, doc: Any) -> dict[str, str]:
        text = doc if isinstance(doc, str) else json.dumps(doc)
        return {"tokens": base64.b64encode(tokens.encode()).decode(), "jwks": base64.b64encode(text.encode()).decode()}

    api.put("secrets", "iris-auth", secret(STATIC, jwks(RSA)))
    api.put("configmaps", "iris-router", {"router.json": json.dumps(cfg)})
    router = Router(RouterSettings(replica="r0", reload_interval_s=0.05, readiness_interval_s=0.1,
                                   kube_backoff_max_s=0.2),
                    config_path=path, kube=KubeEndpoint(api.url, api.namespace, token_file=tmp_path / "token"),
                    config_map="iris-router")
    server = ServerThread(router, router.settings.header_timeout_s).start()
    http = client(server.url)

    def status(token: str) -> int:
        return http.post("/predict", json={"instances": [[1.0, 2.0]]}, headers=bearer(token)).status_code

    try:
        wait_for(lambda: status(RSA.token()) == 200, what="a JWT of the Secret's JWKS accepted")
        assert status(STATIC) == 200 and status(EC.token()) == 401
        assert len([w for w in api.watches("secrets")]) >= 1
        assert {r["query"]["fieldSelector"] for r in api.requests if r["kind"] == "secrets"} == \
            {"metadata.name=iris-auth"}

        api.put("secrets", "iris-auth", secret(STATIC, jwks(EC)))
        started = time.monotonic()
        wait_for(lambda: status(RSA.token()) == 401, what="the rotated-out key refused")
        assert time.monotonic() - started < 3.0
        assert status(EC.token()) == 200 and status(STATIC) == 200

        # A new config (another audience) builds a new verifier: it starts from the Secret's JWKS, not the file.
        jwt_cfg2 = {**jwt_cfg, "audiences": [AUDIENCE, "batch-api"]}
        api.put("configmaps", "iris-router", {"router.json": json.dumps(
            config(("v1", a.url, 100), generation="g2", auth={**auth_cfg, "jwt": jwt_cfg2}))})
        wait_for(lambda: status(EC.token(aud="batch-api")) == 200, what="the new audience accepted")
        assert status(RSA.token()) == 401 and status(STATIC) == 200

        api.put("secrets", "iris-auth", secret(STATIC, '{"keys": "broken"}'))
        wait_for(lambda: metric_of(http, 'mlsteward_router_jwks_loads_total{result="invalid"}') >= 1,
                 what="the broken JWKS counted")
        assert status(EC.token()) == 200  # the keys in use stay

        api.delete("secrets", "iris-auth")
        wait_for(lambda: status(EC.token()) == 401, what="a deleted Secret revokes its JWKS")
        assert status(STATIC) == 403
    finally:
        http.close()
        server.stop()
        api.stop()


def metric_of(http: Any, line_prefix: str) -> float:
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("header", ["Bearer", "bearer"])
def test_feedback_binds_to_the_jwt_client_not_the_token(backends, router_factory, tmp_path, header):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100), auth=auth(tmp_path)))
    served = rr.predict(headers={"authorization": f"{header} {RSA.token(jti='first')}"})
    assert served.status_code == 200
    rid = served.headers["x-request-id"]
    # Another subject's valid JWT may not give feedback on alice's prediction; alice's refreshed JWT may.
    bob = rr.client.post("/v1/feedback", json={"request_id": rid, "reward": 1.0},
                         headers=bearer(RSA.token(sub="bob")))
    assert bob.status_code == 403
    alice = rr.client.post("/v1/feedback", json={"request_id": rid, "reward": 1.0},
                           headers=bearer(EC.token(jti="refreshed")))
    assert alice.status_code in (200, 202), alice.text
