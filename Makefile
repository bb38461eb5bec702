# Two commands do all the set-up: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Defaults for the embedded setup; any IDP_* variable already set in the environment wins.
export IDP_ENV ?= development
export IDP_ISSUER ?= http://127.0.0.1:5000
export IDP_DEV_OUTBOX ?= 1
IDP_PORT ?= 5000
IDP_WORKERS ?= 2
# Access log lines carry the path without the query string, where link tokens travel.
ACCESS_LOG_FORMAT := %(h)s %(t)s "%(m)s %(U)s" %(s)s %(b)s %(L)ss

.PHONY: run test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/idp db upgrade
	$(BIN)/idp demo seed
	@echo
	@echo "Identity provider:  $(IDP_ISSUER)"
	@echo "Discovery:          $(IDP_ISSUER)/.well-known/openid-configuration"
	@echo "Demo accounts:      olduser / Demo-Password-1 (created 2024-05-01)"
	@echo "                    newuser / Demo-Password-1 (created 2025-06-01)"
	@echo "Demo client secrets: instance/demo_clients.json"
	@if [ "$$IDP_DEV_OUTBOX" = 1 ]; then echo "Messages (outbox):  $(IDP_ISSUER)/dev/outbox"; fi
	@echo
	exec $(BIN)/gunicorn --bind 127.0.0.1:$(IDP_PORT) --workers $(IDP_WORKERS) \
		--access-logfile - --access-logformat '$(ACCESS_LOG_FORMAT)' wsgi:app

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/pytest -n auto

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache
