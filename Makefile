# Two entry points for a fresh machine: `make quickstart` and `make test`.
# torch goes in first, pinned to the CPU build that pip finds locally (an open range could pull a
# multi-GB CUDA build); everything else comes from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install quickstart test lint clean-runs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

quickstart: install
	$(BIN)/workbench languages
	$(BIN)/workbench plan runs/quickstart --config examples/quickstart.toml

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-runs:
	rm -rf runs/
