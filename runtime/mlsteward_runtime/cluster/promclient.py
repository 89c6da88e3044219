"""A small client of the Prometheus HTTP API for `mlsteward report`: the queries, their answers, clear errors.

It runs instant queries of range vectors (`POST /api/v1/query` of `metric{...}[range]` at the end of the range),
which return the raw samples, and hands the answers on as they came; the arithmetic is in
`mlsteward_runtime.cluster.counters` (pure). Raw samples rather than `increase()`, whose extrapolation to the
range's edges gives fractions and misses what a series counted before its first scrape. The router's metrics are
labelled by version only, so the queries select the deployment's versions (`version=~"a|b"`), plus any matchers given (e.g. `namespace="models"`
when two namespaces serve versions of the same name).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx

from mlsteward_runtime.cluster.counters import (
    ROUTER_ATTEMPTS, ROUTER_BUCKETS, ROUTER_ERRORS, ROUTER_FEEDBACK, PromAnswers,
)

__all__ = ["LOOKBACK", "PrometheusError", "fetch", "selector"]

# How far before the range a counter's baseline sample is looked for: Prometheus' default staleness period.
LOOKBACK = dt.timedelta(minutes=5)


class PrometheusError(Exception):
    """Prometheus could not be asked, or refused a query."""


def selector(versions: list[str], extra: str | None = None) -> str:
    """The label matchers of the queries: the versions (regex-escaped) and the extra matchers, if any."""
    alternatives = "|".join(re.escape(v) for v in versions) or "$^"
    matchers = ['version=~"' + alternatives.replace("\\", "\\\\").replace('"', '\\"') + '"']
    extra = (extra or "").strip()
    if extra.startswith("{") and extra.endswith("}"):
        extra = extra[1:-1].strip()
    if extra:
        matchers.append(extra)
    return ", ".join(matchers)


def _ms(delta: dt.timedelta) -> str:
    return f"{max(1, int(delta.total_seconds() * 1000))}ms"


def _query(client: httpx.Client, url: str, promql: str, at: dt.datetime) -> list[dict[str, Any]]:
    try:
        resp = client.post(f"{url}/api/v1/query", data={"query": promql, "time": f"{at.timestamp():.3f}"})
    except httpx.HTTPError as exc:
        raise PrometheusError(f"cannot reach Prometheus at {url}: {' '.join(str(exc).split()) or type(exc).__name__}"
                              ) from None
    try:
        body = resp.json()
    except ValueError:
        raise PrometheusError(f"{url} answered HTTP {resp.status_code} with no Prometheus API response: is it a "
                              "Prometheus server?") from None
    if not isinstance(body, dict) or body.get("status") != "success":
        what = body.get("error") if isinstance(body, dict) else None
        kind = body.get("errorType") if isinstance(body, dict) else None
        raise PrometheusError(f"Prometheus at {url} refused the query ({kind or 'HTTP ' + str(resp.status_code)}: "
                              f"{what or 'no error message'}): {promql}")
    result = (body.get("data") or {}).get("result")
    return result if isinstance(result, list) else []


def fetch(url: str, versions: list[str], since: dt.datetime, until: dt.datetime, extra: str | None = None,
          timeout: float = 30.0) -> PromAnswers:
    """The raw samples of the router's counters (and histogram buckets) over [since - LOOKBACK, until]."""
    url = url.rstrip("/")
    sel = selector(versions, extra)
    window = _ms(until - since + LOOKBACK)
    answers = PromAnswers(url=url)
    with httpx.Client(timeout=timeout) as client:
        for metric in (ROUTER_ATTEMPTS, ROUTER_ERRORS, ROUTER_FEEDBACK, ROUTER_BUCKETS):
            answers.counters[metric] = _query(client, url, f"{metric}{{{sel}}}[{window}]", until)
    return answers
