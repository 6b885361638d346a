# archlab: one command to set up and run the main job, one to run the tests.
#   make demo   creates .venv, installs archlab (torch 2.13.0 first when the venv has none),
#               and compiles a zoo spec, printing its summary
#   make test   the whole test suite (what CI runs)

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin

.PHONY: setup demo test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@# users with GPUs can bring their own CUDA build: any torch already in the venv is kept
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev,postgres,interop,umap,sweep,ui]"
	@touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/arch validate specs/*.json
	$(BIN)/arch compile specs/vit-tiny-digits.json

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python bench/compile_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
