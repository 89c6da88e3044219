"""The router's prediction cache (`RouterConfig.cache`, from ModelDeployment spec.cache).

A repeated prediction request is answered from memory, without a call to a predictor. The rules:

- **Key**: the served version (chosen by the strategy first, then moved to a ready backend by `proxy._ready_arm`),
  that version's backend URL, the forwarded path with its query, and the sha256 of the body's canonical JSON
  (`orjson.loads`, then `orjson.dumps` with sorted keys): key order, whitespace and number spelling (`1.50` and
  `1.5`) do not matter, as the predictor parses bodies with the same `orjson.loads` and sees the same document.
  The version is in the key, and a ModelVersion's model is immutable, so a canary split or a change of version
  never answers from another version's predictions: there is nothing to invalidate, old entries simply stop being
  asked for and age out.
- **Bypass** (counted as `bypass`, answered by a backend with `x-cache: bypass`): a body that is not JSON, or JSON
  that cannot be written back canonically (nested deeper than orjson writes), or over `MAX_KEY_BODY_BYTES` (hashing
  megabytes per request for a cache that is unlikely to hold them is not worth it), and a request with
  `Cache-Control: no-cache` (the lookup is skipped; the answer is still stored unless `no-store` is also given).
  `Cache-Control: no-store` only keeps the answer out of the cache.
- **What is stored**: only 2xx answers to the prediction paths, and only when the version that answered is the one
  the key names (an answer the stable version gave after a fallback is never stored under the failing version's
  key). An answer whose entry would be larger than `max_bytes` is not stored. Identical requests that arrive before
  the first answer is stored each go to the predictor (no coalescing: a waiting request would hold its body and a
  task while a slow predictor answers, an unbounded queue behind one key).
- **A hit** answers with the stored status, body and content-type, the stored `x-model-version`, `x-cache: hit`,
  `x-mlsteward-arm` and a fresh signed request id (`ids`), so feedback for it is attributed to the version exactly
  as for a miss: the outcome is counted at the router and a label scored against the prediction carried in the id
  (or the kept body). The predictor never saw the request, so forwarding that feedback reports `forwarded: false`.
  The body is the stored one byte for byte, except that the request id the predictor wrote into it (the simple
  protocol's `request_id`, its 128-bit nonce) is replaced by the hit's own nonce, as a miss's body carries its own;
  `timestamp` stays the time the prediction was computed. A hit counts in `mlsteward_router_requests` but not in the
  version's statistics (GET /v1/router/stats): a canary's gates judge the backend on the calls it really served.
  A miss that went to a backend carries `x-cache: miss`.
- **Never during an Experiment**: with `RouterConfig.experiment` set (or a bandit strategy) the cache is not used
  and its memory is released. An Experiment's arms need real outcomes: every assignment a real call, with its own
  latency and errors, counted in the arm's requests (the sample-ratio check and the error-rate and latency metrics
  read them). A canary split is fine, since the key holds the version.
- **Never mirrored**: a hit is not sent to the shadow. The shadow is scored only on calls the served version
  really answered, so its agreement and labelled pairs compare two models, never a model with a memory.
- **Bounds**: at most `max_entries` entries and `max_bytes` bytes, where an entry costs its key (32 bytes), its
  body, its content-type, model-version and nonce values, and `ENTRY_OVERHEAD` (the objects and the map's
  bookkeeping, measured). Past either bound the least recently used entry goes first. `ttl_s` is checked on read
  (an expired entry is dropped when asked for, or when it reaches the front of the eviction order). Evictions are
  counted by reason: capacity, bytes, expired.
- A config reload with a different cache config (or none) rebuilds the cache empty; one that leaves it alone keeps
  the entries.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from mlsteward_runtime.contracts import CacheConfig, RouterStrategy
from mlsteward_runtime.router.state import RouterCore, State

# Bytes an entry costs beyond the lengths of its key, body and header values: the Entry object, the five bytes
# objects' headers, the ordered map's node and hash slot. Measured with tracemalloc on CPython 3.11 at about 340
# (tests/unit/router/test_cache.py measures it); rounded up so the budget errs on the side of using less memory than
# it says.
ENTRY_OVERHEAD = 512
# Request bodies larger than this bypass the cache (1 MiB: about 10,000 rows of ten features).
MAX_KEY_BODY_BYTES = 1024 * 1024
KEY_BYTES = 32

_SORT = orjson.OPT_SORT_KEYS


def canonical_key(version: str, url: str, path: str, body: bytes) -> bytes | None:
    """The cache key of a request, or None when its body bypasses the cache (not JSON, not writable back, too
    large)."""
    if len(body) > MAX_KEY_BODY_BYTES:
        return None
    try:
        canonical = orjson.dumps(orjson.loads(body), option=_SORT)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    h = hashlib.sha256()
    for part in (version, url, path):
        raw = part.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    h.update(canonical)
    return h.digest()


def directives(value: str | None) -> tuple[bool, bool]:
    """(no-cache, no-store) of a Cache-Control header value."""
    if not value:
        return False, False
    names = {d.split("=", 1)[0].strip().lower() for d in value.split(",")}
    return "no-cache" in names, "no-store" in names


@dataclass(slots=True)
class Entry:
    version: str
    status: int
    content_type: bytes
    model_version: bytes
    body: bytes
    nonce: bytes | None  # the request id the predictor wrote into the body, replaced on every hit
    expires: float
    cost: int

    def body_for(self, nonce: str) -> bytes:
        if self.nonce is None:
            return self.body
        return self.body.replace(self.nonce, nonce.encode("ascii"))


class PredictionCache:
    """An LRU map key -> Entry bounded by count and by bytes, with a TTL checked on read.

    `clock` is monotonic seconds (injectable for tests); `on_evict(reason)` is called per eviction."""

    def __init__(self, config: CacheConfig, clock: Callable[[], float] = time.monotonic,
                 on_evict: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.bytes = 0
        self.evictions = {"capacity": 0, "bytes": 0, "expired": 0}
        self._clock = clock
        self._on_evict = on_evict
        self._items: OrderedDict[bytes, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def _evicted(self, reason: str) -> None:
        self.evictions[reason] += 1
        if self._on_evict is not None:
            self._on_evict(reason)

    def get(self, key: bytes) -> Entry | None:
        items = self._items
        entry = items.get(key)
        if entry is None:
            return None
        if self._clock() >= entry.expires:
            del items[key]
            self.bytes -= entry.cost
            self._evicted("expired")
            return None
        items.move_to_end(key)
        return entry

    def put(self, key: bytes, version: str, status: int, content_type: bytes, model_version: bytes, body: bytes,
            nonce: bytes | None = None) -> bool:
        """Stores an answer; False when its entry alone would be larger than max_bytes (nothing is stored)."""
        if nonce is not None and nonce not in body:
            nonce = None
        cost = ENTRY_OVERHEAD + len(key) + len(body) + len(content_type) + len(model_version) \
            + (len(nonce) if nonce is not None else 0)
        if cost > self.config.max_bytes:
            return False
        items = self._items
        old = items.pop(key, None)
        if old is not None:
            self.bytes -= old.cost
        now = self._clock()
        items[key] = Entry(version, status, content_type, model_version, body, nonce, now + self.config.ttl_s, cost)
        self.bytes += cost
        while len(items) > self.config.max_entries or self.bytes > self.config.max_bytes:
            reason = "capacity" if len(items) > self.config.max_entries else "bytes"
            _, gone = items.popitem(last=False)
            self.bytes -= gone.cost
            self._evicted("expired" if now >= gone.expires else reason)
        return True


@dataclass(slots=True)
class Lookup:
    """A request the cache is on for: hit, miss or bypass, its key (None when the body bypasses), whether its
    answer may be stored, and the entry of a hit."""

    cache: PredictionCache
    result: str
    key: bytes | None = None
    version: str = ""
    store: bool = False
    hit: Entry | None = None


def _header(headers: list[tuple[bytes, bytes]] | None, name: bytes) -> bytes | None:
    for k, v in headers or []:
        if k.lower() == name:
            return v
    return None


class CacheMixin(RouterCore):
    _cache: PredictionCache | None = None

    def _cache_for(self, state: State) -> PredictionCache | None:
        """The cache this config asks for, rebuilt empty when its settings changed; None while an Experiment runs."""
        config = state.config.cache
        if config is None or state.config.experiment is not None \
                or state.config.strategy is not RouterStrategy.weighted:
            if self._cache is not None:
                self._cache = None
                self._cache_gauges(None)
            return None
        cache = self._cache
        if cache is None or (cache.config is not config and cache.config != config):
            cache = self._cache = PredictionCache(config, on_evict=self._cache_evicted)
            self._cache_gauges(cache)
        return cache

    def _cache_evicted(self, reason: str) -> None:
        self.metrics.cache_evictions.labels(reason).inc()

    def _cache_gauges(self, cache: PredictionCache | None) -> None:
        self.metrics.cache_entries.set(len(cache) if cache is not None else 0)
        self.metrics.cache_bytes.set(cache.bytes if cache is not None else 0)

    def _cache_lookup(self, state: State, arm: int, path: str, body: bytes, named: dict[str, str]) -> Lookup | None:
        """What the cache says of this request, or None when the cache is off."""
        cache = self._cache_for(state)
        if cache is None:
            return None
        no_cache, no_store = directives(named.get("cache-control"))
        version = state.versions[arm]
        key = canonical_key(version, state.urls[arm], path, body) if not (no_cache and no_store) else None
        if key is None:
            lookup = Lookup(cache, "bypass")
        elif no_cache:
            lookup = Lookup(cache, "bypass", key, version, not no_store)
        else:
            hit = cache.get(key)
            lookup = Lookup(cache, "hit" if hit is not None else "miss", key, version, not no_store, hit)
            if hit is None:
                self._cache_gauges(cache)  # the get may have dropped an expired entry
        self.metrics.cache_requests.labels(lookup.result).inc()
        return lookup

    def _cache_store(self, lookup: Lookup, version: str, status: int, headers: list[tuple[bytes, bytes]] | None,
                     body: bytes, nonce: str) -> None:
        if lookup.key is None or not lookup.store or version != lookup.version or not 200 <= status < 300:
            return
        stored = lookup.cache.put(
            lookup.key, version, status, _header(headers, b"content-type") or b"application/json",
            _header(headers, b"x-model-version") or version.encode("utf-8"), body, nonce.encode("ascii"),
        )
        if stored and lookup.cache is self._cache:
            self._cache_gauges(lookup.cache)
