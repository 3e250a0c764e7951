#!/usr/bin/env bash
# Build (or reuse) versitygw, the real S3-compatible server (Apache-2.0, POSIX backend) that the
# object-storage tests start on loopback (testbed/s3server.py). Pinned by tools/s3server/go.mod.
#
# The binary goes to a cache outside the repo, keyed by the pinned version, the tools module's
# go.mod/go.sum and the Go version:  ${GRAFT_CACHE:-$HOME/.cache/graft}/s3server-<key>/bin/versitygw
# A warm run takes milliseconds; a cold build a few minutes. stdout: the binary's path (last line).
# Env: GRAFT_CACHE, GRAFT_BUILD_P (go build -p, default 2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
mod="$root/tools/s3server"
version=$(awk '$1=="require" && $2=="github.com/versity/versitygw" {print $3; exit}' "$mod/go.mod")
: "${version:?no github.com/versity/versitygw in tools/s3server/go.mod}"
sum=$(cat "$mod"/go.{mod,sum} | sha256sum | cut -c1-10)
dir="${GRAFT_CACHE:-$HOME/.cache/graft}/s3server-versitygw-${version}_$(go env GOVERSION)_${sum}"
bin="$dir/bin/versitygw"
mkdir -p "$dir/bin"
if [ ! -x "$bin" ]; then
  exec 9>"$dir/.lock"
  flock 9
  if [ ! -x "$bin" ]; then
    echo "s3server: building versitygw $version (cold: minutes)" >&2
    t0=$SECONDS
    (cd "$mod" && go build -p "${GRAFT_BUILD_P:-2}" -trimpath -buildvcs=false -mod=readonly \
        -ldflags "-s -w -X main.Version=$version" -o "$bin.tmp" github.com/versity/versitygw/cmd/versitygw)
    mv "$bin.tmp" "$bin"
    echo "versitygw ${version} $((SECONDS - t0))s $(date -u +%FT%TZ)" >> "$dir/build-times.txt"
    echo "s3server: built in $((SECONDS - t0))s" >&2
  fi
fi
echo "$bin"
