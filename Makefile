# Bifrost: `make demo` runs the whole system on the simulated market, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PG_TEST_URL ?= postgres://postgres@127.0.0.1:5432/bifrost
export BIFROST_ALLOW_DEV_SECRET ?= 1

IB_ASYNC_VENV ?= .venv-ib-async
IB_TESTS := tests/trading/ib tests/e2e/test_daemon_ib.py

.PHONY: install demo demo-ib test test-sqlite test-postgres test-ib-async lint bench lock clean-var

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.lock
	touch $@

install: $(VENV)/.installed

lock:  ## re-resolve requirements.in into requirements.lock
	$(VENV)/bin/pip install -q -r requirements.in
	$(VENV)/bin/pip freeze --exclude-editable > requirements.lock

# supervisord's configs keep their state (socket, logs, the demo's database) in $BIFROST_VAR_DIR.
demo demo-ib: export BIFROST_VAR_DIR ?= $(CURDIR)/var

demo: install
	$(PY) manage.py demo_setup
	@echo "Bifrost control room: http://$${BIFROST_BIND:-127.0.0.1:8000}/  (Ctrl-C stops everything)"
	$(VENV)/bin/supervisord -c deploy/supervisord.conf -n

# The same system with the real IB adapter against the TWS-protocol simulator (an extra supervisor program).
demo-ib: install
	$(PY) manage.py demo_setup
	@echo "Bifrost control room: http://$${BIFROST_BIND:-127.0.0.1:8000}/  (IBBroker -> tws_sim on 127.0.0.1:7497, fault control port 7498; Ctrl-C stops everything)"
	$(VENV)/bin/supervisord -c deploy/supervisord-ib.conf -n

lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# pytest exits 5 when it collects nothing; that is "no tests", not a failure of the run itself.
test: lint test-sqlite test-postgres test-ib-async

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

# ib_async in a venv of its own: the lock without ib_insync/eventkit/tzdata, plus requirements-ib-async.txt.
$(IB_ASYNC_VENV)/.installed: requirements.lock requirements-ib-async.txt
	$(PYTHON) -m venv $(IB_ASYNC_VENV)
	$(IB_ASYNC_VENV)/bin/pip install -q --upgrade pip
	grep -v -E '^(ib.insync|eventkit|tzdata)==' requirements.lock > $(IB_ASYNC_VENV)/requirements-base.txt
	$(IB_ASYNC_VENV)/bin/pip install -q -r $(IB_ASYNC_VENV)/requirements-base.txt -r requirements-ib-async.txt
	@if $(IB_ASYNC_VENV)/bin/python -c "import ib_insync" 2>/dev/null; then \
		echo "ib_insync must not be installed in $(IB_ASYNC_VENV)"; exit 1; fi
	touch $@

# The IB suite (simulator, IBBroker, daemon end to end) again with ib_async; the main venv runs it with ib_insync.
test-ib-async: $(IB_ASYNC_VENV)/.installed
	BIFROST_IB_CLIENT=ib_async $(IB_ASYNC_VENV)/bin/python -m pytest -p no:cacheprovider $(IB_TESTS)

bench: install
	$(PY) bench/greeks.py
	$(PY) bench/engine_latency.py

clean-var:
	rm -rf var/
