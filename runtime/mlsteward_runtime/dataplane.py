"""The transport-free data plane: load and check the model, predict, observe, join feedback, report.

Protocols decode requests into a validated matrix and encode the result; everything in between lives here, so V1,
V2 and the simple protocol behave the same and the logic is testable without HTTP.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlsteward_runtime.batching import Batcher
from mlsteward_runtime.contracts import DriftWindow, Quantiles, RuntimeConfig, RuntimeStats, Signature
from mlsteward_runtime.errors import InvalidInput, ModelLoadError, NotReady
from mlsteward_runtime.feedback import FeedbackStore, PredictionLog
from mlsteward_runtime.metrics import Metrics, SlidingStats, merge_snapshots, quantiles_from_hist
from mlsteward_runtime.models import LoadedModel, load_model
from mlsteward_runtime.signature import RowValidator, check_signature, golden_rows, infer_signature
from mlsteward_runtime.window import Reservoir

if TYPE_CHECKING:
    from mlsteward_runtime.settings import ServeSettings

__all__ = ["DataPlane"]

log = logging.getLogger("mlsteward.dataplane")


class DataPlane:
    """One model version: its loaded model, validator, batcher, window, feedback store and statistics.

    Lifecycle: `load()` (fetch, verify, load, signature, golden check) then `ready` is True. With several worker
    processes the parent calls `load()` before forking and each worker calls `start_worker()`.
    """

    def __init__(self, config: RuntimeConfig, *, replica: str = "local", executor_threads: int = 0,
                 metrics: Metrics | None = None, feedback_max_bytes: int | None = 64 << 20,
                 queue_max_bytes: int | None = 64 << 20, direct_rows: int = 0,
                 queue_max_delay_ms: float = 500.0, gc_freeze: bool = False) -> None:
        self.config = config
        self.name = config.name
        self.version = config.version
        self.replica = replica
        self.metrics = metrics or Metrics(config.version)
        self.model: LoadedModel | None = None
        self.signature: Signature | None = config.signature
        self.validator: RowValidator | None = None
        self.batcher: Batcher | None = None
        self.window: Reservoir | None = None
        evicted = self.metrics.evictions.labels("feedback", config.version)
        self.feedback = FeedbackStore(config.feedback_capacity, feedback_max_bytes, evicted.inc)
        self._queue_max_bytes = queue_max_bytes
        self._direct_rows = direct_rows
        self._queue_max_delay_ms = queue_max_delay_ms
        self._gc_freeze = gc_freeze
        self.stages = self.metrics.stages
        self.stats = SlidingStats(config.stats_window_s)
        self.prediction_log: PredictionLog | None = None
        self.ready = False
        # Set when this worker starts draining before shutdown (`drain`): readiness answers 503, requests are served.
        self.draining = False
        self.load_error: ModelLoadError | None = None
        self.load_seconds: float | None = None
        self._executor_threads = executor_threads
        # Other workers' published stats/window snapshots; set by the server when it forks several workers.
        self.peers: Any = None

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> DataPlane:
        return cls(settings.runtime, replica=settings.replica, executor_threads=settings.executor_threads,
                   feedback_max_bytes=settings.feedback_max_bytes, queue_max_bytes=settings.batch_queue_max_bytes,
                   direct_rows=settings.batch_direct_rows, queue_max_delay_ms=settings.batch_max_queue_delay_ms,
                   gc_freeze=settings.gc_freeze)

    # -- loading ------------------------------------------------------------------------------------------------

    def load(self, data: bytes | None = None) -> None:
        """Fetch, verify and load the model, settle the signature and replay the golden input.

        Raises ModelLoadError (reasons: FetchFailed, DigestMismatch, UnverifiedRefused, LoadFailed,
        SignatureMismatch, GoldenMismatch) and leaves the data plane unready.
        """
        t0 = time.perf_counter()
        try:
            model = load_model(self.config.artifact, allow_unverified=self.config.allow_unverified,
                               allow_version_skew=self.config.allow_version_skew, data=data)
        except ModelLoadError as exc:
            if exc.reason == "DigestMismatch":
                self.metrics.digest_failures.labels(self.version).inc()
            self.load_error = exc
            raise
        try:
            sig = self.signature or infer_signature(model)
        except ValueError as exc:
            raise self._fail("SignatureMismatch", str(exc)) from exc
        problems = check_signature(sig, model)
        if problems:
            raise self._fail("SignatureMismatch", "; ".join(problems))
        self.model = model
        self.signature = sig
        self.validator = RowValidator(sig, max_rows=self.config.limits.max_rows)
        self._golden_check()
        self.load_seconds = time.perf_counter() - t0
        self.metrics.load_seconds.labels(self.version).set(self.load_seconds)
        log.info("Loaded model", extra={"model": self.name, "version": self.version, "sha256": model.sha256,
                                          "format": model.format.value, "seconds": round(self.load_seconds, 3)})

    def _fail(self, reason: str, message: str) -> ModelLoadError:
        self.load_error = ModelLoadError(reason, message)
        return self.load_error

    def _golden_check(self) -> None:
        assert self.model is not None and self.validator is not None and self.signature is not None
        golden = self.config.golden
        rows = golden.inputs if golden is not None else golden_rows(self.signature, 2)
        try:
            X = self.validator.rows(rows, "golden.inputs")
            pred, _ = self._predict(X)
        except (InvalidInput, Exception) as exc:  # noqa: BLE001 - any failure means the pod must not be ready
            msg = exc.message if isinstance(exc, InvalidInput) else f"{type(exc).__name__}: {exc}"
            raise self._fail("GoldenFailed", f"golden input did not predict: {msg}") from exc
        if golden is not None and golden.outputs is not None:
            got = pred.tolist()
            if not _outputs_match(got, golden.outputs):
                raise self._fail("GoldenMismatch", f"golden outputs differ: expected {golden.outputs}, got {got}")

    def start_worker(self) -> None:
        """Per-process parts: the batcher, the drift window and the prediction log (threads do not survive fork)."""
        assert self.model is not None and self.signature is not None
        if self.model.format.value != "onnx":
            import sklearn

            # Every row was validated (finite numbers, known categories) before it reaches the model, so
            # scikit-learn's own finiteness and parameter checks only repeat work: skipping them saves about a
            # third of a one-row predict. The setting is per thread and this is the thread that runs the model.
            sklearn.set_config(assume_finite=True, skip_parameter_validation=True)
        b = self.config.batching
        executor = ThreadPoolExecutor(self._executor_threads, "predict") if self._executor_threads else None
        rows_hist = self.metrics.batch_rows
        if b.enabled:
            self.batcher = Batcher(self._predict, max_batch_size=b.max_batch_size, max_wait_ms=b.max_wait_ms,
                                   max_queue=b.max_queue, executor=executor, on_batch=rows_hist.observe,
                                   max_queue_bytes=self._queue_max_bytes,
                                   on_shed=self.metrics.rejected.labels(self.version).inc,
                                   direct_rows=self._direct_rows, max_queue_delay_ms=self._queue_max_delay_ms,
                                   concurrency=max(self._executor_threads, 1), on_timing=self._batch_timing)
        self.window = Reservoir(self.signature, self.config.drift_window.size, self.config.drift_window.seed,
                                self.config.pii_fields)
        if self.config.prediction_log:
            Path(self.config.prediction_log).parent.mkdir(parents=True, exist_ok=True)
            dropped = self.metrics.evictions.labels("prediction_log", self.version)
            self.prediction_log = PredictionLog(self.config.prediction_log, self.signature.names,
                                                self.config.pii_fields, self.version,
                                                max_pending_bytes=self._queue_max_bytes, on_drop=dropped.inc)
        if self._gc_freeze:
            # Everything alive now lives as long as the process; a full collection need not walk it again.
            gc.freeze()
        self.ready = True
        self.metrics.ready.labels(self.version).set(1)

    # -- request path -------------------------------------------------------------------------------------------

    def _predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        assert self.model is not None
        return self.model.predict_both(X)

    async def infer(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.ready:
            raise NotReady("the model is not ready yet", field="model", rule="ready")
        try:
            if self.batcher is not None:
                pred, proba = await self.batcher.submit(X)
            else:
                self.metrics.batch_rows.observe(len(X))
                t0 = time.perf_counter()
                pred, proba = self._predict(X)
                self.stages.add("predict", time.perf_counter() - t0)
        except (ValueError, TypeError) as exc:
            # Validated input the model still rejects (e.g. a category its encoder never saw) is the client's
            # request meeting the model's limits, not a server fault.
            raise InvalidInput(f"the model rejected the input: {exc}", field="instances", rule="model") from exc
        _check_finite(pred, proba)
        return pred, proba

    def _batch_timing(self, waited: float, seconds: float, requests: int, rows: int) -> None:
        self.stages.add("queue", waited)
        self.stages.add("predict", seconds)

    def observe(self, request_id: str, X: np.ndarray, pred: np.ndarray) -> None:
        """Record a served prediction: drift window, feedback join, prediction log."""
        t0 = time.perf_counter()
        self._observe(request_id, X, pred)
        self.stages.add("observe", time.perf_counter() - t0)

    def _observe(self, request_id: str, X: np.ndarray, pred: np.ndarray) -> None:
        if self.window is not None:
            self.window.observe(X)
        self.feedback.put(request_id, pred)
        if self.peers is not None:
            self.peers.journal(request_id, pred)
        if self.prediction_log is not None:
            self.prediction_log.submit(request_id, X, pred)

    def record_request(self, latency_ms: float, status: int) -> None:
        # Only 5xx are the server's errors: a client that sends bad input on purpose must not be able to push a
        # version's error rate over a rollout gate or an alert. 4xx are counted apart as client_errors.
        self.stats.record(latency_ms, status >= 500, 400 <= status < 500)

    async def join_feedback(self, request_id: str, label: Any = None, reward: Any = None) -> dict[str, Any]:
        if self.peers is not None and self.feedback.get(request_id) is None:
            # Answered by another worker: adopt its journaled prediction so the join below finds it.
            preds = await asyncio.to_thread(self.peers.lookup, request_id)
            if preds is not None:
                self.feedback.put(request_id, preds)
        outcome = self.feedback.join(request_id, label, reward)
        self.stats.record_feedback(
            outcome.correct if outcome.labelled else None, outcome.reward, labelled=outcome.labelled
        )
        return {"request_id": request_id, "joined": True, "correct": outcome.correct, "labelled": outcome.labelled,
                "reward": outcome.reward}

    # -- reports ------------------------------------------------------------------------------------------------

    def runtime_stats(self) -> RuntimeStats:
        snaps = [self.stats.snapshot()]
        if self.peers is not None:
            snaps += self.peers.stats_snapshots()
        s = merge_snapshots(snaps)
        p50, p95, p99 = quantiles_from_hist(s["hist"])
        count = s["count"]
        return RuntimeStats(
            name=self.name,
            version=self.version,
            window_s=self.stats.window_s,
            count=count,
            errors=s["errors"],
            client_errors=s["client_errors"],
            error_rate=(s["errors"] / count) if count else 0.0,
            throughput_rps=round(count / s["span_s"], 3) if s["span_s"] > 0 else 0.0,
            latency_ms=Quantiles(p50=p50, p95=p95, p99=p99),
            feedback=s["fb"],
            accuracy=(s["correct"] / s["labelled"]) if s["labelled"] else None,
            mean_reward=(s["reward_sum"] / s["reward_n"]) if s["reward_n"] else None,
        )

    def drift_window(self) -> DriftWindow:
        if self.window is None:
            raise NotReady("the model is not ready yet", field="model", rule="ready")
        own = self.window.to_contract(self.name, self.version, self.replica)
        if self.peers is None:
            return own
        from mlsteward_runtime.window import merge_windows

        merged = merge_windows([own, *self.peers.windows()], self.config.drift_window.size,
                               self.config.drift_window.seed)
        return merged or own


def _check_finite(pred: np.ndarray, proba: np.ndarray | None) -> None:
    """Refuse NaN or infinite outputs: finite inputs near the float64 limits (say ±1e308) overflow inside a model,
    and JSON has no NaN, so they would reach the client as nulls in a 200. The input is what caused it: a 422."""
    bad = pred.dtype.kind == "f" and not np.isfinite(pred).all()
    if not bad and proba is not None:
        bad = not np.isfinite(proba).all()
    if bad:
        raise InvalidInput("the model's output for this input is not a finite number (NaN or infinity); inputs "
                           "this far from the training data overflow", field="outputs", rule="finite_output")


def _outputs_match(got: list[Any], expected: list[Any]) -> bool:
    if len(got) != len(expected):
        return False
    for g, e in zip(got, expected):
        if isinstance(g, float) or isinstance(e, float):
            try:
                if abs(float(g) - float(e)) > 1e-6 * max(1.0, abs(float(e))):
                    return False
            except (TypeError, ValueError):
                return False
        elif g != e and str(g) != str(e):
            return False
    return True
