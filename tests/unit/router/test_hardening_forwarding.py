"""The router forwards only what it should: an allow-list of paths, no dot segments, no internal endpoints, only
ready backends, 502 bodies without internal URLs, a header read timeout, X-Forwarded-For only from trusted
proxies. Every check is made against a real backend that records each request it gets."""

from __future__ import annotations

import socket
import time

import pytest

from router_harness import config, raw_request, wait_for

INTERNAL = [
    ("GET", "/v1/drift/window"),
    ("GET", "/v1/stats"),
    ("GET", "/../v1/stats"),
    ("GET", "/%2e%2e/v1/stats"),
    ("GET", "//v1/stats"),
    ("GET", "/v2/../v1/stats"),
    ("GET", "/v2/%2E%2E/v1/drift/window"),
    ("GET", "/v2/models/iris/..%2F..%2F..%2Fv1%2Fstats"),
    ("GET", "/v2/models/%2e%2e/ready"),
    ("GET", "/v2/models/./ready"),
    ("GET", "/v1/models/..%2f..%2fv1%2fstats"),
    ("GET", "/v2/anything"),
    ("GET", "/v2/models/iris/./../../../metrics"),
    ("GET", "/v2/models/iris%5C..%5C..%5Cv1%5Cstats"),
    ("POST", "/v2/models/iris/../../../v1/feedback/x/infer"),
    ("POST", "/v1/models/%2e%2e%2f%2e%2e%2fv1%2ffeedback:predict"),
]


def test_internal_and_dotted_paths_never_reach_a_backend(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)))
    for method, target in INTERNAL:
        status, _, body = raw_request(rr.url, method, target, {"content-type": "application/json"}, b"{}")
        assert status in (403, 404), (target, status, body)
        assert b'"field":"path"' in body, (target, body)
    assert a.hits == []
    # The router's own /metrics answers; the predictor's is never reached.
    status, _, body = raw_request(rr.url, "GET", "/metrics")
    assert status == 200 and b"mlsteward_router_requests" in body and a.hits == []
    # What is on the list still goes through.
    assert raw_request(rr.url, "GET", "/v2/models/iris")[0] == 200
    assert raw_request(rr.url, "POST", "/v2/models/iris/infer", {"content-type": "application/json"},
                       b'{"inputs": [1]}')[0] == 200
    assert a.hits == [("GET", "/v2/models/iris"), ("POST", "/v2/models/iris/infer")]


def test_wrong_method_gets_405_with_allow(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)))
    r = rr.client.get("/predict")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["field"] == "method"
    r = rr.client.post("/v2/models/iris", json={})
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = rr.client.delete("/v1/feedback")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert a.hits == []


def test_502_names_the_arm_never_its_url(backends, router_factory):
    a, b = backends("v1", fail_status=503), backends("v2", fail_status=500)
    rr = router_factory(config(("v1", a.url, 0), ("v2", b.url, 100), stable_version="v1"))
    r = rr.predict()
    assert r.status_code == 502 and [x["version"] for x in r.json()["attempts"]] == ["v2", "v1"]
    assert "127.0.0.1" not in r.text and str(a.server.port) not in r.text and str(b.server.port) not in r.text


def test_traffic_goes_only_to_backends_the_probes_see_ready(backends, router_factory):
    a, b = backends("v1"), backends("v2", ready=False)
    rr = router_factory(config(("v1", a.url, 0), ("v2", b.url, 100), stable_version="v1"))
    wait_for(lambda: rr.router.ready == {"v1": True, "v2": False}, what="probes")
    for _ in range(5):
        r = rr.predict()
        assert r.status_code == 200 and r.headers["x-model-version"] == "v1"
        assert "x-mlsteward-fallback" not in r.headers
    assert [h for h in b.hits if h[0] == "POST"] == []
    metrics = rr.client.get("/metrics").text
    assert 'mlsteward_router_unready_reroutes_total{from_version="v2",to_version="v1"} 5.0' in metrics
    # Once its probe passes, the canary gets its traffic again.
    b.ready = True
    wait_for(lambda: rr.router.ready.get("v2"), what="v2 ready")
    assert rr.predict().headers["x-model-version"] == "v2"


def test_a_connection_slow_to_send_its_headers_is_closed(backends, router_factory):
    a = backends("v1")
    rr = router_factory(config(("v1", a.url, 100)), header_timeout_s=0.5)
    port = rr.server.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")  # never finishes its headers
        t0 = time.monotonic()
        assert s.recv(1024) == b""  # closed by the router, not by our 5 s socket timeout
        assert time.monotonic() - t0 < 3
    # A kept-alive connection gets the same deadline for its next request's headers.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"live"}'):
            answer += s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200")
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        t0 = time.monotonic()
        assert s.recv(1024) == b"" and time.monotonic() - t0 < 3
    # Prompt clients are served as before.
    assert raw_request(rr.url, "GET", "/healthz")[0] == 200


@pytest.mark.parametrize("impl", ["h11", "httptools"])
def test_the_header_timeout_works_on_both_http_implementations(impl):
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from mlsteward_runtime.router.server import header_timeout
    from router_harness import ServerThread

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

    base = H11Protocol if impl == "h11" else HttpToolsProtocol
    server = ServerThread(app, 0.5, http=header_timeout(base, 0.5))
    server.server.config.lifespan = "off"  # a bare app without a lifespan protocol
    server.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n")
            t0 = time.monotonic()
            assert s.recv(1024) == b"" and time.monotonic() - t0 < 3
        assert raw_request(server.url, "GET", "/")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("trusted", [False, True])
def test_x_forwarded_for_is_believed_only_from_trusted_proxies(backends, router_factory, trusted):
    a = backends("v1")
    settings = {"trusted_proxies": ["127.0.0.1/32"]} if trusted else {}
    rr = router_factory(config(("v1", a.url, 100), rate_limit={"requests_per_second": 0.01, "burst": 1}),
                        **settings)
    first = rr.predict(headers={"x-forwarded-for": "203.0.113.1"})
    second = rr.predict(headers={"x-forwarded-for": "203.0.113.2"})
    assert first.status_code == 200
    if not trusted:
        # Off by default: a new address in the header is not a new bucket.
        assert second.status_code == 429
    else:
        assert second.status_code == 200
        assert rr.predict(headers={"x-forwarded-for": "203.0.113.2"}).status_code == 429
        # Addresses a client prepends are not believed: the right-most untrusted hop is the client.
        assert rr.predict(headers={"x-forwarded-for": "198.51.100.9, 203.0.113.1"}).status_code == 429
