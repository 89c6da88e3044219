"""Who may call the router and how often: tokens from a watched file, and a token bucket per client.

Tokens (bearer tokens or API keys, one per line) are read from a file, in Kubernetes a Secret volume. The kubelet
updates such a volume in place by swapping a symlink, so a change of the file's signature (inode, mtime, size)
means new tokens; the router re-reads it without a restart. Only sha256 digests of the tokens are kept, and a
presented token is hashed and compared with every digest with `hmac.compare_digest`, so neither the comparison's
time nor an early exit says how much of a token was right. A client is named in logs, metrics and rate-limit keys
by `client_id`, the first 12 hex digits of its token's sha256, never by the token.

With `jwt` in the auth config a bearer value that is not one of the tokens and has the shape of a JWT (three
dot-separated parts) is verified against the JWKS (see `jwks`); it names its client `jwt:<claim>`. Tokens and JWTs
work together: a token of the file passes first. Only the `Authorization: Bearer` header carries a JWT.

The rate limit is a token bucket per key (a client id, or the source address of the connection), refilled at
`requests_per_second` up to `burst`. The buckets live in an LRU map of bounded size: a key pushed out comes back
with a full bucket, which errs on the side of letting a client through rather than using unbounded memory.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlsteward_runtime.contracts import AuthConfig, RateLimitConfig
from mlsteward_runtime.router.config import file_signature
from mlsteward_runtime.router.jwks import JwtRefused, JwtVerifier, looks_like_jwt

log = logging.getLogger("mlsteward.router")


def digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


def client_id(token_digest: bytes) -> str:
    """The short name of a token that logs and metrics may show."""
    return token_digest.hex()[:12]


def principal_digest(client: str) -> bytes:
    """What stands for a JWT's client where a token's digest would (the request ids' token tag): the same client
    with a refreshed JWT is the same principal. The prefix keeps it apart from the digest of any token."""
    return digest(b"mlsteward-jwt\x00" + client.encode())


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a request is: `digest` binds its request ids, `client` names it in rate limits, logs and metrics."""

    digest: bytes
    client: str


class Refused(Exception):
    """The credential is not accepted: `jwt` carries why when it was a JWT (401), else a token not listed (403)."""

    def __init__(self, token_digest: bytes, jwt: JwtRefused | None = None) -> None:
        super().__init__(jwt.message if jwt else "the token is not accepted")
        self.digest = token_digest
        self.jwt = jwt


def parse_tokens(text: str | bytes) -> list[bytes]:
    """Digests of the tokens in `text`: one per line, surrounding spaces ignored, blank and # lines skipped.

    Bytes are decoded as UTF-8 (UnicodeDecodeError when they are not)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    out: list[bytes] = []
    for line in text.splitlines():
        token = line.strip()
        if token and not token.startswith("#"):
            out.append(digest(token))
    return out


class TokenFile:
    """The accepted tokens, re-read when the file changes. Without a readable file nothing is accepted.

    Once `load` hands it the content of the auth Secret (read through the Kubernetes API), the file is no longer
    read: the Secret is the source and the mounted file only lags it. Without `tokens_file` (JWTs only) no token
    is accepted and nothing is read. `jwt` verifies JWTs when the config has `jwt`."""

    def __init__(self, config: AuthConfig, on_jwks: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.path = Path(config.tokens_file) if config.tokens_file else None
        self.jwt = JwtVerifier(config.jwt, on_jwks) if config.jwt is not None else None
        self.header = config.header.lower().encode("latin-1")
        self._signature: tuple[int, int, int] | None = None
        self._digests: list[bytes] = []
        self._warned = False
        self.source: str | None = None  # "secret/<name>" once loaded from the API
        self.refresh()

    @property
    def count(self) -> int:
        return len(self._digests)

    def refresh(self) -> bool:
        """Re-reads the file (and the JWKS file) when its signature changed; True when new tokens were loaded."""
        if self.jwt is not None:
            self.jwt.refresh()
        if self.source is not None or self.path is None:
            return False
        sig = file_signature(self.path)
        if sig is None:
            # A deleted (or never mounted) tokens file means no token is valid: keeping the last tokens would let
            # a revoked Secret go on admitting clients. The kubelet swaps a Secret volume atomically, so a live
            # Secret is never seen missing.
            if self._signature is not None or self._digests or not self._warned:
                log.warning("Cannot read tokens file path=%s; every request will be refused until it is back",
                            self.path)
                self._warned = True
            self._signature = None
            changed = bool(self._digests)
            self._digests = []
            return changed
        if sig == self._signature:
            return False
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("Cannot read tokens file path=%s: %s; keeping %d token(s)", self.path,
                        getattr(exc, "strerror", None) or type(exc).__name__, len(self._digests))
            return False
        self._signature = sig
        self._digests = parse_tokens(text)
        if not self._digests:
            log.warning("Loaded tokens file path=%s with no token: every request will be refused", self.path)
        else:
            log.info("Loaded tokens file path=%s tokens=%d", self.path, len(self._digests))
        return True

    def load(self, content: bytes | None, source: str) -> None:
        """Takes the tokens from `content` (the Secret's key) instead of the file from now on. None (the Secret or
        its key is gone) accepts nothing, as a deleted file does; content that is not UTF-8 keeps the tokens."""
        self.source = source
        if content is None:
            log.warning("Tokens %s are gone; every request will be refused until they are back", source)
            self._digests = []
            return
        try:
            digests = parse_tokens(content)
        except UnicodeDecodeError:
            log.warning("Cannot read tokens %s: not UTF-8; keeping %d token(s)", source, len(self._digests))
            return
        self._digests = digests
        if not digests:
            log.warning("Loaded tokens %s with no token: every request will be refused", source)
        else:
            log.info("Loaded tokens %s tokens=%d", source, len(digests))

    def credential(self, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bool] | None:
        """The token the request presents and whether it came as `Authorization: Bearer <t>` (else the API key
        header), or None."""
        api_key = None
        for k, v in headers:
            if k == b"authorization":
                scheme, _, rest = v.partition(b" ")
                if scheme.lower() == b"bearer" and rest.strip():
                    return rest.strip(), True
            elif k == self.header and v.strip():
                api_key = v.strip()
        return (api_key, False) if api_key is not None else None

    def identify(self, token: bytes, bearer: bool) -> Identity:
        """Who presents `token`: a listed token, else a valid JWT (a bearer value shaped like one, with `jwt`
        configured). Refused otherwise."""
        token_digest = digest(token)
        if self.accepts(token_digest):
            return Identity(token_digest, client_id(token_digest))
        if self.jwt is not None and bearer and looks_like_jwt(token):
            try:
                client = self.jwt.verify(token)
            except JwtRefused as exc:
                raise Refused(token_digest, exc) from None
            return Identity(principal_digest(client), client)
        raise Refused(token_digest)

    def accepts(self, token_digest: bytes) -> bool:
        # Every digest is compared, matching or not, so the time taken does not depend on which one matched.
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(known, token_digest)
        return found


class RateLimiter:
    """Token buckets per key, at most `max_keys` of them (least recently used go first)."""

    def __init__(self, config: RateLimitConfig, max_keys: int, clock: Callable[[], float] | None = None) -> None:
        self.rate = config.requests_per_second
        self.burst = float(config.burst)
        self.max_keys = max_keys
        self._clock = clock or time.monotonic
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def wait(self, key: str) -> int:
        """Like `take` but takes nothing: 0 when a token is left, else the whole seconds until one is."""
        now = self._clock()
        level, last = self._buckets.get(key, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        return 0 if level >= 1.0 else max(1, math.ceil((1.0 - level) / self.rate))

    def take(self, key: str) -> int:
        """0 when the request may pass (and one token is taken), else the whole seconds until it could."""
        now = self._clock()
        level, last = self._buckets.pop(key, (self.burst, now))
        level = min(self.burst, level + (now - last) * self.rate)
        if level >= 1.0:
            self._buckets[key] = (level - 1.0, now)
            wait = 0
        else:
            self._buckets[key] = (level, now)
            wait = max(1, math.ceil((1.0 - level) / self.rate))
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    """The trusted proxies of the settings, as networks (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def _trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def source_address(scope: dict[str, Any], trusted: tuple[Network, ...]) -> str:
    """The client's address: the connection's peer, or with the peer a trusted proxy, the right-most address of
    X-Forwarded-For that is not itself a trusted proxy.

    Without trusted proxies (the default) X-Forwarded-For is ignored: anyone can send it, and believing it would
    let a client pick a fresh rate-limit bucket for every request. Walking from the right stops at the first hop
    the trusted proxies did not add, so a client cannot prepend addresses of its own choosing.
    """
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    hops: list[str] = []
    for k, v in scope["headers"]:
        if k == b"x-forwarded-for":
            hops.extend(h.strip() for h in v.decode("latin-1").split(","))
    address = peer
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            break  # a malformed hop: believe nothing beyond the last good one
        address = hop
        if not _trusted(hop, trusted):
            break
    return address
