"""The commander's records (seed 003): intents published by strategies, the snapshot reconcile saw, and a run
whose decision, planned orderRefs and skipped/clipped strategies are stored before anything could be sent."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.utils import timezone

from trading.commander import (
    commander_decide,
    commander_execute,
    commander_orders_update,
    commander_request,
    intent_publish,
    snapshot_create,
    strategy_sending_set,
)
from trading.core.commander import COMMANDER_REF_PREFIX, RULE_ALLOCATION, Rules
from trading.core.events import Contract
from trading.core.strategies import MarketView
from trading.errors import ConfigError
from trading.models import CommanderRun, ControlCommand, Operation, Order, Strategy

pytestmark = pytest.mark.django_db

ACCOUNT = "DU123"
OLD, NEW = date(2026, 12, 4), date(2027, 1, 8)


def leg(right: str, strike: float, expiry: date) -> Contract:
    return Contract(int(strike * 10) + (1 if right == "C" else 2) + expiry.toordinal() * 10_000, "NVDA", "OPT",
                    right, strike, expiry, 100, f"NVDA {expiry:%y%m%d}{right}{strike:g}")  # type: ignore[arg-type]


def market(now) -> MarketView:
    options = {(r, k, e): (leg(r, k, e), 4.0 if e == NEW else 0.5) for e in (OLD, NEW) for k in (175.0, 180.0)
               for r in "CP"}
    return MarketView("NVDA", 179.0, now.date(), options)


ACCOUNT_INFO = {"account": ACCOUNT, "net_liquidation": 500_000.0, "available_funds": 250_000.0}


def positions() -> list[dict]:
    """Bifrost holds 2 straddles expiring in two days; the operator holds shares and a call of their own (the
    rows as the daemon's reconcile reports them)."""
    rows = [(leg("C", 180.0, OLD), 2, True), (leg("P", 180.0, OLD), 2, True), (leg("C", 175.0, NEW), 3, False),
            (Contract(1, "NVDA", "STK"), 400, False)]
    return [{"con_id": c.con_id, "symbol": c.symbol, "local_symbol": c.local_symbol, "sec_type": c.sec_type,
             "right": c.right, "strike": c.strike, "expiry": c.expiry.isoformat() if c.expiry else None,
             "multiplier": c.multiplier, "qty": qty, "managed": managed} for c, qty, managed in rows]


def queued(**fields) -> CommanderRun:
    return CommanderRun.objects.create(**{"executed_at": timezone.now(), **fields})


def execute(run: CommanderRun, now) -> CommanderRun:
    return commander_execute(run_id=run.pk, market=market(now), account=ACCOUNT_INFO, positions=positions(),
                             now=now)


def keeper(**fields) -> Strategy:
    return Strategy.objects.create(slug=fields.pop("slug", "keeper"), name="keeper", kind="straddle_keeper",
                                   params={"straddles": 2, "min_dte": 20, "max_dte": 45, "roll_dte": 7}, **fields)


def test_a_dry_run_records_the_whole_decision_and_sends_nothing():
    now = timezone.now()
    keeper(capital_allocation=0.1)

    run = execute(queued(requested_by="op"), now)

    assert run.state == CommanderRun.State.COMPLETED and run.dry_run and "none sent" in run.summary
    intent = Strategy.objects.get().intents.get()
    assert run.intents_read == [{"strategy": "keeper", "intent_id": intent.pk, "updated_at": now.isoformat()}]
    orders = {(o["contract"]["local_symbol"], o["action"], o["qty"]) for o in run.orders}
    # The old straddle is sold, the new one bought; the operator's call of the new expiry is not counted.
    assert orders == {("NVDA 261204C180", "SELL", 2), ("NVDA 261204P180", "SELL", 2),
                      ("NVDA 270108C180", "BUY", 2), ("NVDA 270108P180", "BUY", 2)}
    assert [o["order_ref"] for o in run.orders] == [f"{COMMANDER_REF_PREFIX}{run.pk}:{n}" for n in range(1, 5)]
    assert {h["owner"] for h in run.snapshot.holdings if h["contract"]["sec_type"] == "STK"} == {"manual"}
    assert Order.objects.count() == 0
    assert Operation.objects.filter(kind=Operation.Kind.COMMANDER_RUN, actor="op").exists()


def test_a_redelivered_run_is_not_decided_twice():
    now = timezone.now()
    keeper()
    run = execute(queued(), now)

    again = execute(run, now + timedelta(seconds=5))

    assert again.orders == run.orders and Strategy.objects.get().intents.count() == 1


def test_a_stale_intent_is_skipped_and_an_allocation_clip_names_its_rule():
    """A strategy whose latest intent predates the window (it did not publish today) is skipped and reported."""
    now = timezone.now()
    stale = keeper(slug="stale")
    small = keeper(slug="small", capital_allocation=0.002)  # 1,000 USD of 500k: 1 straddle at 8.00 is 800
    intent_publish(strategy=stale, market=market(now), held={}, now=now - timedelta(days=2))
    intent_publish(strategy=small, market=market(now), held={}, now=now)

    run = commander_decide(run=queued(), snapshot=snapshot_create(account=ACCOUNT_INFO, positions=positions(),
                                                                  now=now),
                           strategies=[stale, small], underlying="NVDA", rules=Rules(), now=now)

    assert set(run.decision["skipped"]["stale"]) == {"stale"}
    assert {(c["rule"], c["from"], c["to"], c["strategy"]) for c in run.decision["clipped"]} == {
        (RULE_ALLOCATION, 2, 1, "small")}


def test_a_live_run_decides_for_the_sending_strategies_only_and_waits_for_the_daemon_to_send():
    now = timezone.now()
    strategy = keeper()
    keeper(slug="quiet")
    strategy_sending_set(strategy=strategy, enabled=True, user="op", now=now)

    run = execute(queued(dry_run=False), now)

    assert run.state == CommanderRun.State.RUNNING and not run.dry_run and len(run.orders) == 4
    assert "not sending for quiet" in run.summary and [i["strategy"] for i in run.intents_read] == ["keeper"]
    assert all(o["outcome"] == "planned" for o in run.orders)
    assert Operation.objects.get(kind=Operation.Kind.STRATEGY_SENDING).message == "strategy keeper: sending enabled"


def test_order_outcomes_settle_the_run_completed_partial_or_failed():
    now = timezone.now()
    strategy = keeper()
    strategy_sending_set(strategy=strategy, enabled=True, user="op", now=now)
    cases = [(["filled 2"] * 4, "completed"), (["filled 2", "working (0 of 2 filled)", "filled 2", "filled 2"],
                                               "partial_success"), (["not sent: paused"] * 4, "failed")]
    for outcomes, state in cases:
        run = execute(queued(dry_run=False), now)
        refs = [o["order_ref"] for o in run.orders]
        done = commander_orders_update(run_id=run.pk, outcomes=dict(zip(refs, outcomes, strict=True)), final=True,
                                       now=now)
        assert done.state == state and [o["outcome"] for o in done.orders] == outcomes


def test_open_commander_orders_count_as_pending_so_a_retry_never_doubles_them():
    now = timezone.now()
    strategy = keeper()
    strategy_sending_set(strategy=strategy, enabled=True, user="op", now=now)
    first = execute(queued(dry_run=False), now)
    still_open = [(o["order_ref"], o["qty"] if o["action"] == "BUY" else -o["qty"]) for o in first.orders]

    retry = commander_execute(run_id=queued(dry_run=False).pk, market=market(now), account=ACCOUNT_INFO,
                              positions=positions(), open_orders=still_open, now=now)

    assert retry.orders == [] and retry.state == CommanderRun.State.COMPLETED
    assert len(retry.snapshot.open_orders) == 4


def test_a_live_run_without_any_strategy_sending_is_a_dry_run():
    keeper()

    run = execute(queued(dry_run=False), timezone.now())

    assert run.state == CommanderRun.State.COMPLETED and run.dry_run
    assert run.summary.startswith("dry-run (no strategy has sending enabled)")


def test_an_unknown_strategy_is_refused_by_name_before_anything_runs():
    keeper()
    with pytest.raises(ConfigError) as info:
        commander_request(strategies=["keeper", "nope"], user="op")
    assert "'nope'" in info.value.reason and CommanderRun.objects.count() == 0


def test_without_a_daemon_a_requested_run_fails_at_once_naming_why():
    keeper()

    run = commander_request(user="op")

    assert run.state == CommanderRun.State.FAILED and "daemon is not running" in run.summary
    assert ControlCommand.objects.get().command == "commander_run"


def test_a_failing_strategy_publishes_an_error_intent_that_the_commander_reports():
    broken = keeper(slug="broken")
    broken.params = {"straddles": 1, "min_dte": 400, "max_dte": 500}  # no expiry that far out
    broken.save()

    run = execute(queued(), timezone.now())

    assert broken.intents.get().status == "error"
    assert "no expiry" in run.decision["skipped"]["errored"]["broken"] and run.orders == []


def test_the_admin_renders_a_run_as_tables(admin_client):
    keeper()
    run = execute(queued(), timezone.now())

    page = admin_client.get(f"/admin/trading/commanderrun/{run.pk}/change/")

    assert page.status_code == 200
    html = page.content.decode()
    assert f"{COMMANDER_REF_PREFIX}{run.pk}:1" in html and "NVDA 270108C180" in html
    assert admin_client.get("/admin/trading/strategy/").status_code == 200
    assert admin_client.get("/admin/trading/strategyintent/").status_code == 200


def test_the_window_is_the_configured_new_york_time_on_trading_days_once_a_day(settings, monkeypatch):
    from datetime import UTC, datetime

    from django_q.models import Schedule

    from trading.commander import commander_window_due
    from trading.core.calendar import TradingCalendar
    from trading.tasks import commander_window_task

    settings.BIFROST_COMMANDER_WINDOW = "15:30"
    calendar = TradingCalendar()
    wednesday_before, wednesday_after = (datetime(2026, 12, 2, 20, 29, tzinfo=UTC),  # 15:29 / 15:31 New York
                                         datetime(2026, 12, 2, 20, 31, tzinfo=UTC))
    saturday = datetime(2026, 12, 5, 20, 31, tzinfo=UTC)
    assert not commander_window_due(wednesday_before, calendar)
    assert commander_window_due(wednesday_after, calendar)
    assert not commander_window_due(saturday, calendar)
    from importlib import import_module

    from django.apps import apps

    migration = import_module("trading.migrations.0008_commander_schedule")
    migration.create(apps, None)  # what the migration leaves (a transactional test may have flushed its row)
    assert Schedule.objects.get(name=migration.NAME).func == "trading.tasks.commander_window_task"

    keeper()
    monkeypatch.setattr("trading.tasks.timezone.now", lambda: wednesday_after)
    assert commander_window_task().endswith(": failed")  # queued as scheduled; no daemon runs here
    run = CommanderRun.objects.get()
    assert (run.trigger, run.dry_run, run.requested_by) == ("scheduled", False, "schedule")
    run.executed_at = wednesday_after
    run.save()
    assert commander_window_task() == "not due"  # once a day


def test_the_admin_action_queues_a_dry_run_for_the_selected_strategies(admin_client):
    strategy = keeper()

    page = admin_client.post("/admin/trading/strategy/", {"action": "commander_dry_run",
                                                           "_selected_action": [strategy.pk]}, follow=True)

    run = CommanderRun.objects.get()
    assert run.strategies == ["keeper"] and run.dry_run
    shown = [str(m) for m in page.context["messages"]]
    assert shown and shown[0].startswith(f"commander run #{run.pk}: failed")  # no daemon runs in this test


def test_an_option_without_a_quote_is_stored_as_null_and_its_strategy_reported_unpriced():
    now = timezone.now()
    strategy = keeper()
    view = market(now)
    unquoted = {k: (c, float("nan")) if k[2] == NEW else (c, mid) for k, (c, mid) in view.options.items()}

    intent = intent_publish(strategy=strategy, market=MarketView("NVDA", 179.0, now.date(), unquoted), held={},
                            now=now)
    run = commander_decide(run=queued(), snapshot=snapshot_create(account=ACCOUNT_INFO, positions=positions(),
                                                                  now=now),
                           strategies=[strategy], underlying="NVDA", rules=Rules(), now=now)

    assert intent.status == "success" and {t["price_usd"] for t in intent.target_positions} == {None}
    assert "no price for" in run.decision["skipped"]["errored"]["keeper"] and run.orders == []


def test_a_journaled_commander_order_replayed_after_a_crash_is_left_to_its_run_not_made_a_hedge_order():
    from trading.selectors import engine_seed_load
    from trading.services import order_intents_write

    intent = {"order_ref": f"{COMMANDER_REF_PREFIX}7:1", "intent": "commander", "symbol": "NVDA", "side": "BUY",
              "qty": 10, "order_type": "limit", "limit_price": 7.5, "account": "DU1", "ts": timezone.now().isoformat()}
    hedge = {**intent, "order_ref": "bifrost:abc:1", "intent": "hedge", "order_type": "market", "limit_price": None}

    assert order_intents_write([intent, hedge]) == 1

    assert list(Order.objects.values_list("order_ref", flat=True)) == ["bifrost:abc:1"]
    assert [ref for ref, *_ in engine_seed_load(today=timezone.now().date()).open_orders] == ["bifrost:abc:1"]
