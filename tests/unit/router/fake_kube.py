"""A stand-in for the Kubernetes API server's core/v1 list and watch of ConfigMaps and Secrets, on loopback.

It speaks the part of the protocol the router's watcher uses: LIST with a `metadata.name` field selector (a list
with its resourceVersion), WATCH from a resourceVersion (newline-delimited JSON events: ADDED, MODIFIED, DELETED,
BOOKMARK, and ERROR with a 410 Status for a compacted version), bearer tokens (401 without a known one). Every
request is recorded. It runs in a thread of its own; the test thread changes objects with the methods below.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

import orjson
from aiohttp import web

_END = object()


class FakeKubeApi:
    def __init__(self, namespace: str = "ml", tokens: set[str] | None = None, port: int | None = None) -> None:
        self.namespace = namespace
        self.tokens = set(tokens or {"token-1"})
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rv = 100
        self.compacted = 0  # a watch from a version below this gets 410 Gone
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.history: list[tuple[int, str, dict[str, Any]]] = []  # (rv, kind, event)
        self.requests: list[dict[str, Any]] = []
        self.forbidden: set[str] = set()  # kinds the caller's Role does not cover (403)
        self._watchers: list[tuple[str, str | None, asyncio.Queue[Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> FakeKubeApi:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_get("/api/v1/namespaces/{ns}/{kind}", self._handle)
            self._runner = web.AppRunner(app, shutdown_timeout=0.5)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake API server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self.end_streams()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = self._thread = None

    def _call(self, fn: Any) -> Any:
        """Runs `fn` on the server's loop (where the watch queues live) and returns its result."""
        if self._loop is None:
            return fn()

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # ------------------------------------------------------------------------------------------------- changes

    def put(self, kind: str, name: str, data: dict[str, str]) -> int:
        def change() -> int:
            self.rv += 1
            obj = {"apiVersion": "v1", "kind": _kind(kind),
                   "metadata": {"name": name, "namespace": self.namespace, "resourceVersion": str(self.rv)},
                   "data": data}
            event = {"type": "MODIFIED" if (kind, name) in self.objects else "ADDED", "object": obj}
            self.objects[(kind, name)] = obj
            self._emit(kind, name, event)
            return self.rv
        return self._call(change)

    def delete(self, kind: str, name: str) -> None:
        def change() -> None:
            self.rv += 1
            obj = self.objects.pop((kind, name))
            obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
            self._emit(kind, name, {"type": "DELETED", "object": obj})
        self._call(change)

    def bookmark(self) -> int:
        """A BOOKMARK to every watch: progress of the resourceVersion without a change of ours."""
        def change() -> int:
            self.rv += 5  # other objects of the namespace changed meanwhile
            for kind, _, q in self._watchers:
                q.put_nowait({"type": "BOOKMARK", "object": {"kind": _kind(kind), "apiVersion": "v1",
                                                             "metadata": {"resourceVersion": str(self.rv)}}})
            return self.rv
        return self._call(change)

    def expire(self) -> None:
        """Compacts every version seen so far: open watches get ERROR 410 and end, and so does a watch from them."""
        def change() -> None:
            self.rv += 1
            self.compacted = self.rv
            for _, _, q in self._watchers:
                q.put_nowait(_gone())
                q.put_nowait(_END)
        self._call(change)

    def send_raw(self, line: bytes) -> None:
        """Writes `line` as is to every open watch (a broken or hostile server)."""
        def change() -> None:
            for _, _, q in self._watchers:
                q.put_nowait(line)
        self._call(change)

    def end_streams(self) -> None:
        """Ends every open watch, as the server does after timeoutSeconds."""
        def change() -> None:
            for _, _, q in self._watchers:
                q.put_nowait(_END)
        self._call(change)

    def _emit(self, kind: str, name: str, event: dict[str, Any]) -> None:
        self.history.append((self.rv, kind, event))
        for k, n, q in self._watchers:
            if k == kind and n in (None, name):
                q.put_nowait(event)

    # ---------------------------------------------------------------------------------------------------- views

    def watches(self, kind: str = "configmaps") -> list[dict[str, Any]]:
        return [r for r in self.requests if r["kind"] == kind and r["query"].get("watch") == "1"]

    def lists(self, kind: str = "configmaps") -> list[dict[str, Any]]:
        return [r for r in self.requests if r["kind"] == kind and r["query"].get("watch") != "1"]

    def open_watches(self) -> int:
        return self._call(lambda: len(self._watchers))

    # ------------------------------------------------------------------------------------------------- protocol

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind, ns = request.match_info["kind"], request.match_info["ns"]
        query = dict(request.query)
        self.requests.append({"kind": kind, "namespace": ns, "query": query, "time": time.monotonic(),
                              "authorization": request.headers.get("Authorization")})
        if request.headers.get("Authorization") not in {f"Bearer {t}" for t in self.tokens}:
            return _status(401, "Unauthorized")
        if kind in self.forbidden:
            return _status(403, "Forbidden")
        if ns != self.namespace or kind not in ("configmaps", "secrets"):
            return _status(404, "NotFound")
        selector = query.get("fieldSelector", "")
        name = selector.removeprefix("metadata.name=") if selector.startswith("metadata.name=") else None
        if query.get("watch") == "1":
            return await self._watch(request, kind, name, int(query["resourceVersion"]))
        items = [o for (k, n), o in self.objects.items() if k == kind and name in (None, n)]
        return web.json_response({"apiVersion": "v1", "kind": _kind(kind) + "List",
                                  "metadata": {"resourceVersion": str(self.rv)}, "items": items})

    async def _watch(self, request: web.Request, kind: str, name: str | None, rv: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        if rv < self.compacted:
            await resp.write(orjson.dumps(_gone()) + b"\n")
            return resp
        q: asyncio.Queue[Any] = asyncio.Queue()
        for erv, k, event in self.history:
            if erv > rv and k == kind and name in (None, event["object"]["metadata"]["name"]):
                q.put_nowait(event)
        entry = (kind, name, q)
        self._watchers.append(entry)
        try:
            while (event := await q.get()) is not _END:
                await resp.write(event if isinstance(event, bytes) else orjson.dumps(event) + b"\n")
        finally:
            self._watchers.remove(entry)
        return resp


def _kind(plural: str) -> str:
    return {"configmaps": "ConfigMap", "secrets": "Secret"}[plural]


def _gone() -> dict[str, Any]:
    return {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                                        "reason": "Expired", "message": "too old resource version"}}


def _status(code: int, reason: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                              "reason": reason, "message": reason}, status=code)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
