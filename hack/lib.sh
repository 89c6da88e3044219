# Shared helpers for the hack/ scripts. Source it; it defines variables and functions and runs nothing else.
# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are for the scripts that source this file

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HACK_DIR/.." && pwd)"
MLS_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/mlsteward"
MLS_BIN_ROOT="$MLS_CACHE/bin"

# Go: the toolchain on PATH, else the usual tarball location. GOTOOLCHAIN=local stops go from downloading a newer
# toolchain when a dependency declares a newer `go` line; versions are pinned instead.
if [ -z "${GO:-}" ]; then
  if command -v go >/dev/null 2>&1; then GO=go; else GO=/usr/local/go/bin/go; fi
fi
export GOTOOLCHAIN=local

# Versions. Kubernetes and etcd come from the committed wrapper modules, so go.mod is the single place to bump them.
K8S_VERSION="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$HACK_DIR/gomod/kube/go.mod")"
ETCD_VERSION="$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$HACK_DIR/gomod/etcd/go.mod")"
# helm and CoreDNS have no replace directives in their go.mod, so `go install module@version` builds them as is.
HELM_VERSION="v3.22.0"
COREDNS_VERSION="v1.12.4"
# The pause binary is kubernetes' own build/pause/linux/pause.c from the k8s.io/kubernetes module.
PAUSE_VERSION="3.10"
PAUSE_IMAGE="mlsteward.local/pause:$PAUSE_VERSION"
# A test image made of Debian's busybox-static (1.35 in bookworm), for the cluster smoke test.
BUSYBOX_IMAGE="mlsteward.local/busybox:1.35"

K8S_BIN="$MLS_BIN_ROOT/k8s-$K8S_VERSION"
ETCD_BIN="$MLS_BIN_ROOT/etcd-$ETCD_VERSION"
HELM_BIN="$MLS_BIN_ROOT/helm-$HELM_VERSION"
COREDNS_BIN="$MLS_BIN_ROOT/coredns-$COREDNS_VERSION"
PAUSE_BIN="$MLS_BIN_ROOT/pause-$PAUSE_VERSION"

# All binary dirs, for PATH. They go first because a distribution kubectl of another version may be installed.
mls_bin_path() { echo "$K8S_BIN:$ETCD_BIN:$HELM_BIN:$COREDNS_BIN"; }

# Prometheus, for the report integration test (hack/build-prometheus.sh); the version is the wrapper module's.
PROMETHEUS_VERSION="$(awk '$1 == "github.com/prometheus/prometheus" {print $2; exit}' "$HACK_DIR/gomod/prometheus/go.mod")"
PROMETHEUS_BIN="$MLS_BIN_ROOT/prometheus-$PROMETHEUS_VERSION"

log()  { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf 'error: %s\n' "$*" >&2; exit 1; }

# wait_until DEADLINE_SECONDS DESCRIPTION COMMAND...: polls COMMAND every half second until it succeeds; returns
# 1 after the deadline so that the caller can print what it saw.
wait_until() {
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "Timed out waiting for $what"
      return 1
    fi
    sleep 0.5
  done
}

require_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (network namespaces, iptables, mounts)"; }

# Helpers for the scripts that build binaries from Go modules (build-bins.sh, build-prometheus.sh).

# bins_args SCRIPT ARGS...: the build scripts' arguments: sets print_path for --print-path, prints the script's
# header comment for --help.
bins_args() {
  local script=$1; shift
  print_path=false
  for arg in "$@"; do
    case "$arg" in
      --print-path) print_path=true ;;
      -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$script"; exit 0 ;;
      *) die "unknown argument: $arg" ;;
    esac
  done
}

# bins_build_setup LOCKFILE WHAT: checks the toolchain, takes LOCKFILE under $MLS_BIN_ROOT (one build of a directory
# at a time per machine: the machine has few cores, and two builds of one directory would race) and sets the build
# flags. WHAT names what needs Go >= 1.26 in the error message.
bins_build_setup() {
  local lockfile=$1 what=$2
  command -v "$GO" >/dev/null 2>&1 || die "Go not found (set GO=/path/to/go); Go >= 1.26 is needed for $what"
  go_version="$("$GO" env GOVERSION)"
  mkdir -p "$MLS_BIN_ROOT"
  exec 9>"$MLS_BIN_ROOT/$lockfile"
  if ! flock -n 9; then
    log "Another build holds $lockfile; waiting for it (up to 60 minutes)"
    flock -w 3600 9 || die "timed out waiting for the other build"
  fi
  # Flags as in kubernetes/kubernetes:hack/lib/golang.sh: static (no cgo), trimmed paths, stripped.
  GOBUILD_FLAGS=(-trimpath -buildvcs=false)
  export CGO_ENABLED=0
}

# stamp_of NAME INPUTS...: a hash of what determines the output (versions, toolchain, flags, go.mod/go.sum).
stamp_of() {
  local name=$1; shift
  { echo "$name $go_version ${GOBUILD_FLAGS[*]}"; for x in "$@"; do if [ -f "$x" ]; then cat "$x"; else echo "$x"; fi; done; } \
    | sha256sum | cut -d' ' -f1
}

# up_to_date DIR STAMP BINARIES...: true when DIR holds every binary and the stamp matches.
up_to_date() {
  local dir=$1 stamp=$2; shift 2
  [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ] || return 1
  for b in "$@"; do [ -x "$dir/$b" ] || return 1; done
}

# finish DIR TMPDIR STAMP START: moves a finished build into place in one step and records its stamp.
finish() {
  local dir=$1 tmp=$2 stamp=$3 start=$4
  echo "$stamp" >"$tmp/.stamp"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  log "Built $(basename "$dir") in $(( $(date +%s) - start ))s: $(cd "$dir" && echo *)"
}

# Flux (source-controller, kustomize-controller) and the Git test server, for the GitOps end-to-end test
# (hack/build-flux.sh, hack/gitops.sh); the versions are the wrapper modules'.
FLUX_SOURCE_VERSION="$(awk '$1 == "github.com/fluxcd/source-controller" {print $2; exit}' "$HACK_DIR/gomod/flux-source/go.mod")"
FLUX_KUSTOMIZE_VERSION="$(awk '$1 == "github.com/fluxcd/kustomize-controller" {print $2; exit}' "$HACK_DIR/gomod/flux-kustomize/go.mod")"
FLUX_BIN="$MLS_BIN_ROOT/flux-source-$FLUX_SOURCE_VERSION-kustomize-$FLUX_KUSTOMIZE_VERSION"
