"""`mlsteward serve`: verify, load and serve one model version over HTTP."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlsteward_runtime.errors import UsageError

HELP = "Serve one model version over HTTP (V2 Open Inference, KServe V1, simple JSON)."
DESCRIPTION = """\
Serve one scikit-learn model version over HTTP.

The artifact is fetched (a path, file://, http(s):// or s3://), its sha256 checked before a byte is
deserialized, loaded, checked against its signature, and a golden input is predicted; only then does
/v2/health/ready answer 200. joblib and pickle artifacts need --sha256 (or --allow-unverified).

Endpoints: POST /predict, POST /v1/models/NAME:predict, POST /v2/models/NAME/infer, GET /v2/health/live,
GET /v2/health/ready, GET /metrics, GET /v1/stats, GET /v1/drift/window, POST /v1/feedback, GET /docs.

With --workers N the model is loaded and verified once, then N worker processes are forked and share it.
Prometheus metrics are aggregated across workers; /v1/stats and /v1/drift/window merge the snapshots that
workers publish every second; feedback for a request answered by another worker is found through the
workers' shared prediction journals.

On SIGTERM or SIGINT the server drains before it stops: for MLSTEWARD_DRAIN_S seconds (default 5) it keeps
answering, /v2/health/ready answers 503 and every response carries Connection: close; then requests in flight
get up to MLSTEWARD_SHUTDOWN_TIMEOUT_S seconds (default 15) and the process exits 0.

Example:
  mlsteward serve --model model.skops --name iris --sha256 HEX --port 8080
  curl -s localhost:8080/predict -H 'content-type: application/json' -d '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--model", metavar="URI", help="artifact URI: a path, file://, http(s):// or s3://bucket/key")
    p.add_argument("--name", help="model name used in URLs (/v2/models/NAME)")
    p.add_argument("--version", dest="model_version", help="version reported in x-model-version (default 0.0.0)")
    p.add_argument("--sha256", metavar="HEX", help="expected sha256 of the artifact; checked before loading")
    p.add_argument("--format", choices=["skops", "onnx", "joblib", "pickle"],
                   help="artifact format (default: from the extension: .skops, .onnx, .joblib, .pkl, .pickle)")
    p.add_argument("--signature", metavar="FILE",
                   help="signature JSON/YAML: a Signature, a ModelVersion spec.signature, or a ModelVersion")
    p.add_argument("--host", default=None, help="listen address (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="listen port (default 8080)")
    p.add_argument("--workers", type=int, default=None, help="worker processes sharing the loaded model")
    p.add_argument("--config", metavar="FILE", help="RuntimeConfig JSON (rendered by the operator)")
    p.add_argument("--allow-unverified", action="store_true", help="load joblib/pickle without a sha256 (unsafe)")
    p.add_argument("--allow-version-skew", action="store_true",
                   help="load a model saved by another scikit-learn major.minor (refused otherwise)")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])


def _read_structured(path: str) -> Any:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UsageError(f"{path} is neither JSON nor YAML: {exc}") from None


def _signature_from(data: Any, path: str) -> Any:
    from pydantic import ValidationError

    from mlsteward_runtime.contracts import Signature

    if isinstance(data, dict) and "spec" in data and isinstance(data["spec"], dict):
        data = data["spec"].get("signature")
    elif isinstance(data, dict) and "signature" in data and "inputs" not in data:
        data = data["signature"]
    try:
        return Signature.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"{path} is not a valid signature: {_first_error(exc)}") from None


def _first_error(exc: Any) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}"


