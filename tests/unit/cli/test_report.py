"""`mlsteward report` on objects built here: figures checked against numpy on the same samples, range filtering,
the counter arithmetic against a simulated counter, the three formats and the answers to bad input."""

from __future__ import annotations

import datetime as dt
import json
import math
import socket

import numpy as np
import pytest
import yaml

from mlsteward_runtime.cli import main
from mlsteward_runtime.cluster.report import (
    ROUTER_ATTEMPTS, ROUTER_BUCKETS, ROUTER_ERRORS, ROUTER_FEEDBACK, PromAnswers, Report, ReportError, build_report,
    counter_increase, histogram_quantile, parse_duration, render,
)

UNTIL = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)
SINCE = UNTIL - dt.timedelta(hours=2)


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_samples(rng: np.random.Generator, start: dt.datetime, n: int, version: str) -> list[dict]:
    """`n` samples about a minute apart (jittered), with random rates, error rates, latencies and outcomes."""
    out, t = [], start
    for _ in range(n):
        t += dt.timedelta(seconds=float(rng.uniform(40, 80)))
        fb, requests = int(rng.integers(0, 50)), int(rng.integers(0, 1200))
        out.append({"time": iso(t), "version": version, "windowSeconds": 60.0, "replicas": 2,
                    "requests": requests, "errors": int(rng.integers(0, requests // 5 + 1)),
                    "requestRate": float(rng.uniform(0, 20)),
                    "errorRate": float(rng.uniform(0, 0.2)), "p50Ms": float(rng.uniform(1, 5)),
                    "p95Ms": float(rng.uniform(5, 20)), "p99Ms": float(rng.uniform(20, 90)), "feedback": fb,
                    "accuracy": float(rng.uniform(0.6, 1.0)) if fb else None, "meanReward": None})
    return out


def deployment(samples: list[dict], **status) -> dict:
    return {"apiVersion": "mlsteward.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "iris", "namespace": "models"}, "spec": {"version": "iris-v2"},
            "status": {"servingVersion": "iris-v2", "health": {"samples": samples, "alerts": []}, **status}}


def in_range(samples: list[dict], since=SINCE, until=UNTIL) -> list[dict]:
    return [s for s in samples if since <= dt.datetime.fromisoformat(s["time"].replace("Z", "+00:00")) <= until]


def oracle(samples: list[dict]) -> dict:
    """The status estimates computed independently with numpy: window count / window length x seconds since the
    previous sample (requestRate, the pods' count over their uptime while young, is not used)."""
    t = np.array([dt.datetime.fromisoformat(s["time"].replace("Z", "+00:00")).timestamp() for s in samples])
    dt_s = np.concatenate([[0.0], np.diff(t)])
    rate = np.array([s["requests"] / s["windowSeconds"] for s in samples])
    err = np.array([s["errors"] / s["windowSeconds"] for s in samples])
    fb = np.array([s["feedback"] for s in samples], dtype=float)
    acc = [(s["accuracy"], s["feedback"]) for s in samples if s["accuracy"] is not None]
    return {"requests": float(rate @ dt_s), "errors": float(err @ dt_s), "feedback": float(fb / 60.0 @ dt_s),
            "p50": float(np.median([s["p50Ms"] for s in samples])), "p95": max(s["p95Ms"] for s in samples),
            "p99": max(s["p99Ms"] for s in samples),
            "accuracy": float(np.average([a for a, _ in acc], weights=[w for _, w in acc]))}


def test_status_estimates_match_numpy_on_the_samples_in_range():
    rng = np.random.default_rng(7)
    # Samples from 30 minutes before the range to 10 minutes after it; only those inside count.
    samples = make_samples(rng, SINCE - dt.timedelta(minutes=30), 170, "iris-v2")
    kept = in_range(samples)
    assert 0 < len(kept) < len(samples)
    report = build_report([deployment(samples)], "iris", since=SINCE, until=UNTIL)
    want = oracle(kept)
    (v2,) = report.versions
    assert v2.version == "iris-v2" and v2.samples == len(kept)
    for t in (v2, report.total):
        assert t.requests == pytest.approx(want["requests"])
        assert t.errors == pytest.approx(want["errors"])
        assert t.error_rate == pytest.approx(want["errors"] / want["requests"])
        assert t.feedback == pytest.approx(want["feedback"])
        assert (t.p50_ms, t.p95_ms, t.p99_ms) == pytest.approx((want["p50"], want["p95"], want["p99"]))
        assert t.accuracy == pytest.approx(want["accuracy"])
    assert report.source == "status"
    assert "estimate" in report.sources["requests"]


def test_versions_are_split_by_the_version_sampled():
    rng = np.random.default_rng(11)
    first = make_samples(rng, SINCE, 40, "iris-v1")
    last_t = dt.datetime.fromisoformat(first[-1]["time"].replace("Z", "+00:00"))
    second = make_samples(rng, last_t, 40, "iris-v2")
    samples = in_range(first + second)
    report = build_report([deployment(samples)], "iris", since=SINCE, until=UNTIL)
    by = {t.version: t for t in report.versions}
    assert sorted(by) == ["iris-v1", "iris-v2"]
    whole = oracle(samples)
    # The first iris-v2 sample counts the span since the last iris-v1 sample: it served that span.
    t = np.array([dt.datetime.fromisoformat(s["time"].replace("Z", "+00:00")).timestamp() for s in samples])
    gaps = np.concatenate([[0.0], np.diff(t)])
    rate = np.array([s["requests"] / s["windowSeconds"] for s in samples])
    is_v1 = np.array([s["version"] == "iris-v1" for s in samples])
    assert by["iris-v1"].requests == pytest.approx(float(rate[is_v1] @ gaps[is_v1]))
    assert by["iris-v2"].requests == pytest.approx(float(rate[~is_v1] @ gaps[~is_v1]))
    assert report.total.requests == pytest.approx(whole["requests"])
    assert by["iris-v1"].p99_ms == max(s["p99Ms"] for s in samples if s["version"] == "iris-v1")


def test_short_coverage_is_said_and_full_coverage_is_not():
    rng = np.random.default_rng(3)
    late = make_samples(rng, UNTIL - dt.timedelta(minutes=30), 25, "iris-v2")
    report = build_report([deployment(in_range(late))], "iris", since=SINCE, until=UNTIL)
    assert report.covered_since is not None and report.covered_since > SINCE + dt.timedelta(minutes=80)
    assert any("less than the range asked" in n for n in report.notes)
    full = make_samples(rng, SINCE - dt.timedelta(seconds=30), 200, "iris-v2")
    report = build_report([deployment(in_range(full))], "iris", since=SINCE, until=UNTIL)
    assert not any("less than the range asked" in n for n in report.notes)


def test_no_samples_gives_no_figures_and_a_note():
    report = build_report([deployment([])], "iris", since=SINCE, until=UNTIL)
    assert report.versions == [] and report.total.requests == 0 and report.total.error_rate is None
    assert any("No health samples" in n for n in report.notes)


def objects_with_history() -> list[dict]:
    def at(minutes: float) -> str:
        return iso(UNTIL - dt.timedelta(minutes=minutes))

    decisions = [
        {"time": at(300), "kind": "Rollout", "from": "iris-v0", "to": "iris-v1", "reason": "SpecChanged"},
        {"time": at(90), "kind": "Rollback", "from": "iris-v2", "to": "iris-v1", "reason": "AnalysisFailed",
         "message": "error rate 0.2 > 0.05 | at step 10"},
        {"time": at(5), "kind": "Promote", "from": "iris-v1", "to": "iris-v2", "reason": "ExperimentConcluded"},
    ]
    md = deployment([], decisions=decisions)
    md["status"]["health"]["alerts"] = [{"rule": "P99Latency", "metric": "p99Ms", "reason": "P99LatencyAbove",
                                         "value": 812.0, "threshold": 500.0, "since": at(3)}]
    history = [{"time": at(m), "windowSize": 500, "driftedFeatures": d, "drifted": d > 0}
               for m, d in ((200, 3), (110, 0), (60, 2), (30, 1), (1, 0))]
    dm = {"apiVersion": "mlsteward.io/v1alpha1", "kind": "DriftMonitor",
          "metadata": {"name": "iris-drift", "namespace": "models"}, "spec": {"deployment": "iris"},
          "status": {"history": history, "lastAction": {"type": "Rollback", "time": at(30)}}}
    other = {"apiVersion": "mlsteward.io/v1alpha1", "kind": "DriftMonitor",
             "metadata": {"name": "other-drift", "namespace": "models"}, "spec": {"deployment": "other"},
             "status": {"history": history}}

    def exp(name: str, started: float, concluded: float | None) -> dict:
        return {"apiVersion": "mlsteward.io/v1alpha1", "kind": "Experiment",
                "metadata": {"name": name, "namespace": "models"},
                "spec": {"deployment": "iris", "variants": [{"name": "control", "version": "iris-v1"},
                                                             {"name": "treatment", "version": "iris-v2"}]},
                "status": {"phase": "Concluded" if concluded is not None else "Running", "startedAt": at(started),
                           "concludedAt": at(concluded) if concluded is not None else None,
                           "winner": "treatment" if concluded is not None else None}}

    return [md, dm, other, exp("old", 400, 300), exp("across-start", 200, 60), exp("running", 30, None)]


def test_decisions_drift_and_experiments_are_those_of_the_range():
    report = build_report(objects_with_history(), "iris", since=SINCE, until=UNTIL)
    assert [d["kind"] for d in report.decisions] == ["Rollback", "Promote"]
    (drift,) = report.drift
    # In range (the last 120 minutes): the checks at 110, 60, 30 and 1 minutes; two drifted, at most 2 features.
    assert (drift.monitor, drift.checks, drift.drifted, drift.max_drifted_features) == ("iris-drift", 4, 2, 2)
    assert drift.last_action is not None and drift.last_action["type"] == "Rollback"
    assert [e.name for e in report.experiments] == ["across-start", "running"]
    assert report.alerts[0]["rule"] == "P99Latency"
    # A shorter range leaves the rollback decision, the action and the first experiment out.
    short = build_report(objects_with_history(), "iris", since=UNTIL - dt.timedelta(minutes=20), until=UNTIL)
    assert [d["kind"] for d in short.decisions] == ["Promote"]
    assert short.drift[0].checks == 1 and short.drift[0].last_action is None
    assert [e.name for e in short.experiments] == ["running"]


def simulate_counter(rng: np.random.Generator, restarts: set[int], n: int) -> tuple[np.ndarray, np.ndarray]:
    """A counter incremented at random, reset to zero at the sample indexes in `restarts`: increments and values."""
    inc = rng.integers(0, 20, size=n).astype(float)
    values = np.empty(n)
    level = 0.0
    for i in range(n):
        level = (0.0 if i in restarts else level) + inc[i]
        values[i] = level
    return inc, values


def test_counter_increase_matches_the_increments_after_the_start():
    rng = np.random.default_rng(5)
    n = 200
    inc, values = simulate_counter(rng, {70, 150}, n)
    times = np.arange(n, dtype=float) * 15.0
    since = times[40] + 7.0
    pairs = list(zip(times.tolist(), values.tolist()))
    # The increments recorded by the samples after `since` (each sample carries the increments since the last).
    assert counter_increase(pairs, since) == pytest.approx(inc[41:].sum())
    # A series first seen inside the range counts from zero (its first increments included).
    assert counter_increase(pairs[100:], since) == pytest.approx(values[100] + inc[101:].sum())


def test_prometheus_answers_give_the_traffic_and_samples_the_outcomes():
    t0 = SINCE.timestamp()

    def series(version: str, values: list[tuple[float, float]], **labels: str) -> dict:
        return {"metric": {"version": version, **labels}, "values": [[t, str(v)] for t, v in values]}

    prom = PromAnswers(url="http://prom:9090", counters={
        ROUTER_ATTEMPTS: [series("iris-v1", [(t0 - 30, 100), (t0 + 60, 130), (t0 + 600, 40)], pod="a"),
                          series("iris-v1", [(t0 + 100, 5), (t0 + 200, 25)], pod="b"),
                          series("iris-v2", [(t0 + 10, 7)]),
                          series("not-ours", [(t0 + 10, 1000)])],
        ROUTER_ERRORS: [series("iris-v2", [(t0 - 10, 2), (t0 + 10, 3)], reason="timeout")],
        ROUTER_FEEDBACK: [],
        # iris-v1: 10 observations <= 2.5 ms and 10 in (2.5, 5] ms, in range; iris-v2: none.
        ROUTER_BUCKETS: [series("iris-v1", [(t0 - 5, 50), (t0 + 5, 60)], le="0.0025"),
                         series("iris-v1", [(t0 - 5, 50), (t0 + 5, 70)], le="0.005"),
                         series("iris-v1", [(t0 - 5, 50), (t0 + 5, 70)], le="+Inf")],
    })
    rng = np.random.default_rng(1)
    samples = in_range(make_samples(rng, SINCE, 60, "iris-v1"))
    md = deployment(samples)
    md["status"]["traffic"] = [{"version": "iris-v1", "weight": 50}, {"version": "iris-v2", "weight": 50}]
    report = build_report([md], "iris", since=SINCE, until=UNTIL, prometheus=prom)
    by = {t.version: t for t in report.versions}
    assert sorted(by) == ["iris-v1", "iris-v2"]  # not-ours is no version of the deployment
    # pod a: 30 after the start, then a restart counting 40; pod b appears in range: 25.
    assert by["iris-v1"].requests == 30 + 40 + 25
    assert (by["iris-v2"].requests, by["iris-v2"].errors, by["iris-v2"].error_rate) == (7, 1, pytest.approx(1 / 7))
    # The median (rank 10 of 20) is the top of the first bucket; p95 (rank 19) 90% into the second.
    assert by["iris-v1"].p50_ms == pytest.approx(2.5) and by["iris-v1"].p95_ms == pytest.approx(4.75)
    assert by["iris-v2"].p50_ms is None
    assert report.total.requests == 102 and report.total.p95_ms == pytest.approx(4.75)
    assert by["iris-v1"].accuracy == pytest.approx(oracle(samples)["accuracy"])
    assert report.source == "prometheus" and report.sources["requests"].startswith("prometheus")


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
def test_histogram_quantile_lies_in_the_bucket_of_the_true_quantile(q):
    rng = np.random.default_rng(int(q * 100))
    data = rng.lognormal(mean=-5, sigma=1.2, size=5000)  # latencies in seconds
    bounds = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, math.inf]
    buckets = {b: float((data <= b).sum()) for b in bounds}
    got = histogram_quantile(q, buckets)
    # The rank-th smallest observation (the rank PromQL looks for) decides the bucket.
    truth = np.sort(data)[int(math.ceil(q * len(data))) - 1]
    i = int(np.searchsorted(bounds, truth))
    lo, hi = (0.0 if i == 0 else bounds[i - 1]), bounds[i]
    assert lo <= got <= hi
    # Inside the bucket it interpolates linearly by rank.
    below = buckets[lo] if lo else 0.0
    assert got == pytest.approx(lo + (hi - lo) * (q * len(data) - below) / (buckets[hi] - below))


def test_histogram_quantile_edges():
    assert histogram_quantile(0.5, {1.0: 0, math.inf: 0}) is None
    assert histogram_quantile(0.5, {1.0: 5}) is None  # no +Inf bucket
    assert histogram_quantile(0.99, {1.0: 1, 2.0: 1, math.inf: 10}) == 2.0  # rank in +Inf: highest finite bound
    # A bucket lower than the one below it (scraped between updates) is raised to it.
    # Raised: counts 2, 5, 5, 6, 8; rank 5.6 falls in (3, 4] with 5 below it.
    assert histogram_quantile(0.7, {1.0: 2, 2.0: 5, 3.0: 4, 4.0: 6, math.inf: 8}) == pytest.approx(3.6)


def test_markdown_text_and_json_render_the_same_figures():
    rng = np.random.default_rng(9)
    objs = objects_with_history()
    objs[0]["status"]["health"]["samples"] = in_range(make_samples(rng, SINCE, 100, "iris-v2"))
    report = build_report(objs, "iris", since=SINCE, until=UNTIL)
    md = render(report, "markdown")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
            if line.startswith("| iris-v2") or line.startswith("| total")]
    assert rows[0][1] == f"~{report.versions[0].requests:.0f}"
    assert rows[1][5] == format(report.total.p95_ms, ".4g")
    assert "error rate 0.2 > 0.05 \\| at step 10" in md  # a pipe in a message does not break the table
    assert md.startswith("# Performance report: iris (namespace models)")
    text = render(report, "text")
    header = next(line for line in text.splitlines() if line.startswith("Version"))
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert header.index("Requests") == total.index(f"~{report.total.requests:.0f}")
    again = Report.model_validate(json.loads(render(report, "json")))
    assert again == report


