#!/usr/bin/env bash
# Build Graft's container images without a registry or a Docker daemon, and load them into a
# containerd (the test node's, or any on this machine).
#
#   scripts/images.sh build [ray|operator|all]     # build (cached) the OCI layers
#   scripts/images.sh load  [ray|operator|all]     # build if needed, then `ctr images import`
#   scripts/images.sh archive ray|operator FILE    # write an OCI archive (for `ctr import`, skopeo, ...)
#   scripts/images.sh refs                          # print the image references
#
# Each image is three layers (the Ray image four), each cached under $GRAFT_CACHE/images (default ~/.cache/graft/images)
# and keyed by what goes into it:
#   base   Debian bookworm minbase made by mmdebstrap (python3, wget for KubeRay's probes, users
#          `ray` 1000:100 and `graft` 10001); key: the package list and this script's base recipe
#   deps   the image's hash lock, locks/<image>-image.txt (scripts/lock.sh: every pin, no resolver),
#          pip-installed inside the base (chroot on an overlay mount); key: base + lock + pip version
#   data   (Ray image only) Debian data packages the examples read by path, unpacked with dpkg-deb:
#          Fashion-MNIST at /usr/share/datasets/fashion-mnist; key: package names and versions
#   graft  this checkout's graft wheel (--no-deps), then a smoke test inside the image (the Ray image
#          also gets /etc/graft/umask.sh, its BASH_ENV); key: deps key + those commands + pyproject.toml, README.md, graft/**
# The image config (ENV, USER, WORKDIR, ENTRYPOINT, CMD) is read from docker/<image>.Dockerfile,
# which stays the way to build the same images on the upstream bases (`docker build`).
# Environment: GRAFT_CACHE; CONTAINERD_ADDRESS (socket for `load`, default /run/containerd/containerd.sock);
# CTR (ctr binary, default ctr); CONTAINERD_NAMESPACE (default k8s.io, the one the kubelet uses).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAFT_CACHE:-$HOME/.cache/graft}/images
py=${PYTHON:-python3}
pip_version=26.3
suite=bookworm
base_packages=python3,python-is-python3,python3-pip-whl,ca-certificates,wget,netbase,procps
data_packages="dataset-fashion-mnist"   # the Ray image's data layer (build_data)
ray_ref=ghcr.io/graft-dev/graft-ray:0.1.0-ray2.60.0-py311
operator_ref=ghcr.io/graft-dev/graft-operator:0.1.0