def build_settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from mlsteward_runtime.contracts import RuntimeConfig
    from mlsteward_runtime.settings import ServeSettings

    base: dict[str, Any] = {}
    if args.config:
        base = _read_structured(args.config)
        if not isinstance(base, dict):
            raise UsageError(f"{args.config} must hold a JSON object")
    artifact = dict(base.get("artifact") or {})
    if args.model:
        artifact["uri"] = args.model
    if args.sha256:
        artifact["sha256"] = args.sha256.lower()
    if args.format:
        artifact["format"] = args.format
    if not artifact.get("uri"):
        raise UsageError("give --model URI (or a --config with artifact.uri)")
    if not artifact.get("format"):
        from mlsteward_runtime.artifacts import format_from_uri, require_format

        # A --config without a format keeps the contract's default (skops) when the extension names none.
        fmt = require_format(args.model, None) if args.model else format_from_uri(str(artifact["uri"]))
        if fmt:
            artifact["format"] = fmt
    base["artifact"] = artifact
    if args.name:
        base["name"] = args.name
    if not base.get("name"):
        raise UsageError("give --name NAME (or a --config with name)")
    if args.model_version:
        base["version"] = args.model_version
    if args.allow_unverified:
        base["allow_unverified"] = True
    if args.allow_version_skew:
        base["allow_version_skew"] = True
    if args.signature:
        base["signature"] = _signature_from(_read_structured(args.signature), args.signature).model_dump(mode="json")
    try:
        runtime = RuntimeConfig.model_validate(base)
    except ValidationError as exc:
        raise UsageError(f"invalid configuration: {_first_error(exc)}") from None
    overrides: dict[str, Any] = {"runtime": runtime}
    for key, val in (("host", args.host), ("port", args.port), ("workers", args.workers),
                     ("log_level", args.log_level)):
        if val is not None:
            overrides[key] = val
    try:
        return ServeSettings(**overrides)
    except ValidationError as exc:
        raise UsageError(f"invalid settings: {_first_error(exc)}") from None


def run(args: argparse.Namespace) -> int:
    settings = build_settings(args)
    shared: str | None = None
    if settings.workers > 1:
        # Prometheus picks its multiprocess value class when prometheus_client is first imported, so the directory
        # must be in the environment before any metric module is imported.
        shared = tempfile.mkdtemp(prefix="mlsteward-")
        os.makedirs(os.path.join(shared, "prometheus"), exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(shared, "prometheus")
        settings.shared_dir = shared

    from mlsteward_runtime.dataplane import DataPlane
    from mlsteward_runtime.errors import ModelLoadError
    from mlsteward_runtime.logs import configure_logging

    configure_logging(settings.log_level, settings.runtime.pii_fields,
                      {"model": settings.runtime.name, "version": settings.runtime.version})
    plane = DataPlane.from_settings(settings)
    try:
        plane.load()
    except ModelLoadError as exc:
        print(f"mlsteward serve: {exc.reason}: {exc.message}", file=sys.stderr)
        return 3
    sock = _bind(settings.host, settings.port)
    print(f"mlsteward serve: model {settings.runtime.name} {settings.runtime.version} on "
          f"http://{settings.host}:{sock.getsockname()[1]} with {settings.workers} worker(s)", file=sys.stderr,
          flush=True)
    if settings.workers == 1:
        _serve(settings, plane, sock)
        return 0
    from mlsteward_runtime.workers import Supervisor

    assert shared is not None
    try:
        return Supervisor(settings, plane, sock, shared, _serve).run()
    finally:
        import shutil

        shutil.rmtree(shared, ignore_errors=True)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve(settings: Any, plane: Any, sock: socket.socket) -> None:
    """Run one worker's server; with several workers the supervisor forwards SIGTERM and each worker drains."""
    import uvicorn

    from mlsteward_runtime.app import create_app
    from mlsteward_runtime.drain import DrainingServer

    app = create_app(settings, plane)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", http="auto", loop="auto",
                            timeout_keep_alive=30, backlog=2048,
                            timeout_graceful_shutdown=settings.shutdown_timeout_s)

    def on_drain() -> None:
        plane.draining = True

    server = DrainingServer(config, drain_s=settings.drain_s, on_drain=on_drain)
    server.run(sockets=[sock])
