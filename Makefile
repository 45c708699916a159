# skiff: `make up` sets everything up and runs a cluster; `make test` runs the whole test suite.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/skiff-target
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
SKIFF_DEBUG := $(CARGO_TARGET_DIR)/debug/skiff
SKIFF_RELEASE := $(CARGO_TARGET_DIR)/release/skiff
DATA_DIR ?=

.PHONY: up setup build release test test-rust test-python lint fmt bench bench-apiserver bench-serving clean

## Set up the machine, build skiff and start a single-node cluster in the foreground.
up: setup release
	@echo "Starting skiff (Ctrl-C stops it)."
	$(SKIFF_RELEASE) up $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

## Install system and Python packages the tests and benchmarks need (idempotent).
setup:
	@scripts/setup.sh

build:
	cargo build --workspace --bins --examples

release:
	cargo build --release -p skiff

## The whole test suite: lint, Rust unit/integration/e2e tests, Python client tests.
test: setup lint test-rust test-python

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

test-rust: build
	cargo nextest run --workspace --locked --no-fail-fast

test-python: build
	SKIFF_BIN=$(SKIFF_DEBUG) SKIFF_SERVE_CMD="$(SKIFF_DEBUG) serve" $(PY) -m pytest -q tests

fmt:
	cargo fmt --all

## Benchmarks (figures go to docs/benchmarks.md).
bench: bench-apiserver bench-serving

bench-apiserver: setup
	bench/apiserver/run.sh

bench-serving: setup
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(VENV)/bin/pip install -q -r bench/serving/requirements.txt
	cargo build --release -p skiff
	cargo build --release -p skiff-serving --example grpc_load --example http_floor
	SKIFF_SERVE_CMD="$(SKIFF_RELEASE) serve" $(PY) bench/serving/run.py --duration 5

clean:
	cargo clean
