"""A webhook URL is a credential (Slack and PagerDuty put the token in the path): a failed delivery names the Secret
and its key, never the URL or any part of it, in the returned failure, the Events and the logs (STYLE §19).

Real loopback HTTP servers stand in for the receiver; the API server is replaced by a client whose `get` returns the
Secret and whose `event` records what it would post."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from typing import Any

import pytest
from aiohttp import web

from mlsteward_operator.api.common import ObjectMeta
from mlsteward_operator.api.driftmonitor import DriftMonitor, DriftMonitorSpec, DriftMonitorStatus
from mlsteward_operator.config import OperatorConfig
from mlsteward_operator.driftmonitor import reconcile as drift_reconcile
from mlsteward_operator.kube import client as kube_client

TOKEN = "T0KEN-b7e1c9d2f4a6"


class SecretAndEvents(kube_client.Client):
    """The real client (its webhook code is under test) with a Secret read from memory and Events recorded."""

    def __init__(self, url: str) -> None:
        super().__init__(api_client=object())  # never used: get and event are replaced
        self.url = url
        self.events: list[dict[str, str]] = []

    async def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        assert (kind, name) == ("Secret", "hook")
        return {"data": {"url": base64.b64encode(self.url.encode()).decode()}}

    async def event(self, involved: dict[str, Any], *, reason: str, message: str, type_: str = "Normal") -> None:
        self.events.append({"reason": reason, "message": message, "type": type_})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(handler: Any) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.add_routes([web.post("/{tail:.*}", handler)])
    runner = web.AppRunner(app, access_log=None)  # the receiver's own log is not the operator's
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, port


def assert_no_url(text: str, url: str) -> None:
    for part in (url, TOKEN, "127.0.0.1", "hooks.invalid", "s3cret"):
        assert part not in text, f"{part!r} leaked into {text!r}"


async def post(url: str, **kwargs: Any) -> str | None:
    client = SecretAndEvents(url)
    return await client.post_webhook_in_secret("ml", "hook", "url", {"text": "hi"}, attempts=2, backoff_s=0.01,
                                               **kwargs)


async def test_http_error_names_the_secret_and_the_status_only(caplog):
    async def fail(_: web.Request) -> web.Response:
        return web.Response(status=500, text=f"no hook {TOKEN}")

    runner, port = await serve(fail)
    url = f"http://127.0.0.1:{port}/services/{TOKEN}"
    try:
        with caplog.at_level(logging.DEBUG):
            failure = await post(url)
    finally:
        await runner.cleanup()
    assert failure == "webhook in Secret ml/hook key url failed: HTTP 500 on attempt 2"
    assert_no_url(caplog.text, url)


async def test_connection_refused_is_said_without_the_url(caplog):
    url = f"http://127.0.0.1:{free_port()}/services/{TOKEN}"
    with caplog.at_level(logging.DEBUG):
        failure = await post(url)
    assert failure is not None and failure.startswith("webhook in Secret ml/hook key url failed: ")
    assert "connection refused" in failure.lower()
    assert_no_url(failure, url)
    assert_no_url(caplog.text, url)


@pytest.mark.parametrize("url", [
    f"http://user:s3cret@[::1/services/{TOKEN}",  # unbalanced bracket: aiohttp refuses to parse it
    f"ftp://127.0.0.1/services/{TOKEN}",  # a scheme aiohttp does not speak
    f"not a url {TOKEN}",
])
async def test_an_invalid_url_is_refused_without_echoing_it(url):
    failure = await post(url)
    assert failure is not None and failure.startswith("webhook in Secret ml/hook key url failed: ")
    assert_no_url(failure, url)


async def test_a_timeout_is_said_without_the_url():
    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return web.Response(status=200)

    runner, port = await serve(slow)
    url = f"http://127.0.0.1:{port}/services/{TOKEN}"
    try:
        failure = await kube_client.Client(api_client=object()).post_webhook(url, {}, attempts=1, timeout_s=0.2)
    finally:
        await runner.cleanup()
    assert failure is not None and "timed out" in failure
    assert_no_url(failure, url)


async def test_the_drift_alert_event_names_the_secret_not_the_url():
    url = f"http://127.0.0.1:{free_port()}/services/{TOKEN}"
    client = SecretAndEvents(url)
    dm = DriftMonitor(metadata=ObjectMeta(name="iris-drift", namespace="ml", uid="u"),
                      spec=DriftMonitorSpec(deployment="iris", actions=["Alert"],
                                            notify={"webhookSecretRef": {"name": "hook", "key": "url"}}),
                      status=DriftMonitorStatus())
    body = {"apiVersion": "mlsteward.io/v1alpha1", "kind": "DriftMonitor",
            "metadata": {"name": "iris-drift", "namespace": "ml"}}
    await drift_reconcile._deliver(dm, body, client, OperatorConfig(webhook_attempts=1), {"text": "drift"})
    [event] = client.events
    assert event["reason"] == "AlertNotSent" and event["type"] == "Warning"
    assert "Secret ml/hook key url" in event["message"]
    assert_no_url(event["message"], url)
