"""Services and commands refuse bad input and change nothing; claims are atomic; records are idempotent."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from trading.errors import ConfigError, ControlCommandError, LeaseHeldError
from trading.models import ControlCommand, ControlState, DaemonLease, Fill, Operation, Order, StrategyConfig
from trading.selectors import engine_seed_load, lease_get, lease_is_fresh
from trading.services import (
    control_command_ack,
    control_command_create,
    control_commands_due,
    control_commands_settle_before,
    lease_acquire,
    lease_renew,
    order_intents_write,
    records_write,
    strategy_config_create,
    strategy_params_active,
)

pytestmark = pytest.mark.django_db


def _renewed_ago(seconds: float) -> None:
    """Backdate the lease's last renewal (in the test database the database clock is the host clock)."""
    DaemonLease.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=seconds))


def test_unknown_control_command_is_rejected_never_mapped_to_another():
    with pytest.raises(ControlCommandError) as refused:
        control_command_create(command="halt_everything", user="op")

    assert refused.value.field == "command"
    assert ControlCommand.objects.count() == 0


def test_unknown_control_command_on_the_cli_exits_1_and_queues_nothing(capsys):
    with pytest.raises(SystemExit) as exited:
        call_command("control", "shutdown")

    assert exited.value.code == 1
    assert "unknown command 'shutdown'" in capsys.readouterr().err
    assert ControlCommand.objects.count() == 0


def test_control_wait_times_out_with_exit_2_when_the_running_daemon_does_not_take_it(daemon_lease):
    with pytest.raises(SystemExit) as exited:
        call_command("control", "pause", "--wait", "0.3", "--reason", "lunch")

    assert exited.value.code == 2
    assert ControlCommand.objects.get().state == "pending"


def test_start_without_supervisord_is_rejected_with_the_reason(settings, tmp_path):
    settings.BIFROST_SUPERVISOR_URL = f"unix://{tmp_path / 'nothing.sock'}"

    with pytest.raises(SystemExit) as exited:
        call_command("control", "start", "--wait", "1")

    cmd = ControlCommand.objects.get()
    assert exited.value.code == 1
    assert cmd.state == "rejected" and "supervisord is not reachable" in cmd.result


def test_bad_params_are_rejected_with_the_field_named_and_nothing_saved():
    with pytest.raises(ConfigError) as wrong_type:
        strategy_config_create(name="x", params={"cooldown_s": "soon"}, user="op")
    with pytest.raises(ConfigError) as unknown:
        strategy_config_create(name="x", params={"cooldown_seconds": 5}, user="op")

    assert wrong_type.value.field == "cooldown_s"
    assert unknown.value.field == "cooldown_seconds"
    assert StrategyConfig.objects.count() == 0


def test_only_one_config_is_active_and_activation_is_audited():
    first = strategy_config_create(name="a", params={}, user="op", activate=True)
    second = strategy_config_create(name="b", params={"cooldown_s": 30}, user="op", activate=True)

    _, active = strategy_params_active()

    assert active.pk == second.pk
    assert StrategyConfig.objects.filter(active=True).count() == 1
    assert first.params_hash != second.params_hash
    assert Operation.objects.filter(kind="config_activated").count() == 2


def test_due_commands_come_stop_first_and_old_ones_expire_by_database_time(daemon_lease):
    too_old = control_command_create(command="resume", user="op")
    ControlCommand.objects.filter(pk=too_old.pk).update(created_at=timezone.now() - timedelta(seconds=301))
    pause = control_command_create(command="pause", user="op")
    stop = control_command_create(command="stop", user="op")

    due = control_commands_due()

    assert [c.pk for c in due] == [stop.pk, pause.pk]
    too_old.refresh_from_db()
    assert too_old.state == "expired" and "older than 300 s" in too_old.result


