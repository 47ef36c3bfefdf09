# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch build (README, "GPU drivers"): the default pins torch for CUDA 13 (NVIDIA driver
# >= 580); TORCH_VARIANT=cu126 installs the same versions built for CUDA 12.6 (driver >= 525) from
# TORCH_INDEX_URL, with constraints-cu126.txt.
TORCH_VARIANT ?=
TORCH_VARIANTS := cu126
ifneq ($(TORCH_VARIANT),)
ifeq ($(filter $(TORCH_VARIANT),$(TORCH_VARIANTS)),)
$(error TORCH_VARIANT=$(TORCH_VARIANT): one of $(TORCH_VARIANTS), or empty for the default CUDA 13 build)
endif
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/$(TORCH_VARIANT)
CONSTRAINTS := constraints-$(TORCH_VARIANT).txt
TORCH_PIP_ARGS := --extra-index-url $(TORCH_INDEX_URL)
else
CONSTRAINTS := constraints.txt
TORCH_PIP_ARGS :=
endif
STAMP := $(VENV)/.prometar-installed$(if $(TORCH_VARIANT),-$(TORCH_VARIANT))
# Keep stray hub downloads from hanging: everything this project needs is local.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test test-fast demo bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c $(CONSTRAINTS) $(TORCH_PIP_ARGS) -e '.[dev]'
	rm -f $(VENV)/.prometar-installed*
	touch $(STAMP)

# Every tier: tests/unit, tests/pipeline (end-to-end runs, Ray, MLflow), tests/parity, tests/cluster.
test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The unit tier alone (tiny models, no Ray cluster): minutes, not tens of minutes.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/prometar-sweep demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# ruff's lint rules (line limit included) and its formatter; `ruff format` fixes the layout.
lint: $(STAMP)
	$(BIN)/ruff check prometar orchestration tests benchmarks
	$(BIN)/ruff format --check prometar orchestration tests benchmarks

clean:
	rm -rf prometar_runs .pytest_cache
