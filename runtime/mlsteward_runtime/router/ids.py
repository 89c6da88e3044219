"""Signed request ids: any router replica can attribute feedback to the version that served a prediction.

An id the router hands back for a served prediction (the `x-request-id` header, `request_id` in bodies) is

    <nonce>.<payload>.<mac>

- `nonce`: 128 random bits as 32 lowercase hex digits. It alone is what the backend predictor is sent as its
  `x-request-id` (predictors take at most 128 printable characters and key their own feedback store by it), and
  what feedback forwarded to the predictor names.
- `payload`: base64url (no padding) of a small binary record: a format byte (1); the unix time in seconds it was
  issued (uint32, big-endian); the length (0 or 8) and bytes of a token tag, HMAC-SHA256 under the signing key of
  the sha256 of the auth token the prediction was made with (keyed, so the id says nothing about the token to
  anyone without the key); the length and UTF-8 bytes of the version that served it; and, filling the rest, the
  served predictions as JSON when they are small (at most `MAX_PREDICTION_BYTES`, and with the version's name at
  most `MAX_NAME_AND_PREDICTION_BYTES`), so a label can be scored on a replica that never saw the response.
- `mac`: base64url of HMAC-SHA256 over `nonce.payload` under the signing key, truncated to 128 bits.

The id is at most `MAX_ID_CHARS` (414) characters, as a version name has at most 253; with the usual version names
and predictions it is 70 to 110.

Keys: `id_key_file` (MLSTEWARD_ROUTER_ID_KEY_FILE) holds one key per line, blank and # lines skipped, each at least
32 characters (e.g. 32 random bytes written in base64 or hex; the line's bytes are the HMAC key). The first key
signs, every key verifies, so a key is rotated by adding the new one as a second line, moving it first once every
replica has re-read the file (else a replica still without it would refuse what another signed), and removing the
old one once the feedback window has passed (ids it signed are then refused). The file is re-read
when its signature (inode, mtime, size) changes, checked at most every `reload_interval_s` on use. In Kubernetes it
is the Secret `<deployment>-router-key` (key `key`) mounted at `ID_KEY_DIR`. A file that cannot be read or holds
no usable key at startup stops the router (ConfigError, exit 2); later, the last keys are kept and a warning
logged, as a Secret volume is swapped atomically and is never seen half-written or missing while it exists.

Without `id_key_file` the router draws a random key at startup: only the replica that issued an id (and only until
it restarts) accepts feedback for it, as before ids were signed.

Forging an id needs the key: a changed nonce, payload or mac, a payload taken from another id, or an id signed by
a key no longer in the file fails verification (`verify` compares every key's mac in constant time).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import logging
import re
import secrets
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from mlsteward_runtime.router.config import ConfigError, file_signature

log = logging.getLogger("mlsteward.router")

# Where the operator mounts the Secret `<deployment>-router-key` (its key `key`); MLSTEWARD_ROUTER_ID_KEY_FILE
# names ID_KEY_PATH. A Secret volume without subPath is updated in place, so keys rotate without a restart.
ID_KEY_DIR = "/etc/mlsteward-router-key"
ID_KEY_PATH = f"{ID_KEY_DIR}/key"
MIN_KEY_CHARS = 32

FORMAT = 1
NONCE_CHARS = 32
MAC_BYTES = 16
MAC_CHARS = 22  # base64url of 16 bytes, unpadded
TAG_BYTES = 8
MAX_VERSION_BYTES = 253  # a Kubernetes object name; contracts.Backend.version has the same bound
MAX_PREDICTION_BYTES = 64
# A long version name leaves the prediction out, so that no id is longer than one with the longest name.
MAX_NAME_AND_PREDICTION_BYTES = 128
_FIXED = struct.Struct(">BIB")  # format, issued (unix s), tag length
MAX_PAYLOAD_BYTES = _FIXED.size + TAG_BYTES + 1 + max(MAX_VERSION_BYTES, MAX_NAME_AND_PREDICTION_BYTES)
MAX_ID_CHARS = NONCE_CHARS + 1 + (MAX_PAYLOAD_BYTES * 4 + 2) // 3 + 1 + MAC_CHARS
# Clocks of replicas differ a little (NTP keeps them within milliseconds; allow far more): an id issued at most this
# far in the future is taken as issued now.
MAX_SKEW_S = 60

_NONCE = re.compile(r"[0-9a-f]{32}")
_B64 = re.compile(r"[A-Za-z0-9_-]+")
_DOMAIN = b"mlsteward-request-id\x00"
_TAG_DOMAIN = b"mlsteward-token-tag\x00"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_keys(text: str) -> tuple[list[bytes], list[int]]:
    """The keys in `text` (one per line, blank and # lines skipped) and the numbers of the lines too short to use."""
    keys: list[bytes] = []
    short: list[int] = []
    for n, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_KEY_CHARS:
            short.append(n)
            continue
        keys.append(key.encode("utf-8"))
    return keys, short


class KeyFileError(ConfigError):
    """The key file cannot be read or holds no usable key; the message names the file and the rule."""


class IdKeys:
    """The signing and verifying keys: from a watched file, or one random key for this process."""

    def __init__(self, path: str | Path | None, interval_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path) if path is not None else None
        self.interval_s = interval_s
        self._clock = clock
        self._checked = clock()
        self._signature: tuple[int, int, int] | None = None
        self.reloads: Callable[[str], None] | None = None  # called with "ok" or "invalid" after a re-read
        if self.path is None:
            self.keys: list[bytes] = [secrets.token_bytes(32)]
            return
        error = self._load()
        if error is not None:
            raise KeyFileError(f"{self.path}: {error}")

    def _load(self) -> str | None:
        """Reads the file; None when keys were loaded, else why not (the keys are left as they were)."""
        assert self.path is not None
        sig = file_signature(self.path)
        if sig is None:
            return "cannot read the request id key file"
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return f"cannot read the request id key file: {getattr(exc, 'strerror', None) or type(exc).__name__}"
        keys, short = parse_keys(text)
        if short:
            # The line numbers only: a key never reaches a log.
            log.warning("Skipped request id key(s) shorter than %d characters path=%s lines=%s", MIN_KEY_CHARS,
                        self.path, ",".join(map(str, short)))
        if not keys:
            return f"no request id key of at least {MIN_KEY_CHARS} characters (one key per line)"
        self._signature = sig
        self.keys = keys
        return None

    def current(self) -> list[bytes]:
        """The keys, the signing one first; re-reads the file when due and changed."""
        if self.path is not None:
            now = self._clock()
            if now - self._checked >= self.interval_s:
                self._checked = now
                sig = file_signature(self.path)
                if sig != self._signature:
                    error = self._load()
                    if error is None:
                        log.info("Loaded request id keys path=%s keys=%d", self.path, len(self.keys))
                    else:
                        # Remember the bad signature: warn once per change, not at every check.
                        self._signature = sig
                        log.warning("Kept %d request id key(s): %s path=%s", len(self.keys), error, self.path)
                    if self.reloads is not None:
                        self.reloads("ok" if error is None else "invalid")
        return self.keys


@dataclass(frozen=True, slots=True)
class IssuedId:
    """What a verified id says."""

    nonce: str
    version: str
    issued: int  # unix seconds
    tag: bytes  # the token tag, b"" when the prediction was made without a token
    predictions: list[Any] | None  # the served predictions when they were small enough to carry
    key: bytes  # the key that verified it (the token tag is checked under the same key)

    def token_matches(self, token_digest: bytes | None) -> bool:
        """True when the id was issued without a token, or `token_digest` is of the token it was issued to."""
        if not self.tag:
            return True
        if token_digest is None:
            return False
        return hmac.compare_digest(self.tag, token_tag(self.key, token_digest))


class InvalidId(Exception):
    """The id is not one this deployment's router issued (malformed, altered, or signed by an unknown key)."""


# hmac.digest is the one-shot form (OpenSSL's HMAC in one call): about half the time of hmac.new(...).digest().
# A deployment has a handful of tokens, so their tags are cached (bounded) rather than computed per request.
@functools.lru_cache(maxsize=1024)
def token_tag(key: bytes, token_digest: bytes) -> bytes:
    return hmac.digest(key, _TAG_DOMAIN + token_digest, "sha256")[:TAG_BYTES]


def _mac(key: bytes, signed: bytes) -> str:
    return _b64(hmac.digest(key, _DOMAIN + signed, "sha256")[:MAC_BYTES])


def new_nonce() -> str:
    return secrets.token_hex(16)


def small_predictions(predictions: list[Any] | None, version: str) -> bytes:
    """The predictions as JSON when small enough to carry in an id of `version`, else b"" (not carried)."""
    if predictions is None:
        return b""
    try:
        out = orjson.dumps(predictions)
    except (TypeError, orjson.JSONEncodeError):
        return b""
    fits = len(out) <= MAX_PREDICTION_BYTES and len(version.encode("utf-8")) + len(out) <= MAX_NAME_AND_PREDICTION_BYTES
    return out if fits else b""


def issue(keys: list[bytes], nonce: str, version: str, token_digest: bytes | None, predictions: bytes,
          now: float | None = None) -> str:
    """The signed id of a prediction `version` served under `nonce`; `predictions` from `small_predictions`."""
    key = keys[0]
    name = version.encode("utf-8")
    if len(name) > MAX_VERSION_BYTES:
        raise ValueError(f"version names have at most {MAX_VERSION_BYTES} bytes")
    if len(predictions) > MAX_PREDICTION_BYTES or (predictions and len(name) + len(predictions)
                                                   > MAX_NAME_AND_PREDICTION_BYTES):
        raise ValueError("the predictions are too large to carry (see small_predictions)")
    tag = token_tag(key, token_digest) if token_digest is not None else b""
    issued = int(time.time() if now is None else now)
    record = _FIXED.pack(FORMAT, issued, len(tag)) + tag + bytes((len(name),)) + name + predictions
    head = f"{nonce}.{_b64(record)}"
    return f"{head}.{_mac(key, head.encode('ascii'))}"


def verify(keys: list[bytes], request_id: str) -> IssuedId:
    """The decoded id when one of `keys` signed it; InvalidId otherwise, its message saying which check failed (the
    form, the signature). Every key's mac is compared, each in constant time, so timing tells nothing more."""
    if len(request_id) > MAX_ID_CHARS:
        raise InvalidId(f"longer than {MAX_ID_CHARS} characters")
    parts = request_id.split(".")
    if len(parts) != 3:
        raise InvalidId("not of the form <nonce>.<payload>.<mac>")
    nonce, payload, mac = parts
    if not _NONCE.fullmatch(nonce) or not _B64.fullmatch(payload) or len(mac) != MAC_CHARS \
            or not _B64.fullmatch(mac):
        raise InvalidId("not of the form <nonce>.<payload>.<mac>")
    signed = f"{nonce}.{payload}".encode("ascii")
    given = mac.encode("ascii")
    matched: bytes | None = None
    for key in keys:
        if hmac.compare_digest(_mac(key, signed).encode("ascii"), given) and matched is None:
            matched = key
    if matched is None:
        raise InvalidId("its signature does not verify")
    try:
        record = _unb64(payload)
        fmt, issued, tag_len = _FIXED.unpack_from(record)
        at = _FIXED.size
        tag = record[at:at + tag_len]
        at += tag_len
        name_len = record[at]
        name = record[at + 1:at + 1 + name_len].decode("utf-8")
        at += 1 + name_len
        rest = record[at:]
        predictions = orjson.loads(rest) if rest else None
    except (binascii.Error, struct.error, IndexError, UnicodeDecodeError, orjson.JSONDecodeError):
        # Only an id signed with the key gets here, so this is a router defect or an old format; refuse it all the
        # same rather than fail.
        raise InvalidId("its payload cannot be decoded") from None
    if fmt != FORMAT or len(tag) != tag_len or tag_len not in (0, TAG_BYTES) or not name \
            or not isinstance(predictions, (list, type(None))):
        raise InvalidId("its payload cannot be decoded")
    return IssuedId(nonce, name, issued, tag, predictions, matched)
