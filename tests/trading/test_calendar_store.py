"""Session tables kept on disk: the same table as a build, rebuilt when unreadable or from other versions, and a
warm store spares a process exchange_calendars and pandas altogether."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime

import exchange_calendars
import pytest

from backtests.data import write_ticks_csv
from tests.backtests.conftest import REPO, market
from trading import calendar_store
from trading.calendar_store import FileSessionStore
from trading.core import calendar
from trading.core.calendar import TradingCalendar


@pytest.fixture
def fresh_tables(monkeypatch):
    """No table built in this process yet, and no store: each test says where tables are kept."""
    monkeypatch.setattr(calendar, "_SESSIONS", {})
    monkeypatch.setattr(calendar, "_store", None)


def test_a_stored_table_is_the_very_table_a_build_makes(tmp_path, fresh_tables):
    built = calendar._build("XNYS")
    store = FileSessionStore(tmp_path)

    store.save("XNYS", built)

    assert store.load("XNYS") == built
    assert store.load("XLON") is None  # never stored: built by the caller


def test_a_process_builds_the_table_once_and_the_next_reads_it_without_building(tmp_path, fresh_tables,
                                                                             monkeypatch):
    store = FileSessionStore(tmp_path)
    calendar.use_session_store(store)
    built = calendar._sessions("XNYS")

    calendar._SESSIONS.clear()  # as in the next process
    monkeypatch.setattr(exchange_calendars, "get_calendar", lambda *a, **k: pytest.fail("built again despite the store"))

    assert calendar._sessions("XNYS") == built
    assert TradingCalendar("XNYS").is_open(datetime(2025, 6, 3, 14, 0, tzinfo=UTC))  # 10:00 ET, a Tuesday


@pytest.mark.parametrize("content", [b"PK\x03\x04 torn by a full disk", b""], ids=["torn", "empty"])
def test_an_unreadable_file_is_rebuilt_and_replaced(tmp_path, fresh_tables, caplog, content):
    store = FileSessionStore(tmp_path)
    store.path("XNYS").parent.mkdir(parents=True, exist_ok=True)
    store.path("XNYS").write_bytes(content)
    calendar.use_session_store(store)

    with caplog.at_level(logging.WARNING, logger="trading.calendar_store"):
        found = calendar._sessions("XNYS")

    assert found == calendar._build("XNYS")
    assert "unreadable" in caplog.text
    assert store.load("XNYS") == found  # the rebuilt table replaced the torn file


def test_another_exchange_calendars_time_zone_database_or_builder_never_reads_an_old_table(tmp_path, monkeypatch):
    store = FileSessionStore(tmp_path)
    before = store.path("XNYS")
    real_version = calendar_store.version

    monkeypatch.setattr(calendar_store, "version",
                        lambda name: "99.0" if name == "exchange_calendars" else real_version(name))
    assert store.path("XNYS") != before
    monkeypatch.undo()

    monkeypatch.setattr(calendar_store, "_tz_rules", lambda: "# version 2099a")
    assert store.path("XNYS") != before
    monkeypatch.undo()

    def fixed_build(exchange):  # a fix to how tables are built
        return None

    monkeypatch.setattr(calendar, "_build", fixed_build)
    assert store.path("XNYS") != before


def test_a_kept_table_is_readable_by_other_users(tmp_path):
    store = FileSessionStore(tmp_path)

    store.save("XNYS", calendar._build("XNYS"))

    assert store.path("XNYS").stat().st_mode & 0o777 == 0o644


def test_a_store_that_cannot_be_written_costs_speed_not_the_answer(tmp_path, fresh_tables, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the store's directory should be")
    calendar.use_session_store(FileSessionStore(blocked / "calendar-cache"))

    with caplog.at_level(logging.WARNING, logger="trading.calendar_store"):
        assert calendar.exchange_problem("XNYS") is None

    assert "not kept" in caplog.text


def test_a_backtest_with_a_warm_store_never_imports_exchange_calendars_or_pandas(tmp_path):
    ticks = tmp_path / "ticks.csv"
    write_ticks_csv(market().slice(0, 500), ticks)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "BIFROST_VAR_DIR": str(tmp_path / "var")}
    argv = [sys.executable, "-X", "importtime", "manage.py", "backtest", "--data", str(ticks), "--params",
            '{"trading_hours_only": true}', "--out", str(tmp_path / "result.json")]

    def imported() -> set[str]:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}

    cold, warm = imported(), imported()

    assert {"exchange_calendars", "pandas"} <= cold  # the first process built the table (and the test can fail)
    assert "exchange_calendars" not in warm and "pandas" not in warm
