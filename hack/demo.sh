#!/usr/bin/env bash
# `make demo [CLUSTER=local|kind]`: build what is missing, bring a cluster up, build and load the image, install
# the chart, then run hack/demo.py (train, register, validate, deploy, predict, switch). Safe to re-run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
CLUSTER="${1:-local}"
PY="$REPO_ROOT/.venv/bin/python"

case "$CLUSTER" in
  local)
    hack/build-bins.sh
    hack/cluster.sh up
    eval "$(hack/cluster.sh env)"
    export PATH="$(mls_bin_path):$PATH"
    hack/image.sh
    IMAGE="$(cat _out/image-tag)"
    DEMO_ARGS=(--host-curl)
    ;;
  kind)
    DEMO_ARGS=()
    # Where Docker exists: the same demo on kind. The image is built with the Dockerfile and loaded into the node.
    command -v kind >/dev/null && command -v docker >/dev/null || die "CLUSTER=kind needs kind and docker on PATH"
    export PATH="$(mls_bin_path):$PATH"
    kind get clusters 2>/dev/null | grep -qx mlsteward || kind create cluster --name mlsteward --wait 120s
    kubectl config use-context kind-mlsteward >/dev/null
    IMAGE="mlsteward:$("$PY" -c 'import importlib.metadata as m; print(m.version("mlsteward"))')-$(git rev-parse --short HEAD)"
    docker build -t "$IMAGE" .
    mkdir -p _out && docker save "$IMAGE" -o _out/image.tar && kind load image-archive _out/image.tar --name mlsteward
    ;;
  *) die "unknown CLUSTER=$CLUSTER (local or kind)" ;;
esac

log "Installing the chart (image $IMAGE)"
helm upgrade --install mlsteward charts/mlsteward -n mlsteward-system --create-namespace \
  --set "image.repository=${IMAGE%:*}" --set "image.tag=${IMAGE##*:}" --wait --timeout 240s >/dev/null
"$PY" hack/demo.py --image "$IMAGE" "${DEMO_ARGS[@]}"
