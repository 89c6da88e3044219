"""Bearer JWTs verified against a JSON Web Key Set (RFC 7517), from a watched file or the JWKS Secret.

A token is accepted only when all of these hold, checked by PyJWT (>= 2.10.1, which compares `iss` exactly):
- it is a JWS in compact form (three base64url parts) of at most `MAX_TOKEN_BYTES`;
- its header's `alg` is one of the configured `algorithms` (RS256, ES256). The list comes from the config only,
  never from the token, so `alg: none` and HS256 signed with a public key (key confusion) are refused before any
  key is looked at;
- its signature verifies under a key of the JWKS: the key with the token's `kid`, or, without a `kid`, any key
  whose type fits the `alg` (RSA for RS256, EC P-256 for ES256). Symmetric (`oct`) keys, keys marked for
  encryption (`use: enc`), keys whose `alg` is not configured and RSA keys under 2048 bits are never loaded;
- `exp`, `iss` and `aud` are present; `exp` (and `nbf`, `iat` when present) hold with `leeway_s` of clock skew;
  `iss` equals `issuer`; `aud` (a string or a list) names one of `audiences`;
- its `client_claim` (default `sub`) is a non-empty string (or integer) of at most 256 characters: it names the
  client, `jwt:<value>`, in rate limits and logs.

Anything else raises `JwtRefused`, whose message and rule name what failed (never echoing the token). A token
that passed is remembered (bounded, see VERIFIED_CAPACITY) until its `exp` plus the leeway, or until the keys
change, whichever comes first.

The JWKS is parsed once per change and cached: the file is re-read when its signature (inode, mtime, size)
changes, and once the JWKS Secret has been read through the API (`load`), the Secret is the source. A JWKS that
does not parse (not JSON, no usable key) keeps the keys in use and is reported through `on_load("invalid")`; a
deleted file or Secret drops every key, so that revoking a JWKS revokes its tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mlsteward_runtime.contracts import JwtConfig
from mlsteward_runtime.router.config import file_signature

log = logging.getLogger("mlsteward.router")

MAX_TOKEN_BYTES = 8 * 1024
MAX_JWKS_BYTES = 1024 * 1024  # a Secret holds at most 1 MiB
MAX_KEYS = 100
MAX_CLIENT_CHARS = 256
MIN_RSA_BITS = 2048
# Verified tokens remembered (by sha256) with their client and expiry, so a client re-sending its JWT costs a hash
# rather than a signature check and two passes of PyJWT's base64 checks (about 0.8 ms on one slow core). Bounded by
# count; an entry is at most ~0.4 KB (a client is at most MAX_CLIENT_CHARS), so at most a few MB.
VERIFIED_CAPACITY = 10_000
_SEGMENT = re.compile(rb"^[A-Za-z0-9_-]*$")
# The key type (and curve) each accepted algorithm verifies with.
KEY_TYPE = {"RS256": ("RSA", None), "ES256": ("EC", "P-256")}


class JwtRefused(Exception):
    """The token is not accepted; `message` says what failed and `rule` what would pass."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule


class JwksError(ValueError):
    """The JWKS does not parse, or holds no usable key."""


@dataclass(frozen=True)
class Key:
    kid: str | None
    algorithm: str
    public_key: Any  # a cryptography public key


def looks_like_jwt(token: bytes) -> bool:
    return token.count(b".") == 2


