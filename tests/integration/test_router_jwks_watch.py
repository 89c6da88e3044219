"""The router verifies bearer JWTs against the JWKS Secret it watches through a real API server, with the narrow
Role the operator renders: a rotated key set applies within seconds, with no restart.

The set-up is test_router_watch's (the operator's builder renders the router's ConfigMap, ServiceAccount, Role
and RoleBinding; a real `mlsteward route --config-map` process runs as that ServiceAccount), for a
ModelDeployment whose spec.auth has only `jwt`.
"""

from __future__ import annotations

import json
import ssl
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from .conftest import wait_for
from .test_controllers import GV, custom
from .test_router_watch import MD, ROUTER, apply, router, router_objects, service_account_dir  # noqa: F401

JWKS = f"{MD}-jwks"
ISSUER = "https://idp.example.com/realms/ml"
AUDIENCE = "iris-api"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwks(*keys: tuple[str, Any]) -> str:
    out = []
    for kid, private in keys:
        algo, alg = (RSAAlgorithm, "RS256") if isinstance(private, rsa.RSAPrivateKey) else (ECAlgorithm, "ES256")
        out.append({**algo.to_jwk(private.public_key(), as_dict=True), "kid": kid, "alg": alg, "use": "sig"})
    return json.dumps({"keys": out})


def token(kid: str, private: Any, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, **claims}
    alg = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "ES256"
    return jwt.encode(payload, private, algorithm=alg, headers={"kid": kid})


@pytest.fixture()
def deployment(kube: Any, namespace: str) -> list[dict[str, Any]]:
    """The ModelDeployment with `spec.auth.jwt` naming the Secret `JWKS` (holding the RSA key), and its router
    objects, applied."""
    from kubernetes import client

    client.CoreV1Api(kube).create_namespaced_secret(namespace, {"metadata": {"name": JWKS},
                                                                "stringData": {"jwks": jwks(("rsa-1", RSA_KEY))}})
    custom(kube).create_namespaced_custom_object(*GV, namespace, "modeldeployments", {
        "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": MD},
        "spec": {"version": "iris-1", "auth": {
            "jwt": {"jwksSecretRef": {"name": JWKS}, "issuer": ISSUER, "audiences": [AUDIENCE]},
            "rateLimit": {"requestsPerSecond": 1000}}}})
    objects = router_objects(kube, namespace, {"iris-1": 100})
    apply(kube, objects)
    return objects


def test_the_router_role_reads_the_jwks_secret_and_nothing_else(kube, namespace, deployment, service_account_dir):
    (role,) = [o for o in deployment if o["kind"] == "Role"]
    assert role["rules"][1]["resourceNames"] == [JWKS]
    token_ = (service_account_dir / "token").read_text()
    base = f"{kube.configuration.host}/api/v1/namespaces/{namespace}"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(service_account_dir / "ca.crt")), timeout=10,
                      headers={"Authorization": f"Bearer {token_}"}) as http:
        def status(path: str, **params: str) -> int:
            return http.get(f"{base}/{path}", params=params).status_code

        assert status("secrets", fieldSelector=f"metadata.name={JWKS}") == 200
        assert status("secrets", fieldSelector=f"metadata.name={JWKS}", watch="1", timeoutSeconds="1") == 200
        assert status("secrets") == 403
        assert status("secrets", fieldSelector="metadata.name=other") == 403
        assert status(f"configmaps/{ROUTER}") == 200


def test_the_router_verifies_jwts_against_the_watched_jwks_and_a_rotation_applies_within_2s(
        kube, namespace, router):
    from kubernetes import client

    accepted = 422  # past the token check, an empty feedback body is refused

    def status(bearer: str) -> int:
        # Feedback checks the token before it reads the body, and never reaches a backend (none is running).
        return httpx.post(f"{router}/v1/feedback", headers={"Authorization": f"Bearer {bearer}"}, json={},
                          timeout=5).status_code

    old, new = token("rsa-1", RSA_KEY), token("ec-1", EC_KEY)
    wait_for(lambda: status(old) == accepted, timeout=10, what="a JWT of the Secret's JWKS accepted", interval=0.05)
    refused = httpx.post(f"{router}/v1/feedback", headers={"Authorization": f"Bearer {new}"}, json={}, timeout=5)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert status(token("rsa-1", RSA_KEY, aud="billing")) == 401

    client.CoreV1Api(kube).patch_namespaced_secret(JWKS, namespace, {"stringData": {"jwks": jwks(("ec-1", EC_KEY))}})
    deadline = time.monotonic() + 2.0
    while (seen := (status(old), status(new))) != (401, accepted):
        assert time.monotonic() < deadline, f"2 s after the rotation the old and new JWTs get {seen}"
        time.sleep(0.02)

    # A JWKS that does not parse keeps the keys in use; a deleted Secret accepts no JWT.
    client.CoreV1Api(kube).patch_namespaced_secret(JWKS, namespace, {"stringData": {"jwks": "{broken"}})
    wait_for(lambda: 'mlsteward_router_jwks_loads_total{result="invalid"} 1.0' in
             httpx.get(f"{router}/metrics", timeout=5).text, timeout=5, what="the broken JWKS counted", interval=0.05)
    assert status(new) == accepted
    client.CoreV1Api(kube).delete_namespaced_secret(JWKS, namespace)
    wait_for(lambda: status(new) == 401, timeout=5, what="a deleted JWKS Secret refuses its JWTs", interval=0.05)
