#!/usr/bin/env bash
# A real one-node Kubernetes on this machine: the control plane of scripts/controlplane.sh
# plus kubelet, kube-proxy, kube-scheduler, containerd + runc + CNI bridge, and CoreDNS.
#
#   scripts/cluster.sh deps     install the Debian packages it needs (apt-get, as root):
#                               containerd runc containernetworking-plugins iptables
#                               conntrack busybox-static gcc libc6-dev
#                               ipset (kube-router, the tenancy tests' NetworkPolicy enforcer)
#   scripts/cluster.sh build    build/cache the binaries (scripts/controlplane.sh, all components)
#   scripts/cluster.sh up       deps + build, then start it; prints KUBECONFIG=<file>
#   scripts/cluster.sh status   running or not; nodes and pods
#   scripts/cluster.sh down     stop it; no processes, mounts, cgroups or iptables chains left,
#                               sysctls (ip_forward, ...) restored
#
# Needs root (containers, iptables, cgroups). One node per machine: it takes the lock
# ${GRAFT_NODE_LOCK:-/var/lock/graft-node.lock}, which the pytest fixture `kube_node`
# (tests/kuberay/conftest.py) also takes. Files: ${GRAFT_NODE_DIR:-/var/lib/graft-node}
# (containerd/ persists imported images; run/ is one bring-up). Everything stays on the
# machine: pod traffic is not forwarded off it and CoreDNS answers cluster.local only.
# Details: docs/testing-control-plane.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PACKAGES="containerd runc containernetworking-plugins iptables conntrack busybox-static gcc libc6-dev ipset"

deps() {
  local missing=()
  for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "cluster: missing Debian packages: ${missing[*]} (run as root: scripts/cluster.sh deps)" >&2
    exit 1
  fi
  echo "cluster: installing ${missing[*]}" >&2
  # containerd's package would start no service here (no systemd); ours runs with its own config.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
    --no-install-recommends "${missing[@]}" >&2 \
    || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
         -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >&2; }
}

build() { "$root/scripts/controlplane.sh" >/dev/null; }

python=${GRAFT_CLUSTER_PYTHON:-python3}  # standard library only
cli() { cd "$root" && PYTHONPATH="$root" exec "$python" -m testbed.cluster "$@"; }

case "${1:-}" in
  deps) deps ;;
  build) build ;;
  up) deps; build; cli up ;;
  down|status) cli "$1" ;;
  *) sed -n '2,21p' "$0" >&2; exit 2 ;;
esac
