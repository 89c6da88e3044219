#!/usr/bin/env bash
# Flux on the local cluster: source-controller and kustomize-controller (built from their Go modules by
# hack/build-flux.sh) run as host processes against the cluster's API server, as the Flux projects run them in
# development (`make run`), beside a Git server on the machine (the Flux project's gittestserver, hack/gitserver)
# from which they sync. Nothing is pulled; the controllers reach Git and each other on 127.0.0.1.
#
# Usage: hack/gitops.sh up|down|status|env [--dir DIR]
#   up      build (cached), install Flux's CRDs, start the Git server and both controllers; waits until they are
#           healthy (idempotent: running ones are left as they are)
#   down    stop them and remove their state (hack/cluster.sh down stops them too)
#   status  show the processes and the Git server's URL
#   env     print `export MLS_GIT_URL=...` (the Git server's base URL; a push to <url>/<name>.git creates it)
# Options:
#   --dir DIR  the cluster's run directory (default: hack/cluster.sh's); state goes to DIR/gitops, pids and logs to
#              DIR/pids and DIR/logs. KUBECONFIG, when set, names the cluster; else DIR/admin.kubeconfig.
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit "${1:-0}"; }

cmd="${1:-}"; [ -n "$cmd" ] || usage 2; shift
DIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
if [ -z "$DIR" ]; then
  base="${XDG_RUNTIME_DIR:-/run}"
  if [ -w "$base" ]; then DIR="$base/mlsteward-cluster"; else DIR="/tmp/mlsteward-cluster-$(id -u)"; fi
fi
STATE="$DIR/gitops"; LOGS="$DIR/logs"; PIDS="$DIR/pids"
KCFG="${KUBECONFIG:-$DIR/admin.kubeconfig}"
KUBECTL="$K8S_BIN/kubectl"
NAMESPACE="flux-system"
# Loopback ports of the controllers' endpoints; the artifact server is the one kustomize-controller fetches from.
STORAGE_ADDR="127.0.0.1:19090"
SOURCE_HEALTH="127.0.0.1:19440"; SOURCE_METRICS="127.0.0.1:18080"
KUSTOMIZE_HEALTH="127.0.0.1:19441"; KUSTOMIZE_METRICS="127.0.0.1:18081"
PROCS=(flux-gitserver flux-source-controller flux-kustomize-controller)

kubectl_() { "$KUBECTL" --kubeconfig "$KCFG" --request-timeout=20s "$@"; }
pid_of() { cat "$PIDS/$1.pid" 2>/dev/null || true; }
alive() { local p; p="$(pid_of "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
start() {
  local name=$1; shift
  if alive "$name"; then return 0; fi
  log "Starting $name"
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}
fail() { log "$1"; for p in "${PROCS[@]}"; do [ -f "$LOGS/$p.log" ] && { echo "--- $p.log" >&2; tail -n 20 "$LOGS/$p.log" >&2; }; done; exit 1; }
healthy() { curl -fs --max-time 2 "http://$1/readyz" >/dev/null; }

cmd_up() {
  [ -f "$KCFG" ] || die "no kubeconfig at $KCFG: start the cluster first (hack/cluster.sh up)"
  mkdir -p "$STATE/repos" "$STATE/storage" "$LOGS" "$PIDS"
  hack_bin="$("$HACK_DIR/build-flux.sh" --print-path)"
  local modcache; modcache="$("$GO" env GOMODCACHE)"
  local crds=("$modcache/github.com/fluxcd/source-controller@$FLUX_SOURCE_VERSION/config/crd/bases"
              "$modcache/github.com/fluxcd/kustomize-controller@$FLUX_KUSTOMIZE_VERSION/config/crd/bases")
  for d in "${crds[@]}"; do [ -d "$d" ] || die "Flux CRDs not found in $d (hack/build-flux.sh downloads them)"; done
  kubectl_ apply --server-side --force-conflicts -f "${crds[0]}" -f "${crds[1]}" >/dev/null
  kubectl_ wait --for=condition=Established --timeout=60s crd/gitrepositories.source.toolkit.fluxcd.io \
    crd/kustomizations.kustomize.toolkit.fluxcd.io >/dev/null
  kubectl_ get namespace "$NAMESPACE" >/dev/null 2>&1 || kubectl_ create namespace "$NAMESPACE" >/dev/null

  alive flux-gitserver || { rm -f "$STATE/git-url"; start flux-gitserver "$hack_bin/gitserver" -root "$STATE/repos" -url-file "$STATE/git-url"; }
  export KUBECONFIG="$KCFG" RUNTIME_NAMESPACE="$NAMESPACE"
  start flux-source-controller "$hack_bin/source-controller" --watch-all-namespaces=true \
    --storage-path="$STATE/storage" --storage-addr="$STORAGE_ADDR" --storage-adv-addr="$STORAGE_ADDR" \
    --health-addr="$SOURCE_HEALTH" --metrics-addr="$SOURCE_METRICS" --enable-leader-election=false --log-level=info
  start flux-kustomize-controller "$hack_bin/kustomize-controller" --watch-all-namespaces=true \
    --health-addr="$KUSTOMIZE_HEALTH" --metrics-addr="$KUSTOMIZE_METRICS" --enable-leader-election=false \
    --log-level=info
  local deadline=$(( $(date +%s) + 90 ))
  until [ -s "$STATE/git-url" ] && healthy "$SOURCE_HEALTH" && healthy "$KUSTOMIZE_HEALTH"; do
    for p in "${PROCS[@]}"; do alive "$p" || fail "$p exited"; done
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for Flux and the Git server"
    sleep 0.5
  done
  log "Flux is up; Git server at $(cat "$STATE/git-url")"
}

cmd_down() {
  local p pid
  for p in "${PROCS[@]}"; do
    pid="$(pid_of "$p")"
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  sleep 1
  for p in "${PROCS[@]}"; do
    pid="$(pid_of "$p")"
    if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -f "$PIDS/$p.pid"
  done
  rm -rf "$STATE"
  log "Flux and the Git server stopped."
}

cmd_status() {
  local rc=0 p
  for p in "${PROCS[@]}"; do
    if alive "$p"; then printf '  %-26s running (pid %s)\n' "$p" "$(pid_of "$p")"
    else printf '  %-26s NOT RUNNING (log %s)\n' "$p" "$LOGS/$p.log"; rc=1; fi
  done
  [ -s "$STATE/git-url" ] && echo "  Git server: $(cat "$STATE/git-url")"
  return $rc
}

case "$cmd" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) [ -s "$STATE/git-url" ] || die "the Git server is not running (hack/gitops.sh up)"; echo "export MLS_GIT_URL=$(cat "$STATE/git-url")" ;;
  *) usage 2 ;;
esac
