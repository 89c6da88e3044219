"""Labelled pairs over real HTTP: a label sent for a mirrored request scores the served and the shadow's answer."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlsteward_runtime.contracts import RouterStats
from router_harness import config, wait_for

CELLS = ("both_correct", "served_only", "shadow_only", "neither")


def metric(rr, name: str, **labels: str) -> float:
    """The value of one sample of the router's /metrics (0 when absent)."""
    for family in text_string_to_metric_families(rr.client.get("/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def mirrored(rr, n: int, version: str = "v2") -> dict:
    """The shadow's stats once `n` mirrors have ended (answered or failed)."""
    return wait_for(lambda: (x := rr.stats()["shadow"][version])["mirrored"] == n and x, what=f"{n} mirrors")


def shadowed(served, shadow, **kw):
    return config(("v1", served.url, 100), shadow={"version": "v2", "url": shadow.url, "percent": 100, **kw})


def test_labels_fill_the_paired_cells(backends, router_factory):
    served, shadow = backends("v1", label="setosa"), backends("v2", label="virginica")
    rr = router_factory(shadowed(served, shadow))
    ids, answers = [], []
    for shadow_label, n in (("virginica", 8), ("setosa", 3)):
        shadow.label = shadow_label
        for _ in range(n):
            ids.append(rr.predict().headers["x-request-id"])
            answers.append(shadow_label)
            mirrored(rr, len(ids))
    labels = ["setosa", "virginica", "versicolor", "virginica", "setosa", "versicolor", "virginica", "virginica",
              "setosa", "versicolor", "setosa"]
    expected = Counter(
        {(True, True): "both_correct", (True, False): "served_only", (False, True): "shadow_only",
         (False, False): "neither"}[(label == "setosa", label == answer)] for label, answer in zip(labels, answers)
    )
    assert set(expected) == set(CELLS)  # the sequence visits every cell
    assert metric(rr, "mlsteward_router_shadow_answers") == len(ids)
    assert metric(rr, "mlsteward_router_shadow_answers_bytes") == rr.router.shadow_answers.bytes > 0
    for rid, label in zip(ids, labels):
        r = rr.client.post("/v1/feedback", json={"request_id": rid, "label": label})
        assert r.status_code == 200, r.text
    s = rr.stats()["shadow"]["v2"]
    assert {c: s[c] for c in CELLS} == {c: expected[c] for c in CELLS}
    assert s["pairs"] == len(labels) and s["kind"] == "classification"
    assert metric(rr, "mlsteward_router_shadow_answers") == 0  # each answer is taken by its label
    for c in CELLS:
        assert metric(rr, "mlsteward_router_shadow_pairs_total", version="v2", result=c) == expected[c]
    # The served arm's outcomes are what they were without pairs.
    v1 = rr.stats()["versions"]["v1"]
    assert (v1["outcomes"], v1["outcome_sum"]) == (len(labels), labels.count("setosa"))


def test_regression_pairs_match_numpy(backends, router_factory):
    served, shadow = backends("v1", label=2.5), backends("v2")
    rr = router_factory(shadowed(served, shadow, kind="regression"))
    rng = np.random.default_rng(3)
    shadow_answers = [4.0, -1.25, 2.5, 10.0, 0.5]
    labels = rng.normal(3.0, 2.0, size=(len(shadow_answers), 3)).tolist()
    labels[2][1] = "n/a"  # not a number: that row is left out of the error differences
    ids = []
    for k, answer in enumerate(shadow_answers):
        shadow.label = answer
        ids.append(rr.predict({"instances": [[1.0], [2.0], [3.0]]}).headers["x-request-id"])
        mirrored(rr, k + 1)
    for rid, label in zip(ids, labels):
        assert rr.client.post("/v1/feedback", json={"request_id": rid, "label": label}).status_code == 200
    stats = rr.stats()
    RouterStats.model_validate(stats)
    s = stats["shadow"]["v2"]
    assert s["kind"] == "regression" and s["pairs"] == len(ids)
    assert all(s[c] == 0 for c in CELLS)
    # Oracle: numpy over the same rows.
    d = np.array([abs(q - y) - abs(2.5 - y) for q, row in zip(shadow_answers, labels) for y in row
                  if not isinstance(y, str)])
    assert s["error_diff_n"] == d.size == 14
    assert s["error_diff_mean"] == pytest.approx(d.mean(), rel=1e-12, abs=1e-12)
    assert s["error_diff_m2"] == pytest.approx(((d - d.mean()) ** 2).sum(), rel=1e-12)
    diff = np.repeat(np.abs(2.5 - np.array(shadow_answers)), 3)
    assert s["diff_n"] == diff.size
    assert s["diff_mean"] == pytest.approx(diff.mean(), rel=1e-12)
    assert s["diff_m2"] == pytest.approx(((diff - diff.mean()) ** 2).sum(), rel=1e-12)
    assert metric(rr, "mlsteward_router_shadow_pairs_total", version="v2", result="regression") == len(ids)


def test_repeated_feedback_counts_one_pair(backends, router_factory):
    served, shadow = backends("v1", label="setosa"), backends("v2", label="virginica")
    # One id remembered as counted: a repeat of a forgotten id is counted again, but must not pair again.
    rr = router_factory(shadowed(served, shadow), feedback_counted_capacity=1)
    a, b = rr.predict().headers["x-request-id"], rr.predict().headers["x-request-id"]
    mirrored(rr, 2)
    label = {"label": "setosa"}
    assert rr.client.post("/v1/feedback", json={"request_id": a, **label}).status_code == 200
    assert rr.client.post("/v1/feedback", json={"request_id": a, **label}).status_code == 409
    assert rr.client.post("/v1/feedback", json={"request_id": b, **label}).status_code == 200
    assert rr.client.post("/v1/feedback", json={"request_id": a, **label}).status_code == 200
    assert rr.stats()["versions"]["v1"]["outcomes"] == 3
    s = rr.stats()["shadow"]["v2"]
    assert (s["pairs"], s["served_only"]) == (2, 2)
    assert metric(rr, "mlsteward_router_shadow_pairs_total", version="v2", result="served_only") == 2
    assert metric(rr, "mlsteward_router_shadow_unpaired_feedback_total", version="v2", reason="unknown") == 1


def test_failed_mirrors_and_rewards_make_no_pair(backends, router_factory):
    served, failing = backends("v1", label="setosa"), backends("v2", fail_status=500)
    rr = router_factory(shadowed(served, failing))
    ids = [rr.predict().headers["x-request-id"] for _ in range(3)]
    assert mirrored(rr, 3)["errors"] == 3
    for rid in ids:
        assert rr.client.post("/v1/feedback", json={"request_id": rid, "label": "setosa"}).status_code == 200
    failing.fail_status = None
    rid = rr.predict().headers["x-request-id"]
    mirrored(rr, 4)
    assert rr.client.post("/v1/feedback", json={"request_id": rid, "reward": 1.0}).status_code == 200
    assert rr.stats()["shadow"]["v2"]["pairs"] == 0
    assert metric(rr, "mlsteward_router_shadow_unpaired_feedback_total", version="v2", reason="error") == 3
    assert metric(rr, "mlsteward_router_shadow_unpaired_feedback_total", version="v2", reason="reward") == 1


def test_unanswered_and_dropped_mirrors_make_no_pair(backends, router_factory):
    served, slow = backends("v1", label="setosa"), backends("v2", label="setosa", delay_s=1.5)
    rr = router_factory(shadowed(served, slow), shadow_max_inflight=1)
    pending, dropped = rr.predict().headers["x-request-id"], rr.predict().headers["x-request-id"]
    for rid in (pending, dropped):
        assert rr.client.post("/v1/feedback", json={"request_id": rid, "label": "setosa"}).status_code == 200
    assert metric(rr, "mlsteward_router_shadow_unpaired_feedback_total", version="v2", reason="pending") == 1
    assert metric(rr, "mlsteward_router_shadow_unpaired_feedback_total", version="v2", reason="dropped") == 1
    # The late answer agrees with the label, yet makes no pair: its feedback has been counted already.
    s = mirrored(rr, 1)
    assert (s["dropped"], s["compared"], s["pairs"]) == (1, 1, 0)
    assert len(rr.router.shadow_answers) == 0


def test_feedback_at_another_replica_makes_no_pair(backends, router_factory, tmp_path: Path):
    served, shadow = backends("v1", label="setosa"), backends("v2", label="setosa")
    key = tmp_path / "key"
    key.write_text("k" * 40 + "\n")
    mirroring, other = (router_factory(shadowed(served, shadow), id_key_file=str(key)) for _ in range(2))
    rid = mirroring.predict().headers["x-request-id"]
    mirrored(mirroring, 1)
    r = other.client.post("/v1/feedback", json={"request_id": rid, "label": "setosa"})
    assert r.status_code == 200 and r.json()["outcome"] == 1.0
    assert other.stats()["shadow"] == {}  # no mirror, no counters
    assert metric(other, "mlsteward_router_shadow_unpaired_feedback_total", version="v2", reason="unknown") == 1
    assert mirroring.stats()["shadow"]["v2"]["pairs"] == 0