tmpdirs=()
cleanup() { [ ${#tmpdirs[@]} = 0 ] || rm -rf "${tmpdirs[@]}"; }
trap cleanup EXIT
# Sets $work to a new scratch dir, removed on exit (not in a $(...) subshell: the list must persist).
new_work() { work=$(mktemp -d "${TMPDIR:-/tmp}/graft-images.XXXXXX"); tmpdirs+=("$work"); }
log() { echo "images: $*" >&2; }
# Drop the cached layers of one kind (e.g. ray-deps) other than KEEP: a new key replaces the old.
prune() { local kind=$1 keep=$2 d; for d in "$cache/$kind"-*; do [ -d "$d" ] && [ "$d" != "$keep" ] && rm -rf "$d"; done; return 0; }
die() { echo "images: error: $*" >&2; exit 1; }
sha() { sha256sum | cut -c1-16; }
need() { command -v "$1" >/dev/null || die "$1 not found: $2"; }
# The OCI writer (testbed/oci.py, standard library only): layer digests and image archives.
oci() { PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$py" -m testbed.oci "$@"; }

# The base recipe: everything that shapes the base rootfs goes into its key.
base_recipe() {
  cat <<EOF
suite=$suite packages=$base_packages
hook: users ray (1000:100, /home/ray) and graft (10001); no EXTERNALLY-MANAGED; empty resolv.conf/hostname; no apt lists
EOF
}

build_base() {
  base_key=$(base_recipe | sha)
  base_dir=$cache/base-$base_key
  [ -f "$base_dir/rootfs.digest" ] && return
  if ! command -v mmdebstrap >/dev/null && [ "$(id -u)" = 0 ]; then
    log "installing mmdebstrap (Debian package)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends mmdebstrap >&2 \
      || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=600 \
           --no-install-recommends mmdebstrap >&2; }
  fi
  need mmdebstrap "apt-get install mmdebstrap"
  log "base: mmdebstrap $suite ($base_packages) -> $base_dir"
  prune base "$base_dir"; mkdir -p "$base_dir"
  local t0=$SECONDS
  mmdebstrap --quiet --variant=minbase --include="$base_packages" \
    --customize-hook='chroot "$1" useradd --uid 1000 --gid 100 --create-home --shell /bin/bash ray' \
    --customize-hook='chroot "$1" useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin graft' \
    --customize-hook='rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED' \
    --customize-hook=': > "$1/etc/resolv.conf"; : > "$1/etc/hostname"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log' \
    "$suite" "$base_dir/rootfs"
  oci digest "$base_dir/rootfs" >/dev/null
  log "base: done in $((SECONDS - t0)) s ($(du -sh "$base_dir/rootfs" | cut -f1))"
}

# Run CMD (a bash script) chrooted in an overlay of LOWER dirs (colon-separated, top first) with
# writes going to UPPER. A private mount namespace: every mount goes away with the process.
# /tmp is a scratch dir of the host (nothing of a pip download lands in the layer); the pip cache
# ($GRAFT_CACHE/pip, shared with scripts/venv.sh) is mounted at /tmp/pipcache; $1 files in /tmp/in.
in_overlay() {
  local lower=$2 upper=$3 input=$4 script=$5
  local scratch=$1/scratch
  mkdir -p "$upper" "$scratch/work" "$scratch/merged" "$scratch/tmp/pipcache" "$scratch/tmp/in" "${GRAFT_CACHE:-$HOME/.cache/graft}/pip"
  [ -n "$input" ] && cp -r "$input"/. "$scratch/tmp/in/"
  printf '%s\n' "$script" > "$scratch/tmp/in/run.sh"
  # The host's CA bundle for pip (it may trust a TLS proxy the image's ca-certificates do not); in /tmp, not in the layer.
  cp "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$scratch/tmp/ca.crt"
  local rc=0
  unshare --mount --propagation private bash -euo pipefail -c '
    s=$1; m=$s/merged
    mount -t overlay overlay -o "lowerdir=$2,upperdir=$3,workdir=$s/work" "$m"
    mount --bind "$s/tmp" "$m/tmp"
    mount --bind "$4" "$m/tmp/pipcache"
    mount -t proc proc "$m/proc"
    mount --bind /dev "$m/dev"
    mount --bind /etc/resolv.conf "$m/etc/resolv.conf"
    exec env -i HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
      PIP_CACHE_DIR=/tmp/pipcache PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
      PIP_NO_WARN_SCRIPT_LOCATION=1 PIP_CERT=/tmp/ca.crt "$(command -v chroot)" "$m" bash -euo pipefail /tmp/in/run.sh
  ' _ "$scratch" "$lower" "$upper" "${GRAFT_CACHE:-$HOME/.cache/graft}/pip" || rc=$?
  [ "$rc" = 0 ] || die "build step in $upper failed (exit $rc)"
  # Overlay whiteouts (deleted lower files) would need converting to OCI whiteouts; nothing here deletes.
  if [ -n "$(find "$upper" -type c -print -quit)" ]; then
    die "$upper deletes files of a lower layer (overlay whiteouts); layers here may only add files"
  fi
}

# The image's hash lock (scripts/lock.sh): every transitive pin, so pip needs no resolver.
lock_of() { echo "$root/locks/$1-image.txt"; }

build_deps() {  # $1: image name
  local image=$1 lock key
  lock=$(lock_of "$image")
  [ -f "$lock" ] || die "$lock is missing: run scripts/lock.sh"
  key=$( (echo "$base_key pip=$pip_version"; cat "$lock") | sha)
  deps_dir=$cache/$image-deps-$key
  [ -f "$deps_dir/layer.digest" ] && return
  log "$image deps: pip install --require-hashes -r locks/$image-image.txt -> $deps_dir"
  prune "$image-deps" "$deps_dir"; mkdir -p "$deps_dir"
  local work input; new_work; input=$work/in; mkdir "$input"
  cp "$lock" "$input/lock.txt"
  local t0=$SECONDS
  in_overlay "$work" "$base_dir/rootfs" "$deps_dir/layer" "$input" "
    python3 \"\$(echo /usr/share/python-wheels/pip-*.whl)/pip\" install -q pip==$pip_version
    pip install -q --no-deps --require-hashes -r /tmp/in/lock.txt
    rm -rf /root/.cache"
  oci digest "$deps_dir/layer" >/dev/null
  log "$image deps: done in $((SECONDS - t0)) s ($(du -sh "$deps_dir/layer" | cut -f1))"
}

# What the graft layer is made of: the files of the wheel.
source_key() {
  (cd "$root" && { echo pyproject.toml; echo README.md; find graft -type f ! -path '*/__pycache__/*' ! -name '*.pyc'; } \
    | LC_ALL=C sort | xargs sha256sum) | sha
}

# The top layer: this checkout's graft wheel (--no-deps: the lock brought everything), then the
# image's smoke test.
build_graft() {  # $1: image name, $2: run inside the image after the install (files it adds, its smoke test; in the key)
  local image=$1 smoke=$2 key
  key=$( (echo "$deps_dir"; echo "$smoke"; source_key) | sha)
  graft_dir=$cache/$image-graft-$key
  [ -f "$graft_dir/layer.digest" ] && return
  log "$image graft: wheel of this checkout -> $graft_dir"
  prune "$image-graft" "$graft_dir"; mkdir -p "$graft_dir"
  local work src input; new_work; src=$work/src; input=$work/in; mkdir "$src" "$input"
  cp -r "$root/pyproject.toml" "$root/README.md" "$root/graft" "$src/"
  find "$src" -name __pycache__ -prune -exec rm -rf {} +
  local wheel_py=$root/.venv/bin/python
  [ -x "$wheel_py" ] || wheel_py=$py
  "$wheel_py" -m pip wheel -q --no-deps --no-build-isolation -w "$input" "$src" >/dev/null \
    || die "building the graft wheel failed (needs setuptools and wheel in $wheel_py)"
  local t0=$SECONDS
  in_overlay "$work" "$deps_dir/layer:$base_dir/rootfs" "$graft_dir/layer" "$input" "
    pip install -q --no-deps /tmp/in/*.whl
    rm -rf /root/.cache
    $smoke"
  oci digest "$graft_dir/layer" >/dev/null
  log "$image graft: done in $((SECONDS - t0)) s ($(du -sh "$graft_dir/layer" | cut -f1))"
}

# The Ray image's data layer: the files of Debian data packages the examples read by path
# (Fashion-MNIST under /usr/share/datasets/fashion-mnist), unpacked with dpkg-deb from the package
# apt downloads (no dpkg database entry: plain files). Key: each package's name and version.
build_data() {
  local pkg version key=""
  for pkg in $data_packages; do
    version=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
      apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || true
      version=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')
    fi
    [ -n "$version" ] && [ "$version" != "(none)" ] || die "Debian package $pkg is not available from apt"
    key="$key $pkg=$version"
  done
  key=$(echo "$key" | sha)
  data_dir=$cache/ray-data-$key
  [ -f "$data_dir/layer.digest" ] && return
  log "ray data: $data_packages -> $data_dir"
  prune ray-data "$data_dir"; mkdir -p "$data_dir/layer"
  local work deb; new_work
  (cd "$work" && apt-get download -q -o APT::Sandbox::User=root $data_packages >&2) || die "apt-get download $data_packages failed"
  for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$data_dir/layer"; done
  oci digest "$data_dir/layer" >/dev/null
  log "ray data: done ($(du -sh "$data_dir/layer" | cut -f1))"
}

build_image() {  # sets layers=(...) for image $1
  local image=$1
  build_base
  build_deps "$image"
  case $image in
    ray)
      # /etc/graft/umask.sh: the BASH_ENV of docker/ray.Dockerfile (umask 0007 for everything Ray creates)
      build_graft ray "mkdir -p /etc/graft && echo 'umask 0007' > /etc/graft/umask.sh && chmod 0644 /etc/graft/umask.sh &&
    python -c \"import graft.jobs, graft.serving.args, ray; assert ray.__version__ == '2.60.0', ray.__version__\""
      build_data
      layers=("$base_dir/rootfs" "$deps_dir/layer" "$data_dir/layer" "$graft_dir/layer") ;;
    operator)
      build_graft operator "python -c 'import graft.operator.handlers' && graft operator --help >/dev/null"
      layers=("$base_dir/rootfs" "$deps_dir/layer" "$graft_dir/layer") ;;
  esac
}

ref_of() { if [ "$1" = ray ]; then echo "$ray_ref"; else echo "$operator_ref"; fi; }

archive() {  # $1: image, $2: output file or -
  build_image "$1"
  local args=()
  for l in "${layers[@]}"; do args+=(--layer "$l"); done
  oci write --ref "$(ref_of "$1")" --dockerfile "$root/docker/$1.Dockerfile" "${args[@]}" -o "$2"
}

load() {  # $1: image
  local ctr=${CTR:-ctr} address=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock} ns=${CONTAINERD_NAMESPACE:-k8s.io}
  need "$ctr" "apt-get install containerd (it ships ctr), or set CTR"
  local ref; ref=$(ref_of "$1")
  build_image "$1"
  # Already there with the same layers and config? The manifest digest is deterministic, so compare it.
  local args=() want
  for l in "${layers[@]}"; do args+=(--layer "$l"); done
  want=$(oci write --ref "$ref" --dockerfile "$root/docker/$1.Dockerfile" "${args[@]}" --digest-only)
  if "$ctr" --address "$address" -n "$ns" images ls -q "name==$ref" 2>/dev/null | grep -qx "$ref" \
     && "$ctr" --address "$address" -n "$ns" images ls "name==$ref" | grep -q "$want"; then
    log "$ref is already loaded ($want)"; return
  fi
  local t0=$SECONDS
  # Layers containerd already holds (an earlier import of the same deps) stay out of the stream;
  # if the import refuses that, the whole archive goes in.
  local present; new_work; present=$work/present
  "$ctr" --address "$address" -n "$ns" content ls -q > "$present" 2>/dev/null || : > "$present"
  if oci write --ref "$ref" --dockerfile "$root/docker/$1.Dockerfile" "${args[@]}" \
       --present "$present" -o - | "$ctr" --address "$address" -n "$ns" images import - >/dev/null; then
    log "$ref loaded in $((SECONDS - t0)) s (layers containerd had: not streamed)"
    return
  fi
  log "$ref: the import without the layers containerd had failed; importing the whole archive"
  archive "$1" - | "$ctr" --address "$address" -n "$ns" images import - >/dev/null
  log "$ref loaded in $((SECONDS - t0)) s"
}

images_of() { case ${1:-all} in all) echo "operator ray" ;; ray|operator) echo "$1" ;; *) die "unknown image $1 (ray, operator, all)" ;; esac; }

mkdir -p "$cache"
exec 8>"$cache/.lock"; flock 8   # one build at a time per cache
case ${1:-} in
  build) for i in $(images_of "${2:-all}"); do t0=$SECONDS; build_image "$i"; log "$(ref_of "$i"): layers ready ($((SECONDS - t0)) s)"; done ;;
  load) for i in $(images_of "${2:-all}"); do load "$i"; done ;;
  archive) [ $# = 3 ] || die "usage: images.sh archive ray|operator FILE"; archive "$2" "$3" ;;
  refs) echo "$ray_ref"; echo "$operator_ref" ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac
