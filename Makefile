# msaf-pipeline developer commands. `make test` installs everything it needs from scratch.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

SOURCES ?= data/sources
DATA_SRC ?= $(SOURCES)/crackforest
UAV_SRC ?= $(SOURCES)/uav75
MASONRY_SRC ?= $(SOURCES)/masonry
RAW := data/raw/crackforest
UAV_RAW := data/raw/uav75
MASONRY_RAW := data/raw/masonry

DEMO_SIZE ?= 4096

.PHONY: setup constraints browser qgis cad test test-fast bench lint clean data repro demo FORCE

setup: $(STAMP)

# The HTML report is tested in a real headless browser: Debian's chromium (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# torch first (a CPU build here), then the project, which keeps it. TORCH is split into pip arguments,
# so a CUDA build is e.g. TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126";
# the spec is remembered in $(TORCH_SPEC), and a different one reinstalls torch.
TORCH_SPEC := $(VENV)/.torch-spec
TORCH_STAMP := $(VENV)/.torch-installed

$(TORCH_SPEC): FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH)' | cmp -s - $@ || echo '$(TORCH)' > $@

$(TORCH_STAMP): $(TORCH_SPEC)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip uninstall --quiet --yes torch 2>/dev/null || true
	$(BIN)/python -m pip install --quiet $(TORCH)
	touch $@

# constraints.txt pins every other package: CI and users install the versions the suite passed with.
$(STAMP): pyproject.toml constraints.txt $(TORCH_STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $@

# Refresh the pins after changing dependencies (then run make test and commit constraints.txt).
constraints: setup
	{ echo "# Versions CI and users install with (make setup: pip install -c constraints.txt). torch is pinned by"; \
	  echo "# TORCH in the Makefile (CPU or CUDA build). Refresh: make constraints"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -i "^torch==\|^nvidia\|^triton\|^msaf"; } > constraints.txt

FORCE:

# The GIS outputs are tested with QGIS's own Python API, headless: Debian's python3-qgis (~100 MB).
qgis:
	@test -d /usr/lib/python3/dist-packages/qgis || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-qgis >/dev/null; }

# The CAD drawing (defects.dxf) is tested in a real CAD program, headless: Debian's librecad.
cad:
	@command -v librecad >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends librecad >/dev/null; }

# The full suite, one pytest-xdist worker per core (TEST_WORKERS); a test module stays on one worker
# (its module fixtures, e.g. the DVC project, are built once and its tests run in order), the longest
# modules first (tests/conftest.py: LONGEST_MODULES; xdist would otherwise order them by test count).
TEST_WORKERS ?= 2
test: setup browser qgis cad
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

# The inner loop: unit tests on generated fixtures (< 90 s on 2 cores); `make test` stays the full suite.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile --durations=5

# Bring the three labelled sets that travel with the repository (data/sources, see its README) into the
# DVC-tracked raw-data folders and track them: CFD road photos, UAV75 drone photos of concrete and
# masonry walls (both GPL-3.0: each LICENSE travels with every copy).
data: setup
	mkdir -p $(RAW) $(UAV_RAW) $(MASONRY_RAW)
	cp -r --no-preserve=mode $(DATA_SRC)/images $(DATA_SRC)/masks $(RAW)/
	cp -r --no-preserve=mode $(UAV_SRC)/images $(UAV_SRC)/masks $(UAV_SRC)/LICENSE $(UAV_RAW)/
	cp -r --no-preserve=mode $(MASONRY_SRC)/images $(MASONRY_SRC)/masks $(MASONRY_SRC)/LICENSE $(MASONRY_RAW)/
	PATH=$(BIN):$$PATH dvc add -q $(RAW) $(UAV_RAW) $(MASONRY_RAW)

# Reproduce the model: prepare -> train -> evaluate -> register (see dvc.yaml).
repro: data
	PATH=$(BIN):$$PATH dvc repro

# A survey from scratch: compose a georeferenced crack orthomosaic, survey it with the default model.
demo: setup
	mkdir -p demo
	$(BIN)/msaf mosaic --images $(DATA_SRC)/images --masks $(DATA_SRC)/masks --out demo/bridge_deck.tif \
		--truth demo/bridge_deck_truth.tif --size $(DEMO_SIZE) --gsd 0.001 --crs EPSG:32633 --compress jpeg \
		--footprint --seed 7
	$(BIN)/msaf survey demo/bridge_deck.tif --out demo/survey
	@echo
	@echo "Outputs in demo/survey/:"
	@echo "  report.html            open in a browser (self-contained)"
	@echo "  defects.gpkg, mask.tif open in QGIS (layers defects, cracks, crack_centerlines, condition_cells, summary; EPSG:32633)"
	@echo "  defects.geojson/.csv/.parquet, survey.json"
	@echo "Tracking:  $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db   (experiments 'surveys', 'training')"
	@echo "Prefect:   $(BIN)/prefect server start, then re-run the survey with PREFECT_API_URL=http://127.0.0.1:4200/api"

bench: setup
	$(BIN)/python bench/model_speed.py
	$(BIN)/python bench/survey_throughput.py

# ruff (lint and format), mypy on the library and the flows and on the benchmark scripts (run from
# bench/, where they import each other by name: a bench the library moved away from fails here, not
# in a later session), and the layer contracts: pipeline/ never imports flows/, no module of pipeline/
# is in an import cycle.
lint: setup
	$(BIN)/ruff check pipeline flows tests bench
	$(BIN)/ruff format --check pipeline flows tests bench
	$(BIN)/mypy
	cd bench && $(abspath $(BIN))/mypy --config-file ../pyproject.toml *.py
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_layers.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info demo
