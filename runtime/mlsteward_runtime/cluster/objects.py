"""Reading mlsteward objects for the read-only verbs (`card`, `report`): from the cluster of a kubeconfig or from
YAML files, and writing their output. Errors are UsageErrors naming the file, the kind or the server."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

PLURALS = {"ModelVersion": "modelversions", "ModelDeployment": "modeldeployments", "Experiment": "experiments",
           "DriftMonitor": "driftmonitors"}


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


def read_cluster(kubeconfig: str | None, namespace: str | None,
                 kinds: tuple[str, ...] = tuple(PLURALS)) -> tuple[list[dict[str, Any]], str]:
    """The objects of `kinds` (default: all four) in `namespace` (default: the context's), through the kubernetes
    client; read only (RBAC `list` on those kinds is enough)."""
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
    for kind in kinds:
        plural = PLURALS[kind]
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


def write_output(text: str, path: str | None) -> None:
    """`text` to the file `path`, or to standard output without one."""
    from mlsteward_runtime.errors import UsageError

    if path:
        try:
            Path(path).write_text(text)
        except OSError as exc:
            raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from None
    else:
        sys.stdout.write(text)
