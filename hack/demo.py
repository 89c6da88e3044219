"""The demo's Kubernetes part, run by hack/demo.sh once a cluster, the image and the operator are up.

Trains two versions of a breast-cancer classifier, puts the artifacts on an in-cluster HTTP server, registers both
as ModelVersions (validated by Jobs), deploys 1.0.0 and sends traffic, then runs an Experiment between 1.0.0 and
1.1.0 on live traffic with simulated feedback: the operator concludes, promotes the winner (status only), and the
demo brings "Git" in line with the decision's gitChange. It ends by printing what a user would look at. Every
step is an apply, a delete-then-create of something throwaway, or an idempotent check, so re-running is safe.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
NS = "mlsteward-demo"
MD = "breast-cancer"


def sh(*args: str, input: str | None = None, check: bool = True, timeout: float = 300) -> str:
    proc = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        sys.exit(f"demo: `{' '.join(args[:4])} ...` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def apply(docs: list[dict[str, Any]]) -> None:
    sh("kubectl", "apply", "-f", "-", input=yaml.safe_dump_all(docs))


def get(kind: str, name: str) -> dict[str, Any]:
    out = sh("kubectl", "get", kind, name, "-n", NS, "-o", "json", check=False)
    return json.loads(out) if out.strip() else {}


def wait(what: str, predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last is True:
            return
        time.sleep(2)
    sys.exit(f"demo: timed out after {timeout:.0f}s waiting for {what} (last seen: {last})")


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def artifact_server(image: str, models: Path) -> str:
    labels = {"app": "artifacts"}
    apply([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "artifacts", "namespace": NS},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {"containers": [{
                 "name": "http", "image": image, "imagePullPolicy": "IfNotPresent",
                 "command": ["python3", "-m", "http.server", "8000", "--directory", "/data"],
                 "ports": [{"containerPort": 8000}],
                 "readinessProbe": {"tcpSocket": {"port": 8000}, "periodSeconds": 1},
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                 "volumes": [{"name": "data", "emptyDir": {}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "artifacts", "namespace": NS},
         "spec": {"selector": labels, "ports": [{"port": 8000, "targetPort": 8000}]}},
    ])
    sh("kubectl", "rollout", "status", "deployment/artifacts", "-n", NS, "--timeout=180s")
    pod = sh("kubectl", "get", "pods", "-n", NS, "-l", "app=artifacts", "--field-selector=status.phase=Running",
             "-o", "jsonpath={.items[0].metadata.name}")
    for f in sorted(models.iterdir()):
        sh("kubectl", "cp", str(f), f"{NS}/{pod}:/data/{f.name}")
    return f"http://artifacts.{NS}.svc.cluster.local:8000"


def register(models: Path, version: str, base: str) -> dict[str, Any]:
    artifact = models / f"breast-cancer-{version}.skops"
    out = sh(sys.executable, "-m", "mlsteward_runtime.cli", "register", str(artifact), "--model", "breast-cancer",
             "--version", version, "--data", str(models / "train.csv"), "--target", "target",
             "--uri", f"{base}/{artifact.name}")
    mv = yaml.safe_load(out)
    mv["metadata"]["name"] = f"breast-cancer-{version.replace('.', '-')}"
    mv["metadata"]["namespace"] = NS
    mv["spec"].pop("reference", None)
    mv["spec"]["validation"] = {"dataset": f"{base}/validation.csv", "target": "target",
                                "thresholds": ["accuracy >= 0.9"]}
    return mv


def predict(url: str, body: dict[str, Any], name: str, image: str) -> str:
    """Runs curl-equivalent inside the cluster (a throwaway pod) and returns the response body."""
    sh("kubectl", "delete", "pod", name, "-n", NS, "--ignore-not-found", "--wait=true")
    code = ("import sys,urllib.request as u;r=u.urlopen(u.Request(sys.argv[1],data=sys.argv[2].encode(),"
            "headers={'content-type':'application/json'}),timeout=10);print(r.read().decode())")
    apply([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", code, url, json.dumps(body)]}]}}])
    wait(f"pod {name}", lambda: get("pod", name).get("status", {}).get("phase") in ("Succeeded", "Failed")
         or get("pod", name).get("status", {}).get("phase"), 120)
    return sh("kubectl", "logs", name, "-n", NS).strip()


# A client that predicts through the Service and sends a reward for each answer, drawn from the rate of the version
# that answered (simulated users who like 1.1.0 better). It prints its running totals.
FEEDBACK_CLIENT = r"""
import json, random, sys, time, urllib.request, uuid
base, seconds, body, rates = sys.argv[1], float(sys.argv[2]), sys.argv[3].encode(), json.loads(sys.argv[4])
rng = random.Random(1); sent = {}; end = time.time() + seconds
while time.time() < end:
    try:
        r = urllib.request.urlopen(urllib.request.Request(base + "/predict", data=body, headers={
            "content-type": "application/json", "x-request-id": uuid.uuid4().hex}), timeout=10)
        v = r.headers.get("x-model-version")
        rid = r.headers.get("x-request-id")  # the router's id, the one feedback joins by
        reward = 1 if rng.random() < rates.get(v, 0) else 0
        urllib.request.urlopen(urllib.request.Request(base + "/v1/feedback", headers={
            "content-type": "application/json"}, data=json.dumps({"request_id": rid, "reward": reward}).encode()),
            timeout=10)
        sent[v] = sent.get(v, 0) + 1
    except Exception as exc:
        print("error:", repr(exc)[:200], flush=True)
    time.sleep(0.01)
