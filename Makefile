# qun — build, run and test. Two commands matter: `make up` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUF := tools/node_modules/.bin/buf
PROTOS := $(shell find protos -name '*.proto')
SITE := $(shell $(PYTHON) -c 'import sys; print(f"lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages")')
PYTEST_WORKERS ?= 2

.PHONY: all venv proto lint-proto up test unit integration flows clean

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

lint-proto: $(BUF)
	cd protos && ../$(BUF) lint && ../$(BUF) format --diff --exit-code

# All processes on loopback with SQLite under data/; Ctrl-C stops them.
up: proto
	$(PY) -m cli --data-dir data up

test: proto lint-proto
	$(PY) -m pytest -n $(PYTEST_WORKERS) tests

unit: proto
	$(PY) -m pytest tests/unit

clean:
	rm -rf gen .pytest_cache
