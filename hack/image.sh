#!/usr/bin/env bash
# Builds the mlsteward image without a container engine and imports it into the local cluster's containerd.
# It is the offline equivalent of the Dockerfile: Debian bookworm with python3 from apt, a virtualenv at
# /opt/mlsteward with the project's dependencies, the project itself, user 10001, entrypoint `mlsteward`.
#
# Usage: hack/image.sh [--dir CLUSTER_DIR] [--no-import] [--archive FILE]
#   --dir DIR       the cluster's run directory (as for hack/cluster.sh; default the same)
#   --no-import     only build the layers (and the archive if asked)
#   --archive FILE  also write the image as an OCI archive (e.g. for `kind load image-archive` or `ctr import`)
#
# Three layers, each cached under ${XDG_CACHE_HOME:-$HOME/.cache}/mlsteward/image/:
#   base  debootstrap --variant=minbase of bookworm with python3, python3-venv, ca-certificates (key: the recipe)
#   deps  the virtualenv with the dependencies from pyproject.toml, installed from wheels (key: pyproject.toml)
#   app   the project's wheel installed into the virtualenv (key: the source files; rebuilt in seconds)
# deps and app are made as overlayfs upper directories over the layers below them, so each holds exactly what its
# step changed. The tag (mlsteward.local/mlsteward:<version>-<source hash>) is written to _out/image-tag.
# Needs root (debootstrap, chroot, mounts).
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

CLUSTER_DIR=""; DO_IMPORT=true; ARCHIVE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) CLUSTER_DIR="$2"; shift 2 ;;
    --no-import) DO_IMPORT=false; shift ;;
    --archive) ARCHIVE="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
require_root "building the image"
if [ -z "$CLUSTER_DIR" ]; then
  CLUSTER_DIR="$("$HACK_DIR/cluster.sh" env | sed 's/^export KUBECONFIG=//; s|/admin.kubeconfig$||')"
fi

IMG_CACHE="$MLS_CACHE/image"
SUITE=bookworm
BASE_PACKAGES="python3,python3-venv,ca-certificates"
APP_UID=10001
PY="${PYTHON:-$REPO_ROOT/.venv/bin/python}"; [ -x "$PY" ] || PY=python3
mkdir -p "$IMG_CACHE"
t_all=$(date +%s)

# Only one build at a time: the cache directories are shared.
exec 9>"$IMG_CACHE/.lock"
flock -w 1800 9 || die "another image build holds $IMG_CACHE/.lock"

