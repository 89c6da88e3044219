"""Operator scale: API requests and CPU per idle ModelDeployment, and the time from a spec change to its children.

Runs against a real API server (tier A of `hack/cluster.sh`: etcd, kube-apiserver, kube-controller-manager, the
scheduler; no nodes) in its own directory and ports. For each N it creates one Ready ModelVersion and N
ModelDeployments that serve it, plays the kubelet for their pods (marks them Running and Ready, as the integration
tests do), starts the operator as a separate process (`mlsteward operator`), waits until every ModelDeployment is
Ready, and then measures over a window:

- API requests per second the operator makes, counted by the API server: the operator runs as its own
  ServiceAccount, which a FlowSchema of its own matches, and `apiserver_flowcontrol_dispatched_requests_total` of
  that FlowSchema is read before and after the window (every verb; a WATCH counts once, when it starts). The
  difference of `apiserver_request_total` over all clients with and without the operator is printed to stderr
  by verb and resource: it also holds what the controller manager and the scheduler do with the children (Events
  about pods that no node runs, endpoints), which is not the operator's doing;
- the operator process's CPU (utime + stime from /proc) as a share of one core;
- the time from a `spec.replicas` change of a few ModelDeployments to the new replica count in their predictor
  Deployment (children applied).

    .venv/bin/python bench/operator_scale.py --n 10 100 1000 --window 60

Prints one Markdown row per N. Needs the cluster binaries (`make bins`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
GV = ("mlsteward.io", "v1alpha1")
NS = "scale"
VERSION = "m-1-0-0"
MANAGED = "app.kubernetes.io/managed-by=mlsteward"
OPERATOR_SA = "mlsteward-operator"


@contextlib.contextmanager
def control_plane(api_port: int, etcd_port: int) -> Iterator[Path]:
    """Tier A in a temporary directory; yields the admin kubeconfig."""
    run_dir = Path(tempfile.mkdtemp(prefix="mlsteward-scale-"))
    cluster = str(ROOT / "hack/cluster.sh")
    args = ["--tier", "A", "--dir", str(run_dir), "--api-port", str(api_port), "--etcd-port", str(etcd_port)]
    # Two Services per ModelDeployment: 1,000 of them need more than the default /24 of Service IPs.
    env = {**os.environ, "MLS_SERVICE_CIDR": "10.0.0.0/19"}
    subprocess.run([cluster, "up", *args], check=True, capture_output=True, timeout=300, env=env)
    try:
        env = subprocess.run([cluster, "env", "--dir", str(run_dir)], capture_output=True, text=True,
                             check=True).stdout
        yield Path(env.strip().split("KUBECONFIG=", 1)[1].strip().strip("'\""))
    finally:
        subprocess.run([cluster, "down", "--dir", str(run_dir)], capture_output=True, timeout=120)


def wait(predicate: Any, timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what}: not true after {timeout}s (last: {last!r})")


class Cluster:
    """The kubernetes client calls the benchmark makes."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        config.load_kube_config(config_file=str(kubeconfig))
        self.api = client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.ext = client.ApiextensionsV1Api(self.api)

    def install(self) -> None:
        for path in sorted((ROOT / "crds").glob("*.yaml")):
            self.ext.create_custom_resource_definition(yaml.safe_load(path.read_text()))
        wait(lambda: all(any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or []))
                         for crd in self.ext.list_custom_resource_definition().items
                         if crd.spec.group == GV[0]), 60, "CRDs Established")
        self.core.create_namespace({"metadata": {"name": NS}})
        wait(lambda: self.core.list_namespaced_service_account(NS).items, 60, "default ServiceAccount")
        from mlsteward_operator.api.modelversion import ModelVersion
        from mlsteward_operator.modelversion.render import validation_job_name

        created = self.custom.create_namespaced_custom_object(*GV, NS, "modelversions", {
            "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelVersion", "metadata": {"name": VERSION},
            "spec": {"model": "m", "version": "1.0.0",
                     "artifact": {"uri": "file:///models/m.skops", "sha256": "c" * 64, "format": "skops"}}})
        # The verdict names its validation Job, so that the operator takes it as final and runs no validation
        # (no node would run it).
        job = validation_job_name(ModelVersion.model_validate(created))
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.custom.patch_namespaced_custom_object_status(*GV, NS, "modelversions", VERSION, {"status": {
            "phase": "Ready", "reason": "Validated", "validationJob": job, "observedGeneration": 1, "conditions": [
                {"type": "Ready", "status": "True", "reason": "Validated", "message": "", "lastTransitionTime": now}]}})

    def create_deployments(self, names: list[str]) -> None:
        for name in names:
            self.custom.create_namespaced_custom_object(*GV, NS, "modeldeployments", {
                "apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
                "spec": {"version": VERSION, "replicas": 1, "rollout": {"strategy": "Immediate"}}})

    def ready_deployments(self) -> int:
        items = self.custom.list_namespaced_custom_object(*GV, NS, "modeldeployments")["items"]
        return sum(any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in (o.get("status") or {}).get("conditions") or []) for o in items)

    def operator_identity(self, kubeconfig: Path) -> Path:
        """A kubeconfig for the operator as ServiceAccount `OPERATOR_SA` (cluster-admin), and a FlowSchema that
        matches only it, so that the API server counts the operator's requests apart from everyone else's
        (`apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}`): the controller manager and the
        scheduler keep working on the children (Events of pods no node will run, endpoints), and a count over all
        clients would put their requests on the operator."""
        from kubernetes import client

        self.core.create_namespaced_service_account(NS, {"metadata": {"name": OPERATOR_SA}})
        client.RbacAuthorizationV1Api(self.api).create_cluster_role_binding({
            "metadata": {"name": OPERATOR_SA},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": NS}]})
        client.FlowcontrolApiserverV1Api(self.api).create_flow_schema({
            "metadata": {"name": OPERATOR_SA},
            "spec": {"priorityLevelConfiguration": {"name": "workload-high"}, "matchingPrecedence": 100,
                     "distinguisherMethod": {"type": "ByUser"},
                     "rules": [{"subjects": [{"kind": "ServiceAccount", "serviceAccount": {
                         "name": OPERATOR_SA, "namespace": NS}}],
                         "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                            "clusterScope": True, "namespaces": ["*"]}],
                         "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}]}]}})
        token = self.core.create_namespaced_service_account_token(
            OPERATOR_SA, NS, {"spec": {"expirationSeconds": 86400}}).status.token
        config = yaml.safe_load(kubeconfig.read_text())
        for user in config["users"]:
            user["user"] = {"token": token}
        path = kubeconfig.with_name("operator.kubeconfig")
        path.write_text(yaml.safe_dump(config))
        return path

    def operator_requests(self) -> float:
        """Requests the API server dispatched for the operator's FlowSchema (every verb; a WATCH when it starts)."""
        raw = self.api.call_api(*self.api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"]))
        raw.read()
        total = 0.0
        for line in raw.data.decode().splitlines():
            if line.startswith("apiserver_flowcontrol_dispatched_requests_total{") \
                    and f'flow_schema="{OPERATOR_SA}"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def request_counts(self) -> Counter[str]:
        """apiserver_request_total by verb and resource, over every verb but the long-running WATCH and CONNECT."""
        raw = self.api.call_api(*self.api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"]))
        raw.read()
        out: Counter[str] = Counter()
        for line in raw.data.decode().splitlines():
            if line.startswith("apiserver_request_total{") and not re.search(r'verb="(WATCH|CONNECT)"', line):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                key = f"{labels.get('verb')} {labels.get('resource')}" + (
                    f"/{labels['subresource']}" if labels.get("subresource") else "")
                out[key] += float(line.rsplit(" ", 1)[1])
        return out


class PodPlayer:
    """Plays the kubelet for the managed pods: each new one is marked Running and Ready (no node runs it)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.stop = cluster, threading.Event()
        self.pods = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _ready(self, pod: Any) -> None:
        conds = {c.type: c.status for c in (pod.status.conditions or [])}
        if conds.get("Ready") == "True" or pod.metadata.deletion_timestamp:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        # Not a loopback address: the endpoints controller refuses one and would retry (and post Events) for as long
        # as the benchmark runs, which would be counted as the operator's requests.
        self.pods += 1
        ip = f"10.88.{self.pods // 250 % 250}.{self.pods % 250 + 1}"
        with contextlib.suppress(Exception):  # a pod deleted meanwhile
            self.cluster.core.patch_namespaced_pod_status(pod.metadata.name, NS, {"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
                "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                               for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")]}})

    def _run(self) -> None:
        from kubernetes import watch

        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                for ev in watch.Watch().stream(self.cluster.core.list_namespaced_pod, NS, label_selector=MANAGED,
                                               timeout_seconds=5):
                    if ev["type"] in ("ADDED", "MODIFIED"):
                        self._ready(ev["object"])
                    if self.stop.is_set():
                        return


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spec_change_latency(cluster: Cluster, names: list[str], samples: int) -> list[float]:
    """Seconds from a spec.replicas change to the new count in the predictor Deployment, for `samples` names."""
    out = []
    for name in names[:: max(1, len(names) // samples)][:samples]:
        start = time.monotonic()
        cluster.custom.patch_namespaced_custom_object(*GV, NS, "modeldeployments", name, {"spec": {"replicas": 2}})
        sel = f"mlsteward.io/deployment={name},app.kubernetes.io/component=predictor"
        wait(lambda: any(d.spec.replicas == 2 for d in
                         cluster.apps.list_namespaced_deployment(NS, label_selector=sel).items),
             120, f"{name}'s predictor at 2 replicas", interval=0.05)
        out.append(time.monotonic() - start)
    return out


def measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    with control_plane(args.api_port, args.etcd_port) as kubeconfig:
        cluster = Cluster(kubeconfig)
        cluster.install()
        player = PodPlayer(cluster)
        player.thread.start()
        names = [f"md-{i:04d}" for i in range(n)]
        env = {**os.environ, "KUBECONFIG": str(cluster.operator_identity(kubeconfig))}
        op = subprocess.Popen([sys.executable, "-m", "mlsteward_runtime.cli", "operator", "--namespace", NS,
                               "--liveness", "none", "--log-level", "WARNING"], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(args.log, "a"))  # noqa: SIM115
        try:
            t0 = time.monotonic()
            cluster.create_deployments(names)
            ready = wait(lambda: cluster.ready_deployments() >= n and n, args.ready_timeout,
                         f"{n} ModelDeployments Ready", interval=5)
            settle_s = time.monotonic() - t0
            time.sleep(args.settle)
            c0, r0, o0, w0 = cpu_seconds(op.pid), cluster.request_counts(), cluster.operator_requests(), \
                time.monotonic()
            time.sleep(args.window)
            c1, r1, o1, w1 = cpu_seconds(op.pid), cluster.request_counts(), cluster.operator_requests(), \
                time.monotonic()
            latency = spec_change_latency(cluster, names, args.samples)
        finally:
            op.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                op.wait(30)
            op.kill()
        time.sleep(5)
        b0, bw0 = cluster.request_counts(), time.monotonic()
        time.sleep(args.window)
        b1, bw1 = cluster.request_counts(), time.monotonic()
        player.stop.set()
    during = {k: (r1[k] - r0[k]) / (w1 - w0) for k in r1}
    without = {k: (b1[k] - b0[k]) / (bw1 - bw0) for k in b1}
    by_kind = {k: during.get(k, 0.0) - without.get(k, 0.0) for k in set(during) | set(without)}
    everyone = sum(during.values()) - sum(without.values())
    rate = (o1 - o0) / (w1 - w0)
    top = sorted(by_kind.items(), key=lambda kv: -abs(kv[1]))[:6]
    print(f"N={n}: the operator's requests/s {rate:.3f}; all clients' with the operator minus without "
          f"{everyone:+.2f}, by verb and resource: "
          + ", ".join(f"{k} {v:+.2f}" for k, v in top), file=sys.stderr, flush=True)
    return {"n": n, "ready": ready, "settle_s": settle_s, "req_s": rate, "req_s_per_md": rate / n,
            "cpu": (c1 - c0) / (w1 - w0), "latency": latency}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--window", type=float, default=60.0, help="Seconds each measurement window lasts.")
    p.add_argument("--settle", type=float, default=20.0, help="Seconds to wait after every object is Ready.")
    p.add_argument("--samples", type=int, default=5, help="Spec changes timed per N.")
    p.add_argument("--ready-timeout", type=float, default=1800.0)
    p.add_argument("--api-port", type=int, default=16600)
    p.add_argument("--etcd-port", type=int, default=12600)
    p.add_argument("--log", default="/tmp/mlsteward-operator-scale.log", help="The operator's log.")
    args = p.parse_args()
    print("| N | Ready after (s) | API requests/s (operator) | per idle ModelDeployment | operator CPU (share of "
          "a core) | spec change -> children applied, median / max (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.n:
        r = measure(n, args)
        print(f"| {n} | {r['settle_s']:.0f} | {r['req_s']:.2f} | {r['req_s_per_md']:.4f} | {r['cpu']:.1%} | "
              f"{statistics.median(r['latency']):.2f} / {max(r['latency']):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
