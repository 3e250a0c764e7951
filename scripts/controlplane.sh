#!/usr/bin/env bash
# Build (or reuse) a real Kubernetes control plane for the integration tests:
#   kube-apiserver, kube-controller-manager  (tools/controlplane: k8s.io/kubernetes)
#   etcd                                     (tools/etcd: go.etcd.io/etcd/server/v3)
#   helm                                     (tools/helm: helm.sh/helm/v3/cmd/helm)
# and for the one-node cluster of scripts/cluster.sh:
#   kubelet, kube-scheduler, kube-proxy      (tools/controlplane: k8s.io/kubernetes)
#   coredns                                  (tools/coredns: github.com/coredns/coredns)
#   kuberay-operator                         (tools/kuberay: github.com/ray-project/kuberay/ray-operator)
#   kueue                                    (tools/kueue: sigs.k8s.io/kueue/cmd/kueue)
#   pause                                    (gcc -static build/pause/linux/pause.c of k8s.io/kubernetes)
# and fetch the official KubeRay CRDs (github.com/ray-project/kuberay/ray-operator) and
# Kueue's CRDs and webhook manifests (sigs.k8s.io/kueue).
#
# Binaries go to a cache outside the repo, keyed by the pinned versions, the tools
# modules' go.mod/go.sum and the Go version:
#   ${GRAFT_CACHE:-$HOME/.cache/graft}/controlplane-<key>/bin/
#   ${GRAFT_CACHE:-$HOME/.cache/graft}/kuberay-crds-<version>/
#   ${GRAFT_CACHE:-$HOME/.cache/graft}/kueue-manifests-<version>/
# A warm run takes seconds. Progress goes to stderr; stdout carries
#   KUBERAY_CRDS=<dir>
#   KUEUE_MANIFESTS=<dir>
#   <bin dir>            (always the last line)
#
# Usage:
#   scripts/controlplane.sh [COMPONENT...]  build what is missing, print the bin dir;
#                                           COMPONENT: etcd kube-apiserver kube-controller-manager
#                                           helm crds kubelet kube-scheduler kube-proxy coredns
#                                           kuberay-operator kueue kueue-manifests pause
#                                           (default: all)
#   scripts/controlplane.sh gen-replaces V  print the staging replace block for k8s.io/kubernetes V
#                                           (paste into tools/controlplane/go.mod when bumping)
# Env: GRAFT_CACHE, GRAFT_BUILD_P (go build -p, default 2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0
KUBERAY_VERSION=v1.6.0

log() { echo "controlplane: $*" >&2; }

modver() { # modver <go.mod> <module path> -> version from its require line
  awk -v m="$2" '$1==m && $2 ~ /^v/ {print $2; exit} $1=="require" && $2==m {print $3; exit}' "$1"
}

modinfo() { # modinfo <module@version> <field>: field of `go mod download -json`
  (cd "${TMPDIR:-/tmp}" && go mod download -json "$1") \
    | sed -n "s/^[[:space:]]*\"$2\": \"\(.*\)\",\{0,1\}\$/\1/p" | head -1
}

