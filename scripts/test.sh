#!/usr/bin/env bash
# The whole suite, in layers: unit, then integration (real control plane), then e2e (real Ray).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export GRAFT_CACHE=${GRAFT_CACHE:-$HOME/.cache/graft}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$GRAFT_CACHE/torch-extensions}
# This checkout's graft first, for pytest and every process it starts (Ray workers, `graft operator`):
# the venv is cached outside the repo and shared by checkouts, and its editable install points at the
# checkout that built it, which may be another one.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0
# --durations: the slowest tests in every log (CI has 90 minutes; docs/testing-control-plane.md).
exec .venv/bin/python -m pytest -p no:cacheprovider --durations=25 "$@"
