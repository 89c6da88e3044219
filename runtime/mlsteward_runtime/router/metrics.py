"""Prometheus metrics of the router, in a registry of its own so that several routers can live in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds; the router adds well under a millisecond, so the low end is fine-grained.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "mlsteward_router_requests", "Prediction requests by the version that answered and HTTP status.",
            ["version", "status"], registry=r,
        )
        self.latency = Histogram(
            "mlsteward_router_backend_latency_seconds", "Round trip to a backend, by version.",
            ["version"], buckets=_BUCKETS, registry=r,
        )
        self.backend_errors = Counter(
            "mlsteward_router_backend_errors", "Failed backend attempts (connect error, timeout, 5xx).",
            ["version", "reason"], registry=r,
        )
        self.fallbacks = Counter(
            "mlsteward_router_fallbacks", "Requests retried on the stable version after a backend error.",
            ["from_version", "to_version"], registry=r,
        )
        self.shadow = Counter(
            "mlsteward_router_shadow_requests", "Mirrored requests by result (ok, error, dropped).",
            ["version", "result"], registry=r,
        )
        self.shadow_agreement = Counter(
            "mlsteward_router_shadow_agreement", "Mirrored requests whose prediction matched the served one.",
            ["version", "agreed"], registry=r,
        )
        self.shadow_pairs = Counter(
            "mlsteward_router_shadow_pairs", "Labelled feedback for a mirrored request that scored both answers, by "
            "result: both_correct, served_only, shadow_only, neither (classification) or regression (its rows' "
            "error differences are in /v1/router/stats).", ["version", "result"], registry=r,
        )
        self.shadow_unpaired = Counter(
            "mlsteward_router_shadow_unpaired_feedback", "Feedback that made no labelled pair, by reason: reward (no "
            "label), pending (the mirror had not answered), dropped, error, unreadable (no predictions in the "
            "shadow's answer), too_large (answer not kept), not_comparable (regression rows that are not numbers), "
            "unknown (no mirror of it remembered here: not mirrored by this replica, or forgotten).",
            ["version", "reason"], registry=r,
        )
        self.shadow_answers = Gauge(
            "mlsteward_router_shadow_answers", "Mirrored requests remembered for labelled pairs.", registry=r,
        )
        self.shadow_answers_bytes = Gauge(
            "mlsteward_router_shadow_answers_bytes", "Estimated bytes held by the shadow answers kept for labelled "
            "pairs.", registry=r,
        )
        self.shadow_answers_evictions = Counter(
            "mlsteward_router_shadow_answers_evictions", "Shadow answers forgotten (oldest first) to stay within "
            "shadow_answers_capacity and shadow_answers_max_bytes; feedback for them makes no pair.", registry=r,
        )
        self.feedback = Counter(
            "mlsteward_router_feedback", "Outcomes joined through feedback, by version.", ["version"], registry=r,
        )
        self.reloads = Counter(
            "mlsteward_router_config_reloads", "Config reloads (from the file or the ConfigMap) by result (ok, "
            "invalid).", ["result"], registry=r,
        )
        self.config_info = Gauge(
            "mlsteward_router_config_info", "1 for the generation of the config served and where it came from "
            "(file, configmap).", ["generation", "source"], registry=r,
        )
        self.config_loaded = Gauge(
            "mlsteward_router_config_loaded_timestamp_seconds", "Unix time the served config was loaded.", registry=r,
        )
        self.kube_errors = Counter(
            "mlsteward_router_kube_watch_errors", "Failed list or watch requests to the Kubernetes API, by object "
            "kind and reason (unreachable, timeout, http_<status>, invalid, too_large, gone, internal); the last good "
            "config is kept meanwhile.", ["kind", "reason"], registry=r,
        )
        self.kube_synced = Gauge(
            "mlsteward_router_kube_watch_synced", "1 while the watch of the object (by kind) is established.",
            ["kind"], registry=r,
        )
        self.refusals = Counter(
            "mlsteward_router_refusals", "Requests refused by access control, by reason (unauthenticated, "
            "forbidden, invalid_token: a JWT that failed verification, rate_limited, auth_failures).", ["reason"],
            registry=r,
        )
        self.jwks_loads = Counter(
            "mlsteward_router_jwks_loads", "Loads of the JWKS (file or Secret) by result (ok, invalid: not JSON or "
            "no usable key, the keys in use were kept).", ["result"], registry=r,
        )
        self.backend_ready = Gauge(
            "mlsteward_router_backend_ready", "1 when the backend answered its last readiness probe.",
            ["version"], registry=r,
        )
        self.served_evictions = Counter(
            "mlsteward_router_served_evictions", "Request ids forgotten (oldest first) to keep the feedback map "
            "within its byte budget and capacity; feedback for them gets 404.", registry=r,
        )
        self.served_bytes = Gauge(
            "mlsteward_router_served_bytes", "Estimated bytes held by the request ids remembered for feedback.",
            registry=r,
        )
        self.feedback_refused = Counter(
            "mlsteward_router_feedback_refused", "Feedback refused by reason (invalid_id: not an id this "
            "deployment's router signed; expired; future; token; duplicate).", ["reason"], registry=r,
        )
        self.counted_evictions = Counter(
            "mlsteward_router_feedback_counted_evictions", "Request ids forgotten as already given feedback (the "
            "one counted longest ago first) to stay within feedback_counted_capacity and _max_bytes; a repeat of "
            "one within the window is counted again.", registry=r,
        )
        self.counted_ids = Gauge(
            "mlsteward_router_feedback_counted_ids", "Request ids remembered as already given feedback.", registry=r,
        )
        self.id_keys = Gauge(
            "mlsteward_router_id_keys", "Keys that verify request ids (the first of them signs).", registry=r,
        )
        self.id_key_reloads = Counter(
            "mlsteward_router_id_key_reloads", "Re-reads of the request id key file by result (ok, invalid: the "
            "previous keys were kept).", ["result"], registry=r,
        )
        self.rerouted = Counter(
            "mlsteward_router_unready_reroutes", "Requests assigned to a backend its probe saw unready, sent to a "
            "ready one instead.", ["from_version", "to_version"], registry=r,
        )
        self.panic = Counter(
            "mlsteward_router_panic_routes", "Requests routed while no backend's probe was ready (sent to the "
            "assigned backend anyway, as the probes may be wrong).", ["version"], registry=r,
        )
        self.cache_requests = Counter(
            "mlsteward_router_cache_requests", "Prediction requests while the cache is on, by result: hit (answered "
            "from the cache), miss (looked up, sent to a backend), bypass (not looked up: a body that is not JSON or "
            "is too large, or Cache-Control: no-cache).", ["result"], registry=r,
        )
        self.cache_evictions = Counter(
            "mlsteward_router_cache_evictions", "Cached predictions dropped, by reason: capacity (past maxEntries), "
            "bytes (past maxBytes), expired (older than the ttl).", ["reason"], registry=r,
        )
        self.cache_entries = Gauge(
            "mlsteward_router_cache_entries", "Predictions held by the cache.", registry=r,
        )
        self.cache_bytes = Gauge(
            "mlsteward_router_cache_bytes", "Bytes the cache accounts for (keys, bodies, header values and the "
            "per-entry overhead), at most maxBytes.", registry=r,
        )
