# The two commands: `make run` and `make test`. Everything else is set up on the way.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
NODE_DIR := tests/e2e/node

.PHONY: install run test test-sqlite test-postgres lint bench node-deps screenshots

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

node-deps: $(NODE_DIR)/node_modules/.installed

$(NODE_DIR)/node_modules/.installed: $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(BIN)/python -m clients.devstack

# The two databases run side by side (about half the wall time on 2 cores; every fixture picks
# free ports and temp dirs, the e2e Redis keys are per run): each run's output goes to its log
# under .test-logs/ and is printed whole, one after the other, when both are done.
test: install node-deps
	$(MAKE) --no-print-directory lint
	@mkdir -p .test-logs; \
	$(MAKE) --no-print-directory test-sqlite > .test-logs/sqlite.log 2>&1 & sqlite=$$!; \
	$(MAKE) --no-print-directory test-postgres > .test-logs/postgres.log 2>&1 & postgres=$$!; \
	wait $$sqlite; sqlite_rc=$$?; wait $$postgres; postgres_rc=$$?; \
	cat .test-logs/sqlite.log .test-logs/postgres.log; \
	echo "== SQLite: $$(grep -E '(passed|failed|error)' .test-logs/sqlite.log | tail -n 1)"; \
	echo "== PostgreSQL: $$(grep -E '(passed|failed|error)' .test-logs/postgres.log | tail -n 1)"; \
	test $$sqlite_rc -eq 0 && test $$postgres_rc -eq 0

test-sqlite:
	@echo "== test suite on SQLite =="
	env -u DATABASE_URL $(BIN)/pytest $(PYTEST_ARGS)

test-postgres:
	@echo "== test suite on PostgreSQL ($(PG_URL)) =="
	DATABASE_URL=$(PG_URL) $(BIN)/pytest $(PYTEST_ARGS)

# ruff; import-linter (the dependency rule of design.md, .importlinter); mypy against the
# baseline that only shrinks (mypy.ini, mypy-baseline.txt).
lint: install
	$(BIN)/ruff check idp clients tests bench
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy idp | $(BIN)/mypy-baseline filter --no-colors

bench: install
	$(BIN)/python bench/run.py

# docs/screenshots/*.png: the ten-minute tour (tests/e2e/test_tour.py) and the upstream
# sign-in (tests/e2e/test_browser_upstream.py: the admin console's Upstreams page, the login
# page's "Sign in with" buttons) in Chromium against the stack `make run` starts, saving the
# main pages as they pass them (axe-core checks each).
screenshots: install node-deps
	SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/pytest -q -p no:randomly tests/e2e/test_tour.py \
	    tests/e2e/test_browser_upstream.py
