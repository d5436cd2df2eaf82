# modelloop developer entry points. `make help` lists them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help venv test test-unit test-cluster lint typecheck crds crds-check cluster-binaries prometheus-binary cluster-up cluster-down bench

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

venv: ## create/reuse the Python environment (.venv)
	bash hack/python-env.sh

test: venv cluster-binaries images ## every test tier that runs on one machine (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv prometheus-binary images ## only the tests that need no cluster (a real Prometheus included)
	$(PY) -m pytest -m "not cluster" $(PYTEST_ARGS)

test-cluster: venv cluster-binaries images ## only the cluster tier
	$(PY) -m pytest -m cluster $(PYTEST_ARGS)

# --- images (docs/install.md "Images"): podman/buildah, daemonless, tagged by the chart's appVersion ---
.PHONY: images operator-image
images: ## build/reuse the operator, trainer and server images (hack/images.sh; installs podman if missing)
	bash hack/images.sh

operator-image: ## build/reuse only the operator image (what the tests run; about a minute cold)
	bash hack/images.sh operator

# --- local Kubernetes control plane (tests/harness, README "Local control plane") ---
CLUSTER_WORKDIR ?= .cache/cluster
.PHONY: cluster-env

cluster-binaries: ## build/reuse etcd, kube-*, kwok, prometheus (go build) and kubectl, helm (cached in ~/.cache/modelloop/bin)
	bash hack/build-cluster-binaries.sh

prometheus-binary: ## build/reuse only Prometheus (go build of its pinned module hack/go/prometheus)
	bash hack/build-cluster-binaries.sh prometheus

cluster-up: venv cluster-binaries ## start a local control plane; then: eval "$(make -s cluster-env)"
	$(PY) -m tests.harness.controlplane up --workdir $(CLUSTER_WORKDIR)

cluster-env: ## print export lines (KUBECONFIG, PATH) for the running local control plane
	@$(PY) -m tests.harness.controlplane env --workdir $(CLUSTER_WORKDIR)

cluster-down: ## stop the local control plane and remove its work dir
	$(PY) -m tests.harness.controlplane down --workdir $(CLUSTER_WORKDIR)

# --- local pod runner: plays the kubelet of node local-0 (tests/harness/README-podrunner.md) ---
.PHONY: pod-runner podrunner-test
POD_RUNNER_ARGS ?=
pod-runner: venv ## run pods on node local-0 as local processes (after cluster-up; Ctrl-C stops them)
	$(PY) -m tests.harness.podrunner --kubeconfig $(or $(KUBECONFIG),$(CLUSTER_WORKDIR)/kubeconfig) \
		--node local-0 --workdir .cache/podrunner $(POD_RUNNER_ARGS)

podrunner-test: venv cluster-binaries ## pod runner tests: unit (~15 s) and on a local control plane (~1 min)
	$(PY) -m pytest tests/podrunner $(PYTEST_ARGS)

.PHONY: docs-reference
crds: venv ## regenerate crds/, the chart's CRD templates and docs/reference/ from the API models
	$(PY) -m modelloop_operator.crdgen

crds-check: venv ## fail with a diff when generated CRDs or docs/reference/ differ from the models (CI)
	$(PY) -m modelloop_operator.crdgen --check

docs-reference: crds ## the field reference is generated together with the CRDs

# --- operator (docs/operator.md) ---
.PHONY: run-operator
lint: venv ## ruff over the repository
	$(VENV)/bin/ruff check .

typecheck: venv ## ruff, mypy --strict (operator) and the import layers (.importlinter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy operator/src
	$(VENV)/bin/lint-imports

run-operator: venv ## run the operator against $$KUBECONFIG (all namespaces, standalone)
	$(VENV)/bin/modelloop-operator --all-namespaces --standalone --verbose

