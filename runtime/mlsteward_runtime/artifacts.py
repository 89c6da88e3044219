"""Fetch bytes by URI and compute digests: the light part of artifact handling, shared with the operator.

It imports nothing heavy at import time (httpx and boto3 are imported by the call that needs them), so the operator
can read a ModelVersion's reference profile with the same URI schemes and the same errors as `mlsteward serve`
(DESIGN §1: the operator never imports the runtime's model loading). `mlsteward_runtime.models` re-exports these.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from mlsteward_runtime.errors import ModelLoadError, UsageError

__all__ = ["FORMAT_BY_EXTENSION", "fetch_artifact", "format_from_uri", "require_format", "sha256_bytes", "sha256_file"]

_HTTP_TIMEOUT_S = 60.0

# The artifact format a file extension names; anything else needs an explicit --format.
FORMAT_BY_EXTENSION: dict[str, str] = {
    ".skops": "skops",
    ".onnx": "onnx",
    ".joblib": "joblib",
    ".pkl": "pickle",
    ".pickle": "pickle",
}


def format_from_uri(uri: str) -> str | None:
    """The format named by the extension of `uri`'s path (a query string or fragment is ignored), or None."""
    path = urlparse(uri).path if "://" in uri else uri
    return FORMAT_BY_EXTENSION.get(Path(unquote(path)).suffix.lower())


def require_format(uri: str, given: str | None, flag: str = "--format") -> str:
    """`given`, else the format `uri`'s extension names; a UsageError (exit 2) when neither says."""
    fmt = given or format_from_uri(uri)
    if fmt is None:
        raise UsageError(f"{uri}: cannot tell the format from the extension; give {flag} "
                         f"({', '.join(sorted(set(FORMAT_BY_EXTENSION.values())))})")
    return fmt


# --------------------------------------------------------------------------------------------------------------
# Digests
# --------------------------------------------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks so large artifacts do not need to fit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# Fetch
# --------------------------------------------------------------------------------------------------------------


def fetch_artifact(uri: str) -> bytes:
    """Return the bytes at `uri`: a path, file://, http(s):// or s3://bucket/key.

    s3 uses boto3's default credential chain; AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) points it at any
    S3-compatible server. Every failure is a ModelLoadError with reason FetchFailed and the URI in the message.
    """
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    try:
        if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
            path = unquote(parsed.path) if scheme == "file" else uri
            if scheme == "file" and parsed.netloc not in ("", "localhost"):
                raise ModelLoadError("FetchFailed", f"file URI with a remote host is not supported: {uri}")
            return Path(path).read_bytes()
        if scheme in ("http", "https"):
            return _fetch_http(uri)
        if scheme == "s3":
            return _fetch_s3(parsed.netloc, parsed.path.lstrip("/"), uri)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any I/O failure becomes one reason the operator understands
        raise ModelLoadError("FetchFailed", f"could not fetch {uri}: {type(exc).__name__}: {exc}") from exc
    raise ModelLoadError("FetchFailed", f"unsupported URI scheme {scheme!r} in {uri} (use a path, file, http(s), s3)")


def _fetch_http(uri: str) -> bytes:
    import httpx

    with httpx.Client(timeout=_HTTP_TIMEOUT_S, follow_redirects=True) as client:
        resp = client.get(uri)
    if resp.status_code != 200:
        raise ModelLoadError("FetchFailed", f"could not fetch {uri}: HTTP {resp.status_code}")
    return resp.content


def _fetch_s3(bucket: str, key: str, uri: str) -> bytes:
    if not bucket or not key:
        raise ModelLoadError("FetchFailed", f"s3 URI needs a bucket and a key: {uri}")
    import boto3

    # boto3 reads AWS_ENDPOINT_URL itself in recent versions; passing it explicitly also covers older ones.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
    client = boto3.client("s3", endpoint_url=endpoint)
    obj = client.get_object(Bucket=bucket, Key=key)
    return obj["Body"].read()