def test_a_command_is_acked_once_only(daemon_lease):
    cmd = control_command_create(command="pause", user="op")

    first = control_command_ack(command_id=cmd.pk)
    second = control_command_ack(command_id=cmd.pk)

    cmd.refresh_from_db()
    assert (first, second) == (True, False)
    assert cmd.state == "acked" and cmd.acked_at is not None


def test_commands_while_no_daemon_runs_settle_at_once_pause_persisted_flatten_never_late():
    pause = control_command_create(command="pause", reason="weekend", user="op")
    flatten = control_command_create(command="flatten", user="op")
    stop = control_command_create(command="stop", user="op")

    assert pause.state == "done" and "start paused" in pause.result
    assert ControlState.load().paused is True and ControlState.load().paused_reason == "weekend"
    assert flatten.state == "expired" and "not running" in flatten.result
    assert stop.state == "done" and "not running" in stop.result

    resume = control_command_create(command="resume", user="op")

    assert resume.state == "done" and ControlState.load().paused is False


def test_commands_left_pending_by_a_dead_daemon_are_settled_when_the_next_one_starts(daemon_lease):
    pause = control_command_create(command="pause", user="op")
    reset = control_command_create(command="reset_halt", user="op")
    _renewed_ago(200)  # the daemon died without taking them
    successor = lease_acquire(mode="sim", heartbeat_s=1.0)

    control_commands_settle_before(started_at=successor.started_at)

    pause.refresh_from_db()
    reset.refresh_from_db()
    assert pause.state == "done" and ControlState.load().paused is True
    assert reset.state == "expired"
    assert control_commands_due() == []


def _numbered(*records: tuple[str, dict], start: int = 1) -> list[tuple[int, str, dict]]:
    return [(start + i, kind, data) for i, (kind, data) in enumerate(records)]


def _order(ref: str, side: str = "BUY", qty: float = 50) -> tuple[str, dict]:
    return ("order", {"order_ref": ref, "intent": "hedge", "symbol": "NVDA", "side": side, "qty": qty,
                      "order_type": "market", "limit_price": None, "state": "sent", "spot_at_decision": 180.0,
                      "params_hash": "h", "ts": timezone.now().isoformat()})


def _fill(ref: str, exec_id: str, side: str, qty: float, price: float) -> tuple[str, dict]:
    return ("fill", {"exec_id": exec_id, "order_ref": ref, "symbol": "NVDA", "side": side, "qty": qty,
                     "price": price, "commission": 1.0, "ts": timezone.now().isoformat()})


def test_fills_are_idempotent_and_update_their_order():
    records_write(source="a", records=_numbered(_order("bifrost:a:1"), _fill("bifrost:a:1", "e1", "BUY", 50, 180.0)))
    records_write(source="b", records=_numbered(_fill("bifrost:a:1", "e1", "BUY", 50, 180.0)))

    order = Order.objects.get()
    assert Fill.objects.count() == 1
    assert order.filled_qty == 50 and float(order.avg_price) == 180.0


def test_a_replayed_batch_is_never_applied_twice():
    batch = _numbered(_order("bifrost:a:1"), ("operation", {"ts": timezone.now().isoformat(), "kind": "note",
                                                            "message": "once"}))
    first = records_write(source="a", records=batch)

    again = records_write(source="a", records=batch)  # a journal replayed after its batch did commit

    assert (first, again) == (2, 0)
    assert Operation.objects.filter(kind="note").count() == 1


def test_order_intents_create_a_row_only_for_an_order_the_database_never_got():
    records_write(source="a", records=_numbered(_order("bifrost:a:1")))
    Order.objects.filter(order_ref="bifrost:a:1").update(state="filled")
    intent = {k: v for k, v in _order("bifrost:a:2")[1].items() if k != "state"}

    created = order_intents_write([{**_order("bifrost:a:1")[1]}, intent])

    assert created == 1
    assert Order.objects.get(order_ref="bifrost:a:1").state == "filled"  # never regressed
    assert Order.objects.get(order_ref="bifrost:a:2").state == "sent"  # open: reconciliation settles it


