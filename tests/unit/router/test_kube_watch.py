"""The router's config and tokens from the Kubernetes API (`--config-map`), against an in-process fake API server
speaking list/watch over real HTTP on loopback."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsteward_runtime.router.app import Router
from mlsteward_runtime.router.kubewatch import KubeEndpoint, KubeError
from mlsteward_runtime.router.settings import RouterSettings

from fake_kube import FakeKubeApi
from router_harness import RunningRouter, ServerThread, client, config, wait_for

CM = "iris-router"


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi().start()
    yield fake
    fake.stop()


@pytest.fixture
def kube_router(tmp_path: Path, api: FakeKubeApi) -> Iterator[Callable[..., RunningRouter]]:
    """A router started from a config file and watching ConfigMap `CM` on the fake API server."""
    running: list[RunningRouter] = []

    def make(file_config: dict[str, Any], **settings: Any) -> RunningRouter:
        path = tmp_path / "router.json"
        path.write_text(json.dumps(file_config))
        token = tmp_path / "token"
        if not token.exists():
            token.write_text("token-1\n")
        defaults: dict[str, Any] = {"replica": "r0", "reload_interval_s": 0.05, "readiness_interval_s": 0.1,
                                    "seed": 7, "kube_backoff_max_s": 0.2}
        defaults.update(settings)
        router = Router(RouterSettings(**defaults), config_path=path,
                        kube=KubeEndpoint(api.url, api.namespace, token_file=token), config_map=CM)
        server = ServerThread(router, router.settings.header_timeout_s).start()
        rr = RunningRouter(router, server, path, client(server.url))
        running.append(rr)
        return rr

    yield make
    for rr in running:
        rr.client.close()
        rr.server.stop()


def cm(cfg: dict[str, Any]) -> dict[str, str]:
    return {"router.json": json.dumps(cfg)}


def generation(rr: RunningRouter) -> str | None:
    return rr.stats()["generation"]


def metric(rr: RunningRouter, prefix: str) -> float:
    for line in rr.client.get("/metrics").text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_configmap_takes_over_from_the_file_and_a_change_applies_within_a_second(backends, kube_router, api):
    a, b = backends("v1"), backends("v2")
    api.put("configmaps", CM, cm(config(("v1", a.url, 0), ("v2", b.url, 100), generation="g-api-1")))
    # The file polling is slow here, so only the watch can bring a change in time.
    rr = kube_router(config(("v1", a.url, 100), ("v2", b.url, 0), generation="g-file"), reload_interval_s=30)
    wait_for(lambda: generation(rr) == "g-api-1", what="the ConfigMap's config served")
    assert rr.predict().headers["x-model-version"] == "v2"
    first = rr.stats()
    assert first["config_loaded_at"] >= first["started"]

    t0 = time.monotonic()
    api.put("configmaps", CM, cm(config(("v1", a.url, 100), ("v2", b.url, 0), generation="g-api-2")))
    wait_for(lambda: generation(rr) == "g-api-2", what="the modified ConfigMap served")
    assert time.monotonic() - t0 < 1.0
    assert rr.predict().headers["x-model-version"] == "v1"
    assert rr.stats()["config_loaded_at"] >= first["config_loaded_at"]
    assert metric(rr, 'mlsteward_router_config_info{generation="g-api-2",source="configmap"}') == 1.0
    assert metric(rr, 'mlsteward_router_config_info{generation="g-api-1",source="configmap"}') == 0.0
    assert metric(rr, 'mlsteward_router_kube_watch_synced{kind="configmaps"}') == 1.0
    # Exactly the requests a Role with resourceNames authorizes: a named field selector on every list and watch,
    # in the pod's namespace.
    assert api.requests and all(r["query"]["fieldSelector"] == f"metadata.name={CM}" and r["namespace"] == "ml"
                                for r in api.requests)
    watch = api.watches()[0]["query"]
    assert watch["allowWatchBookmarks"] == "true" and int(watch["timeoutSeconds"]) > 0


def test_a_watch_resumes_from_the_last_bookmark_and_a_gone_version_lists_again(backends, kube_router, api):
    a = backends("v1")
    api.put("configmaps", CM, cm(config(("v1", a.url, 100), generation="g1")))
    rr = kube_router(config(("v1", a.url, 100), generation="g0"))
    wait_for(lambda: generation(rr) == "g1" and api.open_watches() == 1, what="watching")
    rv = api.bookmark()
    # The stream ends (the server's timeoutSeconds) after the bookmark: the next watch starts from the bookmark's
    # version, without a list.
    api.end_streams()
    wait_for(lambda: len(api.watches()) == 2, what="a second watch")
    assert api.watches()[1]["query"]["resourceVersion"] == str(rv) and len(api.lists()) == 1

    api.expire()
    api.put("configmaps", CM, cm(config(("v1", a.url, 100), generation="g2")))
    wait_for(lambda: generation(rr) == "g2", what="the config changed after the 410 served")
    assert len(api.lists()) == 2
    assert metric(rr, 'mlsteward_router_kube_watch_errors_total{kind="configmaps",reason="gone"}') >= 1


def test_an_invalid_or_missing_config_keeps_the_previous_one(backends, kube_router, api):
    a, b = backends("v1"), backends("v2")
    api.put("configmaps", CM, cm(config(("v1", a.url, 0), ("v2", b.url, 100), generation="g1")))
    rr = kube_router(config(("v1", a.url, 100), ("v2", b.url, 0), generation="g0"))
    wait_for(lambda: generation(rr) == "g1", what="g1 served")
    api.put("configmaps", CM, {"router.json": '{"deployment": "iris", "model": "iris", "backends": []}'})
    wait_for(lambda: metric(rr, 'mlsteward_router_config_reloads_total{result="invalid"}') == 1.0,
             what="the invalid config rejected")
    assert generation(rr) == "g1" and rr.predict().headers["x-model-version"] == "v2"
    api.delete("configmaps", CM)
    api.put("configmaps", CM, cm(config(("v1", a.url, 100), ("v2", b.url, 0), generation="g2")))
    wait_for(lambda: generation(rr) == "g2", what="a recreated ConfigMap served")
    assert rr.predict().headers["x-model-version"] == "v1"


def test_api_down_at_start_serves_the_file_then_the_api_takes_over_for_good(backends, kube_router, api):
    a, b = backends("v1"), backends("v2")
    api.stop()  # nothing listens on its port
    rr = kube_router(config(("v1", a.url, 100), ("v2", b.url, 0), generation="f1"))
    assert generation(rr) == "f1" and rr.stats()["config_loaded_at"] is not None
    wait_for(lambda: metric(rr, 'mlsteward_router_kube_watch_errors_total{kind="configmaps",reason="unreachable"}')
             >= 2, what="failed attempts counted")
    assert rr.predict().headers["x-model-version"] == "v1"
    rr.write_config(config(("v1", a.url, 0), ("v2", b.url, 100), generation="f2"))
    wait_for(lambda: generation(rr) == "f2", what="the file still in charge")
    assert metric(rr, 'mlsteward_router_config_info{generation="f2",source="file"}') == 1.0

    api.put("configmaps", CM, cm(config(("v1", a.url, 100), ("v2", b.url, 0), generation="g1")))
    api.start()
    wait_for(lambda: generation(rr) == "g1", timeout=10, what="the API's config once it is up")
    rr.write_config(config(("v1", a.url, 0), ("v2", b.url, 100), generation="f3"))
    # The same check the polling loop makes: the file, lagging the API, is no longer read.
    assert rr.router.reload_if_changed() is False
    assert generation(rr) == "g1" and rr.predict().headers["x-model-version"] == "v1"


def test_the_token_is_sent_and_re_read_when_it_rotates(backends, kube_router, api, tmp_path):
    a = backends("v1")
    api.put("configmaps", CM, cm(config(("v1", a.url, 100), generation="g1")))
    rr = kube_router(config(("v1", a.url, 100), generation="g0"))
    wait_for(lambda: generation(rr) == "g1", what="g1 served")
    assert {r["authorization"] for r in api.requests} == {"Bearer token-1"}
    # The kubelet rotates the projected token; the old one stops working at the API server.
    api.tokens = {"token-2"}
    (tmp_path / "token").write_text("token-2\n")
    api.end_streams()
    api.put("configmaps", CM, cm(config(("v1", a.url, 100), generation="g2")))
    wait_for(lambda: generation(rr) == "g2", what="g2 served with the new token")
    assert api.requests[-1]["authorization"] == "Bearer token-2"


def test_auth_tokens_come_from_the_watched_secret(backends, kube_router, api, tmp_path):
    a = backends("v1")
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("file-token\n")
    auth = {"tokens_file": str(tokens_file), "secret_name": "iris-auth", "secret_key": "tokens"}
    api.put("configmaps", CM, cm(config(("v1", a.url, 100), generation="g1", auth=auth)))
    api.forbidden = {"secrets"}  # the Role does not cover the Secret (yet)
    rr = kube_router(config(("v1", a.url, 100), generation="g0", auth=auth))

    def status(token: str) -> int:
        return rr.predict(headers={"Authorization": f"Bearer {token}"}).status_code

    wait_for(lambda: metric(rr, 'mlsteward_router_kube_watch_errors_total{kind="secrets",reason="http_403"}') >= 1,
             what="the Secret refused")
    assert generation(rr) == "g1" and status("file-token") == 200  # until the Secret is read, the file
    api.put("secrets", "iris-auth", {"tokens": base64.b64encode(b"# rotated\napi-token-1\n").decode()})
    api.forbidden = set()
    wait_for(lambda: status("api-token-1") == 200, what="the Secret's token accepted")
    assert status("file-token") == 403
    api.put("secrets", "iris-auth", {"tokens": base64.b64encode(b"api-token-2\n").decode()})
    wait_for(lambda: status("api-token-1") == 403, what="the rotated-out token refused")
    assert status("api-token-2") == 200
    assert all(r["query"]["fieldSelector"] == "metadata.name=iris-auth" for r in api.requests
               if r["kind"] == "secrets")
    api.delete("secrets", "iris-auth")
    wait_for(lambda: status("api-token-2") == 403, what="a deleted Secret revokes its tokens")


@pytest.mark.parametrize("line, reason", [
    (b"{not json\n", "invalid"),
    (b'{"type": "SURPRISE", "object": {"metadata": {"resourceVersion": "1"}}}\n', "invalid"),
    (b'{"type": "ERROR", "object": {"kind": "Status", "code": 500, "message": "etcd"}}\n', "http_500"),
    (b"x" * 5000, "too_large"),  # no newline in sight: buffered up to the bound only
])
def test_a_broken_watch_stream_is_counted_and_the_watch_recovers(backends, kube_router, api, monkeypatch, line,
                                                                reason):
    monkeypatch.setattr("mlsteward_runtime.router.kubewatch.MAX_EVENT_BYTES", 4096)
    a, b = backends("v1"), backends("v2")
    api.put("configmaps", CM, cm(config(("v1", a.url, 100), ("v2", b.url, 0), generation="g1")))
    rr = kube_router(config(("v1", a.url, 100), ("v2", b.url, 0), generation="g0"))
    wait_for(lambda: generation(rr) == "g1" and api.open_watches() == 1, what="watching")
    api.send_raw(line)
    wait_for(lambda: metric(rr, f'mlsteward_router_kube_watch_errors_total{{kind="configmaps",reason="{reason}"}}')
             == 1.0, what=f"the {reason} stream counted")
    assert generation(rr) == "g1" and rr.predict().headers["x-model-version"] == "v1"
    api.put("configmaps", CM, cm(config(("v1", a.url, 0), ("v2", b.url, 100), generation="g2")))
    wait_for(lambda: generation(rr) == "g2", what="a later change served")


def test_in_cluster_endpoint_from_the_pod_environment(tmp_path):
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("t")
    (sa / "ca.crt").write_text("ca")
    (sa / "namespace").write_text("from-file\n")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}
    ep = KubeEndpoint.in_cluster(serviceaccount_dir=sa, environ=env)
    assert ep.base_url == "https://[fd00::1]:6443" and ep.namespace == "from-file"
    assert ep.token_file == sa / "token" and ep.ca_file == sa / "ca.crt"
    ep = KubeEndpoint.in_cluster(serviceaccount_dir=sa, environ={**env, "KUBERNETES_SERVICE_HOST": "10.0.0.1",
                                                                 "POD_NAMESPACE": "ml"})
    assert ep.base_url == "https://10.0.0.1:6443" and ep.namespace == "ml"
    with pytest.raises(KubeError, match="KUBERNETES_SERVICE_HOST"):
        KubeEndpoint.in_cluster(serviceaccount_dir=sa, environ={})


def test_a_watch_that_ran_its_course_quietly_is_renewed_at_once(backends, kube_router, api, monkeypatch):
    """Only a watch that ends at once with nothing in it is followed by a pause (fixed at 1 s here); one that ran
    quietly for a while (its timeoutSeconds with no event, no bookmark) is renewed at once, so a change made just
    after it ended is served without waiting for the pause."""
    from mlsteward_runtime.router import kubewatch

    monkeypatch.setattr(kubewatch.ObjectWatch, "backoff", lambda self, failures: 1.0)
    a = backends("v1")
    api.put("configmaps", CM, cm(config(("v1", a.url, 100), generation="g1")))
    rr = kube_router(config(("v1", a.url, 100), generation="g0"))
    wait_for(lambda: generation(rr) == "g1" and api.open_watches() == 1, what="watching")
    time.sleep(1.2)  # the watch stays open with nothing to say
    api.end_streams()
    t0 = time.monotonic()
    api.put("configmaps", CM, cm(config(("v1", a.url, 100), generation="g2")))
    wait_for(lambda: generation(rr) == "g2", what="the change after the quiet watch served")
    assert time.monotonic() - t0 < 0.6
