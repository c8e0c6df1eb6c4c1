# One command each: make install | demo | test | lint | bench | app
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Offline machines: weights and sample images from ../shared when it is there (see README).
SHARED := $(abspath ../shared)
ifneq ($(wildcard $(SHARED)/models),)
export BOOTSTRAP_MODELS ?= $(SHARED)/models
endif
DEMO_DATASET ?= demo
DEMO_SOURCES ?= $(if $(wildcard $(SHARED)/data/coco128-train/images),$(SHARED)/data/coco128-train/images,$(shell test -x $(BIN)/python && $(BIN)/python -c "from ultralytics.utils import ASSETS; print(ASSETS)" 2>/dev/null))

.PHONY: install demo test lint bench app clean-demo

install: $(STAMP)

# Re-installs only when pyproject.toml changed; otherwise this is a no-op.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# The grep hides pip's notes about this machine's local package index, nothing else.
	set -o pipefail; $(BIN)/python -m pip install --quiet -e '.[dev]' 2>&1 | { grep -v "^WARNING: Location" || true; }
	touch $@

demo: install
	$(eval DEMO_SOURCES := $(or $(DEMO_SOURCES),$(shell $(BIN)/python -c "from ultralytics.utils import ASSETS; print(ASSETS)")))
	$(BIN)/bootstrap annotate $(DEMO_SOURCES) --dataset $(DEMO_DATASET)
	$(BIN)/bootstrap status $(DEMO_DATASET)
	@echo "Look at the boxes: $(BIN)/bootstrap app $(DEMO_DATASET)   (FiftyOne App on http://127.0.0.1:5151)"

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check bootstrap flows tests scripts

# Scale bench sizes (synthetic corpora, generated once into .bench/): make bench BENCH_SCALES=1000,10000
BENCH_SCALES ?= 1000,10000,100000

bench: install
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_scale.py --scales $(BENCH_SCALES) $(BENCH_SCALE_ARGS)

app: install
	$(BIN)/bootstrap app $(DEMO_DATASET)
