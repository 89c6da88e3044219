"""`mlsteward card`: the Markdown model card of a ModelVersion, from a cluster or from YAML files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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

PLURALS = {"ModelVersion": "modelversions", "ModelDeployment": "modeldeployments", "Experiment": "experiments",
           "DriftMonitor": "driftmonitors"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("model_version", metavar="MODELVERSION", help="Name of the ModelVersion.")
    parser.add_argument("-n", "--namespace", help="Namespace (default: the kubeconfig context's, or with --file the "
                        "ModelVersion's own).")
    parser.add_argument("--file", "-f", action="append", default=[], metavar="FILE.yaml",
                        help="Read objects from this YAML file instead of the cluster (repeatable; - is stdin).")
    parser.add_argument("--kubeconfig", metavar="PATH", help="Kubeconfig (default: $KUBECONFIG, ~/.kube/config, "
                        "or the in-cluster service account).")
    parser.add_argument("--output", "-o", metavar="FILE", help="Write the card to FILE instead of standard output.")


def read_files(paths: list[str]) -> list[Any]:
    """Every YAML document of `paths`; UsageError naming the file (and line) that cannot be read or parsed."""
    import yaml

    from mlsteward_runtime.errors import UsageError

    docs: list[Any] = []
    for path in paths:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
        except FileNotFoundError:
            raise UsageError(f"{path}: file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
        try:
            loaded = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UsageError(f"{path}: invalid YAML{where}: {problem}") from None
        for i, doc in enumerate(loaded, start=1):
            if doc is not None and not isinstance(doc, dict):
                raise UsageError(f"{path}: document {i} is not a Kubernetes object (a mapping), "
                                 f"but a {type(doc).__name__}")
        docs.extend(d for d in loaded if d is not None)
    return docs


def read_cluster(kubeconfig: str | None, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
    """The four kinds in `namespace` (default: the context's), through the kubernetes client; read only."""
    import urllib3
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    from mlsteward_runtime.errors import UsageError

    cfg = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        if namespace is None:
            _, active = config.list_kube_config_contexts(config_file=kubeconfig)
            namespace = (active.get("context") or {}).get("namespace") or "default"
    except (ConfigException, OSError) as exc:
        if kubeconfig is not None:
            raise UsageError(f"kubeconfig {kubeconfig}: {exc}") from None
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException:
            raise UsageError(f"no cluster to read: {exc} (pass --kubeconfig, or --file to read YAML)") from None
        if namespace is None:
            sa = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
            namespace = sa.read_text().strip() if sa.exists() else "default"
    # A read-only tool should fail fast on an unreachable server rather than retry for a minute. The client's
    # connection pool reads its TLS and retry settings when it is created: configure first, then create it.
    cfg.retries = 1
    api = client.ApiClient(configuration=cfg)
    custom = client.CustomObjectsApi(api)
    out: list[dict[str, Any]] = []
    for kind, plural in PLURALS.items():
        try:
            answer = custom.list_namespaced_custom_object("mlsteward.io", "v1alpha1", namespace, plural,
                                                           _request_timeout=(5, 30))
        except client.ApiException as exc:
            if exc.status == 404:
                raise UsageError(f"the API server does not know {plural}.mlsteward.io: are the mlsteward CRDs "
                                 "installed?") from None
            if exc.status in (401, 403):
                raise UsageError(f"not allowed to list {plural} in namespace {namespace} "
                                 f"(HTTP {exc.status} {exc.reason})") from None
            raise UsageError(f"listing {plural} in namespace {namespace} failed: HTTP {exc.status} "
                             f"{exc.reason}") from None
        except urllib3.exceptions.HTTPError as exc:
            why = getattr(exc, "reason", None) or exc
            raise UsageError(f"cannot reach the API server at {cfg.host}: {' '.join(str(why).split())}") from None
        for item in answer.get("items") or []:
            item.setdefault("apiVersion", "mlsteward.io/v1alpha1")
            item.setdefault("kind", kind)
            out.append(item)
    api.close()
    return out, namespace


def run(args: argparse.Namespace) -> int:
    from mlsteward_runtime.card import CardError, render_card
    from mlsteward_runtime.errors import UsageError

    if args.file:
        objects, namespace = read_files(args.file), args.namespace
    else:
        objects, namespace = read_cluster(args.kubeconfig, args.namespace)
    try:
        text = render_card(args.model_version, objects, namespace=namespace)
    except CardError as exc:
        source = ", ".join(args.file) if args.file else "the cluster"
        raise UsageError(f"{exc}; read from {source}") from None
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as exc:
            raise UsageError(f"{args.output}: cannot write ({exc.strerror or exc})") from None
    else:
        sys.stdout.write(text)
    return 0
