"""The prediction cache alone (router/cache.py): canonical keys, the TTL, the byte budget and the entry bound."""

from __future__ import annotations

import itertools
import json
import os
import tracemalloc

from mlsteward_runtime.contracts import CacheConfig
from mlsteward_runtime.router.cache import (
    ENTRY_OVERHEAD,
    MAX_KEY_BODY_BYTES,
    PredictionCache,
    canonical_key,
    directives,
)

CT, MV = b"application/json", b"1.0.0"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(max_entries: int = 100, max_bytes: int = 1 << 20, ttl_s: float = 60.0, clock: Clock | None = None,
          evicted: list[str] | None = None) -> PredictionCache:
    return PredictionCache(CacheConfig(max_entries=max_entries, max_bytes=max_bytes, ttl_s=ttl_s),
                           clock or Clock(), evicted.append if evicted is not None else None)


def key(body: bytes, version: str = "v1", url: str = "http://v1:8080", path: str = "/predict") -> bytes | None:
    return canonical_key(version, url, path, body)


def cost(k: bytes, body: bytes) -> int:
    return ENTRY_OVERHEAD + len(k) + len(body) + len(CT) + len(MV)


# ---- keys ------------------------------------------------------------------------------------------------------

BODIES = [
    b'{"instances": [[1.0, 2.5]], "user": "a"}',
    b'{"user":"a","instances":[[1.0,2.5]]}',
    b'{\n  "user" : "a" ,\n  "instances" : [ [ 1.00, 2.50e0 ] ]\n}',
    b'{"instances": [[2.5, 1.0]], "user": "a"}',
    b'{"instances": [[1, 2.5]], "user": "a"}',
    b'{"instances": [[1.0, 2.5]], "user": "b"}',
    b'{"instances": [[1.0, 2.5]]}',
    b'{"instances": [[1.0, 2.5]], "user": "a", "x": null}',
    b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.5]}]}',
    b'{"inputs": [{"data": [1.0, 2.5], "datatype": "FP64", "shape": [1, 2], "name": "x"}]}',
    b'[[1.0, 2.5]]',
    b'{"instances": [[1.0, 2.5]], "user": "\\u0061"}',
]


def _same_document(a: bytes, b: bytes) -> bool:
    # The oracle: Python's own json module, and types too (1 and 1.0 are equal in Python but different JSON).
    def typed(x: object) -> object:
        if isinstance(x, dict):
            return {k: typed(v) for k, v in x.items()}
        if isinstance(x, list):
            return [typed(v) for v in x]
        return (type(x).__name__, x)

    return typed(json.loads(a)) == typed(json.loads(b))


def test_keys_are_equal_exactly_when_the_parsed_documents_are() -> None:
    for a, b in itertools.combinations(BODIES, 2):
        ka, kb = key(a), key(b)
        assert ka is not None and kb is not None
        assert (ka == kb) == _same_document(a, b), (a, b)
    # Order of keys and whitespace and spelling of numbers do not matter; the canonical form is 32 bytes of sha256.
    assert key(BODIES[0]) == key(BODIES[1]) == key(BODIES[2]) == key(BODIES[11])
    assert key(BODIES[8]) == key(BODIES[9])
    assert len(key(BODIES[0]) or b"") == 32


def test_version_url_and_path_are_part_of_the_key() -> None:
    body = BODIES[0]
    keys = {
        key(body),
        key(body, version="v2"),
        key(body, url="http://v1-other:8080"),
        key(body, path="/v1/models/iris:predict"),
        key(body, path="/predict?x=1"),
        # The parts are length-prefixed: moving a character from one to the next is another key.
        key(body, version="v1/", path="predict"),
    }
    assert len(keys) == 6 and None not in keys
    assert key(body, version="v2") == key(BODIES[1], version="v2")


