"""IBBroker over the real client library against the TWS-protocol simulator: the Broker protocol, client id in
use, connection loss, lost executions, rejections, delayed data, and the paper/live guard."""
from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
from django.conf import settings

from tests.trading.ib.conftest import run, wait_for
from trading.brokers.base import ChainQuote
from trading.brokers.ib import IBBroker, check_mode, price_or_none
from trading.core.events import (
    BrokerStatus,
    Contract,
    Fill,
    OptionQuote,
    OrderUpdate,
    PlaceOrder,
    Quote,
)
from trading.errors import BrokerError, ConfigError
from trading.sim.market import MarketConfig, seed_account
from trading.sim.tws_server import ACCOUNT


class Recorder:
    def __init__(self) -> None:
        self.events: list[object] = []

    def __call__(self, event: object) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def _broker(tws, client_id: int = 1) -> tuple[IBBroker, Recorder]:
    broker = IBBroker(port=tws.port, client_id=client_id, client_lib=settings.BIFROST_IB_CLIENT)
    recorder = Recorder()
    broker.set_event_handler(recorder)
    return broker, recorder


def _straddle_legs() -> list[Contract]:
    from datetime import UTC, datetime

    return [p.contract() for p in seed_account(MarketConfig(), datetime.now(UTC))[:2]]


def _order(ref: str, side: str = "BUY", qty: float = 25, order_type: str = "market", limit=None) -> PlaceOrder:
    return PlaceOrder(ref, "NVDA", side, qty, order_type, limit)  # type: ignore[arg-type]


def test_connect_reports_positions_with_marks_and_the_account_summary(tws):
    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            return await broker.positions(), await broker.account_summary(), events, broker
        finally:
            await broker.disconnect()

    marks, summary, events, broker = run(scenario())

    assert events.of(BrokerStatus)[0].connected is True
    assert events.of(BrokerStatus)[-1].connected is False
    assert broker.mode == "paper" and broker.account == ACCOUNT
    by_key = {(m.position.contract.symbol, m.position.contract.sec_type, m.position.contract.right,
               m.position.qty): m for m in marks}
    call = by_key[("NVDA", "OPT", "C", 10.0)]
    assert call.position.contract.multiplier == 100 and call.position.contract.expiry is not None
    assert call.market_price and call.position.avg_cost > 100  # per contract: price x 100
    assert by_key[("NVDA", "STK", None, 100.0)].market_price > 0
    assert by_key[("AAPL", "STK", None, 50.0)].market_price == 200.0
    assert summary.account == ACCOUNT
    assert summary.net_liquidation > 900_000 and summary.buying_power > 0 and summary.cash > 0
    assert summary.maintenance_margin is not None


def test_subscribe_streams_underlying_quotes_and_option_quotes_with_model_greeks(tws):
    legs = _straddle_legs()

    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            await broker.subscribe("NVDA", legs)
            await wait_for(lambda: len(events.of(Quote)) >= 3 and len({q.con_id for q in events.of(OptionQuote)}) == 2,
                           5, "quotes")
            return events
        finally:
            await broker.disconnect()

    events = run(scenario())

    q = events.of(Quote)[-1]
    assert q.symbol == "NVDA" and 0 < q.bid < q.ask and q.ts.tzinfo is not None
    oq = events.of(OptionQuote)[-1]
    assert oq.con_id in {leg.con_id for leg in legs}
    assert oq.iv == 0.35 and oq.greeks is not None and oq.greeks.gamma > 0 and oq.greeks.theta < 0


def test_quotes_without_a_price_never_leave_the_adapter(tws, ib_lib):
    broker, events = _broker(tws)
    broker._underlying = "NVDA"
    stock = ib_lib.Stock("NVDA", "SMART", "USD")
    tickers = []
    for bid, ask in ((-1.0, 180.1), (math.nan, 180.1), (0.0, 180.1), (180.0, -1.0), (180.2, 180.1), (180.0, 180.1)):
        ticker = ib_lib.Ticker(contract=stock)  # ib_async resets prices in __post_init__: set them after
        ticker.bid, ticker.ask = bid, ask
        tickers.append(ticker)

    broker._on_tickers(tickers)

    assert [(q.bid, q.ask) for q in events.of(Quote)] == [(180.0, 180.1)]
    assert price_or_none(-1) is None and price_or_none(float("nan")) is None and price_or_none(0) is None


