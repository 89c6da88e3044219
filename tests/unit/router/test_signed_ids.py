"""Signed request ids: feedback accepted by any replica sharing the key, never for a forged, altered or expired id,
counted at most once per id per replica."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlsteward_runtime.router.access import digest
from mlsteward_runtime.router.config import ConfigError
from mlsteward_runtime.router.feedback import COUNTED_ENTRY_BYTES, CountedIds
from mlsteward_runtime.router.ids import (
    MAX_ID_CHARS,
    MAX_PREDICTION_BYTES,
    IdKeys,
    InvalidId,
    issue,
    new_nonce,
    small_predictions,
    verify,
)
from router_harness import config, wait_for

KEY1 = "k1-" + "a" * 40
KEY2 = "k2-" + "b" * 40
GOOD = "s3cr3t-token-alpha-0123456789"
OTHER = "s3cr3t-token-beta-9876543210"


def write(path: Path, *lines: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{line}\n" for line in lines))
    tmp.replace(path)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "router-key"
    write(path, KEY1)
    return path


def pair(backends, router_factory, key_file: Path | None, **kw):
    """A backend and two router replicas in front of it, sharing `key_file` (or each with a random key)."""
    a = backends("v1", label="setosa")
    extra = {"id_key_file": str(key_file)} if key_file is not None else {}
    cfg = config(("v1", a.url, 100), **kw.pop("cfg", {}))
    return a, router_factory(cfg, **extra, **kw), router_factory(cfg, **extra, **kw)


def feedback(rr, rid: str, headers: dict[str, str] | None = None, **body):
    return rr.client.post("/v1/feedback", json={"request_id": rid, **body}, headers=headers or {})


# ------------------------------------------------------------------------------------------------- the id itself


def test_an_id_is_nonce_payload_mac_and_its_fields_decode():
    keys = [KEY1.encode()]
    nonce = new_nonce()
    rid = issue(keys, nonce, "v1", digest(GOOD), b'["setosa"]', now=1_700_000_000)
    assert re.fullmatch(r"[0-9a-f]{32}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{22}", rid) and rid.startswith(nonce + ".")
    assert len(rid) < 100
    got = verify(keys, rid)
    assert (got.nonce, got.version, got.issued, got.predictions) == (nonce, "v1", 1_700_000_000, ["setosa"])
    assert got.token_matches(digest(GOOD)) and not got.token_matches(digest(OTHER))
    assert not got.token_matches(None)
    # The mac is HMAC-SHA256 over nonce.payload under the key, truncated to 128 bits (an independent recomputation).
    import hashlib
    import hmac
    head, _, mac = rid.rpartition(".")
    expect = hmac.new(KEY1.encode(), b"mlsteward-request-id\x00" + head.encode(), hashlib.sha256).digest()[:16]
    assert unb64(mac) == expect
    # The token is in the payload only as a keyed tag: neither the token nor its plain sha256 shows.
    payload = unb64(rid.split(".")[1])
    assert digest(GOOD)[:8] not in payload and GOOD.encode() not in payload


def test_the_longest_id_fits_the_feedback_limit():
    widest = [1] * 31  # 63 bytes of JSON
    assert small_predictions(widest, "v1") and not small_predictions([*widest, 1], "v1")
    # A long version name leaves the prediction out rather than make a longer id.
    assert small_predictions(widest, "v" * 64) and not small_predictions(widest, "v" * 66)
    longest = [issue([KEY1.encode()], new_nonce(), "v" * 253, digest(GOOD), small_predictions(widest, "v" * 253)),
               issue([KEY1.encode()], new_nonce(), "v" * 64, digest(GOOD), small_predictions(widest, "v" * 64))]
    assert max(map(len, longest)) == MAX_ID_CHARS == 414
    assert verify([KEY1.encode()], longest[0]).version == "v" * 253
    assert verify([KEY1.encode()], longest[1]).predictions == widest
    with pytest.raises(ValueError):
        issue([KEY1.encode()], new_nonce(), "v" * 254, None, b"")


def _tampered(rid: str, other: str) -> list[str]:
    nonce, payload, mac = rid.split(".")
    o_nonce, o_payload, o_mac = other.split(".")
    raw = bytearray(unb64(payload))
    raw[5] ^= 0x01  # the tag length byte, then a byte of the version name
    flipped_payload = b64(bytes(raw))
    raw = bytearray(unb64(payload))
    raw[-3] ^= 0x20
    flipped_late = b64(bytes(raw))
    raw_mac = bytearray(unb64(mac))
    raw_mac[0] ^= 0x80
    return [
        f"{nonce}.{flipped_payload}.{mac}",
        f"{nonce}.{flipped_late}.{mac}",
        f"{nonce}.{payload}.{b64(bytes(raw_mac))}",
        f"{nonce}.{o_payload}.{mac}",  # the payload of another id
        f"{o_nonce}.{payload}.{mac}",  # the nonce of another id
        f"{nonce}.{o_payload}.{o_mac}",
        rid[:-1],
        rid[: len(rid) // 2],
        nonce,
        f"{nonce}.{payload}",
        f"{nonce}.{payload}.{mac}.{mac}",
        f"{nonce}.{payload}!.{mac}",
        f"{nonce}.{payload}.{mac[:-1]}=",
        f"{nonce.upper()}.{payload}.{mac}",
        "é" * 40,
    ]


def test_altered_ids_do_not_verify():
    keys = [KEY1.encode()]
    rid = issue(keys, new_nonce(), "v1", None, b'["setosa"]')
    other = issue(keys, new_nonce(), "v2", None, b'["virginica"]')
    assert verify(keys, rid).version == "v1"
    for bad in _tampered(rid, other):
        with pytest.raises(InvalidId):
            verify(keys, bad)
    with pytest.raises(InvalidId):
        verify([KEY2.encode()], rid)
    with pytest.raises(InvalidId):
        verify(keys, rid + "A" * 10_000)


def test_the_key_file_is_required_readable_and_keys_long_enough(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        IdKeys(tmp_path / "missing")
    path = tmp_path / "keys"
    write(path, "# a comment", "", "short")
    with pytest.raises(ConfigError, match="at least 32 characters"):
        IdKeys(path)
    write(path, "short", KEY2, KEY1)
    assert IdKeys(path).keys == [KEY2.encode(), KEY1.encode()]
    # Without a file, a random key per process: two processes' ids do not verify at each other.
    a, b = IdKeys(None), IdKeys(None)
    with pytest.raises(InvalidId):
        verify(b.keys, issue(a.keys, new_nonce(), "v1", None, b""))


def test_a_router_with_an_unreadable_key_file_does_not_start(tmp_path: Path):
    from mlsteward_runtime.contracts import RouterConfig
    from mlsteward_runtime.router.app import Router
    from mlsteward_runtime.router.settings import RouterSettings

    cfg = RouterConfig.model_validate(config(("v1", "http://127.0.0.1:9", 100)))
    # `mlsteward route` turns a ConfigError into exit status 2 with the message.
    with pytest.raises(ConfigError, match="missing-key"):
        Router(RouterSettings(id_key_file=str(tmp_path / "missing-key")), config=cfg)


def test_a_bad_new_key_file_keeps_the_previous_keys(tmp_path: Path):
    clock = [0.0]
    path = tmp_path / "keys"
    write(path, KEY1)
    keys = IdKeys(path, interval_s=1.0, clock=lambda: clock[0])
    results: list[str] = []
    keys.reloads = results.append
    write(path, "too-short")
    assert keys.current() == [KEY1.encode()] and results == []  # not due yet
    clock[0] = 1.0
    assert keys.current() == [KEY1.encode()] and results == ["invalid"]
    path.unlink()
    clock[0] = 2.0
    assert keys.current() == [KEY1.encode()] and results == ["invalid", "invalid"]
    write(path, KEY2, KEY1)
    clock[0] = 3.0
    assert keys.current() == [KEY2.encode(), KEY1.encode()] and results[-1] == "ok"


def test_counted_ids_are_bounded_and_forget_the_oldest_first():
    evicted: list[int] = []
    counted = CountedIds(capacity=3, max_bytes=10**9, on_evict=lambda: evicted.append(1))
    now = 1_000_000
    for n in "abcd":
        counted.add(n, now, oldest_valid=now - 10)
    assert "a" not in counted and all(n in counted for n in "bcd") and counted.evicted == len(evicted) == 1
    # The byte budget binds too.
    small = CountedIds(capacity=1000, max_bytes=2 * COUNTED_ENTRY_BYTES)
    for n in "abc":
        small.add(n, now, oldest_valid=now - 10)
    assert len(small) == 2 and small.bytes <= 2 * COUNTED_ENTRY_BYTES and "a" not in small
    # Ids past the window leave without counting as evicted (feedback for them is refused anyway).
    counted.add("e", now + 100, oldest_valid=now + 50)
    assert len(counted) == 1 and "e" in counted and counted.evicted == 1


# --------------------------------------------------------------------------------------------- across replicas


def test_feedback_for_an_id_of_replica_a_is_accepted_by_replica_b(backends, router_factory, key_file):
    a, ra, rb = pair(backends, router_factory, key_file)
    r = ra.predict()
    rid = r.headers["x-request-id"]
    assert r.status_code == 200
    ok = feedback(rb, rid, reward=0.5)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"request_id": rid, "version": "v1", "outcome": 0.5, "forwarded": True,
                         "backend_status": 200}
    # Counted once, where it landed; forwarded to the predictor under the nonce it was sent.
    assert (rb.stats()["versions"]["v1"]["outcomes"], ra.stats()["versions"]["v1"]["outcomes"]) == (1, 0)
    assert [f["request_id"] for f in a.feedback] == [rid.split(".")[0]]
    assert a.received[-1]["headers"]["x-request-id"] == rid.split(".")[0]
    # A repeat at the same replica is a conflict; at another replica it is counted there (at most once per id
    # per replica).
    again = feedback(rb, rid, reward=0.5)
    assert again.status_code == 409 and again.json()["field"] == "request_id"
    assert rb.stats()["versions"]["v1"]["outcomes"] == 1
    assert feedback(ra, rid, reward=0.5).status_code == 200
    assert feedback(ra, rid, reward=0.5).status_code == 409
    assert ra.stats()["versions"]["v1"]["outcomes"] == 1
    assert 'mlsteward_router_feedback_refused_total{reason="duplicate"} 1.0' in rb.client.get("/metrics").text


def test_without_a_shared_key_only_the_serving_replica_accepts(backends, router_factory):
    a, ra, rb = pair(backends, router_factory, None)
    rid = ra.predict().headers["x-request-id"]
    r = feedback(rb, rid, reward=1)
    assert r.status_code == 404 and r.json()["field"] == "request_id"
    assert feedback(ra, rid, reward=1).status_code == 200


def test_a_label_is_scored_from_the_id_on_a_replica_that_never_saw_it(backends, router_factory, key_file):
    a, ra, rb = pair(backends, router_factory, key_file)
    right, wrong = ra.predict().headers["x-request-id"], ra.predict().headers["x-request-id"]
    # The served label ("setosa", the backend's answer) comes from the id: neither replica keeps the body.
    assert len(ra.router.served) == len(rb.router.served) == 0
    assert feedback(rb, right, label="setosa").json()["outcome"] == 1.0
    assert feedback(rb, wrong, label="versicolor").json()["outcome"] == 0.0
    v = rb.stats()["versions"]["v1"]
    assert (v["outcomes"], v["outcome_sum"]) == (2, 1.0)


def test_a_large_prediction_is_scored_only_where_its_body_was_kept(backends, router_factory, key_file):
    big = "x" * (MAX_PREDICTION_BYTES + 10)
    a = backends("v1", label=big)
    ra = router_factory(config(("v1", a.url, 100)), id_key_file=str(key_file))
    rb = router_factory(config(("v1", a.url, 100)), id_key_file=str(key_file))
    rid = ra.predict().headers["x-request-id"]
    assert len(rid) < 100  # the prediction is not in the id
    r = feedback(rb, rid, label=big)
    assert r.status_code == 422 and r.json()["field"] == "label"
    assert feedback(ra, rid, label=big).json()["outcome"] == 1.0
    # A reward needs no prediction: any replica takes it (here the one that refused the label).
    other = ra.predict().headers["x-request-id"]
    assert feedback(rb, other, reward=1).status_code == 200


def test_feedback_needs_the_token_of_the_prediction_on_any_replica(backends, router_factory, key_file, tmp_path):
    tokens = tmp_path / "tokens"
    write(tokens, GOOD, OTHER)
    a, ra, rb = pair(backends, router_factory, key_file, cfg={"auth": {"tokens_file": str(tokens)}})
    rid = ra.predict(headers={"authorization": f"Bearer {GOOD}"}).headers["x-request-id"]
    r = feedback(rb, rid, {"authorization": f"Bearer {OTHER}"}, reward=1)
    assert r.status_code == 403 and r.json()["field"] == "request_id"
    assert rb.stats()["versions"]["v1"]["outcomes"] == 0
    assert feedback(rb, rid, {"x-api-key": GOOD}, reward=1).status_code == 200


def test_expired_and_future_ids_are_refused(backends, router_factory, key_file):
    a, ra, rb = pair(backends, router_factory, key_file, feedback_window_s=60)
    keys = [KEY1.encode()]
    now = time.time()
    old = issue(keys, new_nonce(), "v1", None, b"", now=now - 120)
    r = feedback(rb, old, reward=1)
    assert r.status_code == 410 and r.json()["field"] == "request_id" and "feedback_window_s=60" in r.json()["rule"]
    ahead = issue(keys, new_nonce(), "v1", None, b"", now=now + 3600)
    r = feedback(rb, ahead, reward=1)
    assert r.status_code == 422 and r.json()["field"] == "request_id"
    # Inside the window (and a few seconds of skew) the same kind of id is taken.
    assert feedback(rb, issue(keys, new_nonce(), "v1", None, b"", now=now - 30), reward=1).status_code == 200
    assert feedback(rb, issue(keys, new_nonce(), "v1", None, b"", now=now + 5), reward=1).status_code == 200
    assert rb.stats()["versions"]["v1"]["outcomes"] == 2
    metrics = rb.client.get("/metrics").text
    assert 'mlsteward_router_feedback_refused_total{reason="expired"} 1.0' in metrics
    assert 'mlsteward_router_feedback_refused_total{reason="future"} 1.0' in metrics


def test_a_version_no_longer_configured_is_counted_under_its_name(backends, router_factory, key_file):
    a, ra, rb = pair(backends, router_factory, key_file)
    rid = issue([KEY1.encode()], new_nonce(), "v0-retired", None, b'["setosa"]')
    r = feedback(rb, rid, label="setosa")
    assert r.status_code == 200, r.text
    assert r.json() == {"request_id": rid, "version": "v0-retired", "outcome": 1.0, "forwarded": False,
                        "backend_status": None}
    assert rb.stats()["versions"]["v0-retired"]["outcomes"] == 1 and a.feedback == []


def test_keys_rotate_without_a_restart(backends, router_factory, key_file):
    a, ra, rb = pair(backends, router_factory, key_file)
    old_1, old_2 = ra.predict().headers["x-request-id"], ra.predict().headers["x-request-id"]
    write(key_file, KEY2, KEY1)  # the new key signs, the old one still verifies

    def signed_by_new_key() -> bool:
        try:
            verify([KEY2.encode()], ra.predict().headers["x-request-id"])
            return True
        except InvalidId:
            return False

    wait_for(signed_by_new_key, what="replica A signing with the new key")
    new = ra.predict().headers["x-request-id"]
    assert feedback(rb, old_1, reward=1).status_code == 200
    assert feedback(rb, new, reward=1).status_code == 200
    write(key_file, KEY2)  # the old key removed: what it signed is refused

    def old_key_refused() -> bool:
        # A probe that is never counted: a label for an id carrying no prediction is 422 while the id verifies.
        probe = issue([KEY1.encode()], new_nonce(), "v1", None, b"")
        return feedback(rb, probe, label="setosa").status_code == 404

    wait_for(old_key_refused, what="replica B dropping the old key")
    r = feedback(rb, old_2, reward=1)
    assert r.status_code == 404 and r.json()["field"] == "request_id"
    assert feedback(rb, ra.predict().headers["x-request-id"], reward=1).status_code == 200
    assert rb.stats()["versions"]["v1"]["outcomes"] == 3
    metrics = rb.client.get("/metrics").text
    assert "mlsteward_router_id_keys 1.0" in metrics
    assert 'mlsteward_router_id_key_reloads_total{result="ok"} 2.0' in metrics


def test_forged_and_altered_ids_get_4xx_naming_request_id(backends, router_factory, key_file):
    a, ra, rb = pair(backends, router_factory, key_file)
    rid = ra.predict().headers["x-request-id"]
    # A genuine id of another version (its payload differs: ids of one second and version share their payload).
    other = issue([KEY1.encode()], new_nonce(), "v2", None, b'["virginica"]')
    forged = issue([KEY2.encode()], new_nonce(), "v1", None, b'["setosa"]')  # a key the router does not hold
    for bad in [*_tampered(rid, other), forged, "", "x" * (MAX_ID_CHARS + 1), "A" * 100_000]:
        r = feedback(rb, bad, reward=1)
        assert r.status_code in (404, 422), (bad[:80], r.text)
        assert r.json()["field"] == "request_id" and r.json()["rule"], r.text
    r = feedback(rb, "x" * (MAX_ID_CHARS + 1), reward=1)
    assert r.status_code == 422 and str(MAX_ID_CHARS) in r.json()["rule"]
    assert rb.stats()["versions"]["v1"]["outcomes"] == 0 and a.feedback == []
    assert feedback(rb, rid, reward=1).status_code == 200  # the genuine id still counts


def test_no_mutation_of_a_real_id_makes_the_router_fail(backends, router_factory, key_file):
    a, ra, rb = pair(backends, router_factory, key_file)
    rid = ra.predict().headers["x-request-id"]

    @settings(max_examples=150, deadline=None)
    @given(at=st.integers(0, len(rid) - 1), char=st.characters(max_codepoint=0x2FF), cut=st.booleans())
    def check(at: int, char: str, cut: bool) -> None:
        bad = rid[:at] + ("" if cut else char + rid[at + 1:])
        if bad == rid:
            return
        r = rb.client.post("/v1/feedback", content=json.dumps({"request_id": bad, "label": "setosa"}))
        assert r.status_code in (404, 422), (bad, r.text)
        assert r.json()["field"] == "request_id"

    check()
    assert rb.stats()["versions"]["v1"]["outcomes"] == 0


def test_a_full_counted_memory_forgets_the_oldest_and_says_so(backends, router_factory, key_file):
    a, ra, rb = pair(backends, router_factory, key_file, feedback_counted_capacity=2)
    rids = [ra.predict().headers["x-request-id"] for _ in range(3)]
    for rid in rids:
        assert feedback(rb, rid, reward=1).status_code == 200
    assert feedback(rb, rids[2], reward=1).status_code == 409
    # The first was forgotten to make room: within the window a repeat of it is counted again, and the metric
    # says how often that can have happened.
    assert feedback(rb, rids[0], reward=1).status_code == 200
    metrics = rb.client.get("/metrics").text
    assert re.search(r"^mlsteward_router_feedback_counted_evictions_total 2\.0$", metrics, re.M), metrics
    assert re.search(r"^mlsteward_router_feedback_counted_ids 2\.0$", metrics, re.M)


def test_ids_of_a_replica_are_unique_and_random(backends, router_factory, key_file):
    a, ra, rb = pair(backends, router_factory, key_file)
    nonces = {ra.predict().headers["x-request-id"].split(".")[0] for _ in range(50)}
    assert len(nonces) == 50 and secrets.token_hex(16) not in nonces
