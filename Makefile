# mlsteward: the two commands are `make demo` (bring everything up and run the demo) and `make test` (all tiers).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
CLUSTER ?= local
PYTEST_ARGS ?=

.PHONY: help deps venv bins crds docs manifests cluster-up cluster-down gitops-up gitops-down image test unit integration e2e e2e-current lint demo bench clean

help: ## List the targets.
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## Install the Debian packages the local cluster needs (root; idempotent).
	hack/deps.sh

venv: $(VENV)/.installed ## Create the virtualenv with the project and its test dependencies.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

bins: ## Build etcd, the Kubernetes components, helm and Prometheus from Go modules (cached; a second run builds nothing).
	hack/build-bins.sh
	hack/build-prometheus.sh

crds: venv ## Regenerate crds/ (and the chart's copy) from the operator's API models.
	$(BIN)/python -m mlsteward_operator.crdgen --out crds --chart charts/mlsteward

docs: crds ## Regenerate crds/ and docs/api-reference.md (the API reference) from the operator's API models.
	$(BIN)/python hack/apidocs.py

manifests: bins ## Regenerate manifests/ (plain install YAML) from the chart.
	hack/manifests.sh

cluster-up: deps bins ## Start the local single-node cluster (idempotent).
	hack/cluster.sh up

cluster-down: ## Stop the local cluster and remove everything it made.
	hack/cluster.sh down

image: venv ## Build the mlsteward image offline and import it into the cluster's containerd.
	hack/image.sh

lint: venv ## Layering rules (import-linter).
	$(BIN)/lint-imports

unit: venv ## Unit tier: pure functions and in-process servers on loopback.
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: venv bins ## Integration tier: the operator against a real kube-apiserver started by the test session.
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

# The local cluster's kubeconfig and the built kubectl/helm come first: a distribution kubectl of another version
# may be installed on the machine.
CLUSTER_ENV = source hack/lib.sh && eval "$$(hack/cluster.sh env)" && export PATH="$$(mls_bin_path):$$PATH"

gitops-up: cluster-up ## Start Flux (built from its Go modules) and a Git server on the machine, syncing into the local cluster.
	$(CLUSTER_ENV) && hack/gitops.sh up

gitops-down: ## Stop Flux and the Git server (cluster-down stops them too).
	hack/gitops.sh down

e2e: venv cluster-up gitops-up image ## End-to-end tier: real cluster, real pods, Flux (the local cluster's kubeconfig).
	$(CLUSTER_ENV) && eval "$$(hack/gitops.sh env)" && $(BIN)/pytest tests/e2e $(PYTEST_ARGS)

e2e-current: venv ## End-to-end tier against the current kubeconfig (any cluster with the image loaded; MLS_GIT_URL from `hack/gitops.sh env`).
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

test: deps venv lint unit integration e2e ## Run every test tier.

demo: deps venv ## Bring up the local cluster, build the image, deploy two model versions and serve a prediction.
	hack/demo.sh $(CLUSTER)

BENCH_ARGS ?=
bench: venv ## Run the benchmarks (see bench/README.md); e.g. BENCH_ARGS="--quick --no-evidently".
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean: cluster-down
	rm -rf $(VENV) build *.egg-info
