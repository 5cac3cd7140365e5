"""The daemon end to end on the simulated market, as a real process: hedging, pause, flatten, stop, signals,
the lease, restarts and a database outage."""
from __future__ import annotations

import signal
import sqlite3
import time

import pytest
from django.db import connection
from django.utils import timezone

from monitor.selectors import status_payload_get
from tests.e2e.conftest import wait_until
from trading.models import (
    ControlCommand,
    ControlState,
    Decision,
    Fill,
    ManagedLeg,
    Operation,
    Order,
    Position,
    StatusCurrent,
    StatusHistory,
)
from trading.selectors import lease_get, lease_is_fresh
from trading.services import control_command_create, strategy_config_create

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
FAST = {"BIFROST_SIM_SPEED": "3000"}  # the price moves enough within a second or two to need hedges


def _status():
    current = StatusCurrent.objects.filter(id=1).first()
    return current.payload if current else None


def _command(name: str, reason: str = "") -> ControlCommand:
    return control_command_create(command=name, reason=reason, user="test", source="test")


def _wait_command(cmd: ControlCommand, timeout_s: float = 10.0) -> ControlCommand:
    def finished():
        cmd.refresh_from_db()
        return cmd.state in ("done", "rejected", "expired")

    wait_until(finished, timeout_s, f"command {cmd.command} to finish")
    return cmd


def _running(timeout_s: float = 20.0) -> dict:
    return wait_until(lambda: (s := _status()) and s["daemon"]["state"] in ("running", "paused") and s,
                      timeout_s, "daemon running")


def _fast_config() -> None:
    strategy_config_create(name="e2e", params={"cooldown_s": 0, "min_price_move_bps": 0}, user="test", activate=True)


def test_hedge_loop_adopts_the_straddle_hedges_and_records_everything(daemon_factory):
    daemon = daemon_factory()

    fill = wait_until(lambda: Fill.objects.first(), 30, "the first hedge fill")
    status = wait_until(lambda: (s := _status()) and s["book"]["hedge_shares"] != 0 and s, 10, "hedge in status")

    legs = ManagedLeg.objects.all()
    assert sorted(leg.right for leg in legs) == ["C", "P"]  # the straddle only; the far-OTM manual call is not
    order = Order.objects.get(order_ref=fill.order_ref)
    assert order.order_ref.startswith("bifrost:")
    assert order.state == "filled" and order.filled_qty == order.qty
    decision = Decision.objects.get(order_ref=order.order_ref)
    assert decision.allowed and decision.reasons == [] and abs(decision.intent_shares) >= 25
    assert abs(decision.order_shares) == order.qty and (order.account, order.mode) == ("SIM", "sim")
    kinds = set(Operation.objects.values_list("kind", flat=True))
    assert {"leg_adopted", "order_sent", "order_working", "fill", "order_filled"} <= kinds
    assert abs(status["book"]["net_delta_shares"]) < 25
    manual = Position.objects.get(symbol="NVDA", sec_type="STK")
    assert manual.managed is False
    assert Position.objects.filter(symbol="AAPL", managed=False).exists()
    assert status_payload_get()["lamp"] in ("green", "yellow")
    daemon.stop()


def test_pause_means_zero_new_orders_while_snapshots_continue_then_resume_hedges_again(daemon_factory):
    _fast_config()
    daemon_factory(**FAST)
    wait_until(lambda: Fill.objects.exists(), 30, "a first hedge")

    pause = _wait_command(_command("pause", "watching"))
    orders_at_pause = Order.objects.count()
    first_snapshot = _status()["ts"]
    time.sleep(3.0)

    assert pause.state == "done"
    assert Order.objects.count() == orders_at_pause
    assert Order.objects.filter(created_at__gt=pause.acked_at).count() == 0
    assert _status()["ts"] > first_snapshot
    assert _status()["trading"]["paused"] is True
    assert status_payload_get()["lamp"] == "yellow"
    blocked = Decision.objects.filter(ts__gt=pause.acked_at, allowed=False)
    assert blocked.exists() and all("paused" in d.reasons for d in blocked)
    assert ControlState.load().paused is True

    resume = _wait_command(_command("resume"))
    wait_until(lambda: Order.objects.filter(created_at__gt=resume.acked_at).exists(), 15, "a hedge after resume")