def test_order_carries_its_order_ref_fills_and_is_never_sent_twice(tws):
    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            await broker.subscribe("NVDA", [])
            await broker.place_order(_order("bifrost:L1:1"))
            await broker.place_order(_order("bifrost:L1:1"))  # a retry of the same intent: same ref, same order
            await wait_for(lambda: events.of(Fill) and any(u.status == "filled" for u in events.of(OrderUpdate)),
                           5, "fill")
            return events, await broker.executions(), await broker.open_orders()
        finally:
            await broker.disconnect()

    events, executions, open_orders = run(scenario())

    orders = tws.state()["orders"]
    assert [(o["order_ref"], o["action"], o["qty"], o["order_type"]) for o in orders] == [
        ("bifrost:L1:1", "BUY", 25.0, "MKT")]
    fill = events.of(Fill)[0]
    assert (fill.order_ref, fill.side, fill.qty) == ("bifrost:L1:1", "BUY", 25.0)
    assert fill.commission == 1.0 and fill.price > 0
    assert [u.status for u in events.of(OrderUpdate)][0] == "submitted"
    assert [f.exec_id for f in executions] == [fill.exec_id] and executions[0].commission == 1.0
    assert open_orders == []


def test_limit_order_rests_shows_as_open_and_cancels(tws):
    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            await broker.place_order(_order("bifrost:L1:2", order_type="limit", limit=1.0))
            await wait_for(lambda: events.of(OrderUpdate), 5, "ack")
            open_orders = await broker.open_orders()
            await broker.cancel_order("bifrost:L1:2")
            await wait_for(lambda: any(u.status == "cancelled" for u in events.of(OrderUpdate)), 5, "cancelled")
            return open_orders, events
        finally:
            await broker.disconnect()

    open_orders, events = run(scenario())

    assert [(o.order_ref, o.qty, o.filled) for o in open_orders] == [("bifrost:L1:2", 25.0, 0.0)]
    assert not events.of(Fill)


def test_client_id_in_use_is_refused_at_once_never_swapped_for_another_id(tws):
    async def scenario():
        holder, _ = _broker(tws, client_id=3)
        await holder.connect()
        broker, events = _broker(tws, client_id=3)
        try:
            started = asyncio.get_running_loop().time()
            with pytest.raises(BrokerError) as refused:
                await broker.connect()
            return refused.value, broker.client_id, asyncio.get_running_loop().time() - started, tws.state()["clients"]
        finally:
            await broker.disconnect()
            await holder.disconnect()

    refused, client_id, elapsed_s, clients = run(scenario())

    assert "client id 3 is in use" in str(refused) and "326" in str(refused)
    assert client_id == 3 and clients == [3]  # still ours to retry; never became client 4
    assert elapsed_s < 2.0  # on the 326 itself, not after the connect timeout


def test_several_managed_accounts_without_ib_account_is_a_configuration_error(tws_two_accounts):
    async def scenario():
        broker, _ = _broker(tws_two_accounts)
        with pytest.raises(ConfigError) as refused:
            await broker.connect()
        return refused.value

    refused = run(scenario())

    assert refused.field == "IB_ACCOUNT" and "several accounts" in str(refused)


def test_dropped_connection_reports_disconnected_and_reconnects_with_state_recovered(tws):
    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            await broker.subscribe("NVDA", [])
            await asyncio.to_thread(tws.command, "drop_on_order 1")
            await broker.place_order(_order("bifrost:L1:3", side="SELL", qty=40))
            await wait_for(lambda: not broker.connected, 5, "disconnected")
            with pytest.raises(BrokerError):
                await broker.place_order(_order("bifrost:L1:4"))
            await asyncio.sleep(0.2)  # the order fills at the simulator while we are away
            await broker.connect()
            await broker.subscribe("NVDA", [])
            quotes_before = len(events.of(Quote))
            await wait_for(lambda: len(events.of(Quote)) > quotes_before, 5, "quotes after reconnect")
            return events, await broker.executions(), await broker.open_orders()
        finally:
            await broker.disconnect()

    events, executions, open_orders = run(scenario())

    statuses = [e.connected for e in events.of(BrokerStatus)]
    assert statuses[:3] == [True, False, True]
    assert [(f.order_ref, f.side, f.qty) for f in executions] == [("bifrost:L1:3", "SELL", 40.0)]
    assert open_orders == []
    assert [o["order_ref"] for o in tws.state()["orders"]] == ["bifrost:L1:3"]


