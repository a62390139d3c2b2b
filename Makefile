# msaf-pipeline developer commands. `make test` installs everything it needs from scratch.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DATA_SRC ?= ../shared/data/crackforest
RAW := data/raw/crackforest

.PHONY: setup browser test bench lint clean data repro

setup: $(STAMP)

# The HTML report is tested in a real headless browser: Debian's chromium (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# torch first (a CPU build here; override TORCH=... for CUDA), then the project pinned to keep it.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: setup browser
	$(BIN)/python -m pytest -q

# Bring the labelled crack photos into the DVC-tracked raw-data folder (from DATA_SRC) and track them.
data: setup
	mkdir -p $(RAW)
	cp -r --no-preserve=mode $(DATA_SRC)/images $(DATA_SRC)/masks $(RAW)/
	PATH=$(BIN):$$PATH dvc add -q $(RAW)

# Reproduce the model: prepare -> train -> evaluate -> register (see dvc.yaml).
repro: data
	PATH=$(BIN):$$PATH dvc repro

bench: setup
	$(BIN)/python bench/model_speed.py

lint: setup
	$(BIN)/ruff check pipeline flows tests bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