def test_flatten_brings_only_our_hedge_shares_to_zero_and_leaves_manual_shares_alone(daemon_factory):
    _fast_config()
    daemon_factory(**FAST)
    wait_until(lambda: Fill.objects.exists(), 30, "a first hedge")
    manual_before = 100.0  # the simulated account's manual NVDA shares

    flatten = _wait_command(_command("flatten", "end of day"), 15)

    assert flatten.state == "done", flatten.result
    ours = sum(f.qty if f.side == "BUY" else -f.qty for f in Fill.objects.all())
    assert ours == 0
    assert Order.objects.filter(intent="flatten").exists()
    refresh = _wait_command(_command("refresh_account"))
    assert refresh.state == "done"
    nvda = Position.objects.get(symbol="NVDA", sec_type="STK")
    assert nvda.qty == manual_before
    assert Position.objects.get(symbol="AAPL").qty == 50
    assert ControlState.load().paused is True
    orders_after = Order.objects.count()
    time.sleep(1.5)
    assert Order.objects.count() == orders_after  # paused after flatten


def test_stop_command_acks_and_no_order_leaves_after_the_ack(daemon_factory):
    _fast_config()
    daemon = daemon_factory(**FAST)
    wait_until(lambda: Fill.objects.exists(), 30, "a first hedge")

    stop = _wait_command(_command("stop"))
    code = daemon.wait(5)

    assert stop.state == "done" and code == 0
    assert not Order.objects.filter(created_at__gt=stop.acked_at).exists()
    assert status_payload_get()["lamp"] == "red"
    assert "daemon_not_running" in status_payload_get()["block_reasons"]


def test_sigterm_while_waiting_for_the_broker_exits_within_a_second(daemon_factory):
    daemon = daemon_factory(BIFROST_SIM_FAULTS="connect_hang")
    wait_until(lambda: Operation.objects.filter(kind="daemon_state", message__contains="connecting").exists(),
               20, "daemon connecting")

    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    code = daemon.wait(5)
    elapsed = time.monotonic() - started

    assert code == 0
    assert elapsed < 1.0, f"took {elapsed:.2f} s"


def test_sigint_while_running_exits_within_a_second(daemon_factory):
    daemon = daemon_factory()
    _running()

    started = time.monotonic()
    daemon.signal(signal.SIGINT)
    code = daemon.wait(5)

    assert code == 0
    assert time.monotonic() - started < 1.0


def test_second_daemon_refuses_to_start_with_exit_3_naming_the_holder(daemon_factory):
    first = daemon_factory()
    _running()

    second = daemon_factory()
    code = second.wait(20)

    assert code == 3
    assert "another daemon holds the lease" in second.output
    assert str(first.proc.pid) in second.output


def test_restart_keeps_pause(daemon_factory):
    first = daemon_factory()
    _running()
    _wait_command(_command("pause"))
    _wait_command(_command("stop"))
    first.wait(5)
    restarted_at = timezone.now()

    daemon_factory(**FAST)
    status = wait_until(lambda: (s := _status()) and s["daemon"]["started_at"] > restarted_at.isoformat()
                        and s["daemon"]["state"] == "paused" and s, 20, "restarted daemon paused")
    time.sleep(1.5)

    assert status["trading"]["paused"] is True
    assert not Order.objects.filter(created_at__gt=restarted_at).exists()


def test_commands_queued_while_the_daemon_is_down_pause_it_at_start_and_a_flatten_never_runs_late(daemon_factory):
    pause = _command("pause", "maintenance")
    flatten = _command("flatten")
    stop = _command("stop")

    daemon_factory(**FAST)
    status = _running()
    time.sleep(1.5)

    assert pause.state == "done" and "start paused" in pause.result
    assert flatten.state == "expired" and stop.state == "done"
    assert status["daemon"]["state"] == "paused" and status["trading"]["paused"] is True
    assert not Order.objects.exists()  # paused from its first moment, and no late flatten


