"""Settings of `mlsteward serve`, built once at the edge (CLI or environment) and passed down.

Environment variables use the prefix MLSTEWARD_ (for example MLSTEWARD_PORT=9000). The model-level configuration
is the RuntimeConfig contract the operator renders; it travels inside these settings as `runtime`.
"""

from __future__ import annotations

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlsteward_runtime.contracts import RuntimeConfig


def _default_replica() -> str:
    return os.environ.get("HOSTNAME") or socket.gethostname()


class ServeSettings(BaseSettings):
    """Everything `create_app` and the server need. `runtime` is the model configuration (contracts.RuntimeConfig)."""

    model_config = SettingsConfigDict(env_prefix="MLSTEWARD_", env_nested_delimiter="__", extra="forbid")

    runtime: RuntimeConfig
    """The model, its digest, signature, golden input, batching, window and limits."""

    host: str = "0.0.0.0"
    """Address the HTTP server listens on."""

    port: int = Field(default=8080, ge=0, le=65535)
    """TCP port the HTTP server listens on (0 picks a free one)."""

    workers: int = Field(default=1, ge=1, le=64)
    """Worker processes forked after the model is loaded and verified; they share the loaded model's memory."""

    replica: str = Field(default_factory=_default_replica)
    """Replica id reported in /v1/drift/window; defaults to the pod name (HOSTNAME)."""

    log_level: str = "info"
    """Level of the JSON logs: debug logs every request with its (redacted) inputs, info logs rejected ones."""

    executor_threads: int = Field(default=0, ge=0, le=64)
    """Threads that run model calls; 0 runs them on the event loop, cheapest for fast models on one core."""

    shared_dir: str | None = None
    """Directory where workers publish stats and drift snapshots and prediction journals (set by the server)."""

    parse_offload_bytes: int = Field(default=256 * 1024, ge=0)
    """Request bodies of at least this many bytes are parsed and validated in a thread, off the event loop, so one
    client's large request does not hold up the others; smaller ones are decoded in place (a thread hop costs more
    than their parse)."""

    feedback_max_bytes: int = Field(default=64 << 20, ge=1 << 20)
    """Byte budget of the predictions kept for joining feedback (besides runtime.feedback_capacity, a count); the
    oldest are evicted first and counted in mlsteward_buffer_evictions_total{buffer="feedback"}. 64 MiB fits the
    predictor's default 1 GiB memory limit with the model, the batch queue and a maximal request beside it."""

    batch_queue_max_bytes: int = Field(default=64 << 20, ge=1 << 20)
    """Byte budget of the input matrices waiting for a batched model call; past it a request gets 503 with
    Retry-After (rule max_queue_bytes), counted in mlsteward_overload_rejections_total. The records waiting for
    the prediction log's writer have a budget of the same size; past it records are dropped and counted in
    mlsteward_buffer_evictions_total{buffer="prediction_log"}."""

    drain_s: float = Field(default=5.0, ge=0, le=300)
    """Seconds the server keeps serving after SIGTERM/SIGINT before it shuts down, with /v2/health/ready answering
    503 and every response carrying `Connection: close`, so pooled client connections move to other pods cleanly
    while the endpoints catch up (see `drain`). 0 shuts down at once."""

    shutdown_timeout_s: float = Field(default=15.0, gt=0, le=600)
    """Once the drain has ended, the longest in-flight requests are waited for before they are cancelled. The pod's
    terminationGracePeriodSeconds must exceed drain_s + shutdown_timeout_s."""

    batch_direct_rows: int = Field(default=0, ge=0)
    """A request carrying at least this many rows is a model call by itself: it skips the batch queue and its event-
    loop hop (it would fill a batch alone). 0 means runtime.batching.max_batch_size."""

    batch_max_queue_delay_ms: float = Field(default=500.0, ge=0)
    """Budget of model time the batch queue may hold, estimated from the measured cost of recent model calls: once
    full batches queue up, a request that would wait behind more than this gets 503 with Retry-After (rule
    max_queue_delay) instead of a latency that grows without bound under overload; a request that joins the forming
    batch is never refused by it. 0 turns the check off (max_queue and batch_queue_max_bytes still bound the
    queue)."""

    gc_freeze: bool = True
    """Move every object alive once the model is loaded (the model, the libraries, the app) out of the garbage
    collector's reach (gc.freeze). A full collection otherwise walks all of them: hundreds of milliseconds on a busy
    core, every request in flight stalled meanwhile, which is where the serving tail latency came from."""

    worker_index: int = 0
    """Index of this worker process (set by the server when forking)."""