def test_lost_execution_report_is_recovered_by_req_executions(tws):
    tws.command("lose_exec 1")

    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            await broker.subscribe("NVDA", [])
            await broker.place_order(_order("bifrost:L1:5"))
            await wait_for(lambda: events.of(Fill), 6, "the recovered fill")
            return events
        finally:
            await broker.disconnect()

    events = run(scenario())

    fills = events.of(Fill)
    assert len(fills) == 1 and fills[0].order_ref == "bifrost:L1:5" and fills[0].commission == 1.0
    updates = events.of(OrderUpdate)
    assert updates[-1].status == "filled"


def test_rejected_order_is_reported_rejected_with_the_reason(tws):
    tws.command("reject 1 no shares to borrow")

    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            await broker.place_order(_order("bifrost:L1:6", side="SELL"))
            await wait_for(lambda: events.of(OrderUpdate), 5, "rejection")
            await asyncio.sleep(0.2)
            return events
        finally:
            await broker.disconnect()

    events = run(scenario())

    update = events.of(OrderUpdate)[-1]
    assert update.order_ref == "bifrost:L1:6" and update.status == "rejected"
    assert "201" in update.message and "no shares to borrow" in update.message
    assert not events.of(Fill)


def test_connectivity_loss_1100_disconnects_and_1102_lets_connect_resume(tws):
    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            await broker.subscribe("NVDA", [])
            await asyncio.to_thread(tws.command, "connectivity lost")
            await wait_for(lambda: not broker.connected, 5, "1100")
            reconnect = asyncio.ensure_future(broker.connect())
            await asyncio.sleep(0.3)
            pending = not reconnect.done()
            await asyncio.to_thread(tws.command, "connectivity restored")
            await reconnect
            await broker.subscribe("NVDA", [])
            before = len(events.of(Quote))
            await wait_for(lambda: len(events.of(Quote)) > before, 5, "quotes again")
            return pending, events
        finally:
            await broker.disconnect()

    pending, events = run(scenario())

    assert pending  # connect() waited for TWS to get its link back
    assert [e.connected for e in events.of(BrokerStatus)][:3] == [True, False, True]
    assert "1100" in events.of(BrokerStatus)[1].message


def test_without_a_realtime_subscription_paper_switches_to_delayed_data_and_keeps_it_after_reconnect(tws):
    tws.command("delayed on")

    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            await broker.subscribe("NVDA", [])
            await wait_for(lambda: events.of(Quote), 5, "delayed quotes")
            await asyncio.to_thread(tws.command, "drop")
            await wait_for(lambda: not broker.connected, 5, "disconnected")
            await broker.connect()
            await broker.subscribe("NVDA", [])
            before = len(events.of(Quote))
            await wait_for(lambda: len(events.of(Quote)) > before, 5, "delayed quotes after reconnect")
            return broker
        finally:
            await broker.disconnect()

    broker = run(scenario())

    assert broker._delayed is True


def test_paper_is_default_and_live_needs_confirmation_and_a_live_port():
    check_mode("paper", 7497, "")
    check_mode("live", 7496, "yes")
    check_mode("live", 4001, "yes")

    with pytest.raises(ConfigError, match="BIFROST_LIVE_CONFIRM"):
        check_mode("live", 7496, "")
    with pytest.raises(ConfigError, match="IB_PORT"):
        check_mode("live", 7497, "yes")
    with pytest.raises(ConfigError, match="IB_PORT"):
        check_mode("paper", 7496, "")
    with pytest.raises(ConfigError, match="BIFROST_MODE"):
        check_mode("demo", 7497, "")
    with pytest.raises(ConfigError, match="BIFROST_IB_CLIENT"):
        IBBroker(client_lib="ibapi")


def test_connect_to_a_closed_port_is_a_broker_error(tws):
    port = tws.port
    tws.stop()

    async def scenario():
        broker = IBBroker(port=port, client_lib=settings.BIFROST_IB_CLIENT, connect_timeout_s=1.0)
        with pytest.raises(BrokerError, match="cannot connect"):
            await broker.connect()
        return broker.connected

    assert run(scenario()) is False


