"""Reading the RouterConfig file (or the ConfigMap key of the same name) and noticing when the operator changes it."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from mlsteward_runtime.contracts import RouterConfig


# The key of the router's ConfigMap (and the name of the mounted file) holding the RouterConfig JSON; the
# operator renders the same name.
ROUTER_CONFIG_FILE = "router.json"


class ConfigError(Exception):
    """The config file is unreadable or invalid; the message names the field and the rule."""


def parse_config(text: str | bytes, source: str = "config") -> RouterConfig:
    try:
        config = RouterConfig.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ConfigError(f"{source}: {where}: {first['msg']} ({exc.error_count()} error(s))") from None
    versions = [b.version for b in config.backends]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise ConfigError(f"{source}: backends: versions must be unique, repeated: {', '.join(duplicates)}")
    if config.stable_version is not None and config.stable_version not in versions:
        raise ConfigError(
            f"{source}: stable_version: {config.stable_version!r} must be the version of one of the backends"
        )
    if config.sticky is not None and not (config.sticky.header or config.sticky.body_key):
        raise ConfigError(f"{source}: sticky: set header or body_key")
    if config.rate_limit is not None and config.rate_limit.by == "token" and config.auth is None:
        raise ConfigError(f"{source}: rate_limit.by: token needs auth (or use source)")
    return config


def load_config(path: str | os.PathLike[str]) -> RouterConfig:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_config(text, str(path))


def file_signature(path: str | os.PathLike[str]) -> tuple[int, int, int] | None:
    """What changes when the file is replaced or rewritten.

    A ConfigMap volume swaps a symlink (`..data`) to a new directory rather than writing the file in place;
    stat() follows the link, so the inode and mtime change on every update.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
