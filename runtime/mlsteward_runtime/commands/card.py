"""`mlsteward card`: the Markdown model card of a ModelVersion, from a cluster or from YAML files."""

from __future__ import annotations

import argparse

HELP = "Render the Markdown model card of a ModelVersion (from the cluster or YAML files)."
DESCRIPTION = """\
Render the model card of MODELVERSION as Markdown: description and intended use, signature, training data and
lineage (the parent chain as far as it can be followed), validation metrics against each threshold (pass or
fail), the ModelDeployments that serve it, the drift history of their DriftMonitors, and the Experiments it took
part in (arms, outcomes, winner).

Sources: the cluster of the kubeconfig (read only: lists ModelVersions, ModelDeployments, Experiments and
DriftMonitors in the namespace), or, with --file, YAML files (several documents, `List` kinds as written by
`kubectl get -o yaml`, or plain objects; `-` reads standard input). Intended use and limitations come from the
annotations mlsteward.io/intended-use and mlsteward.io/limitations.

examples:
  mlsteward card breast-cancer-1-1-0 -n models
  kubectl get mv,md,exp,dm -n models -o yaml > objects.yaml && mlsteward card breast-cancer-1-1-0 --file objects.yaml
  mlsteward card breast-cancer-1-1-0 --file mv.yaml --file exp.yaml --output CARD.md
"""

def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mlsteward_runtime.cluster.objects import add_cluster_arguments

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model_version", metavar="MODELVERSION", help="Name of the ModelVersion.")
    add_cluster_arguments(parser, "Namespace (default: the kubeconfig context's, or with --file the "
                          "ModelVersion's own).")
    parser.add_argument("--file", "-f", action="append", default=[], metavar="FILE.yaml",
                        help="Read objects from this YAML file instead of the cluster (repeatable; - is stdin).")
    parser.add_argument("--output", "-o", metavar="FILE", help="Write the card to FILE instead of standard output.")


def run(args: argparse.Namespace) -> int:
    from mlsteward_runtime.cluster.card import CardError, render_card
    from mlsteward_runtime.cluster.objects import read_cluster, read_files, write_output
    from mlsteward_runtime.errors import UsageError

    if args.file:
        objects, namespace = read_files(args.file), args.namespace
    else:
        objects, namespace = read_cluster(args.kubeconfig, args.namespace, context=args.context)
    try:
        text = render_card(args.model_version, objects, namespace=namespace)
    except CardError as exc:
        source = ", ".join(args.file) if args.file else "the cluster"
        raise UsageError(f"{exc}; read from {source}") from None
    write_output(text, args.output)
    return 0
