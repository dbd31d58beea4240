# AirflowNet: `make help` lists the targets. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
PIP := $(PY) -m pip
LLAMA_CPP_VERSION := 0.3.36
CONVERTER := third_party/llama.cpp/convert_hf_to_gguf.py
# llama.cpp is compiled for this CPU (-march=native) but without its AMX kernels: on Sapphire Rapids and later
# CPUs they segfault in ggml_backend_amx_mul_mat as soon as several sequences decode in one batch (the engine,
# generate, serve; llama.cpp issue #20824, seen on this project's 2-core VMs). AVX-512 and the repacked Q4_0/Q4_K
# kernels stay. tools/build_llama_server.sh uses the same flags.
NO_AMX := -U__AMX_TILE__ -U__AMX_INT8__ -U__AMX_BF16__
export LLAMA_CPP_CMAKE_ARGS := -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'
# Stage commands in dvc.yaml say `python`: make them find the project's virtualenv.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.DEFAULT_GOAL := help
.PHONY: help install run test test-fast lint mlflow-ui clean

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -U pip wheel
	@# torch first and pinned: otherwise a dependency pulls a CUDA build of several GB
	$(PIP) install -q -c constraints.txt torch==2.13.0
	@echo "compiling llama-cpp-python $(LLAMA_CPP_VERSION) (llama.cpp for this CPU, no AMX: ~7 min on 2 cores)"
	@# --no-cache-dir: pip caches a built wheel under its version alone, so a wheel compiled with other flags or
	@# for another CPU (AMX, or features this one lacks) would be reused silently
	CMAKE_ARGS="$$LLAMA_CPP_CMAKE_ARGS" $(PIP) install -q --no-cache-dir -c constraints.txt llama-cpp-python==$(LLAMA_CPP_VERSION)
	@echo "installing requirements"
	$(PIP) install -q -c constraints.txt -r requirements.txt
	$(PIP) install -q --no-deps -e .
	touch $@

$(CONVERTER): tools/fetch_llama_cpp.sh
	tools/fetch_llama_cpp.sh $(PY) $(LLAMA_CPP_VERSION) third_party/llama.cpp
	touch $@

install: $(VENV)/.installed $(CONVERTER) ## Create .venv and install everything (first time ~10 min)

run: install ## Run the whole pipeline with the default params (dvc repro, ~15 min on 2 cores)
	$(VENV)/bin/dvc repro

test: install airflow-env ## Lint, then the whole test suite (tiny end-to-end run, Airflow ground-truth tier included)
	$(VENV)/bin/ruff check src stages tests tools
	$(PY) -m pytest -q

test-fast: install ## Only the fast unit tests (no end-to-end run)
	$(PY) -m pytest -q -m "not integration and not slow"

lint: install ## Ruff over the project's code
	$(VENV)/bin/ruff check src stages tests tools

mlflow-ui: install ## Browse runs at http://127.0.0.1:5000 (the store the stages log to)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --host 127.0.0.1 --port 5000 --workers 1 \
	  --backend-store-uri "$$($(PY) -m airflow_net.tracking --uri)"

clean: ## Remove the virtualenv and the extracted llama.cpp converter (not data or models)
	rm -rf $(VENV) third_party .cache

.PHONY: remote
remote: install ## DVC remote from AIRFLOW_NET_REMOTE_URL/_ENDPOINT + AWS_* into .dvc/config.local, probed (~3 s)
	$(VENV)/bin/airflow-net remote setup

.PHONY: airflow-env
airflow-env: ## Separate Airflow 3 and 2.10 virtualenvs for dagcheck's --engine airflow tier (~2-8 min, network)
	tools/airflow_env.sh .airflow-env "3 2"

.PHONY: llama-server bench
LLAMA_BUILD := third_party/llama.cpp-build

$(LLAMA_BUILD)/bin/llama-server: tools/build_llama_server.sh
	tools/build_llama_server.sh $(PY) $(LLAMA_CPP_VERSION) $(LLAMA_BUILD)

llama-server: install $(LLAMA_BUILD)/bin/llama-server ## Build llama.cpp's server from the llama-cpp-python source release (~5 min)

bench: install llama-server ## Benchmark every inference method (bench: params; full runs: docs/serving.md)
	$(VENV)/bin/dvc repro bench
