# Two commands do all the set-up: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Defaults of `make run` (the embedded setup); any IDP_* variable already set in the
# environment wins. They are not given to `make test`: the tests set their own.
run: export IDP_ENV ?= development
run: export IDP_ISSUER ?= http://127.0.0.1:$(IDP_PORT)
run: export IDP_DEV_OUTBOX ?= 1
IDP_ISSUER ?= http://127.0.0.1:$(IDP_PORT)
IDP_PORT ?= 5000
IDP_WORKERS ?= 2

.PHONY: run test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installed from the pinned versions of constraints.txt (as CI and the Docker image are).
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[demo]'
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/idp db upgrade
	$(BIN)/idp demo seed
	exec $(BIN)/python -m examples.run_demo --idp-url http://127.0.0.1:$(IDP_PORT) -- \
		$(BIN)/gunicorn --config gunicorn.conf.py --bind 127.0.0.1:$(IDP_PORT) \
		--workers $(IDP_WORKERS)

# The browser tests need Debian's Chromium and axe-core: tests/browser/setup.sh installs them
# when missing (apt-get as root or with sudo, npm ci from tests/browser/package-lock.json);
# tests/services/setup.sh installs PostgreSQL and Redis the same way. The tests start their own
# servers on loopback ports and stop them. The suite runs on SQLite (with the browser tests),
# then again on PostgreSQL (but the tests that use their own PostgreSQL in either run).
test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	bash tests/browser/setup.sh
	bash tests/services/setup.sh
	$(BIN)/pytest -n auto
	$(BIN)/pytest -n auto --database=postgresql --ignore=tests/browser -m "not own_postgresql"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache build dist

# The benchmark (docs/performance.md): the IdP under gunicorn with production settings, one
# worker on one CPU and the load generator on the other; prints every figure beside its target.
.PHONY: bench
bench: $(VENV)/.installed-test
	$(BIN)/python -m bench
