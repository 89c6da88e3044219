"""`mlsteward report`: a ModelDeployment's performance over a time range, from Prometheus or from status."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from urllib.parse import urlsplit

HELP = "Summarise a ModelDeployment's traffic, latency, errors, drift and decisions over a time range."
DESCRIPTION = """\
Summarise DEPLOYMENT over a time range: requests, errors, error rate, latency p50/p95/p99, feedback, accuracy and
mean reward per version and in total; the decisions the operator took, the alerts firing now, the drift checks and
actions of its DriftMonitors, and the Experiments that ran.

Traffic figures come from Prometheus when --prometheus (or $MLSTEWARD_PROMETHEUS_URL) is given: the router's
counters and latency histogram, exact counts over the range. Otherwise they are estimated from the deployment's
status.health.samples (filled while spec.alerts is set; one sample per interval, the last 240 kept), and the
report marks them as estimates. An unreachable Prometheus is an error, not a silent fallback: pass
--prometheus '' to use status. Everything else comes from the objects (the cluster, or --file).

examples:
  mlsteward report iris -n models --since 24h
  mlsteward report iris -n models --since 2h --prometheus http://prometheus.monitoring:9090 --format markdown
  mlsteward report iris --since 7d --until 2026-01-31T00:00:00Z --format json
  kubectl get md,exp,dm -n models -o yaml > objects.yaml && mlsteward report iris --file objects.yaml
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mlsteward_runtime.cluster.objects import add_cluster_arguments

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("deployment", metavar="DEPLOYMENT", help="Name of the ModelDeployment.")
    add_cluster_arguments(parser, "Namespace (default: the kubeconfig context's, or with --file the "
                          "ModelDeployment's own).")
    parser.add_argument("--since", default="24h", metavar="DURATION",
                        help="Length of the range, ending at --until (e.g. 24h, 90m, 7d; default 24h).")
    parser.add_argument("--until", default="now", metavar="TIME",
                        help="End of the range: now (default) or an RFC 3339 time such as 2026-01-31T12:00:00Z.")
    parser.add_argument("--prometheus", default=os.environ.get("MLSTEWARD_PROMETHEUS_URL") or None, metavar="URL",
                        help="Prometheus base URL for the traffic figures (default: $MLSTEWARD_PROMETHEUS_URL; "
                        "'' uses status).")
    parser.add_argument("--selector", metavar="MATCHERS",
                        help='Extra PromQL label matchers for the router metrics, e.g. \'namespace="models"\'.')
    parser.add_argument("--format", default="text", choices=("text", "markdown", "json"),
                        help="Output format (default text).")
    parser.add_argument("--file", "-f", action="append", default=[], metavar="FILE.yaml",
                        help="Read objects from this YAML file instead of the cluster (repeatable; - is stdin).")
    parser.add_argument("--output", "-o", metavar="FILE", help="Write the report to FILE instead of standard output.")


def _range(since: str, until: str) -> tuple[dt.datetime, dt.datetime]:
    from mlsteward_runtime.errors import UsageError
    from mlsteward_runtime.cluster.report import parse_duration, parse_time

    if until.strip().lower() == "now":
        end = dt.datetime.now(dt.timezone.utc)
    else:
        parsed = parse_time(until)
        if parsed is None:
            raise UsageError(f"--until: {until!r} is neither 'now' nor an RFC 3339 time (e.g. 2026-01-31T12:00:00Z)")
        end = parsed
    try:
        length = parse_duration(since)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    return end - length, end


def _prometheus_url(url: str) -> str:
    from mlsteward_runtime.errors import UsageError

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--prometheus: {url!r} is not an http(s) URL (e.g. http://prometheus.monitoring:9090)")
    return url


def run(args: argparse.Namespace) -> int:
    from mlsteward_runtime.cluster.objects import read_cluster, read_files, write_output
    from mlsteward_runtime.errors import UsageError
    from mlsteward_runtime.cluster.report import ReportError, build_report, find_deployment, render, versions_of

    since, until = _range(args.since, args.until)
    url = _prometheus_url(args.prometheus) if args.prometheus else None
    if args.file:
        objects, namespace = read_files(args.file), args.namespace
    else:
        objects, namespace = read_cluster(args.kubeconfig, args.namespace,
                                          ("ModelDeployment", "Experiment", "DriftMonitor"), context=args.context)
    source = ", ".join(args.file) if args.file else "the cluster"
    try:
        prom = None
        if url is not None:
            from mlsteward_runtime.cluster.promclient import PrometheusError, fetch

            md = find_deployment(objects, args.deployment, namespace)
            try:
                prom = fetch(url, versions_of(md), since, until, args.selector)
            except PrometheusError as exc:
                raise UsageError(f"--prometheus: {exc}") from None
        report = build_report(objects, args.deployment, since=since, until=until, namespace=namespace,
                              prometheus=prom)
    except ReportError as exc:
        raise UsageError(f"{exc}; read from {source}") from None
    write_output(render(report, args.format), args.output)
    return 0
