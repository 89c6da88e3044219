"""What the reconciles ask of the API server and of the pods, as a Protocol: the real client (client.py) and the
in-memory one of the unit tests (fake.py) both satisfy it, and a reconcile depends on nothing else of either."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlsteward_runtime.contracts import DriftWindow, Profile, RouterStats, RuntimeStats

    from mlsteward_operator.kube.client import PodAnswers


class Client(Protocol):
    """Objects are plain dicts as the API server returns them. Errors other than 'not found' raise ApiError."""

    async def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply under the field manager `mlsteward`."""

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""

    async def list(self, api_version: str, kind: str, namespace: str | None, *,
                   labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """The objects of a kind in a namespace whose labels include `labels`."""

    async def delete(self, api_version: str, kind: str, namespace: str | None, name: str, *,
                     uid: str | None = None, resource_version: str | None = None) -> bool:
        """Delete (only the object as read, with preconditions); False when gone or when a precondition failed."""

    async def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when an object of that name exists."""

    async def patch_status(self, api_version: str, kind: str, namespace: str, name: str,
                           status: dict[str, Any]) -> dict[str, Any] | None:
        """JSON merge patch of the status subresource; None when the object is gone."""

    async def event(self, involved: dict[str, Any], *, reason: str, message: str, type_: str = "Normal") -> None:
        """A core/v1 Event about `involved`; never raises."""

    async def router_stats(self, namespace: str, labels: dict[str, str], port: int, *,
                           timeout_s: float = 2.0) -> PodAnswers[RouterStats]: ...

    async def drift_windows(self, namespace: str, labels: dict[str, str], port: int, *,
                            timeout_s: float = 5.0) -> PodAnswers[DriftWindow]: ...

    async def predictor_stats(self, namespace: str, labels: dict[str, str], port: int, *,
                              timeout_s: float = 5.0) -> PodAnswers[RuntimeStats]: ...

    async def fetch_profile(self, uri: str, sha256: str | None) -> Profile: ...

    async def post_webhook_in_secret(self, namespace: str, name: str, key: str, payload: dict[str, Any], *,
                                     attempts: int = 5, backoff_s: float = 1.0) -> str | None: ...
