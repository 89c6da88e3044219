"""The router's prediction cache on a real cluster: a repeated request is answered from the cache, and a switch of
the served version never returns the previous version's cached answer.

The row asked for is one on which the two versions disagree (by scikit-learn's own predict on the same artifacts),
so a stale answer after the switch would be visible in the body, not only in a header.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import apply, condition, kget, kubectl, wait_for
from .test_serving import image, validation_rows
from .test_shadow import WEAK, local_accuracy, pair, weak  # noqa: F401  (module fixtures: two Ready versions)

pytestmark = pytest.mark.usefixtures("operator_installed")

ASK = r"""
import json, sys, urllib.request
url, body, n = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
out = []
for _ in range(n):
    req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        out.append({"status": r.status, "version": r.headers.get("x-model-version"),
                    "cache": r.headers.get("x-cache"), "id": r.headers.get("x-request-id"),
                    "body": json.loads(r.read())})
print(json.dumps(out))
"""


def ask(ns: str, name: str, url: str, body: dict[str, Any], n: int) -> list[dict[str, Any]]:
    apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
           "spec": {"restartPolicy": "Never", "containers": [{
               "name": "c", "image": image(), "imagePullPolicy": "IfNotPresent",
               "command": ["python3", "-c", ASK, url, json.dumps(body), str(n)]}]}}, ns)
    wait_for(lambda: (kget("pod", name, ns) or {}).get("status", {}).get("phase") in ("Succeeded", "Failed"),
             timeout=120, what=f"pod {name}")
    return json.loads(kubectl("logs", name, "-n", ns).strip().splitlines()[-1])


@pytest.mark.timeout(420)
def test_cached_answers_switch_with_the_version(namespace: str, trained: Path, pair: tuple[str, str]):  # noqa: F811
    strong, weak_name = pair
    _, pred_strong = local_accuracy(trained, "1.0.0")
    _, pred_weak = local_accuracy(trained, WEAK)
    X, _ = validation_rows(trained)
    k = int(np.flatnonzero(pred_strong != pred_weak)[0])  # a row the two versions answer differently
    body = {"instances": [X[k]]}
    md = "cached"
    apply({"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment",
           "metadata": {"name": md, "namespace": namespace},
           "spec": {"version": strong, "replicas": 1, "cache": {"maxEntries": 100, "ttl": "10m"}}}, namespace)
    wait_for(lambda: (condition(kget("modeldeployment", md, namespace), "Ready") or {}).get("status") == "True",
             timeout=300, what=f"ModelDeployment {md} Ready")
    url = f"http://{md}.{namespace}.svc.cluster.local:8080/predict"

    first = ask(namespace, "ask-1", url, body, 3)
    assert [a["cache"] for a in first] == ["miss", "hit", "hit"], first
    assert {a["version"] for a in first} == {"1.0.0"}, first
    assert all(a["body"]["predictions"] == [int(pred_strong[k])] for a in first), (first, pred_strong[k])
    assert len({a["id"] for a in first}) == 3, first  # each answer, cached or not, has its own request id

    kubectl("patch", "modeldeployment", md, "-n", namespace, "--type=merge", "-p",
            json.dumps({"spec": {"version": weak_name}}))
    wait_for(lambda: (s := kget("modeldeployment", md, namespace)["status"]).get("servingVersion") == weak_name
             and (s.get("router") or {}).get("traffic") == f"{weak_name}=100"
             and s["router"].get("current") == s["router"].get("replicas"), timeout=180,
             what=f"every router replica on {weak_name}")
    second = ask(namespace, "ask-2", url, body, 2)
    assert [a["cache"] for a in second] == ["miss", "hit"], second
    assert {a["version"] for a in second} == {WEAK}, second
    assert all(a["body"]["predictions"] == [int(pred_weak[k])] for a in second), (second, pred_weak[k])
    kubectl("delete", "modeldeployment", md, "-n", namespace, "--wait=false")
