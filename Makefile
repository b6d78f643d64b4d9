# qun — build, run and test. Two commands matter: `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := tools/node_modules/.bin/buf
PROTOS := $(shell find protos -name '*.proto')
SITE := $(shell $(PYTHON) -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
PYTEST_WORKERS ?= 2

.PHONY: all venv venv-runtime proto lint-proto up down test unit integration flows clean bench lock lock-upgrade

all: proto

# --- Installs: every package from uv.lock, each checked against the hashes there -------------
# uv itself comes from PyPI, pinned with its hashes in tools/uv-requirements.txt, into .tools/uv.
UV_DIR := .tools/uv
UV := $(UV_DIR)/bin/uv
UV_ENV := UV_PROJECT_ENVIRONMENT=$(CURDIR)/$(VENV) UV_PYTHON=$(PYTHON)

$(UV): tools/uv-requirements.txt
	$(PYTHON) -m venv $(UV_DIR)
	$(UV_DIR)/bin/python -m pip install -q --require-hashes --no-deps --only-binary :all: -r $<
	touch $@

# `--locked`: uv.lock must match pyproject.toml (else: run `make lock`); uv checks every hash.
# The locked packages first (hatchling among them), then the project itself, editable: the build
# backend comes from the lock, not from an isolated build environment (pyproject.toml, [tool.uv]).
UV_SYNC = $(UV_ENV) $(UV) sync --locked --quiet
define sync
	$(UV_SYNC) $(1) --no-install-project
	$(UV_SYNC) $(1)
endef

# The runtime and the build group (code generation), nothing else: what `make up` needs. A venv
# that already has the development tools keeps them (--inexact).
$(VENV)/.runtime: pyproject.toml uv.lock | $(UV)
	$(call sync,--no-dev --group build --inexact)
	touch $@

# Everything: runtime, build and the development tools (tests, linters, deploy checks).
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(call sync,)
	touch $@ $(VENV)/.runtime

venv: $(VENV)/.installed
venv-runtime: $(VENV)/.runtime

# Re-resolves uv.lock after a change to the dependencies in pyproject.toml, keeping every other
# pin; `make lock-upgrade` moves every package to its newest allowed version. Both refresh uv's
# own pin (tools/uv-requirements.txt, from tools/uv-requirements.in).
lock: | $(UV)
	$(UV_ENV) $(UV) lock
	$(UV) pip compile --quiet --universal --generate-hashes --no-header tools/uv-requirements.in -o tools/uv-requirements.txt

lock-upgrade: | $(UV)
	$(UV_ENV) $(UV) lock --upgrade
	$(UV) pip compile --quiet --universal --generate-hashes --no-header --upgrade tools/uv-requirements.in -o tools/uv-requirements.txt

# Python code and type stubs from protos/ into gen/ (build output, not committed), imported as
# qun.* through the editable install (pyproject.toml, dev-mode-dirs).
gen/.stamp: $(PROTOS) $(VENV)/.runtime
	rm -rf gen && mkdir -p gen
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos \
	  --python_out=gen --grpc_python_out=gen --mypy_out=gen --mypy_grpc_out=gen $(PROTOS)
	touch $@

proto: gen/.stamp

$(BUF): tools/package.json
	cd tools && npm install --no-audit --no-fund --loglevel=error
	touch $@

# Undefined names, unused imports, syntax errors and import order (pyproject.toml), and the format.
PYTHON_DIRS := services gateway cli bench deploy tests
# `make check`: types (mypy, configured in pyproject.toml: strict for services/common and gateway), lint
# with import order (ruff) and formatting (ruff format --check). Fast; `make test` runs it first.
.PHONY: check lint-python
check: proto $(VENV)/.installed
	$(PY) -m mypy
	$(PY) -m ruff check $(PYTHON_DIRS)
	$(PY) -m ruff format --check $(PYTHON_DIRS)
lint-python: check

lint-proto: $(BUF)
	cd protos && ../$(BUF) lint && ../$(BUF) format --diff --exit-code

# The API stays wire- and source-compatible (`buf breaking`, the FILE rules of protos/buf.yaml),
# the public qun.gateway.v1 and every internal package alike: rolling deploys run old and new
# processes side by side. Checked against the main branch's protos (when the clone has one) and
# against the committed image of the last released API (API_IMAGE, also where there is no
# history). A deliberate break is a new package version (qun.gateway.v2), as buf expects; once a
# release is out, `make api-image` records its protos. BUF_AGAINST=<buf input> adds a comparison.
API_PROTOS ?= protos
API_IMAGE := $(CURDIR)/protos/api-image.binpb
MAIN_PROTOS = $(shell git rev-parse -q --verify refs/heads/main >/dev/null && echo '$(CURDIR)/.git\#branch=main,subdir=protos')
.PHONY: breaking api-image
breaking: $(BUF)
	@for against in $(MAIN_PROTOS) $(API_IMAGE) $(BUF_AGAINST); do \
	  echo "buf breaking $(API_PROTOS) --against $$against"; \
	  (cd $(API_PROTOS) && $(CURDIR)/$(BUF) breaking --against "$$against") || exit 1; \
	done

api-image: $(BUF)
	cd protos && ../$(BUF) build --exclude-source-info -o $(API_IMAGE)

# All processes on loopback with SQLite under data/; Ctrl-C (or `make down` elsewhere) stops them.
# Every QUN_* variable of the environment reaches every process (README, Configuration);
# PORT_BASE=60050 (or QUN_PORT_BASE) moves every port, PROMETHEUS=1 adds a Prometheus.
# Installs the runtime packages and the code generator only.
up: proto
	$(PY) -m cli --data-dir data $(if $(PORT_BASE),--port-base $(PORT_BASE)) up $(if $(filter 1 yes true,$(PROMETHEUS)),--prometheus)

# Stops the stack `make up` runs from data/, from any terminal.
down: $(VENV)/.runtime
	$(PY) -m cli --data-dir data down

test: proto venv check lint-proto breaking deploy-check browser-tools e2e
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not faults" tests
	$(MAKE) faults

# Kills each process and restarts the machine's PostgreSQL under load, so it runs alone, after
# the parallel suite (README, Reliability). REQUIRE_POSTGRES=1 turns a missing server into a failure.
.PHONY: faults soak
faults: proto venv
	$(PY) -m pytest -m faults tests/faults

# Ten minutes of mixed load on a local stack: RSS, latency percentiles and error codes per minute.
SOAK_SECONDS ?= 600
soak: proto venv
	$(PY) -m tests.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

unit: proto venv
	$(PY) -m pytest tests/unit

# Mutation testing of the rule modules against their unit tests (tests/mutation; about half an hour on
# 2 cores). MUTATION_ARGS="services/push/rules.py" for one module, "--changed" for those changed since
# their last full pass (what .ci/run does).
.PHONY: mutation
mutation: proto venv
	$(PY) -m tests.mutation.run $(MUTATION_ARGS)

clean:
	rm -rf gen .pytest_cache

# --- Deploy and operate: docker compose, Kubernetes, Prometheus, Grafana, end-to-end ----------
.PHONY: deploy-tools deploy-render deploy-check browser-tools e2e

COMPOSE_BIN = $(VENV)/$(SITE)/compose/docker-compose
K8S_VERSION ?= 1.30.0
K8S_MANIFESTS = $(filter-out deploy/k8s/kustomization.yaml,$(wildcard deploy/k8s/*.yaml))
# `config -q` needs every required variable set; unset, compose stops with the variable's name.
COMPOSE_CHECK_ENV = QUN_POSTGRES_PASSWORD=check QUN_GRAFANA_ADMIN_PASSWORD=check \
  QUN_INTERNAL_TOKEN=check-internal-token-0123456789 QUN_TOKEN_SECRET=check-token-secret-0123456789

# promtool and prometheus from Debian's package (skipped when both are on PATH); the docker
# compose binary and kubernetes-validate come with the venv (the dev group of pyproject.toml).
deploy-tools: $(VENV)/.installed
	@bash deploy/install-prometheus.sh

# Debian's chromium and chromedriver, for the ops console's browser test (tests/browser).
browser-tools:
	@bash tests/browser/install-chromium.sh

# Rewrites the generated deployment files from the process list (deploy/render.py).
deploy-render: $(VENV)/.installed
	$(PY) -m deploy.render

# Offline checks of everything under deploy/.
deploy-check: deploy-tools
	$(PY) -m deploy.render --check
	env $(COMPOSE_CHECK_ENV) $(COMPOSE_BIN) -f deploy/docker-compose.yml --profile observability config -q
	$(VENV)/bin/kubernetes-validate --strict --quiet -k $(K8S_VERSION) $(K8S_MANIFESTS)
	promtool check config deploy/prometheus/prometheus.yml deploy/prometheus/prometheus-kubernetes.yml
	promtool check rules deploy/prometheus/rules.yml
	promtool test rules deploy/prometheus/rules.test.yml

# The black-box suite against the gateway: a local stack (PostgreSQL when reachable) and a real
# Prometheus unless QUN_E2E_GATEWAY names a running deployment (README, Deploy and operate).
e2e: proto venv deploy-tools
	$(PY) -m pytest tests/e2e

# The same suite against the real compose deployment, built from deploy/Dockerfile and torn down
# afterwards: `docker compose` where a Docker engine runs, else podman (tests/containers).
# Not part of `make test`; .ci/run runs it after. E2E_COMPOSE_ARGS go to pytest.
.PHONY: e2e-compose
e2e-compose: proto deploy-tools
	$(PY) -m tests.containers.compose_e2e $(E2E_COMPOSE_ARGS)

# Throughput, latency and size as ratios to the machine's own gRPC limit (results/).
# SQLite, then PostgreSQL when TEST_DATABASE_URL answers; BENCH_ARGS="--db postgres" (or sqlite) for one.
bench: proto venv
	$(PY) -m bench.run $(BENCH_ARGS)

# The Kubernetes manifests played with `podman kube play` (rendered through the overlay in
# tests/containers/k8s-e2e: the run's image, two replicas of every backend), their probes run, the
# same suite through the gateway pod, then calls spread over replicas and a pod killed mid-run.
# Images come from the cache e2e-compose fills (or are built and put there). E2E_K8S_ARGS go to pytest.
.PHONY: e2e-k8s
e2e-k8s: proto deploy-tools
	$(PY) -m tests.containers.k8s_e2e $(E2E_K8S_ARGS)