MOUNTS=()
cleanup() {
  local i
  for (( i=${#MOUNTS[@]}-1; i>=0; i-- )); do umount "${MOUNTS[$i]}" 2>/dev/null || umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT

# overlay_chroot MERGED LOWERS UPPER WORK: mounts an overlay and the /dev and /proc the steps inside need.
overlay_mount() {
  local merged=$1 lowers=$2 upper=$3 work=$4
  mkdir -p "$merged" "$upper" "$work"
  mount -t overlay overlay -o "lowerdir=$lowers,upperdir=$upper,workdir=$work" "$merged"; MOUNTS+=("$merged")
  mount --bind /dev "$merged/dev"; MOUNTS+=("$merged/dev")
  mount -t proc proc "$merged/proc"; MOUNTS+=("$merged/proc")
}
overlay_umount() { cleanup; MOUNTS=(); }

# in_chroot ROOT COMMAND...: runs COMMAND in ROOT with a clean environment (no host pip configuration).
in_chroot() {
  local root=$1; shift
  chroot "$root" /usr/bin/env -i PATH=/opt/mlsteward/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp LANG=C.UTF-8 "$@"
}

# ------------------------------------------------------------------------------------------------------------- base
base_recipe="suite=$SUITE variant=minbase include=$BASE_PACKAGES uid=$APP_UID recipe=1"
base_key="$(echo "$base_recipe" | sha256sum | cut -c1-12)"
BASE="$IMG_CACHE/base-$base_key"
if [ ! -f "$BASE/layer.tar" ]; then
  t0=$(date +%s)
  command -v debootstrap >/dev/null || die "debootstrap missing: run hack/deps.sh"
  # The mirror this machine's apt uses (override with DEBIAN_MIRROR).
  mirror="${DEBIAN_MIRROR:-$(awk '/^URIs:/{u=$2} /^Suites:/{for(i=2;i<=NF;i++) if ($i=="'"$SUITE"'") {print u; exit}}' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)}"
  [ -n "$mirror" ] || mirror="$(awk '$1=="deb" && $3=="'"$SUITE"'" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  [ -n "$mirror" ] || die "no Debian mirror found in apt's sources; set DEBIAN_MIRROR"
  log "Building the base layer: debootstrap $SUITE (minbase + $BASE_PACKAGES) from $mirror; takes a few minutes once"
  rm -rf "$BASE"; mkdir -p "$BASE"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$BASE/rootfs" "$mirror" >"$BASE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$BASE/debootstrap.log" >&2; die "debootstrap failed (log: $BASE/debootstrap.log)"; }
  chroot "$BASE/rootfs" groupadd --gid "$APP_UID" mlsteward
  chroot "$BASE/rootfs" useradd --uid "$APP_UID" --gid "$APP_UID" --home-dir /home/mlsteward --create-home \
    --shell /usr/sbin/nologin mlsteward
  # What debian:bookworm-slim leaves out too: package lists and caches, logs, manuals, docs (copyright files stay).
  (cd "$BASE/rootfs" && rm -rf var/lib/apt/lists/* var/cache/apt/* var/cache/debconf/*-old var/log/* \
     usr/share/man/* usr/share/info/* dev/* && find usr/share/doc -mindepth 1 ! -name copyright ! -type d -delete)
  python3 "$HACK_DIR/oci.py" layer --out "$BASE/layer.tar" "$BASE/rootfs"
  log "Base layer built in $(( $(date +%s) - t0 ))s ($(du -sh "$BASE/layer.tar" | cut -f1))"
fi

# ------------------------------------------------------------------------------------------------------------- deps
deps_key="$( { echo "$base_key"; cat "$REPO_ROOT/pyproject.toml"; } | sha256sum | cut -c1-12)"
DEPS="$IMG_CACHE/deps-$deps_key"
if [ ! -f "$DEPS/layer.tar" ]; then
  t0=$(date +%s)
  log "Building the dependencies layer (pyproject.toml changed or first build)"
  rm -rf "$DEPS"; mkdir -p "$DEPS/wheels"
  "$PY" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
    "$REPO_ROOT/pyproject.toml" >"$DEPS/wheels/requirements.txt"
  # Wheels for the image's interpreter (CPython 3.11 on glibc 2.36), downloaded by the host's pip with its usual
  # configuration; pip matches exact platform tags, so every manylinux level up to glibc 2.36 is listed.
  plat=(--platform manylinux2014_x86_64)
  for v in $(seq 17 36); do plat+=(--platform "manylinux_2_${v}_x86_64"); done
  "$PY" -m pip download -q --only-binary=:all: "${plat[@]}" --python-version 3.11 --implementation cp --abi cp311 \
    -d "$DEPS/wheels" -r "$DEPS/wheels/requirements.txt"
  overlay_mount "$DEPS/merged" "$BASE/rootfs" "$DEPS/upper" "$DEPS/work"
  mkdir -p "$DEPS/merged/tmp/wheels"; mount --bind "$DEPS/wheels" "$DEPS/merged/tmp/wheels"; MOUNTS+=("$DEPS/merged/tmp/wheels")
  in_chroot "$DEPS/merged" PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m venv /opt/mlsteward
  in_chroot "$DEPS/merged" pip install -q --no-index --no-cache-dir --find-links /tmp/wheels \
    -r /tmp/wheels/requirements.txt
  overlay_umount
  rmdir "$DEPS/upper/tmp/wheels" 2>/dev/null || true
  python3 "$HACK_DIR/oci.py" layer --out "$DEPS/layer.tar" "$DEPS/upper"
  rm -rf "$DEPS/wheels" "$DEPS/work" "$DEPS/merged"
  # Older dependency layers are of no further use.
  find "$IMG_CACHE" -maxdepth 1 -name 'deps-*' ! -name "deps-$deps_key" -exec rm -rf {} +
  log "Dependencies layer built in $(( $(date +%s) - t0 ))s ($(du -sh "$DEPS/layer.tar" | cut -f1))"
fi

# -------------------------------------------------------------------------------------------------------------- app
t0=$(date +%s)
version="$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO_ROOT/pyproject.toml")"
src_files=(pyproject.toml README.md operator runtime)
src_hash="$(cd "$REPO_ROOT" && find "${src_files[@]}" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
  | sort -z | xargs -0 sha256sum | { cat; echo "$deps_key"; } | sha256sum | cut -c1-12)"
TAG="$version-$src_hash"
IMAGE="mlsteward.local/mlsteward:$TAG"
APP="$IMG_CACHE/app-$src_hash"
if [ ! -f "$APP/layer.tar" ]; then
  rm -rf "$APP"; mkdir -p "$APP/src" "$APP/dist"
  # Build from a copy, so that the working tree gets no build/ or egg-info from this.
  (cd "$REPO_ROOT" && tar -cf - --exclude=__pycache__ --exclude='*.egg-info' "${src_files[@]}") | tar -xf - -C "$APP/src"
  "$PY" -m pip wheel -q --no-deps -w "$APP/dist" "$APP/src" >/dev/null
  overlay_mount "$APP/merged" "$DEPS/upper:$BASE/rootfs" "$APP/upper" "$APP/work"
  mkdir -p "$APP/merged/tmp/app"; mount --bind "$APP/dist" "$APP/merged/tmp/app"; MOUNTS+=("$APP/merged/tmp/app")
  in_chroot "$APP/merged" sh -c 'pip install -q --no-deps --no-index --no-cache-dir /tmp/app/*.whl'
  in_chroot "$APP/merged" mlsteward --help >/dev/null || die "the installed mlsteward command does not run"
  overlay_umount
  rmdir "$APP/upper/tmp/app" 2>/dev/null || true
  python3 "$HACK_DIR/oci.py" layer --out "$APP/layer.tar" "$APP/upper"
  rm -rf "$APP/src" "$APP/work" "$APP/merged"
fi
# Keep the five newest application layers.
ls -1dt "$IMG_CACHE"/app-* 2>/dev/null | tail -n +6 | xargs -r rm -rf

# ------------------------------------------------------------------------------------------------------------ image
revision="$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
image_args=(--name "$IMAGE" --layer "$BASE/layer.tar" --layer "$DEPS/layer.tar" --layer "$APP/layer.tar"
  --entrypoint '["mlsteward"]' --user "$APP_UID:$APP_UID" --workdir /home/mlsteward
  --env PATH=/opt/mlsteward/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  --env VIRTUAL_ENV=/opt/mlsteward --env PYTHONUNBUFFERED=1 --env PYTHONDONTWRITEBYTECODE=1 --env HOME=/home/mlsteward
  --label org.opencontainers.image.title=mlsteward --label "org.opencontainers.image.version=$TAG"
  --label "org.opencontainers.image.revision=$revision" --label org.opencontainers.image.licenses=Apache-2.0)
mkdir -p "$REPO_ROOT/_out"
echo "$IMAGE" >"$REPO_ROOT/_out/image-tag"
if [ -n "$ARCHIVE" ]; then
  python3 "$HACK_DIR/oci.py" image --out "$ARCHIVE" "${image_args[@]}" >/dev/null
  log "Wrote $ARCHIVE"
fi
if $DO_IMPORT; then
  sock="$CLUSTER_DIR/containerd/containerd.sock"
  if [ -S "$sock" ]; then
    # Layers containerd already holds (the base and dependencies, usually) are left out of the stream.
    have="$(mktemp)"
    ctr --address "$sock" -n k8s.io content ls -q >"$have"
    python3 "$HACK_DIR/oci.py" image --out - --omit-blobs "$have" "${image_args[@]}" 2>/dev/null \
      | ctr --address "$sock" -n k8s.io images import --snapshotter overlayfs - >/dev/null
    rm -f "$have"
    log "Imported $IMAGE into the cluster in $CLUSTER_DIR"
  else
    log "No cluster containerd at $sock (start one with hack/cluster.sh up); the image was not imported"
  fi
fi
log "Image $IMAGE ready in $(( $(date +%s) - t_all ))s (application layer $(( $(date +%s) - t0 ))s); tag in _out/image-tag"
echo "$IMAGE"