if [ "${1:-}" = gen-replaces ]; then
  v=${2:?usage: $0 gen-replaces vX.Y.Z}
  minor=${v#v1.}; sv="v0.${minor}"
  dir=$(modinfo "k8s.io/kubernetes@$v" Dir)
  echo "replace ("
  grep -E '^[[:space:]]*k8s.io/[^ ]+ => \./staging/' "$dir/go.mod" | awk -v sv="$sv" '{print "\t"$1" => "$1" "sv}'
  echo ")"
  exit 0
fi

K8S_VERSION=$(modver "$root/tools/controlplane/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(modver "$root/tools/etcd/go.mod" go.etcd.io/etcd/server/v3)
HELM_VERSION=$(modver "$root/tools/helm/go.mod" helm.sh/helm/v3)
COREDNS_VERSION=$(modver "$root/tools/coredns/go.mod" github.com/coredns/coredns)
KUBERAY_OPERATOR_VERSION=$(modver "$root/tools/kuberay/go.mod" github.com/ray-project/kuberay/ray-operator)
KUEUE_VERSION=$(modver "$root/tools/kueue/go.mod" sigs.k8s.io/kueue)
GO_VERSION=$(go env GOVERSION)
: "${K8S_VERSION:?no k8s.io/kubernetes in tools/controlplane/go.mod}"
: "${ETCD_VERSION:?no etcd in tools/etcd/go.mod}"
: "${HELM_VERSION:?no helm in tools/helm/go.mod}"
: "${COREDNS_VERSION:?no coredns in tools/coredns/go.mod}"
: "${KUEUE_VERSION:?no kueue in tools/kueue/go.mod}"
if [ "$KUBERAY_OPERATOR_VERSION" != "$KUBERAY_VERSION" ]; then
  echo "tools/kuberay pins ray-operator $KUBERAY_OPERATOR_VERSION but the CRDs are $KUBERAY_VERSION" >&2; exit 2
fi

sum=$(cat "$root"/tools/{controlplane,etcd,helm,coredns,kuberay,kueue}/go.{mod,sum} | sha256sum | cut -c1-10)
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_${GO_VERSION}_${sum}"
cache=${GRAFT_CACHE:-$HOME/.cache/graft}
dir="$cache/controlplane-$key"
bin="$dir/bin"
crds="$cache/kuberay-crds-$KUBERAY_VERSION"
kueue_manifests="$cache/kueue-manifests-$KUEUE_VERSION"
mkdir -p "$bin"

all="etcd kube-apiserver kube-controller-manager helm crds kubelet kube-scheduler kube-proxy coredns"
all="$all kuberay-operator kueue kueue-manifests pause"
want=" ${*:-$all} "
for c in $want; do
  case " $all " in *" $c "*) ;; *) echo "unknown component: $c (known: $all)" >&2; exit 2;; esac
done
wanted() { [[ $want == *" $1 "* ]]; }
missing() { wanted "$1" && [ ! -x "$bin/$1" ]; }

P=${GRAFT_BUILD_P:-2}

build() { # build <name> <tools module dir> <package> <ldflags> [go build tags]
  local name=$1 mod=$2 pkg=$3 ldflags=$4 tags=${5-selinux,notest}
  # One builder per binary (parallel pytest sessions, CI); waiters reuse the result.
  exec 9>"$dir/.lock-$name"
  flock 9
  if [ -x "$bin/$name" ]; then exec 9>&-; return 0; fi
  log "building $name from $pkg (cold: minutes; log of timings in $dir/build-times.txt)"
  local t0=$SECONDS
  (cd "$mod" && go build -p "$P" -trimpath -buildvcs=false -mod=readonly -tags "$tags" \
      -ldflags "-s -w $ldflags" -o "$bin/.$name.tmp" "$pkg")
  mv "$bin/.$name.tmp" "$bin/$name"
  local dt=$((SECONDS - t0))
  echo "$name ${dt}s $(date -u +%FT%TZ) p=$P" >> "$dir/build-times.txt"
  log "built $name in ${dt}s"
  exec 9>&-
}

if missing etcd; then
  ev=${ETCD_VERSION}
  build etcd "$root/tools/etcd" go.etcd.io/etcd/server/v3 \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=${ev}"
fi