# --- chart, Argo CD health checks, dashboards (docs/install.md, docs/gitops.md) ---
.PHONY: chart-test argocd-cm
chart-test: venv ## Helm chart, Argo CD health checks and dashboards, without a cluster
	$(PY) -m pytest tests/chart tests/argocd tests/observability -m "not cluster" $(PYTEST_ARGS)

argocd-cm: venv ## regenerate examples/argocd/ argocd-cm snippets from argocd/resource_customizations
	$(PY) argocd/generate_argocd_cm.py

# --- trainer image (docs/trainer.md) ---
.PHONY: trainer-test trainer-typecheck bench-trainer
trainer-test: venv ## trainer and optimizer unit tier (tiny BERT: train, resume, DDP, optimize, package)
	$(PY) -m pytest tests/trainer $(PYTEST_ARGS)

trainer-typecheck: venv ## mypy --strict and ruff over the trainer package
	$(VENV)/bin/mypy trainer-image/src
	$(VENV)/bin/ruff check trainer-image tests/trainer

bench-trainer: venv ## trainer benchmarks (minutes): MiniLM on BBC News, int8, distillation, EfficientNet on digits
	cd bench && ../$(PY) train_bbc.py && ../$(PY) optimize_int8.py && ../$(PY) optimize_distill.py && ../$(PY) train_digits.py

# --- server image (server-image/README.md, docs/metrics.md) ---
.PHONY: server-test server-typecheck bench-serve bench-capture
server-test: venv ## server image: handler, drift, supervisor, config builder, Dockerfile, real TorchServe (~2 min)
	$(PY) -m pytest tests/server $(PYTEST_ARGS)

server-typecheck: venv ## mypy --strict and ruff over the server package and its tests
	$(VENV)/bin/mypy --strict server-image/src tests/server
	$(VENV)/bin/ruff check server-image tests/server

bench-serve: venv ## TorchServe req/s at concurrency 8 vs in-process texts/s, fp32 and int8 (minutes)
	$(PY) bench/serve_throughput.py

bench-capture: venv ## TorchServe req/s with request capture at 100% vs off, and feedback throughput (minutes)
	$(PY) bench/capture_overhead.py

.PHONY: bench-loop
bench-loop: venv ## does retraining on labelled traffic learn? first vs retrained vs warm vs direct on the loop's shift (minutes)
	$(PY) bench/loop_quality.py

# --- the whole loop on this machine (README "Quickstart (make demo)", "End-to-end test") ---
.PHONY: demo test-e2e
demo: venv cluster-binaries images ## the whole loop for real: train, int8, serve, capture, feedback, a gated retrain, promote (KEEP=1 leaves it up)
	$(PY) hack/demo.py

test-e2e: venv cluster-binaries images ## the e2e tier: tests/e2e (real trainer, optimizer, TorchServe on the local stack)
	$(PY) -m pytest tests/e2e -m e2e -s $(PYTEST_ARGS)

.PHONY: bench-operator bench-retrain bench-scale
bench-operator: venv cluster-binaries ## 500 TrainingJobs on kwok: create->status, create->Job p50/p99, operator RSS
	$(PY) bench/operator_trainingjobs.py

BENCH_SCALE_ARGS ?=
bench-scale: venv cluster-binaries ## 1,000 TJ + 500 MDEP on 100 kwok GPU nodes, then an operator restart (BENCH_SCALE_ARGS="--trainingjobs 20 --deployments 10 --nodes 4" for a smoke run)
	$(PY) bench/operator_scale.py $(BENCH_SCALE_ARGS)

bench-retrain: venv cluster-binaries ## threshold crossing -> retraining TrainingJob, against a real Prometheus
	$(PY) bench/retrain_latency.py

.PHONY: bench-images
bench-images: venv ## the images' sizes and what makes them big, an unchanged rebuild (builds what is missing)
	$(PY) bench/image_sizes.py

bench: bench-images bench-operator bench-scale bench-retrain bench-trainer bench-serve bench-capture bench-loop ## every benchmark (tens of minutes); figures in bench/results/*.json
