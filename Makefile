# Two commands on a fresh machine: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.prometar-installed
# Keep stray hub downloads from hanging: everything this project needs is local.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv test test-fast demo bench lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
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
