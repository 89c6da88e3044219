"""The API client: the only package that talks to the API server (STYLE §3).

`Client` is the Protocol the reconciles depend on; `ApiServerClient` the real one (client.py); kube/fake.py has the
in-memory one the unit tests run reconciles on.
"""

from mlsteward_operator.kube.cache import Store, key_of
from mlsteward_operator.kube.client import ApiError, PodAnswers, ProfileError, load_config
from mlsteward_operator.kube.client import Client as ApiServerClient
from mlsteward_operator.kube.protocol import Client

__all__ = ["ApiError", "ApiServerClient", "Client", "PodAnswers", "ProfileError", "Store", "key_of", "load_config"]
