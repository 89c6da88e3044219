"""`mlsteward operator`: run the kopf controllers for the four mlsteward kinds."""

from __future__ import annotations

import argparse

HELP = "Run the mlsteward operator (controllers for ModelVersion, ModelDeployment, Experiment, DriftMonitor)."
DESCRIPTION = (
    HELP
    + "\n\nUses the in-cluster service account when run in a pod, else the current kubeconfig.\n"
    "Examples:\n  mlsteward operator --all-namespaces\n  mlsteward operator --namespace models --namespace staging"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", default=[], metavar="NS",
                       help="Watch this namespace (repeatable; glob patterns allowed).")
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="Watch every namespace.")
    p.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", metavar="URL",
                   help="Liveness endpoint served by the operator (default: %(default)s); 'none' disables it.")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def run(args: argparse.Namespace) -> int:
    import logging

    from mlsteward_runtime.errors import UsageError

    if not args.namespace and not args.all_namespaces:
        raise UsageError("give --namespace NS (repeatable) or --all-namespaces")
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from mlsteward_operator import main

    main.run(
        namespaces=args.namespace,
        clusterwide=bool(args.all_namespaces),
        liveness_endpoint=None if args.liveness == "none" else args.liveness,
    )
    return 0