def test_engine_seed_rebuilds_the_hedge_ledger_and_the_persisted_pause():
    records_write(source="a", records=_numbered(
        _order("bifrost:a:1"), _fill("bifrost:a:1", "e1", "BUY", 50, 180.0), _order("bifrost:a:2", "SELL", 20),
        _fill("bifrost:a:2", "e2", "SELL", 20, 181.0), _order("bifrost:a:3", "BUY", 10)))
    Order.objects.filter(order_ref__in=["bifrost:a:1", "bifrost:a:2"]).update(state="filled")
    Order.objects.filter(order_ref="bifrost:a:3").update(state="working")
    ControlState.objects.update_or_create(id=1, defaults={"paused": True})

    seed = engine_seed_load(today=timezone.now().date())

    assert seed.paused is True
    assert seed.hedge_shares == 30
    assert seed.hedge_realized_usd == pytest.approx(20.0)
    assert {b.exec_id for b in seed.recent_fills} == {"e1", "e2"}
    assert [o[0] for o in seed.open_orders] == ["bifrost:a:3"]
    assert seed.next_seq == 4


def test_status_without_a_daemon_is_red_with_the_reason(capsys):
    call_command("status", "--json")

    status = json.loads(capsys.readouterr().out)
    assert status["lamp"] == "red"
    assert status["block_reasons"] == ["daemon_not_running"]
    assert set(status) >= {"lamp", "verdict", "block_reasons", "checks", "daemon", "trading", "market", "book",
                           "pnl", "counters", "config", "account", "ts"}


def test_every_admin_page_answers(admin_client):
    from django.contrib import admin

    for model in admin.site._registry:
        opts = model._meta
        response = admin_client.get(f"/admin/{opts.app_label}/{opts.model_name}/")
        assert response.status_code == 200, opts.model_name


def test_a_fresh_lease_is_refused_naming_its_holder_and_a_stale_one_is_taken_over():
    first = lease_acquire(mode="sim", heartbeat_s=1.0)
    _renewed_ago(2.0)

    with pytest.raises(LeaseHeldError) as held:
        lease_acquire(mode="sim", heartbeat_s=1.0)
    _renewed_ago(3.5)
    taken = lease_acquire(mode="sim", heartbeat_s=1.0)

    assert first.owner in str(held.value)
    assert taken.token != first.token
    assert DaemonLease.objects.count() == 1
    assert Operation.objects.filter(kind="lease_takeover").exists()


def test_staleness_is_the_holders_interval_not_the_newcomers():
    lease_acquire(mode="sim", heartbeat_s=1.0)
    _renewed_ago(1.0)  # healthy for a 1 s daemon; would be stale for a 0.2 s one

    with pytest.raises(LeaseHeldError):
        lease_acquire(mode="sim", heartbeat_s=0.2)

    assert lease_is_fresh(lease_get())


def test_a_renewal_after_a_takeover_reports_the_lease_lost():
    first = lease_acquire(mode="sim", heartbeat_s=1.0)
    _renewed_ago(10)
    second = lease_acquire(mode="sim", heartbeat_s=1.0)

    assert lease_renew(token=first.token, daemon_clock_at=timezone.now()) is False
    assert lease_renew(token=second.token, daemon_clock_at=timezone.now()) is True


def test_admin_filters_decisions_by_block_reason(admin_client):
    from trading.models import Decision

    now = timezone.now()
    Decision.objects.create(ts=now, allowed=False, reasons=["cooldown"], intent_shares=30, net_delta_shares=-30,
                            trading_state="pause_cost")
    Decision.objects.create(ts=now, allowed=False, reasons=["paused"], intent_shares=30, net_delta_shares=-30,
                            trading_state="no_trade")

    changelist = admin_client.get("/admin/trading/decision/?reason=paused").context["cl"]

    assert [d.reasons for d in changelist.result_list] == [["paused"]]