def test_a_late_execution_report_is_recovered_once_not_twice(tws):
    tws.command("delay_exec 1.8")  # later than the adapter's grace: reqExecutions finds it first

    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            await broker.place_order(_order("bifrost:L1:7"))
            await wait_for(lambda: events.of(Fill), 5, "the fill")
            await asyncio.sleep(1.5)  # the live report arrives after all
            return events
        finally:
            await broker.disconnect()

    events = run(scenario())

    assert [f.order_ref for f in events.of(Fill)] == ["bifrost:L1:7"]


def _read_chain(tws, **chain: Any) -> list[ChainQuote]:
    """One option chain read by a broker connected for it."""
    async def scenario() -> list[ChainQuote]:
        broker, _ = _broker(tws)
        await broker.connect()
        try:
            return await broker.option_chain("NVDA", **chain)
        finally:
            await broker.disconnect()

    return run(scenario())


def test_option_chain_lists_the_strikes_near_spot_within_the_dte_window_with_quotes(tws):
    chain = _read_chain(tws, spot=181.0, max_dte=40, strikes_each_side=2)

    from datetime import UTC, datetime

    today = datetime.now(UTC).date()
    assert {q.contract.strike for q in chain} == {175.0, 180.0, 185.0, 190.0}
    assert {q.contract.right for q in chain} == {"C", "P"}
    assert all(0 <= (q.contract.expiry - today).days <= 40 and q.contract.con_id for q in chain)
    assert len({q.contract.expiry for q in chain}) >= 5
    assert all(0 < q.bid <= q.ask for q in chain if q.contract.strike == 180.0)


def test_a_whole_chain_read_never_holds_a_hedge_order_in_the_client_librarys_queue(tws):
    """IB takes 50 messages a second; the client libraries queue what is over 45 in order, so a chain read that
    bursts its requests makes a hedge order placed meanwhile wait behind them (hundreds of ms). Paced, it never
    trips that queue, and the hedge leaves while the chain is still being read."""
    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            reading = asyncio.ensure_future(broker.option_chain("NVDA", spot=180.0, max_dte=60,
                                                                strikes_each_side=6))
            await wait_for(lambda: events.of(OptionQuote), 10, "the chain's first quotes")
            await broker.place_order(_order("bifrost:t:chain:1", qty=10))
            await wait_for(lambda: events.of(Fill), 10, "the hedge's fill")
            hedged_while_reading = not reading.done()
            return await reading, hedged_while_reading, broker.throttled
        finally:
            await broker.disconnect()

    chain, hedged_while_reading, throttled = run(scenario())

    assert len(chain) >= 150  # every expiry within 60 days, 12 strikes, calls and puts
    assert hedged_while_reading
    assert throttled == 0


def test_a_strike_whose_snapshot_never_comes_is_an_option_without_a_quote_not_a_failed_chain(tws, monkeypatch):
    monkeypatch.setattr("trading.brokers.ib.REQUEST_TIMEOUT_S", 1.0)
    tws.command("unanswered_snapshots 1")

    chain = _read_chain(tws, spot=180.0, max_dte=10, strikes_each_side=1)

    unpriced = [q for q in chain if math.isnan(q.bid)]
    assert len(unpriced) == 1 and unpriced[0].contract.con_id  # named, so the strategies see it unquoted
    assert len(chain) >= 4 and all(0 < q.bid <= q.ask for q in chain if q not in unpriced)


def test_an_option_limit_order_of_the_commander_goes_to_its_contract_and_fills(tws):
    async def scenario():
        broker, events = _broker(tws)
        await broker.connect()
        try:
            chain = await broker.option_chain("NVDA", spot=180.0, max_dte=40, strikes_each_side=1)
            quote = next(q for q in chain if q.contract.right == "C" and q.bid > 0)
            order = PlaceOrder("bifrost:cmd:1:1", "NVDA", "BUY", 2, "limit", round(quote.ask + 1.0, 2),
                               intent="commander", contract=quote.contract)
            await broker.place_order(order)
            await wait_for(lambda: events.of(Fill), 5, "the option fill")
            return quote, events.of(Fill)[0], await broker.completed_orders()
        finally:
            await broker.disconnect()

    quote, fill, completed = run(scenario())

    assert (fill.order_ref, fill.side, fill.qty, fill.sec_type) == ("bifrost:cmd:1:1", "BUY", 2.0, "OPT")
    assert fill.price <= quote.ask + 1.0
    assert [(o.order_ref, o.status, o.con_id) for o in completed] == [("bifrost:cmd:1:1", "filled",
                                                                       quote.contract.con_id)]