def parse_jwks(data: str | bytes, algorithms: list[str]) -> list[Key]:
    """The keys of a JWKS document that can verify one of `algorithms`; JwksError when none can."""
    if len(data) > MAX_JWKS_BYTES:
        raise JwksError(f"the JWKS is over {MAX_JWKS_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise JwksError("the JWKS is not JSON") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise JwksError('the JWKS has no "keys" list')
    if len(entries) > MAX_KEYS:
        raise JwksError(f"the JWKS has over {MAX_KEYS} keys")
    wanted: list[tuple[dict[str, Any], str]] = []
    for entry in entries:
        alg = _algorithm(entry, algorithms)
        if alg is not None:
            wanted.append((entry, alg))
    keys: list[Key] = []
    for entry, alg in wanted:
        try:
            jwk = jwt.PyJWK(entry, alg)
        except jwt.PyJWTError as exc:
            log.warning("Skipped JWKS key kid=%s: %s", _kid(entry), type(exc).__name__)
            continue
        public = _public(jwk.key)
        if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
            log.warning("Skipped JWKS key kid=%s: RSA key of %d bits, under %d", _kid(entry), public.key_size,
                        MIN_RSA_BITS)
            continue
        keys.append(Key(_kid(entry), alg, public))
    if not keys:
        raise JwksError(f"the JWKS has no usable key for {', '.join(algorithms)} (RSA of at least {MIN_RSA_BITS} "
                        "bits, EC P-256; not oct, not use: enc)")
    return keys


def _algorithm(entry: Any, algorithms: list[str]) -> str | None:
    """The one algorithm a JWKS member may verify, or None to skip it."""
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    for alg in algorithms:
        kty, crv = KEY_TYPE[alg]
        if entry.get("kty") == kty and (crv is None or entry.get("crv") == crv) \
                and entry.get("alg", alg) == alg:
            return alg
    return None


def _kid(entry: dict[str, Any]) -> str | None:
    kid = entry.get("kid")
    return kid if isinstance(kid, str) else None


def _public(key: Any) -> Any:
    # A JWKS holding private keys (a mistake, but it happens) still verifies with their public halves.
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        return key.public_key()
    return key


class JwtVerifier:
    """The keys of a JWKS (cached, re-read on change) and the checks of `JwtConfig`."""

    def __init__(self, config: JwtConfig, on_load: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.path = Path(config.jwks_file) if config.jwks_file else None
        self.on_load = on_load or (lambda result: None)
        self.keys: list[Key] = []
        self.source: str | None = None  # "secret/<name>:<key>" once loaded from the API
        self._signature: tuple[int, int, int] | None = None
        self._warned = False
        self._options: Any = {"require": ["exp", "iss", "aud"]}
        self._verified: OrderedDict[bytes, tuple[str, float]] = OrderedDict()  # sha256 -> (client, exp)
        self.refresh()

    def _set_keys(self, keys: list[Key]) -> None:
        self.keys = keys
        self._verified.clear()  # a key rotated out must not keep admitting the tokens it signed

    def refresh(self) -> bool:
        """Re-reads the JWKS file when it changed; True when the keys changed."""
        if self.source is not None or self.path is None:
            return False
        sig = file_signature(self.path)
        if sig is None:
            if self.keys or not self._warned:
                log.warning("Cannot read JWKS file path=%s; no JWT is accepted until it is back", self.path)
                self._warned = True
            self._signature = None
            changed = bool(self.keys)
            self._set_keys([])
            return changed
        if sig == self._signature:
            return False
        self._signature = sig
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            self._invalid(f"path={self.path}", exc.strerror or type(exc).__name__)
            return False
        return self._take(data, f"path={self.path}")

    def load(self, content: bytes | None, source: str) -> None:
        """Takes the keys from `content` (the Secret's key) instead of the file from now on; None (gone) drops
        every key."""
        self.source = source
        if content is None:
            log.warning("JWKS %s is gone; no JWT is accepted until it is back", source)
            self._set_keys([])
            return
        self._take(content, source)

    def _take(self, data: bytes, where: str) -> bool:
        try:
            keys = parse_jwks(data, self.config.algorithms)
        except JwksError as exc:
            self._invalid(where, str(exc))
            return False
        self._set_keys(keys)
        self.on_load("ok")
        log.info("Loaded JWKS %s keys=%d kids=%s", where, len(keys), ",".join(k.kid or "-" for k in keys))
        return True

    def _invalid(self, where: str, why: str) -> None:
        self.on_load("invalid")
        log.error("Rejected JWKS %s: %s; keeping %d key(s)", where, why, len(self.keys))

    # ------------------------------------------------------------------------------------------------ verify

    def verify(self, token: bytes) -> str:
        """The client named by a valid token (`jwt:<claim>`); JwtRefused otherwise."""
        cfg = self.config
        if len(token) > MAX_TOKEN_BYTES:
            raise JwtRefused(f"the token is over {MAX_TOKEN_BYTES} bytes", f"a JWT of at most {MAX_TOKEN_BYTES} bytes")
        seen = hashlib.sha256(token).digest()
        hit = self._verified.get(seen)
        if hit is not None:
            if time.time() <= hit[1] + cfg.leeway_s:
                self._verified.move_to_end(seen)
                return hit[0]
            del self._verified[seen]  # expired: the full check below says so
        header = _header(token)
        alg = header.get("alg")
        if alg not in cfg.algorithms:
            raise JwtRefused("the token's alg is not accepted", f"alg one of {', '.join(cfg.algorithms)}")
        kid = header.get("kid")
        keys = [k for k in self.keys if k.algorithm == alg and (kid is None or k.kid == kid)]
        if not keys:
            if not self.keys:
                raise JwtRefused("no JWKS is loaded to verify the token", "a JWT signed by a key of the JWKS")
            if kid is not None:
                raise JwtRefused("no key of the JWKS has the token's kid", "kid of a key in the JWKS")
            raise JwtRefused(f"no key of the JWKS verifies {alg}", "a JWT signed by a key of the JWKS")
        for i, key in enumerate(keys):
            try:
                claims = jwt.decode(
                    token, key.public_key, algorithms=[key.algorithm], options=self._options,
                    audience=cfg.audiences, issuer=cfg.issuer, leeway=cfg.leeway_s,
                )
            except jwt.InvalidSignatureError:
                if i + 1 < len(keys):
                    continue  # without a kid, the next key of the same type may be the signer
                raise JwtRefused("the token's signature does not verify", "signed by a key of the JWKS") from None
            except jwt.PyJWTError as exc:
                raise _refusal(exc, cfg) from None
            client = "jwt:" + _client(claims, cfg.client_claim)
            self._verified[seen] = (client, float(claims["exp"]))
            while len(self._verified) > VERIFIED_CAPACITY:
                self._verified.popitem(last=False)
            return client
        raise AssertionError("unreachable")


def _header(token: bytes) -> dict[str, Any]:
    """The token's JOSE header, parsed once here (PyJWT checks it again when it verifies the signature)."""
    parts = token.split(b".")
    try:
        if len(parts) != 3 or not _SEGMENT.match(parts[0]):
            raise ValueError("not three base64url parts")
        header = json.loads(base64.urlsafe_b64decode(parts[0] + b"=" * (-len(parts[0]) % 4)))
        if not isinstance(header, dict) or not isinstance(header.get("kid", ""), str):
            raise ValueError("the header is not an object, or its kid not a string")
    except (ValueError, TypeError, RecursionError, binascii.Error):
        raise JwtRefused("the token is not a well-formed JWT",
                         "a JWS in compact form: three base64url parts separated by dots") from None
    return header


def _client(claims: dict[str, Any], claim: str) -> str:
    value = claims.get(claim)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value or len(value) > MAX_CLIENT_CHARS:
        raise JwtRefused(f"the token's {claim} claim does not name a client",
                         f"{claim}: a non-empty string of at most {MAX_CLIENT_CHARS} characters")
    return value


def _refusal(exc: Exception, cfg: JwtConfig) -> JwtRefused:
    leeway = f"with {cfg.leeway_s:g} s leeway"
    if isinstance(exc, jwt.ExpiredSignatureError):
        return JwtRefused("the token has expired", f"exp after now, {leeway}")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return JwtRefused("the token is not valid yet", f"nbf and iat not after now, {leeway}")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return JwtRefused(f"the token has no {exc.claim} claim", "exp, iss and aud present")
    if isinstance(exc, jwt.InvalidAudienceError):
        return JwtRefused("the token's aud names no accepted audience", f"aud one of {', '.join(cfg.audiences)}")
    if isinstance(exc, jwt.InvalidIssuerError):
        return JwtRefused("the token's iss is not the accepted issuer", f"iss exactly {cfg.issuer}")
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return JwtRefused("the token's iat is not a number", "iat a NumericDate")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return JwtRefused("the token's alg is not accepted", f"alg one of {', '.join(cfg.algorithms)}")
    if isinstance(exc, jwt.DecodeError):
        return JwtRefused("the token is not a well-formed JWT",
                          "a JWS in compact form whose payload is a JSON object of claims")
    return JwtRefused("the token is not valid", "a JWT as the deployment's auth.jwt describes")
