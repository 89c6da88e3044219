"""`mlsteward route`: the stable entry point of a ModelDeployment, splitting traffic across predictor versions."""

from __future__ import annotations

import argparse

from mlsteward_runtime.errors import UsageError

HELP = "Route prediction traffic across model versions (weighted, sticky, bandit, shadow, fallback)."
DESCRIPTION = (
    "Serve the router of one ModelDeployment. The RouterConfig JSON file is re-read whenever it changes on disk "
    "(the operator updates a mounted ConfigMap); an invalid new file is logged and the previous config kept. "
    "Process settings come from MLSTEWARD_ROUTER_* environment variables. On SIGTERM or SIGINT the router drains "
    "for MLSTEWARD_ROUTER_DRAIN_S seconds (default 5: it keeps answering, /readyz answers 503 and every response "
    "carries Connection: close), then waits up to MLSTEWARD_ROUTER_SHUTDOWN_TIMEOUT_S (default 15) for requests "
    "in flight and exits 0."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="RouterConfig JSON file.")
    parser.add_argument("--host", default="0.0.0.0", help="Address to listen on (default: 0.0.0.0).")
    parser.add_argument("--port", type=int, default=8080, help="Port to listen on (default: 8080).")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import logging

    from pydantic import ValidationError

    from mlsteward_runtime.router.app import create_app
    from mlsteward_runtime.router.config import ConfigError
    from mlsteward_runtime.router.server import server, uvicorn_config
    from mlsteward_runtime.router.settings import RouterSettings

    if not 0 < args.port < 65536:
        raise UsageError(f"--port: {args.port} is not a TCP port (1..65535)")
    try:
        settings = RouterSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = f"MLSTEWARD_ROUTER_{str(first['loc'][0]).upper()}" if first["loc"] else "MLSTEWARD_ROUTER_*"
        raise UsageError(f"{where}: {first['msg']}") from None
    try:
        app = create_app(args.config, settings)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
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
    server(app, config, drain_s=settings.drain_s).run()
    return 0
