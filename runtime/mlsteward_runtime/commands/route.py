"""`mlsteward route`: the stable entry point of a ModelDeployment, splitting traffic across predictor versions."""

from __future__ import annotations

import argparse

from mlsteward_runtime.errors import UsageError

HELP = "Route prediction traffic across model versions (weighted, sticky, bandit, shadow, fallback)."
DESCRIPTION = (
    "Serve the router of one ModelDeployment. The RouterConfig JSON file is re-read whenever it changes on disk "
    "(the operator updates a mounted ConfigMap); an invalid new file is logged and the previous config kept. "
    "With --config-map the ConfigMap's key router.json is watched through the Kubernetes API with the pod's "
    "service account (namespace: $POD_NAMESPACE), so a change applies within a second; a --config file given too "
    "is the config until the API first delivers, and is not read after. "
    "Process settings come from MLSTEWARD_ROUTER_* environment variables. On SIGTERM or SIGINT the router drains "
    "for MLSTEWARD_ROUTER_DRAIN_S seconds (default 5: it keeps answering, /readyz answers 503 and every response "
    "carries Connection: close), then waits up to MLSTEWARD_ROUTER_SHUTDOWN_TIMEOUT_S (default 15) for requests "
    "in flight and exits 0."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="RouterConfig JSON file.")
    parser.add_argument(
        "--config-map", metavar="NAME",
        help="ConfigMap (in $POD_NAMESPACE) whose key router.json holds the RouterConfig, watched through the "
        "Kubernetes API (needs list and watch on it).",
    )
    parser.add_argument("--host", default="0.0.0.0", help="Address to listen on (default: 0.0.0.0).")
    parser.add_argument("--port", type=int, default=8080, help="Port to listen on (default: 8080).")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    import asyncio
    import importlib.util
    import logging

    from pydantic import ValidationError

    from mlsteward_runtime.router.app import create_app
    from mlsteward_runtime.router.config import ROUTER_CONFIG_FILE, ConfigError, parse_config
    from mlsteward_runtime.router.kubewatch import KubeEndpoint, KubeError, first_object
    from mlsteward_runtime.router.server import server, uvicorn_config
    from mlsteward_runtime.router.settings import RouterSettings

    if not 0 < args.port < 65536:
        raise UsageError(f"--port: {args.port} is not a TCP port (1..65535)")
    if args.config is None and args.config_map is None:
        raise UsageError("give --config FILE, --config-map NAME or both")
    try:
        settings = RouterSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = f"MLSTEWARD_ROUTER_{str(first['loc'][0]).upper()}" if first["loc"] else "MLSTEWARD_ROUTER_*"
        raise UsageError(f"{where}: {first['msg']}") from None
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    kube = None
    initial = None
    if args.config_map is not None:
        try:
            kube = KubeEndpoint.in_cluster(settings.kube_api_url, settings.kube_namespace,
                                           settings.kube_serviceaccount_dir)
        except KubeError as exc:
            raise UsageError(f"--config-map: {exc}") from None
        if args.config is None:
            # Without a file to start from, the first config must come from the API before the port opens.
            try:
                obj = asyncio.run(first_object(kube, "configmaps", args.config_map, settings.kube_startup_timeout_s,
                                               settings.kube_backoff_max_s))
            except KubeError as exc:
                raise UsageError(f"--config-map: cannot read ConfigMap {args.config_map}: {exc}") from None
            data = (obj or {}).get("data") or {}
            if not isinstance(data, dict) or not isinstance(data.get(ROUTER_CONFIG_FILE), str):
                raise UsageError(f"--config-map: ConfigMap {args.config_map} in namespace {kube.namespace} "
                                 f"{'has no key ' + ROUTER_CONFIG_FILE if obj else 'does not exist'}")
            try:
                initial = parse_config(data[ROUTER_CONFIG_FILE], f"configmap/{args.config_map}:{ROUTER_CONFIG_FILE}")
            except ConfigError as exc:
                raise UsageError(str(exc)) from None
    try:
        app = create_app(args.config, settings, config=initial, kube=kube, config_map=args.config_map)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    # One process per pod: the counters behind /v1/router/stats live in memory, and with several workers each
    # scrape would see only one worker's share. Scale the router with replicas instead.
    config = uvicorn_config(
        app,
        header_timeout_s=settings.header_timeout_s,
        host=args.host,
        port=args.port,
        loop="uvloop" if has_uvloop else "asyncio",
        log_level=args.log_level,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    server(app, config, drain_s=settings.drain_s, flush_timeout_s=settings.flush_timeout_s).run()
    return 0
