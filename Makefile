# orch: `make demo` sets everything up and runs the demo; `make check` runs lint, types and tests.
SHELL := /bin/bash
PY := .venv/bin/python
ORCH := .venv/bin/orch
export CONTAINERS_CONF ?= $(CURDIR)/tests/podman.containers.conf
LLAMA_SERVER_LINK := .venv/bin/llama-server
DEMO_MODEL := $(HOME)/.cache/orch/models/tiny-dense.gguf
IMAGE := localhost/orch-llama-server:11434.0.0
IK_IMAGE := localhost/orch-ik-llama-server:0.1.5

.PHONY: setup system venv llama-server image ik-llama ik-image demo-model vllm-argparser demo down check lint types test test-fast fmt golden bench-plan bench-memory bench-noise bench-sched bench-speed clean

setup: system venv llama-server demo-model image ik-llama ik-image

system:
	@bash scripts/install-system-deps.sh

venv: .venv/.installed
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

llama-server: venv
	@bin=$$(bash scripts/build-llama-server.sh | tail -n 1) && ln -sf "$$bin" $(LLAMA_SERVER_LINK) && echo "llama-server: $$bin"

image: llama-server
	bash scripts/build-image.sh $(IMAGE) "$$(readlink -f $(LLAMA_SERVER_LINK))"

# ik_llama.cpp's CPU llama-server and llama-quantize (34 min on 2 busy cores here), cached.
ik-llama: venv
	@dir=$$(bash scripts/build-ik-llama.sh | tail -n 1) && echo "ik_llama.cpp: $$dir"

ik-image: ik-llama
	bash scripts/build-image.sh $(IK_IMAGE) "$$(bash scripts/build-ik-llama.sh | tail -n 1)/llama-server"

demo-model: venv
	@test -f $(DEMO_MODEL) || $(PY) -m orchestrator.synthetic --spec tiny-dense --out $(DEMO_MODEL)

# vLLM's own `vllm serve` argument parser (CPU-only, ~2.2 GB) in .venv-vllm, for tests/test_vllm_args.py.
vllm-argparser:
	@py=$$(bash scripts/install-vllm-argparser.sh) && echo "vllm-argparser: $$py"

demo: setup
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(ORCH) validate
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(ORCH) plan --dry-run
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(ORCH) up demo
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(ORCH) status demo

down:
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(ORCH) down demo

check: setup vllm-argparser lint types test

lint: venv
	.venv/bin/ruff check orchestrator tests benchmarks
	.venv/bin/ruff format --check orchestrator tests benchmarks

types: venv
	.venv/bin/mypy

test: setup vllm-argparser
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/pytest -q

# Quick iteration: no real engines or podman, no vLLM parser, no wheel install (CI runs all).
test-fast: venv
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/pytest -q -m "not engine and not vllm_parser and not install"

fmt: venv
	.venv/bin/ruff format orchestrator tests benchmarks
	.venv/bin/ruff check --fix orchestrator tests benchmarks

golden: venv
	PATH="$(CURDIR)/.venv/bin:$$PATH" .venv/bin/pytest -q tests/test_golden_plans.py tests/test_units.py --update-golden

bench-plan: venv
	$(PY) benchmarks/bench_plan.py

bench-memory: venv
	$(PY) benchmarks/bench_memory.py

# 10 identical `orch bench demo` and what --compare would call them (needs `make llama-server demo-model`).
bench-noise: venv
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(PY) -m benchmarks.bench_noise

# GPU compute buffers against llama.cpp's own planning (needs the llama-server build folder)
bench-sched: venv llama-server
	$(PY) -m benchmarks.sched_sim.compare --sweep

bench-speed: venv
	$(PY) -m benchmarks.bench_speed

clean:
	rm -rf .venv .venv-vllm .mypy_cache .ruff_cache .pytest_cache
