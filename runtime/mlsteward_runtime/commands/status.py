"""`mlsteward status`: one view of a ModelDeployment, read from the cluster."""

from __future__ import annotations

import argparse

HELP = "Show a ModelDeployment: versions wanted and served, traffic, readiness, experiments, drift and decisions."
DESCRIPTION = """\
Show DEPLOYMENT in one view: the version wanted (spec.version) and the one served, with the stable version and any
override; the rollout and the traffic split (canary weight against stable); every version involved with its
phase, sha256 prefix and metrics; the router's and the predictors' readiness (their Deployments); the Experiments
on it (phase, arms, leader, p-value, decision); its DriftMonitors (last check, last action); shadow traffic; the
conditions kstatus reads (Ready, Reconciling, Stalled) and the others; and the last decisions of the operator.

Reads only (RBAC: list of the four mlsteward kinds and of Deployments; without the latter, readiness is
shown as unknown). -o json or -o yaml print the same view for programs, keyed by the status fields it comes from.

examples:
  mlsteward status iris -n models
  kubectl mlsteward status iris -n models --context staging
  kubectl mlsteward status iris -o json | jq '.traffic'
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mlsteward_runtime.cluster.objects import add_cluster_arguments
    from mlsteward_runtime.cluster.statusview import FORMATS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("deployment", metavar="DEPLOYMENT", help="Name of the ModelDeployment.")
    add_cluster_arguments(parser, "Namespace (default: the kubeconfig context's).")
    parser.add_argument("-o", "--output", default="text", choices=FORMATS,
                        help="Output format: text (default), json or yaml.")
    parser.add_argument("--decisions", type=int, default=5, metavar="N",
                        help="How many of the last decisions to show (default 5; 0 for none).")


def run(args: argparse.Namespace) -> int:
    import sys

    from mlsteward_runtime.cluster.objects import Cluster
    from mlsteward_runtime.cluster.report import ReportError, find_deployment
    from mlsteward_runtime.cluster.status import build_status, workload_labels
    from mlsteward_runtime.cluster.statusview import render
    from mlsteward_runtime.errors import UsageError

    if args.decisions < 0:
        raise UsageError(f"--decisions: {args.decisions} is negative (0 shows none)")
    cluster = Cluster(args.kubeconfig, args.namespace, args.context)
    try:
        try:
            md = find_deployment(cluster.list("ModelDeployment"), args.deployment, cluster.namespace)
        except ReportError as exc:
            raise UsageError(str(exc)) from None
        objects = [o for kind in ("ModelVersion", "Experiment", "DriftMonitor") for o in cluster.list(kind)]
        workloads = cluster.deployments(workload_labels(args.deployment))
    finally:
        cluster.close()
    sys.stdout.write(render(build_status(md, objects, workloads, decisions=args.decisions), args.output))
    return 0
