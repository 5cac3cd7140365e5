# Bifrost: `make demo` runs the whole system on the simulated market, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/bifrost
export BIFROST_ALLOW_DEV_SECRET ?= 1

.PHONY: install demo test test-sqlite test-postgres lint bench lock clean-var

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.lock
	touch $@

install: $(VENV)/.installed

lock:  ## re-resolve requirements.in into requirements.lock
	$(VENV)/bin/pip install -q -r requirements.in
	$(VENV)/bin/pip freeze --exclude-editable > requirements.lock

demo: install
	$(PY) manage.py demo_setup
	@echo "Bifrost control room: http://$${BIFROST_BIND:-127.0.0.1:8000}/  (Ctrl-C stops everything)"
	$(VENV)/bin/supervisord -c deploy/supervisord.conf -n

lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# pytest exits 5 when it collects nothing; that is "no tests", not a failure of the run itself.
test: lint test-sqlite test-postgres

test-sqlite: install
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

test-postgres: install
	@if $(PY) -m tests.probe postgres; then \
		echo "== database tests again on PostgreSQL ($(PG_TEST_URL)) =="; \
		DATABASE_URL=$(PG_TEST_URL) $(PY) -m pytest -m "django_db or postgres"; rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc; \
	else \
		echo "SKIPPED: PostgreSQL not reachable at 127.0.0.1:5432 - database tests ran on SQLite only"; \
	fi

bench: install
	$(PY) bench/greeks.py
	$(PY) bench/engine_latency.py

clean-var:
	rm -rf var/
