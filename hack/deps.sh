#!/usr/bin/env bash
# Installs the Debian packages the local cluster, the image build and the benchmarks need (gcc and libc6-dev build
# the static pause binary). Idempotent and quiet when everything is present; needs root (apt-get).
set -euo pipefail
pkgs=(containerd runc containernetworking-plugins iptables conntrack openssl wrk busybox-static debootstrap
      ca-certificates curl jq socat gcc libc6-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
