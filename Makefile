# One command each: make install | demo | test | test-fast | test-faults | lint | bench | app
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
# Extra flags for the demo's annotate, e.g. DEMO_ARGS="--config configs/single-model.yaml" (one pass).
DEMO_ARGS ?=
DEMO_SOURCES ?= $(if $(wildcard $(SHARED)/data/coco128-train/images),$(SHARED)/data/coco128-train/images,$(shell test -x $(BIN)/python && $(BIN)/python -c "from ultralytics.utils import ASSETS; print(ASSETS)" 2>/dev/null))

.PHONY: install demo test test-fast test-faults lint bench app clean-demo

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
	$(BIN)/bootstrap annotate $(DEMO_SOURCES) --dataset $(DEMO_DATASET) $(DEMO_ARGS)
	$(BIN)/bootstrap status $(DEMO_DATASET)
	@echo "Look at the boxes: $(BIN)/bootstrap app $(DEMO_DATASET)   (FiftyOne App on http://127.0.0.1:5151)"

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The unit layer only: pure logic, no FiftyOne, no Prefect, no model (seconds).
test-fast: install
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

# The fault-injection suite only (docs/reliability.md): real processes, databases and servers
# failing on purpose. BOOTSTRAP_FAULTS_REPORT=FILE records what each case showed (JSON).
test-faults: install
	$(BIN)/python -m pytest tests/faults $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check bootstrap flows cli tests scripts

# Scale bench sizes (synthetic corpora, generated once into .bench/): make bench BENCH_SCALES=1000,10000
BENCH_SCALES ?= 1000,10000,100000

bench: install
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_scale.py --scales $(BENCH_SCALES) $(BENCH_SCALE_ARGS)

app: install
	$(BIN)/bootstrap app $(DEMO_DATASET)

# Run it as a service: a local Prefect server (UI on http://127.0.0.1:4200) and the
# deployments of prefect.yaml served against it. Two terminals: `make server`, `make serve`.
PREFECT_PORT ?= 4200
# Private by default: no usage analytics from the server (make server PREFECT_SERVER_ANALYTICS_ENABLED=true to send them).
PREFECT_SERVER_ANALYTICS_ENABLED ?= false
PREFECT_ENV := PREFECT_HOME=$(CURDIR)/.prefect PREFECT_API_URL=http://127.0.0.1:$(PREFECT_PORT)/api \
	PREFECT_SERVER_ANALYTICS_ENABLED=$(PREFECT_SERVER_ANALYTICS_ENABLED)
.PHONY: server serve

server: install
	$(PREFECT_ENV) $(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

serve: install
	$(PREFECT_ENV) $(BIN)/python -m flows.serve

# -- Label Studio: the review backend, a separate service in a venv of its own -------------------
# Label Studio's dependencies conflict with ours, so it never enters .venv; bootstrap talks to it
# over HTTP (bootstrap/labelstudio.py). Loopback only. Settings (environment or make VAR=...):
#   LABEL_STUDIO_PORT (8080); LABEL_STUDIO_USERNAME (the login, created on first start) with a
#   password generated into .labelstudio/password; the API token `bootstrap review push/pull` send,
#   generated into .labelstudio/api-key (or LABEL_STUDIO_API_KEY, 40 hex characters, before the
#   first start); LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: images are served only from below this
#   folder (default $HOME; point it at the folder holding your images, never /).
LS_VENV := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed
LS_VERSION ?= 1.23.2
LS_DATA ?= $(CURDIR)/.labelstudio
LABEL_STUDIO_PORT ?= 8080
LABEL_STUDIO_USERNAME ?= reviewer@bootstrap.local
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT ?= $(HOME)

.PHONY: labelstudio labelstudio-install

labelstudio-install: $(LS_STAMP)

$(LS_STAMP):
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	@# The grep hides pip's notes about this machine's local package index, nothing else.
	@# A half-installed venv is removed, so that its tests skip instead of failing.
	set -o pipefail; $(LS_VENV)/bin/python -m pip install --quiet label-studio==$(LS_VERSION) 2>&1 | { grep -v "^WARNING: Location" || true; } || { rm -rf $(LS_VENV); exit 1; }
	touch $@

labelstudio: labelstudio-install
	@mkdir -p $(LS_DATA)
	@# umask 077: the secret files are 0600 from their first byte, never readable by others.
	@umask 077; test -s $(LS_DATA)/api-key || { test -n "$$LABEL_STUDIO_API_KEY" && echo "$$LABEL_STUDIO_API_KEY" || $(PYTHON) -c "import secrets; print(secrets.token_hex(20))"; } > $(LS_DATA)/api-key
	@umask 077; test -s $(LS_DATA)/password || $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(12))" > $(LS_DATA)/password
	@chmod 600 $(LS_DATA)/api-key $(LS_DATA)/password
	@echo "Label Studio on http://127.0.0.1:$(LABEL_STUDIO_PORT)  (login $(LABEL_STUDIO_USERNAME), password in $(LS_DATA)/password)"
	@echo "For bootstrap review push/pull: export LABEL_STUDIO_URL=http://127.0.0.1:$(LABEL_STUDIO_PORT) LABEL_STUDIO_API_KEY=\$$(cat $(LS_DATA)/api-key) LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=$(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)"
	@# The legacy token must be enabled when the data dir is created, or `Token` auth is refused.
	@# The password and token go in Label Studio's environment (readable by this user only), not
	@# on its command line (which every local user can read in `ps`).
	LABEL_STUDIO_BASE_DATA_DIR=$(LS_DATA) LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true \
	LATEST_VERSION_CHECK=false LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \
	LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=$(LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) \
	LABEL_STUDIO_USERNAME=$(LABEL_STUDIO_USERNAME) LABEL_STUDIO_PASSWORD="$$(cat $(LS_DATA)/password)" \
	LABEL_STUDIO_USER_TOKEN="$$(cat $(LS_DATA)/api-key)" \
	$(LS_VENV)/bin/label-studio start --internal-host 127.0.0.1 --port $(LABEL_STUDIO_PORT) --no-browser

# -- Chromium for the browser tests (tests/browser/): Debian's package, driven by Playwright -------
# Playwright's own browser download needs the internet; the tests point it at this executable
# (or BOOTSTRAP_CHROMIUM). Needs root or sudo for apt-get; without Chromium those tests skip.
.PHONY: browser-install

browser-install:
	@command -v chromium >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium; }
	@chromium --version 2>/dev/null
