#!/usr/bin/env bash
# Builds the Prometheus server from its Go module (hack/gomod/prometheus) into
# ${XDG_CACHE_HOME:-$HOME/.cache}/mlsteward/bin/prometheus-<version>/, for the report integration test, which scrapes
# real router and predictor processes with it. Like build-bins.sh: a stamp of the inputs, so a second run builds
# nothing; its own lock, so it does not wait for a Kubernetes build.
#
# Usage: hack/build-prometheus.sh [--print-path]
#   --print-path  print the binary's directory (build first if needed).
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

bins_args "$0" "$@"

bins_build_setup .lock-prometheus "Prometheus $PROMETHEUS_VERSION"

# remove_all_sd leaves out the service-discovery plugins (cloud SDKs; one of them, nomad/api, pins a pseudo-version
# the module proxy does not serve). The test uses static_configs only. Without the builtinassets tag the web UI's
# assets are read from disk, which the HTTP API does not need.
prom_tags="remove_all_sd"
prom_stamp="$(stamp_of prometheus "$PROMETHEUS_VERSION" "$prom_tags" "version-ldflag" "$HACK_DIR/gomod/prometheus/go.mod" "$HACK_DIR/gomod/prometheus/go.sum")"
if ! up_to_date "$PROMETHEUS_BIN" "$prom_stamp" prometheus; then
  log "Building Prometheus $PROMETHEUS_VERSION; cold this took 98 s on 2 cores (module downloads apart)"
  start=$(date +%s); tmp="$PROMETHEUS_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$HACK_DIR/gomod/prometheus" && "$GO" build "${GOBUILD_FLAGS[@]}" -tags="$prom_tags" \
     -ldflags="-X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION -s -w" \
     -o "$tmp/prometheus" github.com/prometheus/prometheus/cmd/prometheus)
  finish "$PROMETHEUS_BIN" "$tmp" "$prom_stamp" "$start"
fi

if $print_path; then
  echo "$PROMETHEUS_BIN"
fi
