"""The commander through the daemon on the simulated market: a run queued like the web queues it is carried out
by the daemon (reconcile, the option chain, the strategies, the decision) with the hedger still running; a dry run
sends the broker nothing, and the persisted pause blocks a run."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
from django.db import OperationalError

from trading import services
from trading.brokers.sim import SimBroker
from trading.commander import commander_request
from trading.daemon.runtime import Daemon
from trading.models import CommanderRun, ManagedLeg, Operation, Strategy
from trading.services import control_command_create, strategy_config_create
from trading.sim.market import MarketConfig

pytestmark = pytest.mark.django_db(transaction=True)


async def _until(predicate: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while not (value := await asyncio.to_thread(predicate)):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


def _keeper(*, send_enabled: bool) -> Strategy:
    """The simulated account holds 10 straddles 28-34 days out: rolling below 35 days means rolling now."""
    return Strategy.objects.create(slug="keeper", name="keeper", kind="straddle_keeper", capital_allocation=0.2,
                                   send_enabled=send_enabled,
                                   params={"straddles": 10, "min_dte": 40, "max_dte": 70, "roll_dte": 35})


def _final(run_id: int) -> CommanderRun | None:
    run = CommanderRun.objects.get(pk=run_id)
    return run if run.state in ("completed", "failed", "partial_success") else None


def test_a_dry_run_through_the_daemon_plans_a_roll_and_sends_nothing_and_pause_blocks_it(tmp_path, settings):
    settings.BIFROST_JOURNAL_DIR = tmp_path
    strategy_config_create(name="base", params={}, user="t", activate=True)
    _keeper(send_enabled=False)
    broker = SimBroker(config=MarketConfig(), seed=7, state_path=tmp_path / "sim.json", tick_s=0.05)
    daemon = Daemon(broker, heartbeat_s=0.2, history_s=1.0)
    seen: dict[str, object] = {}

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(daemon.run())
        await _until(lambda: daemon.engine is not None and daemon.engine.mid is not None
                     and daemon.engine.book.legs, 30, "a running daemon with its legs")
        quote_before = daemon.engine.quote_ts
        run = await asyncio.to_thread(commander_request, dry_run=True, user="op")
        seen["run"] = await _until(lambda: _final(run.pk), 30, "the dry run")
        seen["commander_refs"] = [r for r in broker.sent_refs() if ":cmd:" in r]
        seen["quotes_went_on"] = daemon.engine.quote_ts > quote_before  # the engine kept taking quotes
        await asyncio.to_thread(control_command_create, command="pause", user="op")
        await _until(lambda: daemon.engine.paused, 10, "pause")
        blocked = await asyncio.to_thread(commander_request, dry_run=True, user="op")
        seen["blocked"] = await _until(lambda: _final(blocked.pk), 30, "the blocked run")
        daemon.request_stop("test done")
        seen["exit"] = await task

    asyncio.run(scenario())

    run = seen["run"]
    assert isinstance(run, CommanderRun)
    assert run.state == "completed" and run.dry_run, run.summary
    assert [s["step"] for s in run.steps] == ["reconcile", "option_chain", "decide"]
    orders = {(o["action"], o["qty"], o["contract"]["right"]) for o in run.orders}
    assert orders == {("SELL", 10, "C"), ("SELL", 10, "P"), ("BUY", 10, "C"), ("BUY", 10, "P")}
    sold = {o["contract"]["con_id"] for o in run.orders if o["action"] == "SELL"}
    owned = {h["contract"]["con_id"] for h in run.snapshot.holdings if h["owner"] == "bifrost"}
    manual = {h["contract"]["con_id"] for h in run.snapshot.holdings if h["owner"] == "manual"}
    assert sold == owned and not manual & {o["contract"]["con_id"] for o in run.orders}
    assert seen["commander_refs"] == []
    assert seen["quotes_went_on"]
    blocked = seen["blocked"]
    assert isinstance(blocked, CommanderRun)
    assert blocked.state == "failed" and "blocked: paused" in blocked.summary and blocked.orders == []
    assert seen["exit"] == 0


def test_a_live_run_rolls_the_straddle_adopts_the_new_legs_and_a_rerun_sends_nothing_twice(tmp_path, settings):
    settings.BIFROST_JOURNAL_DIR = tmp_path
    settings.BIFROST_COMMANDER_LIMIT_OFFSET_USD = 2.0  # marketable: the roll fills at once in the simulator
    strategy_config_create(name="base", params={}, user="t", activate=True)
    keeper = _keeper(send_enabled=True)
    broker = SimBroker(config=MarketConfig(), seed=7, state_path=tmp_path / "sim.json", tick_s=0.05)
    daemon = Daemon(broker, heartbeat_s=0.2, history_s=1.0)
    seen: dict[str, object] = {}

    def holdings() -> dict[int, float]:
        return {h.contract.con_id: h.qty for _, h in broker.book.positions(broker.account)}

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(daemon.run())
        await _until(lambda: daemon.engine is not None and daemon.engine.mid is not None
                     and daemon.engine.book.legs, 30, "a running daemon with its legs")
        seen["before"] = holdings()
        seen["old_legs"] = set(daemon.engine.book.legs)
        run = await asyncio.to_thread(commander_request, dry_run=False, user="op")
        seen["run"] = await _until(lambda: _final(run.pk), 60, "the live run")
        seen["after"] = holdings()
        seen["legs"] = {con_id: leg.qty for con_id, leg in daemon.engine.book.legs.items()}
        sent = [r for r in broker.sent_refs() if ":cmd:" in r]
        again = await asyncio.to_thread(commander_request, dry_run=False, user="op")
        seen["again"] = await _until(lambda: _final(again.pk), 60, "the re-run")
        seen["sent_twice"] = [r for r in broker.sent_refs() if ":cmd:" in r and r not in sent]
        daemon.request_stop("test done")
        seen["exit"] = await task

    asyncio.run(scenario())

    run, before, after, legs = seen["run"], seen["before"], seen["after"], seen["legs"]
    assert isinstance(run, CommanderRun) and isinstance(before, dict) and isinstance(after, dict)
    assert run.state == "completed" and not run.dry_run, run.summary
    assert [o["outcome"] for o in run.orders] == ["filled 10"] * 4
    new = {o["contract"]["con_id"] for o in run.orders if o["action"] == "BUY"}
    old = {o["contract"]["con_id"] for o in run.orders if o["action"] == "SELL"}
    assert old == seen["old_legs"]
    assert all(after.get(c, 0) == 0 for c in old) and all(after[c] == 10 for c in new)
    manual = set(before) - old - {_shares_con_id()}  # the shares move with the hedge (the engine's own)
    assert manual and all(after[c] == before[c] for c in manual)  # every manual position untouched
    assert {c: legs[c] for c in new} == {c: 10.0 for c in new} and all(legs[c] == 0 for c in old)
    again = seen["again"]
    assert isinstance(again, CommanderRun) and again.state == "completed" and again.orders == []
    assert seen["sent_twice"] == [] and seen["exit"] == 0
    assert keeper.intents.count() == 2


def _shares_con_id() -> int:
    from trading.sim.market import con_id_for

    return con_id_for("NVDA", "STK")


def test_a_resting_option_order_never_blocks_hedging_and_the_run_ends_partial(tmp_path, settings, monkeypatch):
    settings.BIFROST_JOURNAL_DIR = tmp_path
    settings.BIFROST_COMMANDER_LIMIT_OFFSET_USD = -3.0  # buy below the bid, sell above the ask: the orders rest
    monkeypatch.setattr("trading.daemon.runtime.COMMANDER_FOLLOW_S", 2.0)
    strategy_config_create(name="fast", params={"cooldown_s": 0, "min_price_move_bps": 0}, user="t", activate=True)
    _keeper(send_enabled=True)
    broker = SimBroker(config=MarketConfig(realized_vol=0.8), seed=7, state_path=tmp_path / "sim.json",
                       tick_s=0.05, speed=3000.0)
    daemon = Daemon(broker, heartbeat_s=0.2, history_s=1.0)
    seen: dict[str, object] = {}

    def hedges() -> list[str]:
        return [r for r in broker.sent_refs() if ":cmd:" not in r]

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(daemon.run())
        await _until(lambda: daemon.engine is not None and daemon.engine.book.legs and hedges(), 30, "hedging")
        run = await asyncio.to_thread(commander_request, dry_run=False, user="op")
        await _until(lambda: any(":cmd:" in r for r in broker.sent_refs()), 30, "the commander's orders")
        before = len(hedges())
        await _until(lambda: len(hedges()) > before, 30, "a hedge while the option orders rest")
        seen["resting"] = [o.order_ref for o in await broker.open_orders() if ":cmd:" in o.order_ref]
        seen["run"] = await _until(lambda: _final(run.pk), 30, "the run")
        daemon.request_stop("test done")
        seen["exit"] = await task

    asyncio.run(scenario())

    run = seen["run"]
    assert isinstance(run, CommanderRun)
    assert len(seen["resting"]) == 4  # the hedge above left while all four option orders were working
    assert run.state == "partial_success" and all(o["outcome"].startswith("working") for o in run.orders)
    assert seen["exit"] == 0


def test_legs_a_run_bought_are_adopted_by_the_next_daemon_when_they_fill_after_a_restart(tmp_path, settings,
                                                                                         monkeypatch):
    settings.BIFROST_JOURNAL_DIR = tmp_path
    settings.BIFROST_COMMANDER_LIMIT_OFFSET_USD = -3.0  # the orders rest until the test makes them marketable
    monkeypatch.setattr("trading.daemon.runtime.COMMANDER_FOLLOW_S", 1.0)
    strategy_config_create(name="base", params={}, user="t", activate=True)
    _keeper(send_enabled=True)
    broker = SimBroker(config=MarketConfig(), seed=7, state_path=tmp_path / "sim.json", tick_s=0.05)
    seen: dict[str, object] = {}

    async def scenario() -> None:
        first = Daemon(broker, heartbeat_s=0.2, history_s=1.0)
        task = asyncio.get_running_loop().create_task(first.run())
        await _until(lambda: first.engine is not None and first.engine.book.legs, 30, "a running daemon")
        run = await asyncio.to_thread(commander_request, dry_run=False, user="op")
        await _until(lambda: _final(run.pk), 30, "the run, its orders resting")
        first.request_stop("restart")
        await task
        bought = {o.contract.con_id: o for o in broker.book.open_orders() if o.side == "BUY"}
        seen["bought"] = set(bought)
        second = Daemon(broker, heartbeat_s=0.2, history_s=1.0)
        task = asyncio.get_running_loop().create_task(second.run())
        await _until(lambda: second.engine is not None and second.engine.book.legs, 30, "the next daemon")
        for order in bought.values():  # the market comes to the resting buys: they fill under the new daemon
            broker.book.modify(order, order.qty, 1000.0)
        await _until(lambda: set(bought) <= set(second.engine.book.legs), 30, "the bought legs adopted")
        seen["legs"] = {c: second.engine.book.legs[c].qty for c in bought}
        second.request_stop("test done")
        seen["exit"] = await task

    asyncio.run(scenario())

    assert len(seen["bought"]) == 2  # the new call and put
    assert seen["legs"] == {c: 10.0 for c in seen["bought"]}
    adopted = Operation.objects.filter(kind="leg_adopted", message__contains="(commander run #")
    assert adopted.count() == 2
    assert set(ManagedLeg.objects.filter(active=True).values_list("con_id", flat=True)) >= seen["bought"]
    assert seen["exit"] == 0


def test_an_option_order_waits_for_a_lease_the_database_was_slow_to_confirm_instead_of_failing_its_run(
        tmp_path, settings, monkeypatch):
    settings.BIFROST_JOURNAL_DIR = tmp_path
    settings.BIFROST_COMMANDER_LIMIT_OFFSET_USD = 2.0  # marketable: the roll fills at once once it is sent
    strategy_config_create(name="base", params={}, user="t", activate=True)
    _keeper(send_enabled=True)
    unconfirmed = threading.Event()
    renew = services.lease_renew

    def flaky_renew(**kwargs: object) -> bool:
        if unconfirmed.is_set():
            raise OperationalError("injected: the renewal was not confirmed")
        return renew(**kwargs)

    monkeypatch.setattr(services, "lease_renew", flaky_renew)
    broker = SimBroker(config=MarketConfig(), seed=7, state_path=tmp_path / "sim.json", tick_s=0.05)
    daemon = Daemon(broker, heartbeat_s=0.2, history_s=1.0)
    seen: dict[str, object] = {}

    def planned(run_id: int) -> CommanderRun | None:
        run = CommanderRun.objects.get(pk=run_id)
        return run if run.orders else None

    async def scenario() -> None:
        task = asyncio.get_running_loop().create_task(daemon.run())
        await _until(lambda: daemon.engine is not None and daemon.engine.mid is not None
                     and daemon.engine.book.legs, 30, "a running daemon with its legs")
        unconfirmed.set()
        await _until(lambda: not daemon.lease_fresh(), 10, "the fence to close")
        run = await asyncio.to_thread(commander_request, dry_run=False, user="op")
        seen["planned"] = await _until(lambda: planned(run.pk), 30, "the run's planned orders")
        seen["sent_while_closed"] = [r for r in broker.sent_refs() if ":cmd:" in r]
        unconfirmed.clear()  # the database confirms the next renewal: the fence opens, the orders go
        seen["run"] = await _until(lambda: _final(run.pk), 30, "the run")
        daemon.request_stop("test done")
        seen["exit"] = await task

    asyncio.run(scenario())

    planned_run, run = seen["planned"], seen["run"]
    assert isinstance(planned_run, CommanderRun) and isinstance(run, CommanderRun)
    assert planned_run.state == "running" and seen["sent_while_closed"] == []
    assert run.state == "completed", run.summary
    assert [o["outcome"] for o in run.orders] == ["filled 10"] * 4
    assert seen["exit"] == 0
