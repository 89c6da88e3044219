"""`mlsteward operator`: run the kopf controllers for the four mlsteward kinds.

The runtime never imports the operator (an import-linter contract says so): the verb finds the operator's `run`
through the entry point the distribution declares in the group below, so the serving image and the operator can be
packaged apart and the runtime's import graph stays free of kopf and the Kubernetes client.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

# pyproject.toml: [project.entry-points."mlsteward.operator"] run = "mlsteward_operator.main:run"
ENTRY_POINT_GROUP = "mlsteward.operator"
ENTRY_POINT_NAME = "run"

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
    run_operator = find_operator()
    run_operator(
        namespaces=args.namespace,
        clusterwide=bool(args.all_namespaces),
        liveness_endpoint=None if args.liveness == "none" else args.liveness,
    )
    return 0


def find_operator(group: str = ENTRY_POINT_GROUP) -> Callable[..., Any]:
    """The operator's `run(namespaces=, clusterwide=, liveness_endpoint=)`, loaded from its entry point."""
    from importlib.metadata import entry_points

    from mlsteward_runtime.errors import UsageError

    found = entry_points(group=group, name=ENTRY_POINT_NAME)
    if not found:
        raise UsageError(f"the mlsteward operator is not installed: no entry point {ENTRY_POINT_NAME!r} in group "
                         f"{group!r} (install the mlsteward distribution, e.g. pip install mlsteward)")
    # Several installs of the distribution on the path (an editable one and a wheel) declare the same target.
    return next(iter(found)).load()
