#!/usr/bin/env bash
# Build (or reuse) kube-router, the NetworkPolicy enforcer (iptables + ipset) that the tenancy
# node tests run as a host process on the test node (testbed/netpol_enforcer.py).
# Pinned by tools/kuberouter/go.mod. Only a test-node enforcer (docs/testing-control-plane.md).
#
# Its own cache entry, apart from scripts/controlplane.sh's (whose key it leaves alone), keyed by
# the pinned version, the tools module's go.mod/go.sum and the Go version:
#   ${GRAFT_CACHE:-$HOME/.cache/graft}/kube-router-<key>/bin/kube-router
# A warm run takes milliseconds; a cold build a few minutes. stdout: the binary's path (last line).
# Env: GRAFT_CACHE, GRAFT_BUILD_P (go build -p, default 2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
mod="$root/tools/kuberouter"
pkg=github.com/cloudnativelabs/kube-router/v2
version=$(awk -v m="$pkg" '$1=="require" && $2==m {print $3; exit}' "$mod/go.mod")
: "${version:?no $pkg in tools/kuberouter/go.mod}"
sum=$(cat "$mod"/go.{mod,sum} | sha256sum | cut -c1-10)
dir="${GRAFT_CACHE:-$HOME/.cache/graft}/kube-router-${version}_$(go env GOVERSION)_${sum}"
bin="$dir/bin/kube-router"
mkdir -p "$dir/bin"
if [ ! -x "$bin" ]; then
  exec 9>"$dir/.lock"
  flock 9
  if [ ! -x "$bin" ]; then
    echo "kuberouter: building kube-router $version (cold: minutes)" >&2
    t0=$SECONDS
    (cd "$mod" && go build -p "${GRAFT_BUILD_P:-2}" -trimpath -buildvcs=false -mod=readonly \
        -ldflags "-s -w -X $pkg/pkg/version.Version=$version" -o "$bin.tmp" "$pkg/cmd/kube-router")
    mv "$bin.tmp" "$bin"
    echo "kube-router ${version} $((SECONDS - t0))s $(date -u +%FT%TZ)" >> "$dir/build-times.txt"
    echo "kuberouter: built in $((SECONDS - t0))s" >&2
  fi
fi
echo "$bin"