def test_crashed_daemon_is_never_shown_green(daemon_factory):
    daemon = daemon_factory()
    _running()
    wait_until(lambda: status_payload_get()["lamp"] != "red", 10, "a non-red lamp")

    daemon.signal(signal.SIGKILL)
    daemon.wait(5)
    time.sleep(1.0)  # > 3 heartbeats of 0.2 s

    status = status_payload_get()
    assert status["lamp"] == "red"
    assert "heartbeat_stale" in status["block_reasons"]


def test_database_outage_loses_nothing_and_reports_degraded(daemon_factory, tmp_path):
    daemon = daemon_factory()
    _running()
    time.sleep(1.0)
    outage_start = timezone.now()

    with _database_outage():
        journal = wait_until(lambda: _journaled_bytes(tmp_path), 15, "the daemon to journal")
        time.sleep(max(2.0, 7.0 - (timezone.now() - outage_start).total_seconds()))
    outage_end = timezone.now()

    wait_until(lambda: _journaled_bytes(tmp_path) == 0, 20, "the journal to be replayed")
    wait_until(lambda: (s := _status()) and s["ts"] > outage_end.isoformat() and not s["daemon"]["db_degraded"], 20,
               "a fresh snapshot written after the outage")
    history = StatusHistory.objects.filter(ts__gt=outage_start, ts__lt=outage_end)
    assert history.count() >= 5  # one a second (BIFROST_HISTORY_S=1), written after recovery
    assert any(c["reason"] == "db_unavailable" for h in history for c in h.payload["checks"])
    assert journal
    assert daemon.proc.poll() is None


def _journaled_bytes(var_dir) -> int:
    """What the daemons' journals hold (intent lines and records the database has not confirmed)."""
    return sum(p.stat().st_size for p in var_dir.glob("journal-*.jsonl") if p.name != "journal-rejected.jsonl")


