"""The router behind `mlsteward route`: the stable entry point of a ModelDeployment.

Modules: `app` (the ASGI application: config, lifecycle, dispatch), `proxy` (prediction and metadata
requests, fallback, request ids), `backend` (one call to a backend), `shadow` (mirroring), `feedback_endpoint`
(POST /v1/feedback), `admission` (401/403/429 of a request), `asgi` (responses, bodies, ClientError), `state`
(the view of one config), `strategies` (pure arm choice: weighted, sticky buckets, epsilon-greedy, Thompson
sampling), `stats` (per-arm counters that merge across replicas), `feedback` (request id -> serving arm),
`access` (tokens from a watched file, per-client token buckets), `config` (reading and watching the RouterConfig
file), `kubewatch` (list/watch of one ConfigMap or Secret through the Kubernetes API), `source` (the config and
tokens from the API, `--config-map`), `metrics` (Prometheus), `settings` (MLSTEWARD_ROUTER_* environment).

Config semantics, beyond the field descriptions in `mlsteward_runtime.contracts.RouterConfig`:
- Weights are relative (the operator keeps them summing to 100); all zero sends everything to stable_version.
- Sticky (Weighted): the key (header first, then the top-level body key) hashes to a bucket 0..99 and arms own
  contiguous bucket ranges in config order, so a weight change moves only the users in the shifted share. A
  request without the key is assigned at random. Under a bandit a sticky user keeps the arm first drawn for
  them on this replica (bounded memory).
- Bandits (EpsilonGreedy, ThompsonSampling) use every backend as an arm and ignore weights; their statistics are
  `outcome_priors` from the config plus this replica's outcomes since those priors last changed.
- The file is polled every 2 s (MLSTEWARD_ROUTER_RELOAD_INTERVAL_S) and swapped whole; an invalid file is
  logged and counted (mlsteward_router_config_reloads_total{result="invalid"}) and the previous config kept.
  Counters survive reloads.
- With `--config-map` the ConfigMap is watched through the API and a change applies within a second; the first
  config the API delivers takes over from the file for good. The API being unreachable, or the ConfigMap deleted,
  leaves the last config served. `generation` (set by the operator) is reported in /v1/router/stats and
  mlsteward_router_config_info, so the operator can tell when every replica serves a change.

Nothing here is imported by the operator (import-linter forbids it); the shared shapes live in contracts.
"""
