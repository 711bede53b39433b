# Developer entry points. `make test` works on a fresh clone: it installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# checkov pins packages that clash with the app's SDKs, so it gets a venv of its own.
CHECKOV_VENV := .venv-checkov

.PHONY: test lint complexity typecheck unit infra-check fmt clean run serve event browser screenshots

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

$(CHECKOV_VENV)/.installed: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

lint: $(VENV)/.installed complexity
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# No function in the repository ranked worse than C by radon's cyclomatic complexity.
COMPLEXITY_PATHS := function_app.py shared sandbox benchmarks tests
complexity: $(VENV)/.installed
	@worse="$$($(VENV)/bin/radon cc --min D --show-complexity $(COMPLEXITY_PATHS))"; \
	if [ -n "$$worse" ]; then \
	  echo "radon: functions ranked worse than C (split them):"; echo "$$worse"; exit 1; \
	fi

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

# Headless Chromium for the console's browser tests: Debian's chromium and chromium-driver,
# installed once (as root, or with sudo); nothing downloads a browser at run time.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium chromium-driver </dev/null; \
	fi

# pytest in parallel processes (pytest-xdist). Most of the time is end-to-end tests waiting on
# leases, boots and timers, so more workers than cores pays. Each worker starts its own Azurite
# on free loopback ports (stopped whatever the result) and its own stacks; the tests of a module
# that share one stack stay together on one worker (tests/conftest.py).
# Tests marked `alone` (real wall-clock timings: a host killed mid fan-out, a token bucket's
# refill) run afterwards in one process, so the others' CPU does not shift them (exit code 5:
# none selected).
TEST_WORKERS ?= 4
unit: $(VENV)/.installed node_modules/.installed browser
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not alone" $(PYTEST_ARGS)
	$(PY) -m pytest -m alone $(PYTEST_ARGS) || [ $$? -eq 5 ]

# checkov on infra/, offline; zero failed checks (skips are justified inline).
infra-check: $(CHECKOV_VENV)/.installed
	bash infra/check.sh

test: lint typecheck unit infra-check

# The whole product on this machine (Azurite, fake Azure, local host): four runs, checked.
run: $(VENV)/.installed node_modules/.installed
	$(PY) -m sandbox.demo run

# The same stack, kept up for manual use; `make event KIND=pre RUN=linux` talks to it.
serve: $(VENV)/.installed node_modules/.installed
	$(PY) -m sandbox.demo serve

# docs/console-runs.png and docs/console-run.png, after `make run`'s runs.
screenshots: $(VENV)/.installed node_modules/.installed browser
	$(PY) -m sandbox.console_screenshots

event: $(VENV)/.installed
	$(PY) -m sandbox.demo event $(KIND) $(RUN)

fmt: $(VENV)/.installed
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) node_modules .mypy_cache .pytest_cache .ruff_cache