class _database_outage:
    """Make the database refuse the daemon while the block runs: SQLite held under an exclusive lock;
    PostgreSQL closed to new connections with the daemon's sessions terminated."""

    def __enter__(self):
        self.name = connection.settings_dict["NAME"]
        if connection.vendor == "sqlite":
            self.lock = sqlite3.connect(self.name, timeout=10)
            self.lock.execute("BEGIN EXCLUSIVE")
        else:
            self._pg_admin(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false',
                           "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                           "AND application_name <> 'bifrost-tests' AND pid <> pg_backend_pid()")
        return self

    def __exit__(self, *exc):
        if connection.vendor == "sqlite":
            self.lock.rollback()
            self.lock.close()
        else:
            self._pg_admin(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true')
        return False

    def _pg_admin(self, *statements: str) -> None:
        """From the maintenance database: a database cannot close itself to connections."""
        import psycopg

        db = connection.settings_dict
        with psycopg.connect(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"] or "postgres",
                             dbname="postgres", autocommit=True) as admin:
            for statement in statements:
                admin.execute(statement, [self.name] if "%s" in statement else None)


def test_demo_config_shows_hedges_blocks_and_fills_within_the_first_minute(daemon_factory):
    from trading.management.commands.demo_setup import DEMO_PARAMS

    strategy_config_create(name="demo", params=DEMO_PARAMS, user="test", activate=True)
    started = time.monotonic()

    daemon_factory(BIFROST_SIM_SPEED="")  # the demo's own default speed
    wait_until(lambda: Fill.objects.exists(), 60, "a fill")
    wait_until(lambda: Decision.objects.filter(allowed=False).exists(), 60 - (time.monotonic() - started),
               "a blocked hedge")

    assert time.monotonic() - started < 60


@pytest.mark.parametrize("newcomer", [
    {"BIFROST_CLOCK_OFFSET_S": "5"},  # its host clock 5 s ahead
    {"BIFROST_CLOCK_OFFSET_S": "-5"},
    {"BIFROST_HEARTBEAT_S": "0.02"},  # a much shorter heartbeat than the holder's
], ids=["clock_ahead_5s", "clock_behind_5s", "faster_heartbeat"])
def test_a_newcomer_never_takes_a_healthy_daemons_lease(daemon_factory, newcomer):
    holder = daemon_factory()
    holding = _running()["daemon"]["lease"]

    code = daemon_factory(**newcomer).wait(20)

    assert code == 3
    assert lease_get().token == holding and lease_is_fresh(lease_get())
    assert holder.proc.poll() is None


def test_a_frozen_daemon_loses_its_lease_and_exits_4_without_a_single_order(daemon_factory):
    _fast_config()
    first = daemon_factory(**FAST)
    wait_until(lambda: Fill.objects.exists(), 30, "a first hedge")
    first_token = _status()["daemon"]["lease"]

    first.freeze()
    frozen_at = timezone.now()
    wait_until(lambda: not lease_is_fresh(lease_get()), 10, "the frozen daemon's lease to go stale")
    second = daemon_factory(**FAST)
    wait_until(lambda: lease_get().token != first_token, 20, "the takeover")
    first.signal(signal.SIGCONT)

    assert first.wait(15) == 4
    # Rows it queued before the freeze may land after it resumes; no order was decided after the freeze.
    assert not Order.objects.filter(order_ref__startswith=f"bifrost:{first_token}:", created_at__gt=frozen_at).exists()
    assert Operation.objects.filter(kind="lease_lost").exists()
    assert second.proc.poll() is None


@pytest.mark.postgres
def test_a_locked_status_table_stalls_only_the_sink_the_lease_holds_and_nothing_is_lost(daemon_factory, tmp_path):
    if connection.vendor != "postgresql":
        pytest.skip("a table lock is a PostgreSQL drill (SQLite locks the whole file: see the outage test)")
    _fast_config()
    holder = daemon_factory(**FAST)
    wait_until(lambda: Fill.objects.exists(), 30, "a first hedge")
    token = _status()["daemon"]["lease"]

    with _table_locked("trading_statuscurrent"):
        wait_until(lambda: _journaled_bytes(tmp_path), 15, "the stalled sink to journal")
        newcomer = daemon_factory(**FAST)
        assert newcomer.wait(20) == 3  # the holder's lease stayed fresh: renewed beside the stalled sink
        assert lease_get().token == token
    wait_until(lambda: _journaled_bytes(tmp_path) == 0, 30, "the journal to be replayed")

    ours = set(Order.objects.values_list("order_ref", flat=True))
    assert all(ref.startswith(f"bifrost:{token}:") for ref in ours)
    fills = Fill.objects.values_list("exec_id", flat=True)
    assert len(fills) == len(set(fills))
    assert _status()["daemon"]["lease"] == token
    assert holder.proc.poll() is None


class _table_locked:
    """Hold an ACCESS EXCLUSIVE lock on a table from another session while the block runs."""

    def __init__(self, table: str) -> None:
        self.table = table

    def __enter__(self):
        import psycopg

        db = connection.settings_dict
        self.conn = psycopg.connect(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"] or "postgres",
                                    dbname=db["NAME"], application_name="bifrost-tests")
        self.conn.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
        return self

    def __exit__(self, *exc):
        self.conn.rollback()
        self.conn.close()
        return False


def test_sigterm_during_a_database_stall_exits_at_once_and_journals_what_it_owed(daemon_factory, tmp_path):
    daemon = daemon_factory()
    _running()

    with _database_outage():
        wait_until(lambda: _journaled_bytes(tmp_path), 15, "the daemon to journal")
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = daemon.wait(10)
        elapsed = time.monotonic() - started

    assert code == 0
    assert elapsed < 1.5, f"took {elapsed:.2f} s"
    successor = daemon_factory()  # the next holder replays what the stalled one journaled, its stop included
    wait_until(lambda: Operation.objects.filter(kind="daemon_stop", message__contains="SIGTERM").exists(), 30,
               "the stalled daemon's last records replayed")
    successor.stop()
