"""The API client: the only package that talks to the API server (STYLE §3)."""

from mlsteward_operator.kube.client import (
    ApiError,
    Client,
    ProfileError,
    load_config,
)
from mlsteward_operator.kube.cache import Store, key_of

__all__ = ["ApiError", "Client", "ProfileError", "load_config", "Store", "key_of"]
