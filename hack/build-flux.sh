#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller from their Go modules (hack/gomod/flux-source,
# hack/gomod/flux-kustomize) and the Flux project's Git test server (hack/gitserver) into
# ${XDG_CACHE_HOME:-$HOME/.cache}/mlsteward/bin/flux-source-<v>-kustomize-<v>/, for the GitOps end-to-end test
# (hack/gitops.sh runs them). Both controllers' go.mod carry replace directives, which `go install module@version`
# refuses (golang/go#44840), so each is built from a wrapper module that repeats their replaces; the two wrappers
# are kept apart so that minimal version selection does not mix their dependencies. Like build-bins.sh: a stamp of
# the inputs, so a second run builds nothing; its own lock.
#
# Usage: hack/build-flux.sh [--print-path]
#   --print-path  print the binaries' directory (build first if needed).
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

bins_args "$0" "$@"

bins_build_setup .lock-flux "Flux $FLUX_SOURCE_VERSION"

inputs=()
for m in gomod/flux-source gomod/flux-kustomize gitserver; do
  inputs+=("$HACK_DIR/$m/go.mod" "$HACK_DIR/$m/go.sum")
done
flux_stamp="$(stamp_of flux "$FLUX_SOURCE_VERSION" "$FLUX_KUSTOMIZE_VERSION" "${inputs[@]}" "$HACK_DIR/gitserver/main.go")"
if ! up_to_date "$FLUX_BIN" "$flux_stamp" source-controller kustomize-controller gitserver; then
  log "Building Flux source-controller $FLUX_SOURCE_VERSION, kustomize-controller $FLUX_KUSTOMIZE_VERSION and the Git test server"
  start=$(date +%s); tmp="$FLUX_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$HACK_DIR/gomod/flux-source" && "$GO" build "${GOBUILD_FLAGS[@]}" -ldflags="-s -w" \
     -o "$tmp/source-controller" github.com/fluxcd/source-controller)
  (cd "$HACK_DIR/gomod/flux-kustomize" && "$GO" build "${GOBUILD_FLAGS[@]}" -ldflags="-s -w" \
     -o "$tmp/kustomize-controller" github.com/fluxcd/kustomize-controller)
  (cd "$HACK_DIR/gitserver" && "$GO" build "${GOBUILD_FLAGS[@]}" -ldflags="-s -w" -o "$tmp/gitserver" .)
  finish "$FLUX_BIN" "$tmp" "$flux_stamp" "$start"
fi

if $print_path; then
  echo "$FLUX_BIN"
fi
