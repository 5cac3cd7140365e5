"""SimBroker over the shared simulated account: the Broker protocol as the daemon uses it (account, open and
completed orders, executions, clock) and fills that say which instrument and account they belong to."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from trading.brokers.base import CompletedOrder, OpenOrder
from trading.brokers.sim import SimBroker
from trading.core.events import Event, Fill, OrderUpdate, PlaceOrder
from trading.sim.market import MarketConfig, con_id_for

NVDA_ID = con_id_for("NVDA", "STK")


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def _broker(**kwargs: Any) -> tuple[SimBroker, Recorder]:
    broker = SimBroker(config=MarketConfig(fill_latency_ms=10), tick_s=0.02, **kwargs)
    recorder = Recorder()
    broker.set_event_handler(recorder)
    return broker, recorder


async def _until(predicate: Callable[[], Any], timeout_s: float = 5.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def _statuses(events: Recorder, ref: str) -> list[str]:
    return [u.status for u in events.of(OrderUpdate) if u.order_ref == ref]


def test_fills_carry_symbol_sec_type_con_id_and_the_sim_account():
    async def scenario():
        broker, events = _broker()
        await broker.connect()
        try:
            await broker.place_order(PlaceOrder("bifrost:s:1", "NVDA", "BUY", 30, "market", None))
            await _until(lambda: "filled" in _statuses(events, "bifrost:s:1"), what="the fill")
            return broker, events, await broker.executions()
        finally:
            await broker.disconnect()

    broker, events, executions = asyncio.run(scenario())

    assert broker.account == "SIM"
    fill = events.of(Fill)[0]
    assert (fill.order_ref, fill.qty, fill.symbol, fill.sec_type, fill.con_id, fill.account) == (
        "bifrost:s:1", 30.0, "NVDA", "STK", NVDA_ID, "SIM")
    assert executions == events.of(Fill)
    assert broker.holding_qty("NVDA") == 130
    assert broker.sent_refs() == ["bifrost:s:1"]


def test_open_orders_say_account_contract_and_perm_id_and_completed_orders_say_how_they_ended():
    async def scenario():
        broker, events = _broker()
        await broker.connect()
        try:
            await broker.place_order(PlaceOrder("bifrost:s:fill", "NVDA", "SELL", 10, "market", None))
            await broker.place_order(PlaceOrder("bifrost:s:rest", "NVDA", "BUY", 5, "limit", 1.0))
            broker.faults.reject_next = 1
            await broker.place_order(PlaceOrder("bifrost:s:rej", "NVDA", "BUY", 5, "market", None))
            await _until(lambda: "filled" in _statuses(events, "bifrost:s:fill"), what="the fill")
            open_before = await broker.open_orders()
            await broker.place_order(PlaceOrder("bifrost:s:gone", "NVDA", "BUY", 7, "limit", 1.0))
            await broker.cancel_order("bifrost:s:gone")
            return open_before, await broker.completed_orders()
        finally:
            await broker.disconnect()

    open_before, completed = asyncio.run(scenario())

    [resting] = open_before
    assert resting == OpenOrder("bifrost:s:rest", "BUY", 5.0, 0.0, "working", "SIM", NVDA_ID, "NVDA", "STK",
                                resting.perm_id)
    assert resting.perm_id > 0
    by_ref = {c.order_ref: c for c in completed}
    assert set(by_ref) == {"bifrost:s:fill", "bifrost:s:rej", "bifrost:s:gone"}
    assert by_ref["bifrost:s:fill"] == CompletedOrder("bifrost:s:fill", "SELL", 10.0, 10.0, "filled", "SIM",
                                                      NVDA_ID, "NVDA", "STK", by_ref["bifrost:s:fill"].perm_id)
    assert (by_ref["bifrost:s:rej"].status, by_ref["bifrost:s:rej"].filled) == ("rejected", 0.0)
    assert (by_ref["bifrost:s:gone"].status, by_ref["bifrost:s:gone"].qty) == ("cancelled", 7.0)
    assert len({c.perm_id for c in completed} | {resting.perm_id}) == 4


def test_current_time_is_the_brokers_clock():
    now = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    broker, _ = _broker(clock=lambda: now)

    assert asyncio.run(broker.current_time()) == now


def test_a_restarted_sim_broker_keeps_its_orders_executions_and_positions(tmp_path):
    state = tmp_path / "sim.json"

    async def trade() -> list[Fill]:
        broker, events = _broker(state_path=state)
        await broker.connect()
        await broker.place_order(PlaceOrder("bifrost:s:k", "NVDA", "BUY", 20, "market", None))
        await broker.place_order(PlaceOrder("bifrost:s:w", "NVDA", "BUY", 3, "limit", 1.0))
        await _until(lambda: events.of(Fill), what="the fill")
        return events.of(Fill)  # no disconnect: the daemon was killed

    fills = asyncio.run(trade())
    again, _ = _broker(state_path=state)

    assert asyncio.run(again.executions()) == fills
    assert [o.order_ref for o in asyncio.run(again.open_orders())] == ["bifrost:s:w"]
    assert again.holding_qty("NVDA") == 120


def test_option_chain_lists_the_same_contracts_the_tws_simulator_serves_with_quotes():
    from trading.sim.market import chain_expiries, option_contract

    async def scenario():
        broker, _ = _broker()
        await broker.connect()
        try:
            return await broker.option_chain("NVDA", spot=181.0, max_dte=40, strikes_each_side=2)
        finally:
            await broker.disconnect()

    chain = asyncio.run(scenario())

    today = datetime.now(UTC).date()
    expiries = [e for e in chain_expiries(today) if (e - today).days <= 40]
    assert len(chain) == len(expiries) * 4 * 2
    assert {q.contract.strike for q in chain} == {175.0, 180.0, 185.0, 190.0}
    first = chain[0].contract
    assert first == option_contract("NVDA", first.right, first.strike, first.expiry)  # type: ignore[arg-type]
    assert all(0 < q.bid <= q.ask and q.mid > 0 for q in chain if q.contract.strike == 180.0)
