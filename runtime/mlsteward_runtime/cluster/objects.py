"""Reading mlsteward objects for the read-only verbs (`card`, `report`, `status`): from the cluster of a kubeconfig
or from YAML files, and writing their output. Errors are UsageErrors naming the file, the kind or the server.

The flags that choose the cluster (`add_cluster_arguments`) are shared by those verbs, so `mlsteward report` and
`kubectl mlsteward report` read the same kubeconfig, context and namespace the way kubectl does."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from mlsteward_runtime.errors import UsageError

PLURALS = {"ModelVersion": "modelversions", "ModelDeployment": "modeldeployments", "Experiment": "experiments",
           "DriftMonitor": "driftmonitors"}


def read_files(paths: list[str]) -> list[Any]:
    """Every YAML document of `paths`; UsageError naming the file (and line) that cannot be read or parsed."""
    import yaml

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


def add_cluster_arguments(parser: argparse.ArgumentParser, namespace_help: str) -> None:
    """`-n/--namespace`, `--context` and `--kubeconfig`, named and read as kubectl names and reads them."""
    parser.add_argument("-n", "--namespace", help=namespace_help)
    parser.add_argument("--context", metavar="NAME", help="Kubeconfig context to use (default: the current one).")
    parser.add_argument("--kubeconfig", metavar="PATH", help="Kubeconfig (default: $KUBECONFIG, ~/.kube/config, "
                        "or the in-cluster service account).")


class Forbidden(UsageError):
    """RBAC refused a read (HTTP 401 or 403)."""


class Cluster:
    """A read-only connection to the API server of a kubeconfig context (or of the in-cluster service account), and
    the namespace to read: `namespace`, else the context's, else `default`."""

    def __init__(self, kubeconfig: str | None, namespace: str | None, context: str | None = None,
                 hint: str = "pass --kubeconfig, or set $KUBECONFIG") -> None:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        cfg = client.Configuration()
        # The client reads $KUBECONFIG once, when it is imported; read it now, as kubectl does on every run. A list
        # of paths (a:b) is merged as kubectl merges it.
        path = kubeconfig or os.environ.get("KUBECONFIG") or None
        try:
            config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
            if namespace is None:
                contexts, active = config.list_kube_config_contexts(config_file=path)
                chosen = next((c for c in contexts if c.get("name") == context), active) if context else active
                namespace = (chosen.get("context") or {}).get("namespace") or "default"
        except (ConfigException, OSError) as exc:
            if kubeconfig is not None or context is not None:
                where = f"kubeconfig {path}" if path else "kubeconfig"
                what = f", context {context}" if context is not None else ""
                raise UsageError(f"{where}{what}: {' '.join(str(exc).split())}") from None
            try:
                config.load_incluster_config(client_configuration=cfg)
            except ConfigException:
                raise UsageError(f"no cluster to read: {exc} ({hint})") from None
            if namespace is None:
                sa = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                namespace = sa.read_text().strip() if sa.exists() else "default"
        # A read-only tool should fail fast on an unreachable server rather than retry for a minute. The client's
        # connection pool reads its TLS and retry settings when it is created: configure first, then create it.
        cfg.retries = 1
        self.host = cfg.host
        self.namespace: str = namespace
        self._api = client.ApiClient(configuration=cfg)

    def _call(self, what: str, fn: Any, *args: Any, not_found: str | None = None, **kwargs: Any) -> Any:
        """fn(*args, **kwargs), its failures as UsageErrors naming `what` (e.g. `list modeldeployments`); a 404
        says `not_found` when given."""
        import urllib3
        from kubernetes import client

        try:
            return fn(*args, _request_timeout=(5, 30), **kwargs)
        except client.ApiException as exc:
            if exc.status == 404 and not_found is not None:
                raise UsageError(not_found) from None
            if exc.status in (401, 403):
                raise Forbidden(f"not allowed to {what} in namespace {self.namespace} "
                                 f"(HTTP {exc.status} {exc.reason})") from None
            raise UsageError(f"{what} in namespace {self.namespace} failed: HTTP {exc.status} {exc.reason}") from None
        except urllib3.exceptions.HTTPError as exc:
            why = getattr(exc, "reason", None) or exc
            raise UsageError(f"cannot reach the API server at {self.host}: {' '.join(str(why).split())}") from None

    def list(self, kind: str) -> list[dict[str, Any]]:
        """The objects of the mlsteward `kind` in the namespace (RBAC `list` on it is enough)."""
        from kubernetes import client

        plural = PLURALS[kind]
        custom = client.CustomObjectsApi(self._api)
        answer = self._call(f"list {plural}", custom.list_namespaced_custom_object, "mlsteward.io", "v1alpha1",
                            self.namespace, plural, not_found=f"the API server does not know {plural}.mlsteward.io: "
                            "are the mlsteward CRDs installed?")
        items = answer.get("items") or []
        for item in items:
            item.setdefault("apiVersion", "mlsteward.io/v1alpha1")
            item.setdefault("kind", kind)
        return items

    def deployments(self, labels: dict[str, str]) -> list[dict[str, Any]] | None:
        """The apps/v1 Deployments with `labels` in the namespace, as plain dicts in the wire form; None when RBAC
        does not allow listing them (a user may read the custom resources and not their children)."""
        from kubernetes import client

        apps = client.AppsV1Api(self._api)
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        try:
            answer = self._call("list deployments", apps.list_namespaced_deployment, self.namespace,
                                label_selector=selector)
        except Forbidden:
            return None
        return [self._api.sanitize_for_serialization(d) for d in answer.items or []]

    def close(self) -> None:
        self._api.close()


def read_cluster(kubeconfig: str | None, namespace: str | None, kinds: tuple[str, ...] = tuple(PLURALS),
                 context: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """The objects of `kinds` (default: all four) in `namespace` (default: the context's), through the kubernetes
    client; read only (RBAC `list` on those kinds is enough)."""
    cluster = Cluster(kubeconfig, namespace, context, hint="pass --kubeconfig, or --file to read YAML")
    try:
        return [o for kind in kinds for o in cluster.list(kind)], cluster.namespace
    finally:
        cluster.close()


def write_output(text: str, path: str | None) -> None:
    """`text` to the file `path`, or to standard output without one."""
    if path:
        try:
            Path(path).write_text(text)
        except OSError as exc:
            raise UsageError(f"{path}: cannot write ({exc.strerror or exc})") from None
    else:
        sys.stdout.write(text)