def test_bodies_that_bypass() -> None:
    assert key(b"not json") is None
    assert key(b"\xff\xfe") is None
    assert key(b"") is None
    assert key(b'{"a": 1e400}') is None  # orjson refuses an infinite number, as the predictor does
    deep = b"[" * 300 + b"]" * 300  # parses (orjson reads 1024 levels) but is deeper than it writes (254)
    assert key(deep) is None
    assert key(b"[" * 5000 + b"]" * 5000) is None
    big = b'{"instances": [' + b",".join([b"[1.0, 2.0]"] * (MAX_KEY_BODY_BYTES // 10)) + b"]}"
    assert len(big) > MAX_KEY_BODY_BYTES and key(big) is None
    assert key(b"[" * 200 + b"]" * 200) is not None


def test_cache_control_directives() -> None:
    assert directives(None) == (False, False)
    assert directives("no-cache") == (True, False)
    assert directives("No-Store") == (False, True)
    assert directives("max-age=0, no-cache ,no-store") == (True, True)
    assert directives("private, max-age=60") == (False, False)


# ---- the map ---------------------------------------------------------------------------------------------------


def test_ttl_is_checked_on_read() -> None:
    clock, evicted = Clock(), []
    c = cache(ttl_s=30, clock=clock, evicted=evicted)
    k = key(b"[1]")
    assert k is not None and c.put(k, "v1", 200, CT, MV, b'{"predictions": [0]}')
    clock.now += 29.9
    hit = c.get(k)
    assert hit is not None and hit.body == b'{"predictions": [0]}' and hit.status == 200
    clock.now += 0.1
    assert c.get(k) is None
    assert evicted == ["expired"] and c.evictions["expired"] == 1
    assert len(c) == 0 and c.bytes == 0


def test_entry_bound_evicts_the_least_recently_used() -> None:
    evicted: list[str] = []
    c = cache(max_entries=3, evicted=evicted)
    keys = [key(b"[%d]" % i) for i in range(5)]
    for k in keys[:3]:
        assert k is not None and c.put(k, "v1", 200, CT, MV, b"x")
    assert c.get(keys[0]) is not None  # read: now the most recent
    for k in keys[3:]:
        assert k is not None and c.put(k, "v1", 200, CT, MV, b"x")
    assert len(c) == 3
    assert [c.get(k) is not None for k in keys] == [True, False, False, True, True]
    assert evicted == ["capacity", "capacity"] and c.evictions == {"capacity": 2, "bytes": 0, "expired": 0}


def test_byte_budget_counts_keys_bodies_and_overhead() -> None:
    body = b"y" * 1000
    k0 = key(b"[0]")
    assert k0 is not None
    one = cost(k0, body)
    evicted: list[str] = []
    c = cache(max_entries=1000, max_bytes=3 * one + one // 2, evicted=evicted)
    keys = [key(b"[%d]" % i) for i in range(10)]
    for i, k in enumerate(keys):
        assert k is not None and c.put(k, "v1", 200, CT, MV, body)
        assert c.bytes <= c.config.max_bytes
        assert c.bytes == len(c) * one
    assert len(c) == 3 and evicted == ["bytes"] * 7
    assert [c.get(k) is not None for k in keys] == [False] * 7 + [True] * 3
    # An answer larger than the whole budget is not stored, and evicts nothing.
    assert not c.put(key(b"[99]") or b"", "v1", 200, CT, MV, b"z" * c.config.max_bytes)
    assert len(c) == 3 and evicted == ["bytes"] * 7
    # Replacing an entry does not count it twice.
    assert c.put(keys[-1] or b"", "v1", 200, CT, MV, body)
    assert c.bytes == 3 * one


def test_an_expired_entry_pushed_out_counts_as_expired() -> None:
    clock, evicted = Clock(), []
    c = cache(max_entries=2, ttl_s=10, clock=clock, evicted=evicted)
    a, b, d = key(b"[1]"), key(b"[2]"), key(b"[3]")
    assert a and b and d
    c.put(a, "v1", 200, CT, MV, b"a")
    clock.now += 11
    c.put(b, "v1", 200, CT, MV, b"b")
    c.put(d, "v1", 200, CT, MV, b"d")
    assert evicted == ["expired"] and c.get(b) is not None and c.get(d) is not None


def test_the_predictors_request_id_in_a_body_is_replaced_on_every_hit() -> None:
    c = cache()
    k = key(b"[1]")
    assert k is not None
    old = "0" * 31 + "1"
    c.put(k, "v1", 200, CT, MV, b'{"predictions": [0], "request_id": "%s"}' % old.encode(), old.encode())
    hit = c.get(k)
    assert hit is not None
    new = "f" * 32
    assert json.loads(hit.body_for(new)) == {"predictions": [0], "request_id": new}
    # A nonce that is not in the body is not kept (nothing to replace, nothing to pay for).
    c.put(k, "v1", 200, CT, MV, b'{"predictions": [0]}', old.encode())
    hit = c.get(k)
    assert hit is not None and hit.nonce is None and hit.body_for(new) == b'{"predictions": [0]}'


def test_accounted_bytes_cover_what_entries_really_take() -> None:
    """ENTRY_OVERHEAD is a measurement: the memory an entry takes (its objects created as the router creates them,
    per response) stays within what the budget counts."""
    n = 5000
    c = cache(max_entries=n, max_bytes=1 << 30)
    bodies = [os.urandom(200) for _ in range(n)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, body in enumerate(bodies):
            nonce = b"%032x" % i
            k = canonical_key("v1", "http://v1:8080", "/predict", b"[%d]" % i)
            assert k is not None
            c.put(k, "v1", 200, bytes(CT), bytes(MV), body[:100] + nonce + body[100:], nonce)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # The bodies' payload was allocated before tracing began but the slices are new: the traced memory is all of
    # what the entries hold.
    assert len(c) == n
    assert used <= c.bytes, (used / n, c.bytes / n)
    # And the overhead is not wildly generous either (the budget should mean something).
    assert c.bytes <= 2 * used


def test_the_crd_describes_what_the_router_counts() -> None:
    """kubectl explain md.spec.cache says what counts against maxBytes and which bodies bypass: the router's own
    numbers."""
    from mlsteward_operator.api.modeldeployment import Cache, ModelDeploymentSpec

    max_bytes = Cache.model_fields["max_bytes"].description or ""
    assert f"{ENTRY_OVERHEAD} bytes" in max_bytes and "32-byte key" in max_bytes
    k = key(b"[1]")
    assert k is not None and len(k) == 32
    spec = ModelDeploymentSpec.model_fields["cache"].description or ""
    assert MAX_KEY_BODY_BYTES == 1024 * 1024 and "over 1 MiB" in spec