def test_parse_duration():
    assert parse_duration("1h30m").total_seconds() == 5400
    assert parse_duration("7d").total_seconds() == 7 * 86400
    for bad in ("", "24", "h", "1x", "-1h", "0s", "1h 2m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_unknown_deployment_and_empty_range():
    with pytest.raises(ReportError, match="no ModelDeployment nope in namespace models .ModelDeployments: iris"):
        build_report(objects_with_history(), "nope", since=SINCE, until=UNTIL, namespace="models")
    with pytest.raises(ReportError, match="range is empty"):
        build_report(objects_with_history(), "iris", since=UNTIL, until=UNTIL)


# ---- the command line ----


@pytest.fixture
def objects_file(tmp_path):
    path = tmp_path / "objects.yaml"
    path.write_text(yaml.safe_dump_all(objects_with_history()))
    return str(path)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["report", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_reads_files_and_writes_json(capsys, objects_file, tmp_path):
    out_file = tmp_path / "r.json"
    code, out, err = run_cli(capsys, "iris", "-f", objects_file, "--since", "2h", "--until", iso(UNTIL),
                             "--format", "json", "--prometheus", "", "-o", str(out_file))
    assert code == 0, err
    doc = json.loads(out_file.read_text())
    assert doc["since"].startswith("2026-03-01T10:00:00") and doc["source"] == "status"
    assert [d["kind"] for d in doc["decisions"]] == ["Rollback", "Promote"]


@pytest.mark.parametrize("args, message", [
    (["--since", "yesterday"], "--since: 'yesterday' is not a duration"),
    (["--until", "soon"], "--until: 'soon' is neither 'now' nor an RFC 3339 time"),
    (["--prometheus", "prometheus:9090"], "--prometheus: 'prometheus:9090' is not an http(s) URL"),
])
def test_cli_bad_arguments_exit_2_naming_them(capsys, objects_file, args, message):
    code, out, err = run_cli(capsys, "iris", "-f", objects_file, *args)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


def test_cli_unknown_deployment_exits_2(capsys, objects_file):
    code, _, err = run_cli(capsys, "nope", "-f", objects_file)
    assert code == 2 and f"no ModelDeployment nope" in err and objects_file in err


def test_cli_unreachable_prometheus_exits_2(capsys, objects_file):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, err = run_cli(capsys, "iris", "-f", objects_file, "--prometheus", f"http://127.0.0.1:{port}")
    assert code == 2 and out == ""
    assert f"--prometheus: cannot reach Prometheus at http://127.0.0.1:{port}" in err
