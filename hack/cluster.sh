#!/usr/bin/env bash
# A single-node Kubernetes cluster from the binaries hack/build-bins.sh builds, every component a host process (as
# kubernetes/kubernetes:hack/local-up-cluster.sh does). Nothing is pulled and no traffic leaves the machine.
#
# Usage: hack/cluster.sh up|down|status|env [--tier A|B] [--dir DIR] [--api-port N] [--etcd-port N] [--node-ip IP]
#   up      start the cluster (idempotent: a running cluster is left as it is); waits for /readyz (and node Ready)
#   down    stop everything recorded in DIR and remove what the cluster made (processes, mounts, cgroups, iptables
#           chains, the cni0 bridge, DIR itself)
#   status  show the components and the nodes
#   env     print `export KUBECONFIG=...` (use: eval "$(hack/cluster.sh env)")
# Options:
#   --tier A   etcd, kube-apiserver, kube-controller-manager, kube-scheduler (no root needed if a node IP exists)
#   --tier B   (default) also containerd, kubelet, kube-proxy, CoreDNS and the bridge CNI (root; one per machine)
#   --dir DIR  run directory (default ${XDG_RUNTIME_DIR:-/run}/mlsteward-cluster, or /tmp/mlsteward-cluster-$UID when
#              that is not writable); holds certificates, kubeconfigs, logs, pids and all state
#   --api-port N (default 6443), --etcd-port N (default 2379; the peer port is N+1)
#   --node-ip IP  the node's address (default: the source address of the default route; without a default route, or
#                 with `--node-ip dummy`, 10.254.254.1/32 is put on a dummy interface mlsteward0, or on lo where the
#                 kernel has no dummy driver; used only as the node's address, and removed again by `down`)
set -euo pipefail
# shellcheck source=hack/lib.sh
source "$(dirname "$0")/lib.sh"

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit "${1:-0}"; }

cmd="${1:-}"; [ -n "$cmd" ] || usage 2; shift
TIER=B; DIR=""; API_PORT=6443; ETCD_PORT=2379; NODE_IP="${NODE_IP:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --tier) TIER="${2^^}"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --api-port) API_PORT="$2"; shift 2 ;;
    --etcd-port) ETCD_PORT="$2"; shift 2 ;;
    --node-ip) NODE_IP="$2"; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 ;;
  esac
done
[[ "$TIER" =~ ^[AB]$ ]] || die "--tier must be A or B"
if [ -z "$DIR" ]; then
  base="${XDG_RUNTIME_DIR:-/run}"
  if [ -w "$base" ]; then DIR="$base/mlsteward-cluster"; else DIR="/tmp/mlsteward-cluster-$(id -u)"; fi
fi
mkdir -p "$(dirname "$DIR")"
DIR="$(cd "$(dirname "$DIR")" && pwd)/$(basename "$DIR")"

PKI="$DIR/pki"; LOGS="$DIR/logs"; PIDS="$DIR/pids"
KUBECONFIG_ADMIN="$DIR/admin.kubeconfig"
# MLS_SERVICE_CIDR widens the Service range (it must start at 10.0.0.0): the operator scale benchmark makes two
# Services per ModelDeployment, more than a /24 holds at N = 1,000.
SERVICE_CIDR="${MLS_SERVICE_CIDR:-10.0.0.0/24}"; SERVICE_FIRST_IP="10.0.0.1"
POD_CIDR="10.88.0.0/16"
CLUSTER_DOMAIN="cluster.local"
CGROUP_PARENT="mlsteward"            # kubelet's cgroupRoot; containerd and every pod live below it
DUMMY_IF="mlsteward0"; DUMMY_IP="10.254.254.1"
# Kernel settings kubelet, kube-proxy and the bridge plugin change; `up` records them and `down` restores them.
SYSCTLS=(net.ipv4.ip_forward net.ipv4.conf.all.route_localnet vm.overcommit_memory vm.panic_on_oom kernel.panic
         kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.bridge.bridge-nf-call-iptables
         net.netfilter.nf_conntrack_max)
