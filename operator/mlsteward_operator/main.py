"""Composition root: configures kopf once and runs the controllers (STYLE §8).

Importing this module registers no handler; `run()` imports `handlers`, which does. Nothing here runs at import
time, so the CLI's `--help` and the tests stay fast.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import Any

import kopf

log = logging.getLogger(__name__)


def build_settings() -> kopf.OperatorSettings:
    """mlsteward's kopf settings, built once here and handed to kopf.operator() (STYLE §8)."""
    settings = kopf.OperatorSettings()
    # The handlers are all `on.event` handlers (handlers.py), for which kopf stores no progress, no last-handled
    # spec and no finalizer: nothing is written per object. Should a changing handler be added, its bookkeeping
    # lives in annotations under our own prefix, not kopf's, so that a user sees whose it is and so that nothing is
    # written into spec or into fields a GitOps tool diffs.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="mlsteward.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="mlsteward.io", key="last-handled-configuration"
    )
    # Children are removed by owner-reference garbage collection, so no deletion handler needs a finalizer; this
    # name only applies if a later controller adds one.
    settings.persistence.finalizer = "mlsteward.io/finalizer"
    # Re-establish watches regularly: a silently dropped watch connection (proxies, load balancers) would
    # otherwise leave the operator blind until restart.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # Events are how decisions reach `kubectl describe`; post Info and above only.
    settings.posting.level = logging.INFO
    # Sync handlers would run in this executor (there are none: the reconciles run in the controllers' work queues,
    # whose worker counts bound the concurrency, and wait on the API server in asyncio's default thread pool).
    settings.execution.max_workers = 8
    return settings


async def run_async(*, namespaces: Sequence[str] = (), clusterwide: bool = False,
                    liveness_endpoint: str | None = None, stop_flag: Any = None, ready_flag: Any = None) -> None:
    from mlsteward_operator import handlers  # noqa: F401  (registers the handlers with kopf's default registry)

    await kopf.operator(
        settings=build_settings(),
        standalone=True,  # one replica (Deployment strategy Recreate); no peering objects needed
        clusterwide=clusterwide,
        namespaces=list(namespaces),
        liveness_endpoint=liveness_endpoint,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        # The startup handlers read the watched namespaces from here (retention lists those it may touch).
        memo=kopf.Memo(watch_namespaces=[] if clusterwide else list(namespaces)),
    )


def run(*, namespaces: Sequence[str] = (), clusterwide: bool = False, liveness_endpoint: str | None = None) -> None:
    asyncio.run(run_async(namespaces=namespaces, clusterwide=clusterwide, liveness_endpoint=liveness_endpoint))


class OperatorThread:
    """Runs the operator in a thread with its own event loop (in-process tests and embedding)."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="mlsteward-operator", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            asyncio.run(run_async(stop_flag=self._stop, ready_flag=self._ready, **self._kwargs))
        except BaseException as exc:  # surfaced to the test through .error
            self.error = exc

    def start(self, timeout: float = 30.0) -> OperatorThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise TimeoutError(f"operator not ready after {timeout}s (error: {self.error!r})")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
