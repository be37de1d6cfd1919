# Two entry points for a fresh machine: `make quickstart` and `make test`.
# torch goes in first, pinned to the CPU build that pip finds locally (an open range could pull a
# multi-GB CUDA build); everything else comes from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install browser quickstart test clean-runs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on embedded defaults (SmolLM2 server, MiniLM, shipped XQuAD subsets):
# plan -> generate -> filter -> audit -> train -> eval -> report; prints where the report is.
quickstart: install
	$(BIN)/workbench languages
	$(BIN)/workbench run examples/quickstart.toml

# Headless Chromium renders the audit and report HTML in tests (Debian package; root on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: install Debian's 'chromium' package for the HTML tests"; fi; }

test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-runs:
	rm -rf runs/