PATH="$(mls_bin_path):$PATH"; export PATH
KUBECTL="$K8S_BIN/kubectl"
CTR=(ctr --address "$DIR/containerd/containerd.sock" -n k8s.io)

kubectl_admin() { "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout=10s "$@"; }

# ---------------------------------------------------------------------------------------------------------- processes

pid_of() { cat "$PIDS/$1.pid" 2>/dev/null || true; }
alive() { local p; p="$(pid_of "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# start NAME COMMAND...: runs COMMAND detached with setsid (so that the caller's exit does not stop it), logs to
# logs/NAME.log, records the pid.
start() {
  local name=$1; shift
  log "Starting $name"
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
}

# stop NAME...: SIGKILL, and wait (up to 10 seconds) until they are gone. `down` throws all state away, so a graceful
# shutdown (about 2 seconds per component here) would buy nothing.
stop() {
  local name p pids=()
  for name in "$@"; do
    p="$(pid_of "$name")"
    if [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; then pids+=("$p"); fi
    rm -f "$PIDS/$name.pid"
  done
  local deadline=$(( $(date +%s) + 10 ))
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null; do
      [ "$(date +%s)" -lt "$deadline" ] || { log "Process $p is still there after SIGKILL"; break; }
      sleep 0.1
    done
  done
}

components() {
  local c=(etcd kube-apiserver kube-controller-manager kube-scheduler)
  [ "$(cat "$DIR/tier" 2>/dev/null || echo "$TIER")" = B ] && c+=(containerd kubelet kube-proxy coredns)
  echo "${c[@]}"
}

# wait_for NAME SECONDS WHAT COMMAND...: like wait_until, but gives up at once when component NAME has exited.
wait_for() {
  local name=$1 secs=$2 what=$3; shift 3
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    alive "$name" || fail "$name exited while waiting for $what"
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${secs}s waiting for $what"
    sleep 0.5
  done
}

# fail MESSAGE: prints the last lines of every component's log, where the full logs are, and exits.
fail() {
  echo "error: $*" >&2
  for c in $(components); do
    [ -f "$LOGS/$c.log" ] || continue
    local state="not running"; alive "$c" && state="running (pid $(pid_of "$c"))"
    echo "----- $c: $state; last lines of $LOGS/$c.log" >&2
    tail -n 15 "$LOGS/$c.log" >&2
  done
  echo "Full logs: $LOGS/. Clean up with: $0 down --dir $DIR" >&2
  exit 1
}

# --------------------------------------------------------------------------------------------------------- node IP

pick_node_ip() {
  if [ -n "$NODE_IP" ] && [ "$NODE_IP" != dummy ]; then return; fi
  if [ -z "$NODE_IP" ]; then
    # `ip route get` only reads the routing table; nothing is sent.
    NODE_IP="$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p' | head -n1)"
  fi
  if [ -z "$NODE_IP" ] || [ "$NODE_IP" = dummy ]; then
    # kube-apiserver needs a non-loopback advertise address and refuses to guess one without a default route
    # (https://github.com/openshift/microshift/pull/876); kubelet rejects a loopback node IP. A dummy interface gives
    # the node a private address that exists only on this machine.
    require_root "giving the node an address"
    if ! ip -4 addr show | grep -qF " $DUMMY_IP/32 "; then
      if ip link add "$DUMMY_IF" type dummy 2>/dev/null; then
        ip addr add "$DUMMY_IP/32" dev "$DUMMY_IF"
        ip link set "$DUMMY_IF" up
        echo "link $DUMMY_IF" >"$DIR/created-node-ip"
      else
        # Kernels without the dummy driver: a /32 on lo is just as local (and as private), and is not a loopback
        # address, which is all kube-apiserver and kubelet check.
        ip addr add "$DUMMY_IP/32" dev lo
        echo "addr lo" >"$DIR/created-node-ip"
      fi
    fi
    NODE_IP="$DUMMY_IP"
  fi
}

# ----------------------------------------------------------------------------------------------------- certificates

# cert NAME CN O [SAN]: a P-256 key and a certificate signed by the cluster CA (client and server usage).
cert() {
  local name=$1 cn=$2 org=$3 san=${4:-}
  local subj="/CN=$cn"; [ -n "$org" ] && subj="/O=$org$subj"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 365 \
    -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

# kubeconfig NAME CERT: a kubeconfig for the client certificate CERT.
kubeconfig() {
  local name=$1 c=$2
  cat >"$DIR/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mlsteward
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $c
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$c.crt")
    client-key-data: $(base64 -w0 "$PKI/$c.key")
contexts:
- name: mlsteward
  context: {cluster: mlsteward, user: $c}
current-context: mlsteward
EOF
  chmod 600 "$DIR/$name.kubeconfig"
}

gen_pki() {
  mkdir -p "$PKI"
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/ca.key" 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=mlsteward-local-ca" -days 365 -out "$PKI/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    2>/dev/null
  cert kube-apiserver kube-apiserver "" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:127.0.0.1,IP:$NODE_IP,IP:$SERVICE_FIRST_IP"
  # The API server's client certificate towards kubelets (logs, exec, port-forward).
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert admin admin system:masters
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/sa.key" 2>/dev/null
  openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  if [ "$TIER" = B ]; then
    cert kubelet "system:node:$NODE_NAME" system:nodes "DNS:$NODE_NAME,IP:$NODE_IP"
    cert kube-proxy system:kube-proxy ""
    cert coredns mlsteward:coredns ""
    kubeconfig kubelet kubelet
    kubeconfig kube-proxy kube-proxy
    kubeconfig coredns coredns
  fi
}

# ------------------------------------------------------------------------------------------------------- tier A

start_etcd() {
  # --unsafe-no-fsync: a throwaway test store does not need durable writes (envtest sets it too).
  start etcd "$ETCD_BIN/etcd" --name default --data-dir "$DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "default=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --listen-metrics-urls "" --unsafe-no-fsync --log-level warn
  wait_for etcd 30 "etcd /health" curl -sf "http://127.0.0.1:$ETCD_PORT/health"
}

start_apiserver() {
  # kubelet listens on the node IP only, and the node name may resolve to 127.0.0.1 (/etc/hosts): the API server
  # reaches kubelets by InternalIP first.
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port="$API_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/kube-apiserver.crt" --tls-private-key-file="$PKI/kube-apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer="https://kubernetes.default.svc" \
    --service-account-jwks-uri="https://kubernetes.default.svc/openid/v1/jwks" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,Priority,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota,NodeRestriction \
    --allow-privileged=true --cert-dir="$PKI" --profiling=false \
    --kubelet-preferred-address-types=InternalIP,Hostname
  wait_for kube-apiserver 60 "kube-apiserver /readyz" curl -sf --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
    --key "$PKI/admin.key" "https://127.0.0.1:$API_PORT/readyz"
}

start_controllers() {
  # --secure-port=0: no health endpoint, so that a second cluster on other ports does not collide on 10257/10259.
  # The controller manager's readiness is checked through its work instead (the default ServiceAccount).
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --use-service-account-credentials \
    --controllers='*' --leader-elect=false --secure-port=0
  cat >"$DIR/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $DIR/scheduler.kubeconfig
leaderElection:
  leaderElect: false
EOF
  start kube-scheduler "$K8S_BIN/kube-scheduler" --config="$DIR/scheduler.yaml" \
    --authentication-kubeconfig="$DIR/scheduler.kubeconfig" --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
    --secure-port=0
  wait_for kube-controller-manager 60 "the default ServiceAccount (made by kube-controller-manager)" \
    kubectl_admin get serviceaccount default
  alive kube-scheduler || fail "kube-scheduler exited"
}

# ------------------------------------------------------------------------------------------------------- tier B

write_cgroups() {
  # kubelet requires its cgroupRoot to exist in every controller. A cpuset cgroup starts with no CPUs and memory
  # nodes on cgroup v1, so copy them from the root.
  local ctrl
  for ctrl in /sys/fs/cgroup/*/; do
    ctrl="${ctrl%/}"
    [ -f "$ctrl/cgroup.procs" ] || continue
    mkdir -p "$ctrl/$CGROUP_PARENT"
  done
  if [ -d /sys/fs/cgroup/cpuset/$CGROUP_PARENT ]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >/sys/fs/cgroup/cpuset/$CGROUP_PARENT/cpuset.cpus
    cat /sys/fs/cgroup/cpuset/cpuset.mems >/sys/fs/cgroup/cpuset/$CGROUP_PARENT/cpuset.mems
  fi
  mkdir -p /sys/fs/cgroup/pids/$CGROUP_PARENT/runtime
}

start_containerd() {
  mkdir -p "$DIR/containerd" "$DIR/cni/net.d" "$DIR/cni/ipam"
  cat >"$DIR/containerd/config.toml" <<EOF
# containerd for the local cluster only: its own root, state and socket under the run directory.
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$DIR/containerd/containerd.sock"

[ttrpc]
  address = "$DIR/containerd/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  # Imported by this script; the name only has to match an image in the k8s.io namespace, so nothing is pulled.
  sandbox_image = "$PAUSE_IMAGE"
  # Network namespaces under the state directory, so that \`down\` finds them with the other mounts.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  # Root here lacks CAP_SYS_RESOURCE, so runc cannot set a negative oom_score_adj (the sandbox asks for -998) and
  # fails with "can't get final child's PID from pipe: EOF". Clamping to containerd's own value (0) is the setting
  # made for rootless and restricted hosts.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # kubelet uses the cgroupfs driver (no systemd here); both must agree.
        SystemdCgroup = false
        # runc's state under the run directory instead of /run/containerd/runc.
        Root = "$DIR/containerd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
EOF
  cat >"$DIR/cni/net.d/10-mlsteward.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "mlsteward",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # containerd and its shims run in their own pids cgroup, so that `down` finds every process they left.
  # Pulls go through a proxy on a closed local port: a pod that names an image that was not imported fails at once
  # with ErrImagePull, and not even a DNS query for the registry leaves the machine. (containerd 1.6.20 ignores a
  # `_default` hosts.toml, which would be the configuration-file way.)
  start containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    bash -c "echo \$\$ >/sys/fs/cgroup/pids/$CGROUP_PARENT/runtime/cgroup.procs && exec containerd --config '$DIR/containerd/config.toml'"
  wait_for containerd 30 "containerd's socket" "${CTR[@]}" version
}

# import_images: the sandbox (pause) image and a busybox test image, written as OCI archives once and cached.
import_images() {
  local dir="$MLS_CACHE/images" pause_tar busybox_tar busybox_bin args=()
  mkdir -p "$dir"
  pause_tar="$dir/pause-$PAUSE_VERSION.tar"
  if [ ! -f "$pause_tar" ] || [ "$pause_tar" -ot "$PAUSE_BIN/pause" ]; then
    python3 "$HACK_DIR/oci.py" files --out "$pause_tar.layer" "$PAUSE_BIN/pause=/pause:0755"
    python3 "$HACK_DIR/oci.py" image --out "$pause_tar" --name "$PAUSE_IMAGE" --layer "$pause_tar.layer" \
      --entrypoint '["/pause"]' --user 65535:65535 >/dev/null
  fi
  busybox_bin="$(command -v busybox || true)"
  # Only a static busybox works as the single file of an image (ldd fails on static binaries).
  if [ -n "$busybox_bin" ] && ! ldd "$busybox_bin" >/dev/null 2>&1; then
    busybox_tar="$dir/busybox-${BUSYBOX_IMAGE##*:}.tar"
    if [ ! -f "$busybox_tar" ] || [ "$busybox_tar" -ot "$busybox_bin" ]; then
      for applet in $("$busybox_bin" --list-full); do [ "$applet" = bin/busybox ] || args+=(--link "/bin/busybox=/$applet"); done
      python3 "$HACK_DIR/oci.py" files --out "$busybox_tar.layer" "$busybox_bin=/bin/busybox:0755" \
        --dir /tmp:1777 "${args[@]}"
      python3 "$HACK_DIR/oci.py" image --out "$busybox_tar" --name "$BUSYBOX_IMAGE" --layer "$busybox_tar.layer" \
        --cmd '["sh"]' >/dev/null
    fi
  else
    log "No static busybox (Debian busybox-static); skipping the $BUSYBOX_IMAGE test image"
  fi
  for tar in "$pause_tar" ${busybox_tar:+"$busybox_tar"}; do
    "${CTR[@]}" images import --snapshotter overlayfs "$tar" >/dev/null || fail "importing $tar failed"
  done
}

start_kubelet() {
  mkdir -p "$DIR/kubelet/root" "$DIR/kubelet/pod-logs" "$DIR/kubelet/volume-plugins" "$DIR/kubelet/pki"
  # Pods' volume mounts are propagated through the kubelet root; a private bind mount of it onto itself made shared
  # avoids changing the propagation of / (local-up-cluster.sh runs `mount --make-rshared /` in CI instead).
  if ! mountpoint -q "$DIR/kubelet/root"; then
    mount --bind "$DIR/kubelet/root" "$DIR/kubelet/root"
    mount --make-rshared "$DIR/kubelet/root"
  fi
  cat >"$DIR/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet.crt
tlsPrivateKeyFile: $PKI/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$DIR/containerd/containerd.sock
# containerd 1.6 lacks the RuntimeConfig call, so kubelet takes the driver from here; containerd uses cgroupfs too.
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_PARENT
cgroupsPerQOS: true
# cgroup v1 is in maintenance mode (KEP-5573); from 1.35 kubelet refuses it unless this is false.
failCgroupV1: false
failSwapOn: false
# DNS is the local CoreDNS on the node IP, which answers cluster names only (no forwarding off the machine). No
# resolv.conf is inherited from the host for the same reason.
clusterDNS: [$NODE_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: ""
podLogsDir: $DIR/kubelet/pod-logs
volumePluginDir: $DIR/kubelet/volume-plugins
rotateCertificates: false
serializeImagePulls: false
# Images are imported, never pulled: image garbage collection must not delete them, and a small disk must not evict.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", nodefs.inodesFree: "1%", imagefs.available: "1%"}
maxPods: 110
EOF
  start kubelet "$K8S_BIN/kubelet" --config="$DIR/kubelet/config.yaml" --kubeconfig="$DIR/kubelet.kubeconfig" \
    --root-dir="$DIR/kubelet/root" --cert-dir="$DIR/kubelet/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"
}

start_kube_proxy() {
  cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection:
  kubeconfig: $DIR/kube-proxy.kubeconfig
# Zero values skip the conntrack sysctls.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables:
  # NodePorts on 127.0.0.1 would need net.ipv4.conf.all.route_localnet=1 on the whole machine.
  localhostNodePorts: false
EOF
  start kube-proxy "$K8S_BIN/kube-proxy" --config="$DIR/kube-proxy.yaml"
}

start_coredns() {
  kubectl_admin apply -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: mlsteward:coredns
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: mlsteward:coredns
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "mlsteward:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "mlsteward:coredns"}
EOF
  # Cluster names only: there is deliberately no `forward`, so no query leaves the machine.
  cat >"$DIR/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    ready 127.0.0.1:18181
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $DIR/coredns.kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
EOF
  start coredns "$COREDNS_BIN/coredns" -conf "$DIR/Corefile"
}

# guard_egress: pods may reach each other, Services and the node, never the outside (the workplace's rule, and a
# safety net for a test that names an external host). Forwarded traffic from the pod network that does not go back
# into the bridge is rejected.
guard_egress() {
  iptables -N MLSTEWARD-EGRESS 2>/dev/null || iptables -F MLSTEWARD-EGRESS
  iptables -A MLSTEWARD-EGRESS -s "$POD_CIDR" ! -o cni0 -j REJECT
  iptables -C FORWARD -j MLSTEWARD-EGRESS 2>/dev/null || iptables -I FORWARD 1 -j MLSTEWARD-EGRESS
}

node_ready() {
  [ "$(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

proxy_ready() { local r; r="$(iptables -t nat -S KUBE-SERVICES 2>/dev/null)" && grep -q 'default/kubernetes:https' <<<"$r"; }

# ---------------------------------------------------------------------------------------------------------- up/down

# Host paths that kubelet, containerd and the CNI plugins use outside the run directory whatever they are told:
# those that do not exist before `up` are removed again by `down`.
HOST_PATHS=(/var/log/containers /var/lib/kubelet /var/lib/cni /run/containerd)

record_host_state() {
  local s p
  : >"$DIR/created-paths"
  for p in "${HOST_PATHS[@]}"; do [ -e "$p" ] || echo "$p" >>"$DIR/created-paths"; done
  : >"$DIR/sysctls"
  for s in "${SYSCTLS[@]}"; do
    [ -e "/proc/sys/${s//.//}" ] && echo "$s=$(cat "/proc/sys/${s//.//}")" >>"$DIR/sysctls"
  done
}

cmd_up() {
  if [ -f "$DIR/tier" ]; then
    local running=() dead=()
    for c in $(components); do if alive "$c"; then running+=("$c"); else dead+=("$c"); fi; done
    if [ ${#dead[@]} -eq 0 ]; then
      [ "$(cat "$DIR/tier")" = "$TIER" ] || die "a tier $(cat "$DIR/tier") cluster is running in $DIR; run '$0 down --dir $DIR' first"
      echo "The cluster in $DIR is already up (tier $TIER)."
      echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
      return 0
    fi
    log "The cluster in $DIR is partly running (stopped: ${dead[*]}); tearing it down first"
    cmd_down
  fi
  [ -x "$K8S_BIN/kube-apiserver" ] && [ -x "$ETCD_BIN/etcd" ] || die "binaries missing: run hack/build-bins.sh (make bins)"
  if [ "$TIER" = B ]; then
    require_root "tier B"
    [ -x "$COREDNS_BIN/coredns" ] && [ -x "$PAUSE_BIN/pause" ] || die "binaries missing: run hack/build-bins.sh (make bins)"
    for t in containerd runc iptables conntrack; do command -v "$t" >/dev/null || die "$t missing: run hack/deps.sh"; done
    if [ -d "/sys/fs/cgroup/pids/$CGROUP_PARENT/runtime" ] && [ -n "$(cat /sys/fs/cgroup/pids/$CGROUP_PARENT/runtime/cgroup.procs 2>/dev/null)" ]; then
      die "another tier B cluster is running on this machine (processes in the $CGROUP_PARENT cgroup); only one fits (ports 10250, cni0)"
    fi
  fi
  if [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
    die "$DIR exists and is not empty; choose another --dir (down removes the directory it runs in)"
  fi
  local t0; t0=$(date +%s)
  mkdir -p "$DIR" "$LOGS" "$PIDS"
  echo "$TIER" >"$DIR/tier"
  pick_node_ip
  echo "$NODE_IP" >"$DIR/node-ip"
  NODE_NAME="$(hostname | tr '[:upper:]_' '[:lower:]-' | cut -d. -f1)"
  echo "$NODE_NAME" >"$DIR/node-name"
  log "Run dir $DIR, node $NODE_NAME at $NODE_IP, API https://127.0.0.1:$API_PORT, tier $TIER"
  gen_pki
  start_etcd
  start_apiserver
  start_controllers
  if [ "$TIER" = B ]; then
    record_host_state
    write_cgroups
    start_containerd
    import_images
    start_kubelet
    guard_egress
    start_kube_proxy
    start_coredns
    wait_for kubelet 90 "node $NODE_NAME Ready" node_ready
    wait_for kube-proxy 30 "kube-proxy's Service rules" proxy_ready
    wait_for coredns 30 "CoreDNS /ready" curl -sf http://127.0.0.1:18181/ready
  fi
  for c in $(components); do alive "$c" || fail "$c exited"; done
  log "Cluster up in $(( $(date +%s) - t0 ))s (tier $TIER). Logs in $LOGS."
  echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
}

# delete_pods: while the API server and kubelet run, force-deletes every pod and waits (up to 20 seconds) until
# kubelet has stopped their sandboxes. That is the path that calls the CNI plugins' DEL, which releases addresses,
# veths and the plugins' own iptables rules and caches. The controllers are stopped first, so nothing recreates them.
delete_pods() {
  alive kube-apiserver && alive kubelet && alive containerd || return 0
  kubectl_admin delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || return 0
  local deadline=$(( $(date +%s) + 20 ))
  while [ -n "$(timeout 5 "${CTR[@]}" tasks ls -q 2>/dev/null)" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || { log "Pods still running after 20s; killing them"; break; }
    sleep 0.5
  done
}

# kill_pods: stops every pod process: through containerd while it runs (so that the shims exit and clean up after
# themselves), then whatever is left in the cgroup tree. Container ids are kept for clean_host_paths.
kill_pods() {
  if alive containerd; then
    local ids id
    ids="$(timeout 10 "${CTR[@]}" containers ls -q 2>/dev/null || true)"
    echo "$ids" >>"$DIR/container-ids"
    for id in $ids; do timeout 5 "${CTR[@]}" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $ids; do timeout 5 "${CTR[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true; done
  fi
  local deadline=$(( $(date +%s) + 15 )) procs
  while :; do
    procs="$(find "/sys/fs/cgroup/pids/$CGROUP_PARENT" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)"
    [ -n "$procs" ] || break
    # shellcheck disable=SC2086
    kill -KILL $procs 2>/dev/null || true
    [ "$(date +%s)" -lt "$deadline" ] || { log "Processes still running in the $CGROUP_PARENT cgroups: $procs"; break; }
    sleep 0.3
  done
}

remove_cgroups() {
  local ctrl
  for ctrl in /sys/fs/cgroup/*/; do
    [ -d "$ctrl$CGROUP_PARENT" ] || continue
    find "$ctrl$CGROUP_PARENT" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ ! -d "$ctrl$CGROUP_PARENT" ] || log "Could not remove cgroup $ctrl$CGROUP_PARENT"
  done
}

unmount_all() {
  local m pass
  # Deepest first; a second pass detaches (lazily) what a dying process still held in the first.
  for pass in 1 2; do
    for m in $(findmnt -rn -o TARGET | awk -v d="$DIR/" 'index($0, d) == 1' | sort -r); do
      if [ "$pass" = 1 ]; then umount "$m" 2>/dev/null || true
      else umount -l "$m" 2>/dev/null || log "Could not unmount $m"; fi
    done
  done
}

# Removes the iptables rules and chains of kube-proxy, kubelet, the CNI plugins and this script, in both families.
clean_iptables() {
  local fam save restore rules
  for fam in iptables ip6tables; do
    save="$fam-save"; restore="$fam-restore"
    command -v "$save" >/dev/null || continue
    # Read in full first: `grep -q` on a pipe would stop iptables-save early, and pipefail would turn that into "no".
    rules="$("$save" 2>/dev/null || true)"
    if grep -qE 'KUBE-|CNI-|MLSTEWARD-' <<<"$rules"; then
      grep -vE 'KUBE-|CNI-|MLSTEWARD-' <<<"$rules" | "$restore" || log "Could not clean $fam rules"
    fi
  done
}

# clean_host_paths: what containerd 1.6 and the CNI plugins keep outside the run directory for containers that were
# not torn down through CRI: shim sockets (/run/containerd/s/<sha256 of address/namespace/id>, a fixed location in
# containerd 1.6) and the CNI result cache (/var/lib/cni/results/<network>-<id>-<if>). Then the host directories
# that did not exist before `up`.
clean_host_paths() {
  local id p
  if [ -f "$DIR/container-ids" ]; then
    for id in $(sort -u "$DIR/container-ids"); do
      rm -f "/run/containerd/s/$(printf '%s' "$DIR/containerd/containerd.sock/k8s.io/$id" | sha256sum | cut -d' ' -f1)"
      rm -f /var/lib/cni/results/*-"$id"-*
    done
  fi
  rmdir /run/containerd/s /run/containerd/runc 2>/dev/null || true
  if [ -f "$DIR/created-paths" ]; then
    while read -r p; do
      case "$p" in
        /var/log/containers) rmdir "$p" 2>/dev/null || true ;;
        /var/lib/cni) rmdir "$p/results" "$p/networks" "$p" 2>/dev/null || true ;;
        /var/lib/kubelet) rm -rf "$p/device-plugins"; rmdir "$p" 2>/dev/null || true ;;
        /run/containerd) rmdir "$p" 2>/dev/null || true ;;
      esac
      [ ! -e "$p" ] || log "Left $p (not empty)"
    done <"$DIR/created-paths"
  fi
}

cmd_down() {
  if [ ! -d "$DIR" ]; then echo "No cluster in $DIR."; return 0; fi
  # `down` deletes DIR: only ever one that `up` made.
  [ -f "$DIR/tier" ] || die "$DIR exists but holds no cluster (no $DIR/tier); not touching it"
  local tier; tier="$(cat "$DIR/tier" 2>/dev/null || echo A)"
  local t0; t0=$(date +%s)
  # Flux and the Git server, when hack/gitops.sh started them.
  stop flux-kustomize-controller flux-source-controller flux-gitserver
  stop kube-scheduler kube-controller-manager
  if [ "$tier" = B ]; then
    delete_pods
    stop kubelet kube-proxy coredns
    kill_pods
    stop containerd
    kill_pods
  fi
  stop kube-apiserver etcd
  if [ "$tier" = B ]; then
    unmount_all
    ip link del cni0 2>/dev/null || true
    remove_cgroups
    clean_iptables
    conntrack -D -s "$POD_CIDR" >/dev/null 2>&1 || true
    if [ -f "$DIR/sysctls" ]; then
      while IFS='=' read -r k v; do sysctl -q -w "$k=$v" >/dev/null 2>&1 || true; done <"$DIR/sysctls"
    fi
    # kubelet links container logs here; they point into DIR.
    find /var/log/containers -maxdepth 1 -lname "$DIR/*" -delete 2>/dev/null || true
    clean_host_paths
  fi
  case "$(cat "$DIR/created-node-ip" 2>/dev/null)" in
    "link $DUMMY_IF") ip link del "$DUMMY_IF" 2>/dev/null || true ;;
    "addr lo") ip addr del "$DUMMY_IP/32" dev lo 2>/dev/null || true ;;
  esac
  unmount_all
  rm -rf "$DIR"
  log "Cluster in $DIR stopped and removed in $(( $(date +%s) - t0 ))s."
}

cmd_status() {
  if [ ! -f "$DIR/tier" ]; then echo "No cluster in $DIR."; return 3; fi
  echo "Cluster in $DIR (tier $(cat "$DIR/tier"), node IP $(cat "$DIR/node-ip" 2>/dev/null))"
  local rc=0
  for c in $(components); do
    if alive "$c"; then printf '  %-24s running (pid %s)\n' "$c" "$(pid_of "$c")"
    else printf '  %-24s NOT RUNNING (log %s)\n' "$c" "$LOGS/$c.log"; rc=1; fi
  done
  kubectl_admin get nodes -o wide 2>&1 | sed 's/^/  /' || rc=1
  echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
  return $rc
}

case "$cmd" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_ADMIN" ;;
  *) usage 2 ;;
esac