print(json.dumps({"feedback_sent": sent}), flush=True)
"""
REWARDS = {"1.0.0": 0.35, "1.1.0": 0.65}


def ready(md: str, version: str) -> Any:
    st = get("modeldeployment", md).get("status", {})
    conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
    return True if st.get("servingVersion") == version and conds.get("Ready") == "True" else st.get("conditions")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--host-curl", action="store_true",
                    help="Also curl the Service's ClusterIP from this machine (the local cluster's node is this host).")
    args = ap.parse_args()
    models = ROOT / "_out" / "demo" / "models"

    step("Training two versions of a breast-cancer classifier (examples/train.py)")
    print(sh(sys.executable, str(ROOT / "examples/train.py"), "--out", str(models)))

    step(f"Namespace {NS} and an in-cluster artifact server")
    apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
    base = artifact_server(args.image, models)

    step("Registering both versions (mlsteward register) and waiting for their validation Jobs")
    mvs = [register(models, v, base) for v in ("1.0.0", "1.1.0")]
    (ROOT / "_out" / "demo" / "modelversions.yaml").write_text(yaml.safe_dump_all(mvs))
    apply(mvs)
    for mv in mvs:
        name = mv["metadata"]["name"]
        wait(f"ModelVersion {name} Ready",
             lambda n=name: get("modelversion", n).get("status", {}).get("phase") == "Ready"
             or get("modelversion", n).get("status"), 300)

    step(f"Deploying {mvs[0]['metadata']['name']} as ModelDeployment {MD}")
    md = yaml.safe_load((ROOT / "examples" / "modeldeployment.yaml").read_text())
    md["metadata"]["namespace"] = NS
    md["spec"]["version"] = mvs[0]["metadata"]["name"]
    md["spec"]["alerts"]["interval"] = "15s"  # samples often enough for the report at the end of a short demo
    apply([md])
    wait(f"{MD} serving 1.0.0", lambda: ready(MD, mvs[0]["metadata"]["name"]), 300)

    url = f"http://{MD}.{NS}.svc.cluster.local:8080/predict"
    rows = [[float(v) for v in line.split(",")[:-1]]
            for line in (models / "validation.csv").read_text().splitlines()[1:3]]
    step(f"A prediction through the Service: POST {url}")
    print(predict(url, {"instances": rows}, "demo-predict-1", args.image))
    if args.host_curl:
        ip = get("service", MD)["spec"]["clusterIP"]
        body = json.dumps({"instances": rows[:1]})
        step(f"The same with curl from this machine (the node): curl -s http://{ip}:8080/predict "
             "-H 'content-type: application/json' -d '{\"instances\": [[...30 numbers...]]}'")
        print(sh("curl", "-s", "--max-time", "10", f"http://{ip}:8080/predict", "-H", "content-type: application/json",
                 "-d", body))

    v1, v2 = mvs[0]["metadata"]["name"], mvs[1]["metadata"]["name"]
    step(f"An Experiment on live traffic: {v1} (control) against {v2}, onSuccess: Promote (examples/experiment.yaml)")
    exp = yaml.safe_load((ROOT / "examples" / "experiment.yaml").read_text())
    exp["metadata"]["namespace"] = NS
    name = exp["metadata"]["name"]
    sh("kubectl", "delete", "experiment", name, "-n", NS, "--ignore-not-found", "--wait=true")
    sh("kubectl", "delete", "pod", "demo-users", "-n", NS, "--ignore-not-found", "--wait=true")
    apply([exp])
    wait(f"Experiment {name} Running", lambda: get("experiment", name).get("status", {}).get("phase") == "Running"
         or get("experiment", name).get("status", {}).get("conditions"), 240)
    print(f"Simulated users send a reward for each answer: {REWARDS} (POST /v1/feedback through the Service)")
    apply([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "demo-users", "namespace": NS},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "users", "image": args.image, "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", FEEDBACK_CLIENT, url.rsplit("/", 1)[0], "240",
                            json.dumps({"instances": rows[:1]}), json.dumps(REWARDS)]}]}}])
    wait(f"Experiment {name} concluded",
         lambda: get("experiment", name).get("status", {}).get("phase") in ("Concluded", "Stopped")
         or {v["name"]: v.get("outcomes", 0) for v in get("experiment", name).get("status", {}).get("variants", [])},
         420)
    print(sh("kubectl", "get", "experiment", name, "-n", NS, "-o", "wide"))
    st = get("experiment", name)["status"]
    for v in st.get("variants", []):
        ci = v.get("ci") or {}
        print(f"  {v['name']:<10} {v['version']}: {v.get('outcomes', 0)} outcomes, mean {v.get('mean', 0):.3f} "
              f"[{ci.get('lower', 0):.3f}, {ci.get('upper', 0):.3f}], P(best) {v.get('probabilityBest', 0):.3f}")
    print(f"  {st.get('test')}: p = {st.get('pValue')}, effect {st.get('effect')}")
    wait(f"{MD} serving the winner {v2}", lambda: ready(MD, v2), 240)
    sh("kubectl", "delete", "pod", "demo-users", "-n", NS, "--ignore-not-found", "--wait=false")
    decision = [d for d in get("modeldeployment", MD)["status"]["decisions"] if d["kind"] == "Promote"][-1]
    print(f"Decision: {decision['message'][:300]}\n  gitChange: {decision['gitChange']}")
    print(predict(url, {"instances": rows}, "demo-predict-2", args.image))

    step(f"Git catches up: {decision['gitChange']} (kubectl patch, as a commit would)")
    sh("kubectl", "patch", "modeldeployment", MD, "-n", NS, "--type=merge", "-p",
       json.dumps({"spec": {"version": v2}}))
    wait("the override to end",
         lambda: bool((get("modeldeployment", MD)["status"].get("override") or {}).get("endedAt")), 60)
    wait(f"{MD} serving {v2}", lambda: ready(MD, v2), 120)

    step(f"The performance report: mlsteward report {MD} -n {NS} --since 30m (from status.health; with "
         "--prometheus URL from Prometheus)")
    print(sh(sys.executable, "-m", "mlsteward_runtime.cli", "report", MD, "-n", NS, "--since", "30m",
             "--prometheus", ""))

    step("kubectl get mlsteward")
    print(sh("kubectl", "get", "mlsteward", "-n", NS))
    step("Where to look next")
    print(f"""  kubectl describe modeldeployment {MD} -n {NS}     # conditions, decisions, Events
  kubectl get all -n {NS} -l mlsteward.io/deployment={MD}
  kubectl logs -n mlsteward-system deploy/mlsteward-operator
  kubectl describe experiment breast-cancer-ab -n {NS}   # per-arm results, the test, P(best)
  kubectl explain modeldeployment.spec.rollout
  The ModelVersion YAML the demo applied: _out/demo/modelversions.yaml""")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
