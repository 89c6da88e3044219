#!/usr/bin/env bash
# Builds the local cluster's binaries from Go modules into versioned directories under
# ${XDG_CACHE_HOME:-$HOME/.cache}/mlsteward/bin/: Kubernetes (hack/gomod/kube), etcd (hack/gomod/etcd), helm, CoreDNS
# and the pause binary. Each directory carries a stamp of its inputs, so a second run builds nothing. The Go module and
# build caches are the usual ones (GOMODCACHE, GOCACHE), so repeated runs on one machine mostly just link.
#
# Usage: hack/build-bins.sh [--print-path]
#   --print-path  print a PATH fragment with the binary directories (build first if needed).
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

bins_args "$0" "$@"

bins_build_setup .lock "etcd $ETCD_VERSION"

built=0

# Kubernetes.
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
# The module's publication time stands in for the build date, so rebuilding gives the same stamp and binary.
k8s_info="$(cd "$HACK_DIR/gomod/kube" && "$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .Info)"
k8s_date="$(jq -r '.Time // empty' "$k8s_info" 2>/dev/null || true)"
k8s_date="${k8s_date:-1970-01-01T00:00:00Z}"
ver_ldflags=""
# Both version packages, as kubernetes/kubernetes:hack/lib/version.sh does; without them /version and the node's
# kubeletVersion read v0.0.0-master+$Format:%H$.
# The release commit is not part of the module download; an empty gitCommit reads better than "$Format:%H$".
for kv in "gitVersion=$K8S_VERSION" "gitCommit=" "gitMajor=1" "gitMinor=$k8s_minor" "gitTreeState=clean" "buildDate=$k8s_date"; do
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ver_ldflags+=" -X '$pkg.$kv'"
  done
done
k8s_stamp="$(stamp_of k8s "$K8S_VERSION" "$ver_ldflags" "$HACK_DIR/gomod/kube/go.mod" "$HACK_DIR/gomod/kube/go.sum")"
if ! up_to_date "$K8S_BIN" "$k8s_stamp" "${k8s_cmds[@]}"; then
  log "Building Kubernetes $K8S_VERSION (${k8s_cmds[*]}); cold this takes about 6 minutes on 2 cores"
  start=$(date +%s); tmp="$K8S_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  pkgs=(); for c in "${k8s_cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (cd "$HACK_DIR/gomod/kube" && "$GO" build "${GOBUILD_FLAGS[@]}" -tags=selinux,notest,grpcnotrace \
     -ldflags="$ver_ldflags -s -w" -o "$tmp/" "${pkgs[@]}")
  finish "$K8S_BIN" "$tmp" "$k8s_stamp" "$start"; built=1
fi

# etcd: the module root of go.etcd.io/etcd/server/v3 is package main (etcdmain.Main).
etcd_stamp="$(stamp_of etcd "$ETCD_VERSION" "$HACK_DIR/gomod/etcd/go.mod" "$HACK_DIR/gomod/etcd/go.sum")"
if ! up_to_date "$ETCD_BIN" "$etcd_stamp" etcd; then
  log "Building etcd $ETCD_VERSION"
  start=$(date +%s); tmp="$ETCD_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  (cd "$HACK_DIR/gomod/etcd" && "$GO" build "${GOBUILD_FLAGS[@]}" -ldflags="-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  finish "$ETCD_BIN" "$tmp" "$etcd_stamp" "$start"; built=1
fi

# helm and CoreDNS: `go install module@version` (their go.mod files have no replace directives; the checksum
# database verifies the downloads).
go_install() {
  local dir=$1 name=$2 pkg=$3 version=$4 ldflags=$5
  local stamp; stamp="$(stamp_of "$name" "$pkg@$version" "$ldflags")"
  up_to_date "$dir" "$stamp" "$name" && return 0
  log "Building $name $version"
  local start tmp="$dir.tmp"; start=$(date +%s); rm -rf "$tmp"; mkdir -p "$tmp"
  GOBIN="$tmp" "$GO" install "${GOBUILD_FLAGS[@]}" -ldflags="$ldflags -s -w" "$pkg@$version"
  finish "$dir" "$tmp" "$stamp" "$start"; built=1
}
go_install "$HELM_BIN" helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
go_install "$COREDNS_BIN" coredns github.com/coredns/coredns "$COREDNS_VERSION" ""

# pause: kubernetes' pause.c, built static with the flags of its build/pause/Makefile. It is the sandbox image's only
# file, so it must not need a libc at run time.
pause_src="$("$GO" env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c"
[ -f "$pause_src" ] || (cd "$HACK_DIR/gomod/kube" && "$GO" mod download k8s.io/kubernetes)
pause_stamp="$(stamp_of pause "$PAUSE_VERSION" "$pause_src")"
if ! up_to_date "$PAUSE_BIN" "$pause_stamp" pause; then
  command -v gcc >/dev/null 2>&1 || die "gcc not found: run hack/deps.sh (gcc and libc6-dev build the static pause binary)"
  log "Building pause $PAUSE_VERSION"
  start=$(date +%s); tmp="$PAUSE_BIN.tmp"; rm -rf "$tmp"; mkdir -p "$tmp"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-mlsteward" -o "$tmp/pause" "$pause_src"
  strip "$tmp/pause" 2>/dev/null || true
  finish "$PAUSE_BIN" "$tmp" "$pause_stamp" "$start"; built=1
fi

if $print_path; then
  mls_bin_path
  exit 0
fi
[ "$built" = 1 ] || log "All binaries are up to date."
cat >&2 <<EOF
Binaries:
  Kubernetes $K8S_VERSION  $K8S_BIN
  etcd $ETCD_VERSION         $ETCD_BIN
  helm $HELM_VERSION         $HELM_BIN
  CoreDNS $COREDNS_VERSION      $COREDNS_BIN
  pause $PAUSE_VERSION            $PAUSE_BIN
Put them first on PATH (a distribution kubectl may be of another version):
  export PATH="\$($0 --print-path):\$PATH"
EOF
