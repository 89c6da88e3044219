"""JWT verification against a JWKS (router.jwks), with real RSA and EC keys and tokens from PyJWT's own encoder:
what passes, and each way a token can fail, named in the refusal."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest

from mlsteward_runtime.contracts import JwtConfig
from mlsteward_runtime.router.jwks import JwksError, JwtRefused, JwtVerifier, parse_jwks

from jwt_tokens import AUDIENCE, ISSUER, b64url, claims, ec_key, forged, jwks, rsa_key, write_jwks

RSA, EC, OTHER = rsa_key("rsa-1"), ec_key("ec-1"), rsa_key("rsa-1")  # OTHER: another key under RSA's kid


def verifier(tmp_path: Path, *keys, loads: list[str] | None = None, **cfg) -> JwtVerifier:
    path = tmp_path / "jwks.json"
    write_jwks(path, jwks(*(keys or (RSA, EC))))
    config = JwtConfig(jwks_file=str(path), issuer=ISSUER, audiences=[AUDIENCE, "other-api"], **cfg)
    return JwtVerifier(config, loads.append if loads is not None else None)


def refusal(v: JwtVerifier, token: str | bytes) -> JwtRefused:
    with pytest.raises(JwtRefused) as info:
        v.verify(token.encode() if isinstance(token, str) else token)
    return info.value


def test_valid_rs256_and_es256_tokens_name_their_client(tmp_path):
    v = verifier(tmp_path)
    assert v.verify(RSA.token().encode()) == "jwt:alice"
    assert v.verify(EC.token(sub="bob").encode()) == "jwt:bob"
    # aud as a list naming one accepted audience, and the second configured audience, pass too.
    assert v.verify(RSA.token(aud=["someone-else", AUDIENCE]).encode()) == "jwt:alice"
    assert v.verify(EC.token(aud="other-api").encode()) == "jwt:alice"


def test_expiry_holds_with_the_configured_leeway(tmp_path):
    v = verifier(tmp_path, leeway_s=30)
    now = int(time.time())
    assert v.verify(RSA.token(exp=now - 10).encode()) == "jwt:alice"  # within the 30 s leeway
    r = refusal(v, RSA.token(exp=now - 120))
    assert r.message == "the token has expired" and "30 s leeway" in r.rule
    strict = verifier(tmp_path, leeway_s=0)
    assert refusal(strict, RSA.token(exp=now - 10)).message == "the token has expired"


def test_a_token_not_valid_yet_is_refused(tmp_path):
    v = verifier(tmp_path)
    now = int(time.time())
    assert refusal(v, RSA.token(nbf=now + 120)).message == "the token is not valid yet"
    assert v.verify(RSA.token(nbf=now + 10).encode()) == "jwt:alice"  # skew within the leeway


def test_audience_and_issuer_must_match(tmp_path):
    v = verifier(tmp_path)
    r = refusal(v, RSA.token(aud="billing-api"))
    assert r.message == "the token's aud names no accepted audience" and AUDIENCE in r.rule
    assert refusal(v, RSA.token(iss="https://evil.example.com")).message == "the token's iss is not the accepted issuer"
    # Exact comparison: neither a prefix of the issuer (PyJWT 2.10.0 matched substrings, GHSA-75c5-xw7c-p5pm) nor
    # an issuer that merely contains it passes.
    assert ISSUER.startswith("https://issuer.example.com")
    for iss in ("https://issuer.example.com", ISSUER[1:-1], ISSUER + ".evil.net", "x" + ISSUER):
        assert refusal(v, RSA.token(iss=iss)).rule == f"iss exactly {ISSUER}", iss


@pytest.mark.parametrize("missing", ["exp", "iss", "aud"])
def test_exp_iss_and_aud_are_required(tmp_path, missing):
    r = refusal(verifier(tmp_path), RSA.token(**{missing: None}))
    assert r.message == f"the token has no {missing} claim"


def test_a_token_signed_by_another_key_is_refused(tmp_path):
    v = verifier(tmp_path)
    r = refusal(v, OTHER.token())  # the same kid, another private key
    assert r.message == "the token's signature does not verify"
    assert refusal(v, OTHER.token(kid=None)).message == "the token's signature does not verify"


def test_alg_none_and_hs256_with_the_public_key_are_refused(tmp_path):
    v = verifier(tmp_path)
    none = jwt.encode(claims(), None, algorithm="none", headers={"kid": RSA.kid})
    assert refusal(v, none).message == "the token's alg is not accepted"
    # Key confusion (CVE-2016-10555 family): HS256 keyed with the RSA public key's PEM, which an attacker has.
    confused = forged({"alg": "HS256", "typ": "JWT", "kid": RSA.kid}, claims(), RSA.public_pem())
    r = refusal(v, confused)
    assert r.message == "the token's alg is not accepted" and r.rule == "alg one of RS256, ES256"
    # Also when the configured algorithms leave out the token's (an ES256 token where only RS256 is accepted).
    rs_only = verifier(tmp_path, algorithms=["RS256"])
    assert refusal(rs_only, EC.token()).message == "the token's alg is not accepted"
    assert rs_only.verify(RSA.token().encode()) == "jwt:alice"


def test_an_unknown_kid_is_refused_and_no_kid_tries_each_key_of_the_type(tmp_path):
    second = rsa_key("rsa-2")
    v = verifier(tmp_path, RSA, second, EC)
    r = refusal(v, RSA.token(kid="rsa-9"))
    assert r.message == "no key of the JWKS has the token's kid"
    # Without a kid, every RSA key is tried: the second one signed this token.
    assert v.verify(second.token(kid=None, sub="carol").encode()) == "jwt:carol"
    assert v.verify(EC.token(kid=None).encode()) == "jwt:alice"


@pytest.mark.parametrize("token", [
    "a.b.c",
    "eyJhbGciOiJSUzI1NiJ9.!!!.abc",
    "bm90IGpzb24.eyJzdWIiOiJ4In0.c2ln",  # header "not json"
    "W10.eyJzdWIiOiJ4In0.c2ln",  # header [] (not an object)
    "..",
    # Hostile headers: nested past the JSON decoder's recursion limit, a kid that is not a string.
    b64url(b"[" * 3000 + b"]" * 3000) + ".e30.c2ln",
    b64url(b'{"alg": "RS256", "kid": ["rsa-1"]}') + ".e30.c2ln",
])
def test_malformed_tokens_are_refused(tmp_path, token):
    r = refusal(verifier(tmp_path), token)
    assert r.message == "the token is not a well-formed JWT"


def test_a_signed_payload_that_is_not_claims_is_refused(tmp_path):
    v = verifier(tmp_path)
    token = jwt.api_jws.encode(b"[1, 2]", RSA.private, algorithm="RS256", headers={"kid": RSA.kid})
    assert refusal(v, token).message == "the token is not a well-formed JWT"
    assert refusal(v, "x" * 9000 + ".a.b").message.startswith("the token is over")


def test_the_client_claim_is_configurable_and_must_name_a_client(tmp_path):
    v = verifier(tmp_path, client_claim="azp")
    assert v.verify(RSA.token(azp="batch-scorer").encode()) == "jwt:batch-scorer"
    for bad in (None, "", {"a": 1}, "x" * 257):
        r = refusal(v, RSA.token(azp=bad))
        assert r.message == "the token's azp claim does not name a client", bad


def test_only_signing_keys_of_the_configured_algorithms_are_loaded():
    oct_key = {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}
    enc = {**RSA.jwk(), "kid": "enc", "use": "enc"}
    small = rsa_key("small")
    from cryptography.hazmat.primitives.asymmetric import rsa as crypto_rsa
    small.private = crypto_rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p384 = {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AAAA", "y": "AAAA"}
    doc = {"keys": [oct_key, enc, small.jwk(), p384, RSA.jwk(), EC.jwk(), "junk"]}
    keys = parse_jwks(json.dumps(doc), ["RS256", "ES256"])
    assert [(k.kid, k.algorithm) for k in keys] == [("rsa-1", "RS256"), ("ec-1", "ES256")]
    assert [k.kid for k in parse_jwks(json.dumps(doc), ["ES256"])] == ["ec-1"]
    for bad in ("not json", "{}", '{"keys": []}', json.dumps({"keys": [oct_key, enc]})):
        with pytest.raises(JwksError):
            parse_jwks(bad, ["RS256", "ES256"])


def test_the_jwks_file_is_re_read_on_change_and_a_bad_one_keeps_the_keys(tmp_path):
    loads: list[str] = []
    v = verifier(tmp_path, RSA, loads=loads)
    assert v.verify(RSA.token().encode()) == "jwt:alice" and loads == ["ok"]
    new = rsa_key("rsa-2")
    write_jwks(v.path, jwks(new))
    assert v.refresh() and loads == ["ok", "ok"]
    assert refusal(v, RSA.token()).message == "no key of the JWKS has the token's kid"
    assert v.verify(new.token().encode()) == "jwt:alice"
    write_jwks(v.path, '{"keys": [')  # torn or invalid: the keys in use stay
    assert not v.refresh() and loads[-1] == "invalid"
    assert v.verify(new.token().encode()) == "jwt:alice"
    v.path.unlink()  # a deleted JWKS revokes its tokens
    v.refresh()
    assert refusal(v, new.token()).message == "no JWKS is loaded to verify the token"


def test_a_jwks_loaded_from_the_secret_replaces_the_file(tmp_path):
    v = verifier(tmp_path, RSA)
    v.load(json.dumps(jwks(EC)).encode(), "secret/iris-jwks:jwks")
    assert refusal(v, RSA.token()).message == "no key of the JWKS has the token's kid"
    assert v.verify(EC.token().encode()) == "jwt:alice"
    write_jwks(v.path, jwks(RSA, EC))
    assert not v.refresh()  # the file only lags the Secret now
    v.load(None, "secret/iris-jwks:jwks")
    assert refusal(v, EC.token()).message == "no JWKS is loaded to verify the token"


def test_a_remembered_token_still_expires_and_goes_with_its_key(tmp_path):
    v = verifier(tmp_path, RSA, leeway_s=0)
    token = RSA.token(exp=int(time.time()) + 2).encode()
    assert v.verify(token) == "jwt:alice" and v.verify(token) == "jwt:alice"  # the second from memory
    deadline = time.monotonic() + 6
    while True:  # past exp the remembered token is checked again, and refused
        try:
            v.verify(token)
        except JwtRefused as exc:
            assert exc.message == "the token has expired"
            break
        assert time.monotonic() < deadline, "a remembered token outlived its exp"
        time.sleep(0.05)
    fresh = RSA.token().encode()
    assert v.verify(fresh) == "jwt:alice"
    write_jwks(v.path, jwks(EC))
    assert v.refresh()
    assert refusal(v, fresh).message == "no key of the JWKS has the token's kid"  # not from memory


def test_a_jwt_config_without_any_key_source_is_refused_where_it_is_read():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="jwt needs jwks_file, secret_name or both"):
        JwtConfig(issuer=ISSUER, audiences=[AUDIENCE])
    assert JwtConfig(secret_name="jwks", issuer=ISSUER, audiences=[AUDIENCE]).jwks_file is None