k8s_bins="kube-apiserver kube-controller-manager kubelet kube-scheduler kube-proxy"
any_missing() { local c; for c in "$@"; do missing "$c" && return 0; done; return 1; }
if any_missing $k8s_bins; then
  kv=${K8S_VERSION#v}; major=${kv%%.*}; rest=${kv#*.}; minor=${rest%%.*}
  date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$(modinfo "k8s.io/kubernetes@$K8S_VERSION" Info)")
  kl=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kl="$kl -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    kl="$kl -X $p.gitTreeState=clean -X $p.buildDate=${date:-1970-01-01T00:00:00Z} -X $p.gitCommit="
  done
  for c in $k8s_bins; do
    if missing "$c"; then build "$c" "$root/tools/controlplane" "k8s.io/kubernetes/cmd/$c" "$kl"; fi
  done
fi

if missing coredns; then
  build coredns "$root/tools/coredns" github.com/coredns/coredns \
    "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" ""
fi

if missing kuberay-operator; then
  build kuberay-operator "$root/tools/kuberay" github.com/ray-project/kuberay/ray-operator "" ""
fi

if missing kueue; then
  build kueue "$root/tools/kueue" sigs.k8s.io/kueue/cmd/kueue \
    "-X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" ""
fi

if missing pause; then
  # The sandbox image's program, from the same k8s.io/kubernetes source as the kubelet.
  exec 9>"$dir/.lock-pause"
  flock 9
  if [ ! -x "$bin/pause" ]; then
    command -v gcc >/dev/null || { echo "gcc is needed for the pause binary (scripts/cluster.sh deps)" >&2; exit 1; }
    src=$(modinfo "k8s.io/kubernetes@$K8S_VERSION" Dir)/build/pause/linux/pause.c
    log "building pause from $src (gcc -static)"
    gcc -Os -Wall -Werror -static -DVERSION="$K8S_VERSION-graft" -o "$bin/.pause.tmp" "$src"
    strip "$bin/.pause.tmp"
    mv "$bin/.pause.tmp" "$bin/pause"
  fi
  exec 9>&-
fi

if missing helm; then
  # Like helm's Makefile: default Capabilities.KubeVersion from its k8s.io/client-go (v0.N -> 1.N).
  cg=$(cd "$root/tools/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
  cgminor=${cg#v0.}; cgminor=${cgminor%%.*}
  hl="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    hl="$hl -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$cgminor"
  done
  build helm "$root/tools/helm" helm.sh/helm/v3/cmd/helm "$hl"
fi

if wanted crds && [ ! -f "$crds/.complete" ]; then
  log "fetching KubeRay CRDs from github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION"
  src=$(modinfo "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" Dir)
  tmp=$(mktemp -d "$cache/.kuberay-crds.XXXXXX")
  for k in rayclusters rayjobs rayservices; do
    install -m 0644 "$src/config/crd/bases/ray.io_$k.yaml" "$tmp/ray.io_$k.yaml"
  done
  touch "$tmp/.complete"
  chmod 0755 "$tmp"
  mv -T "$tmp" "$crds" 2>/dev/null || rm -rf "$tmp"  # another run won the race
fi

if wanted kueue-manifests && [ ! -f "$kueue_manifests/.complete" ]; then
  log "fetching Kueue CRDs and webhook manifests from sigs.k8s.io/kueue@$KUEUE_VERSION"
  src=$(modinfo "sigs.k8s.io/kueue@$KUEUE_VERSION" Dir)/config/components
  tmp=$(mktemp -d "$cache/.kueue-manifests.XXXXXX")
  mkdir "$tmp/crds"
  install -m 0644 "$src"/crd/bases/*.yaml "$tmp/crds/"
  install -m 0644 "$src/webhook/manifests.yaml" "$tmp/webhooks.yaml"
  touch "$tmp/.complete"
  chmod -R a+rX "$tmp"
  mv -T "$tmp" "$kueue_manifests" 2>/dev/null || rm -rf "$tmp"
fi

cat > "$dir/versions.env" <<EOF
K8S_VERSION=$K8S_VERSION
ETCD_VERSION=$ETCD_VERSION
HELM_VERSION=$HELM_VERSION
KUBERAY_VERSION=$KUBERAY_VERSION
COREDNS_VERSION=$COREDNS_VERSION
KUEUE_VERSION=$KUEUE_VERSION
GO_VERSION=$GO_VERSION
KUBERAY_CRDS=$crds
KUEUE_MANIFESTS=$kueue_manifests
EOF

echo "KUBERAY_CRDS=$crds"
echo "KUEUE_MANIFESTS=$kueue_manifests"
echo "$bin"