def test_editing_a_config_in_the_admin_saves_a_new_version_and_refuses_bad_params(admin_client):
    original = strategy_config_create(name="base", params={"cooldown_s": 60}, user="op", activate=True)
    url = f"/admin/trading/strategyconfig/{original.pk}/change/"

    refused = admin_client.post(url, {"name": "base", "params": '{"cooldown_s": "soon", "bogus": 1}', "note": ""})
    saved = admin_client.post(url, {"name": "base", "params": '{"cooldown_s": 30}', "note": "faster"})

    assert refused.status_code == 200
    errors = str(refused.context["adminform"].form.errors["params"])
    assert "cooldown_s" in errors and "bogus" in errors
    assert saved.status_code == 302
    original.refresh_from_db()
    assert original.params["cooldown_s"] == 60 and original.active
    newest = StrategyConfig.objects.exclude(pk=original.pk).get()
    assert newest.params["cooldown_s"] == 30 and not newest.active


def test_every_operation_kind_the_code_writes_is_a_documented_choice():
    import re
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    literal = re.compile(r'(?:_operation\((?:actions, )?|operation_log\(kind=|"kind": )"([a-z_]+)"')
    written = {m for package in ("trading", "monitor", "backtests") for path in (repo / package).rglob("*.py")
               if "migrations" not in path.parts for m in literal.findall(path.read_text())}
    dynamic = {f"command_{s}" for s in ("done", "rejected", "expired")} | {
        f"order_{s}" for s in ("sent", "working", "partial", "filled", "cancelled", "rejected", "unknown")} | {
        "flatten_done", "flatten_failed", "pause", "resume", "reset_halt", "flatten", "stop", "clock_ok"}

    assert written, "the scan found nothing: the pattern is stale"
    # a start position, an alert payload, a prefix, a strategy kind
    not_operations = {"straddle", "alert_test", "command_", "straddle_keeper"}
    assert (written | dynamic) - not_operations <= set(Operation.Kind.values), sorted(
        (written | dynamic) - not_operations - set(Operation.Kind.values))


def test_an_order_in_the_admin_links_to_its_decision_and_its_fills(admin_client):
    from trading.models import Decision

    records_write(source="a", records=_numbered(_order("bifrost:a:1"), _fill("bifrost:a:1", "e1", "BUY", 50, 180.0)))
    Decision.objects.create(ts=timezone.now(), allowed=True, reasons=[], intent_shares=50, order_shares=50,
                            net_delta_shares=-50, trading_state="need_hedge", order_ref="bifrost:a:1")
    Decision.objects.create(ts=timezone.now(), allowed=True, reasons=[], intent_shares=9, order_shares=9,
                            net_delta_shares=-9, trading_state="need_hedge", order_ref="bifrost:a:2")

    page = admin_client.get("/admin/trading/order/").content.decode()
    decisions = admin_client.get("/admin/trading/decision/", {"order_ref": "bifrost:a:1"}).context["cl"].result_list
    fills = admin_client.get("/admin/trading/fill/", {"order_ref": "bifrost:a:1"}).context["cl"].result_list

    assert "/admin/trading/decision/?order_ref=bifrost%3Aa%3A1" in page and "/admin/trading/fill/?order_ref=" in page
    assert [d.order_shares for d in decisions] == [50]
    assert [f.exec_id for f in fills] == ["e1"]


def test_a_later_daemon_adopting_an_order_keeps_its_decision_time():
    from datetime import timedelta

    decided = _order("bifrost:a:7")
    records_write(source="a", records=_numbered(decided))
    later = (timezone.now() + timedelta(seconds=30)).isoformat()
    adopted = ("order", {**decided[1], "state": "working", "ts": later,
                         "message": "adopted: open at the broker, unknown to this daemon"})
    records_write(source="b", records=_numbered(adopted))

    order = Order.objects.get(order_ref="bifrost:a:7")
    assert order.created_at.isoformat() == decided[1]["ts"] and order.updated_at.isoformat() == later
    assert order.state == "working"
