"""The TWS-protocol simulator driven by the unmodified IB client (ib_insync, or ib_async in its own venv) over a real
loopback socket: handshake, contracts, market data with greeks, positions, account, orders, executions, errors,
completed orders, several managed accounts, other clients' activity, execution corrections and kill cycles."""
from __future__ import annotations

import asyncio
import math
import socket
import struct

import pytest

from tests.trading.ib.conftest import TWO_ACCOUNTS, run, wait_for
from trading.sim.account import stock_contract
from trading.sim.market import MarketConfig, con_id_for, seed_account
from trading.sim.tws_server import ACCOUNT


def _errors(ib):
    errors: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, msg, *rest: errors.append((req_id, code, msg))
    return errors


async def _connect(ib_lib, tws, client_id=1):
    ib = ib_lib.IB()
    await ib.connectAsync("127.0.0.1", tws.port, clientId=client_id, timeout=4)
    return ib


def _qualified(contracts):
    return [c for c in contracts if c is not None]


def test_handshake_negotiates_server_version_176_and_start_api_sends_account_and_next_id(tws):
    with socket.create_connection(("127.0.0.1", tws.port), timeout=5) as sock:
        sock.sendall(b"API\0" + struct.pack(">I", 9) + b"v157..178")
        reply = _read_fields(sock)
        sock.sendall(_frame(["71", "2", "5", ""]))
        first, second = _read_fields(sock), _read_fields(sock)

    assert reply[0] == "176" and reply[1].endswith("UTC")
    assert first == ["15", "1", ACCOUNT]
    assert second[:2] == ["9", "1"] and int(second[2]) >= 1


def test_connect_syncs_positions_account_and_executions(ib_lib, tws):
    async def scenario():
        ib = await _connect(ib_lib, tws)
        try:
            return (ib.managedAccounts(), ib.client.serverVersion(), ib.positions(), ib.accountValues(),
                    await ib.reqCurrentTimeAsync())
        finally:
            ib.disconnect()

    accounts, version, positions, values, now = run(scenario())

    assert accounts == [ACCOUNT] and version == 176
    assert now.year >= 2024
    by_symbol = {(p.contract.symbol, p.contract.secType, p.contract.right): p for p in positions}
    seeds = seed_account(MarketConfig(realized_vol=0.8), _utc())
    assert len(positions) == len(seeds)
    seeded_call = next(s for s in seeds if s.sec_type == "OPT" and s.right == "C" and s.qty == 10)
    straddle_call = next(p for p in positions if p.contract.conId == seeded_call.con_id)
    assert straddle_call.position == 10
    assert math.isclose(straddle_call.avgCost, seeded_call.avg_cost * 100)  # IB: option avgCost x multiplier
    assert by_symbol[("NVDA", "STK", "")].position == 100  # the manual shares of the same underlying
    assert by_symbol[("AAPL", "STK", "")].position == 50
    tags = {v.tag for v in values}
    assert {"NetLiquidation", "BuyingPower", "MaintMarginReq", "TotalCashValue"} <= tags


def test_qualify_resolves_stock_and_option_and_unknown_contract_gets_200(ib_lib, tws):
    seeds = seed_account(MarketConfig(), _utc())
    call = seeds[0]

    async def scenario():
        ib = await _connect(ib_lib, tws)
        errors = _errors(ib)
        try:
            stock = ib_lib.Stock("NVDA", "SMART", "USD")
            option = ib_lib.Option("NVDA", f"{call.expiry:%Y%m%d}", call.strike, "C", "SMART")
            by_id = ib_lib.Contract(conId=call.con_id, exchange="SMART")
            unknown = ib_lib.Stock("ZZZZ", "SMART", "USD")
            result = await ib.qualifyContractsAsync(stock, option, by_id, unknown)
            return stock, option, by_id, _qualified(result), errors
        finally:
            ib.disconnect()

    stock, option, by_id, qualified, errors = run(scenario())

    assert stock.conId == con_id_for("NVDA", "STK") and stock.primaryExchange == "NASDAQ"
    assert option.conId == call.con_id and option.multiplier == "100" and option.localSymbol == call.local_symbol
    assert by_id.secType == "OPT" and by_id.strike == call.strike and by_id.right == "C"
    assert len(qualified) == 3
    assert any(code == 200 for _, code, _ in errors)


def test_market_data_streams_quotes_with_sizes_and_option_model_greeks(ib_lib, tws):
    call = seed_account(MarketConfig(), _utc())[0]

    async def scenario():
        ib = await _connect(ib_lib, tws)
        try:
            stock = ib_lib.Stock("NVDA", "SMART", "USD")
            option = ib_lib.Contract(conId=call.con_id, exchange="SMART")
            await ib.qualifyContractsAsync(stock, option)
            st, ot = ib.reqMktData(stock), ib.reqMktData(option)
            updates = []
            st.updateEvent += lambda t: updates.append(t.bid)
            await wait_for(lambda: len(updates) >= 5 and ot.modelGreeks is not None, 5, "ticks")
            return st, ot, updates
        finally:
            ib.disconnect()

    st, ot, updates = run(scenario())

    assert 0 < st.bid < st.ask and st.last > 0 and st.bidSize > 0 and st.askSize > 0
    assert st.marketDataType == 1
    assert 0 < ot.bid < ot.ask
    g = ot.modelGreeks
    assert g.impliedVol == 0.35 and 0.2 < g.delta < 0.8 and g.gamma > 0 and g.vega > 0 and g.theta < 0
    assert g.undPrice > 0


def test_without_realtime_entitlement_type_1_gets_10089_and_delayed_type_3_streams_delayed_ticks(ib_lib, tws):
    tws.command("delayed on")

    async def scenario():
        ib = await _connect(ib_lib, tws)
        errors = _errors(ib)
        try:
            stock = ib_lib.Stock("NVDA", "SMART", "USD")
            await ib.qualifyContractsAsync(stock)
            live = ib.reqMktData(stock)
            await wait_for(lambda: any(code == 10089 for _, code, _ in errors), 5, "10089")
            ib.cancelMktData(live)
            ib.reqMarketDataType(3)
            delayed = ib.reqMktData(stock)
            await wait_for(lambda: delayed.bid > 0 and delayed.ask > 0, 5, "delayed quotes")
            return delayed, errors
        finally:
            ib.disconnect()

    delayed, errors = run(scenario())

    assert delayed.marketDataType == 3
    assert any(code == 10167 for _, code, _ in errors)


def test_market_order_fills_with_status_execution_commission_and_order_ref(ib_lib, tws):
    async def scenario():
        ib = await _connect(ib_lib, tws)
        try:
            stock = ib_lib.Stock("NVDA", "SMART", "USD")
            await ib.qualifyContractsAsync(stock)
            positions_before = {p.contract.conId: p.position for p in ib.positions()}
            order = ib_lib.MarketOrder("BUY", 30)
            order.orderRef = "bifrost:test:1"
            trade = ib.placeOrder(stock, order)
            await wait_for(lambda: trade.orderStatus.status == "Filled" and trade.fills
                           and trade.fills[0].commissionReport.commission > 0, 5, "fill")
            await wait_for(lambda: {p.contract.conId: p.position for p in ib.positions()}[stock.conId] == 130, 5,
                           "position push")
            return trade, positions_before[stock.conId]
        finally:
            ib.disconnect()

    trade, before = run(scenario())

    assert before == 100
    statuses = [entry.status for entry in trade.log]
    assert statuses[0] == "PendingSubmit" and statuses[-1] == "Filled" and "Submitted" in statuses
    fill = trade.fills[0]
    assert fill.execution.orderRef == "bifrost:test:1" and fill.execution.side == "BOT"
    assert fill.execution.shares == 30 and fill.execution.permId == trade.order.permId
    assert trade.orderStatus.filled == 30 and trade.orderStatus.remaining == 0
    assert fill.commissionReport.commission == 1.0  # IB fixed: max($1, 30 x $0.005)
    sim_orders = tws.state()["orders"]
    assert [o["order_ref"] for o in sim_orders] == ["bifrost:test:1"]


def test_resting_limit_order_is_open_and_cancel_gives_cancelled_and_202(ib_lib, tws):
    async def scenario():
        ib = await _connect(ib_lib, tws)
        errors = _errors(ib)
        try:
            stock = ib_lib.Stock("NVDA", "SMART", "USD")
            await ib.qualifyContractsAsync(stock)
            trade = ib.placeOrder(stock, ib_lib.LimitOrder("BUY", 10, 1.0))
            await wait_for(lambda: trade.orderStatus.status == "Submitted", 5, "submitted")
            open_trades = await ib.reqAllOpenOrdersAsync()
            ib.cancelOrder(trade.order)
            await wait_for(lambda: trade.orderStatus.status == "Cancelled", 5, "cancelled")
            ib.cancelOrder(trade.order)  # again: it cannot be cancelled any more
            await wait_for(lambda: any(code == 10148 for _, code, _ in errors), 5, "10148")
            return trade, open_trades, errors
        finally:
            ib.disconnect()

    trade, open_trades, errors = run(scenario())

    assert [t.order.orderId for t in open_trades] == [trade.order.orderId]
    assert any(code == 202 for _, code, _ in errors)
    assert not trade.fills


def test_lost_execution_report_is_still_returned_by_req_executions(ib_lib, tws):
    tws.command("lose_exec 1")

    async def scenario():
        ib = await _connect(ib_lib, tws)
        try:
            stock = ib_lib.Stock("NVDA", "SMART", "USD")
            await ib.qualifyContractsAsync(stock)
            order = ib_lib.MarketOrder("SELL", 40)
            order.orderRef = "bifrost:test:lost"
            trade = ib.placeOrder(stock, order)
            await wait_for(lambda: trade.orderStatus.status == "Filled", 5, "filled status")
            await asyncio.sleep(0.3)
            live_fills = list(trade.fills)
            fills = await ib.reqExecutionsAsync(ib_lib.ExecutionFilter())
            return live_fills, fills
        finally:
            ib.disconnect()

    live_fills, fills = run(scenario())

    assert live_fills == []
    assert [(f.execution.orderRef, f.execution.shares, f.execution.side) for f in fills] == [
        ("bifrost:test:lost", 40, "SLD")]


def test_rejected_order_gets_201_and_the_trade_ends(ib_lib, tws):
    tws.command("reject 1")

    async def scenario():
        ib = await _connect(ib_lib, tws)
        errors = _errors(ib)
        try:
            stock = ib_lib.Stock("NVDA", "SMART", "USD")
            await ib.qualifyContractsAsync(stock)
            trade = ib.placeOrder(stock, ib_lib.MarketOrder("BUY", 10))
            await wait_for(lambda: any(code == 201 for _, code, _ in errors), 5, "201")
            await asyncio.sleep(0.2)
            return trade
        finally:
            ib.disconnect()

    trade = run(scenario())

    assert trade.orderStatus.status == "Cancelled" and not trade.fills
    assert tws.state()["executions"] == []


def test_second_connection_with_a_client_id_in_use_gets_326_and_is_closed(ib_lib, tws):
    async def scenario():
        first = await _connect(ib_lib, tws, client_id=7)
        second = ib_lib.IB()
        errors = _errors(second)
        try:
            try:
                await second.connectAsync("127.0.0.1", tws.port, clientId=7, timeout=1.5)
            except (TimeoutError, ConnectionError, OSError):
                pass
            third = await _connect(ib_lib, tws, client_id=8)
            third.disconnect()
            return errors, second.isConnected(), first.isConnected()
        finally:
            first.disconnect()
            second.disconnect()

    errors, second_connected, first_connected = run(scenario())

    assert any(code == 326 for _, code, _ in errors)
    assert not second_connected and first_connected


def test_connectivity_lost_and_restored_are_reported_as_1100_and_1102_and_data_pauses(ib_lib, tws):
    async def scenario():
        ib = await _connect(ib_lib, tws)
        errors = _errors(ib)
        try:
            stock = ib_lib.Stock("NVDA", "SMART", "USD")
            await ib.qualifyContractsAsync(stock)
            ticker = ib.reqMktData(stock)
            await wait_for(lambda: ticker.bid > 0, 5, "quotes")
            await asyncio.to_thread(tws.command, "connectivity lost")
            await wait_for(lambda: any(code == 1100 for _, code, _ in errors), 5, "1100")
            updates = []
            ticker.updateEvent += lambda t: updates.append(t)
            await asyncio.sleep(0.5)
            during = len(updates)
            await asyncio.to_thread(tws.command, "connectivity restored")
            await wait_for(lambda: any(code == 1102 for _, code, _ in errors), 5, "1102")
            await wait_for(lambda: len(updates) > during, 5, "quotes again")
            return during
        finally:
            ib.disconnect()

    assert run(scenario()) == 0


def test_restart_drops_clients_and_keeps_orders_and_executions(ib_lib, tws):
    async def scenario():
        ib = await _connect(ib_lib, tws)
        stock = ib_lib.Stock("NVDA", "SMART", "USD")
        await ib.qualifyContractsAsync(stock)
        order = ib_lib.MarketOrder("BUY", 20)
        order.orderRef = "bifrost:test:r"
        trade = ib.placeOrder(stock, order)
        await wait_for(lambda: trade.fills, 5, "fill")
        resting = ib.placeOrder(stock, ib_lib.LimitOrder("BUY", 5, 1.0))
        await wait_for(lambda: resting.orderStatus.status == "Submitted", 5, "resting")
        await asyncio.to_thread(tws.command, "restart 0.5")
        await wait_for(lambda: not ib.isConnected(), 5, "disconnect")
        again = await _connect(ib_lib, tws)
        try:
            fills = await again.reqExecutionsAsync(ib_lib.ExecutionFilter())
            open_trades = await again.reqAllOpenOrdersAsync()
            return fills, open_trades, resting.order.orderId
        finally:
            again.disconnect()

    fills, open_trades, resting_id = run(scenario())

    assert [f.execution.orderRef for f in fills] == ["bifrost:test:r"]
    assert [t.order.orderId for t in open_trades] == [resting_id]


def _utc():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _frame(fields: list[str]) -> bytes:
    payload = "".join(f + "\0" for f in fields).encode()
    return struct.pack(">I", len(payload)) + payload


def _read_fields(sock: socket.socket) -> list[str]:
    size = struct.unpack(">I", _recv_exact(sock, 4))[0]
    return _recv_exact(sock, size).decode().split("\0")[:-1]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def test_delayed_execution_report_arrives_after_the_filled_status(ib_lib, tws):
    tws.command("delay_exec 0.5")

    async def scenario():
        ib = await _connect(ib_lib, tws)
        try:
            stock = ib_lib.Stock("NVDA", "SMART", "USD")
            await ib.qualifyContractsAsync(stock)
            trade = ib.placeOrder(stock, ib_lib.MarketOrder("BUY", 10))
            await wait_for(lambda: trade.orderStatus.status == "Filled", 5, "filled status")
            fills_at_status = len(trade.fills)
            await wait_for(lambda: trade.fills, 5, "the late execution report")
            return fills_at_status, trade
        finally:
            ib.disconnect()

    fills_at_status, trade = run(scenario())

    assert fills_at_status == 0
    assert trade.fills[0].execution.shares == 10 and trade.fills[0].commissionReport.commission == 1.0


def test_a_restarted_simulator_process_keeps_its_account_orders_and_executions(tmp_path):
    from tests.trading.ib.conftest import ServerThread

    state = tmp_path / "tws.json"
    first = ServerThread(state_path=state).start()
    first.call(_place_and_fill(first.server))
    before = first.state()
    first.stop()

    second = ServerThread(state_path=state).start()
    try:
        after = second.state()
    finally:
        second.stop()

    assert after["executions"] == before["executions"] and len(after["executions"]) == 1
    assert after["orders"] == before["orders"]
    assert {p["con_id"]: p["qty"] for p in after["positions"]} == {p["con_id"]: p["qty"] for p in before["positions"]}


async def _place_and_fill(server):
    """Book one fill straight through the server's account and order path (no client needed for this one)."""
    order = server.book.new_order(client_id=1, order_id=1, account=ACCOUNT, contract=stock_contract("NVDA"),
                                  side="BUY", qty=10, order_type="market", limit=None, order_ref="bifrost:test:kept")
    server._try_fill(order)


def test_the_simulator_seeds_the_straddle_and_manual_shares_it_is_given():
    from tests.trading.ib.conftest import ServerThread

    server = ServerThread(straddles=3, manual_shares=0).start()
    try:
        positions = server.state()["positions"]
    finally:
        server.stop()

    seeds = seed_account(MarketConfig(realized_vol=0.8), _utc(), straddles=3, manual_shares=0)
    assert {p["con_id"]: p["qty"] for p in positions} == {s.con_id: s.qty for s in seeds}
    assert NVDA_ID not in {p["con_id"] for p in positions}  # no manual shares of the underlying
    assert [p["qty"] for p in positions if p["sec_type"] == "OPT"][:2] == [3, 3]


def test_the_cli_sends_fault_commands_to_a_running_simulator(tws, capsys):
    from django.core.management import call_command

    from trading.sim.tws_server import ControlServer

    control = ControlServer(tws.server, 0)
    tws.call(control.start())
    try:
        call_command("tws_sim", "--control-port", str(control.port), "--send", "silent on")
    except SystemExit as exc:
        assert exc.code == 0
    finally:
        tws.call(control.stop())

    assert '"silent": true' in capsys.readouterr().out
    assert tws.server.faults.silent is True


# ---- completed orders, executions filters, open orders of every client ----------------------------------------------

NVDA_ID = con_id_for("NVDA", "STK")


async def _stock(ib_lib, ib, symbol="NVDA"):
    stock = ib_lib.Stock(symbol, "SMART", "USD")
    await ib.qualifyContractsAsync(stock)
    return stock


def _order(ib_lib, action, qty, ref, limit=None, account=""):
    order = ib_lib.LimitOrder(action, qty, limit) if limit is not None else ib_lib.MarketOrder(action, qty)
    order.orderRef = ref
    order.account = account
    return order


def _sim_order(tws, ref):
    return next(o for o in tws.state()["orders"] if o["order_ref"] == ref)


def test_completed_orders_report_every_clients_filled_cancelled_and_rejected_orders(ib_lib, tws):
    async def scenario():
        ib = await _connect(ib_lib, tws, client_id=1)
        errors = _errors(ib)
        stock = await _stock(ib_lib, ib)
        filled = ib.placeOrder(stock, _order(ib_lib, "BUY", 30, "bifrost:c:fill"))
        await wait_for(lambda: filled.orderStatus.status == "Filled", 5, "filled")
        resting = ib.placeOrder(stock, _order(ib_lib, "BUY", 10, "bifrost:c:cxl", limit=1.0))
        await wait_for(lambda: resting.orderStatus.status == "Submitted", 5, "resting")
        ib.cancelOrder(resting.order)
        await wait_for(lambda: resting.orderStatus.status == "Cancelled", 5, "cancelled")
        await asyncio.to_thread(tws.command, "reject 1")
        ib.placeOrder(stock, _order(ib_lib, "SELL", 5, "bifrost:c:rej"))
        await wait_for(lambda: any(code == 201 for _, code, _ in errors), 5, "201")
        await asyncio.to_thread(tws.command, "foreign_fill NVDA SELL 7 - other:1")
        ib.disconnect()
        other = await _connect(ib_lib, tws, client_id=2)
        try:
            return await other.reqCompletedOrdersAsync(apiOnly=False), filled.order.permId, resting.order.permId
        finally:
            other.disconnect()

    trades, filled_perm, cancelled_perm = run(scenario())

    by_ref = {t.order.orderRef: t for t in trades}
    assert sorted(by_ref) == ["bifrost:c:cxl", "bifrost:c:fill", "bifrost:c:rej", "other:1"]
    expected = {  # ref: (status, action, totalQuantity, filledQuantity)
        "bifrost:c:fill": ("Filled", "BUY", 30, 30), "bifrost:c:cxl": ("Cancelled", "BUY", 10, 0),
        "bifrost:c:rej": ("Inactive", "SELL", 5, 0), "other:1": ("Filled", "SELL", 7, 7)}
    for ref, (status, action, total, filled) in expected.items():
        t = by_ref[ref]
        assert (t.orderStatus.status, t.order.action, t.order.totalQuantity, t.order.filledQuantity) == (
            status, action, total, filled), ref
        assert t.order.account == ACCOUNT and t.order.permId == _sim_order(tws, ref)["perm_id"]
        assert (t.contract.conId, t.contract.symbol, t.contract.secType) == (NVDA_ID, "NVDA", "STK")
    assert by_ref["bifrost:c:fill"].order.permId == filled_perm
    assert by_ref["bifrost:c:cxl"].order.permId == cancelled_perm
    assert by_ref["bifrost:c:cxl"].order.lmtPrice == 1.0


def test_req_executions_honours_client_account_symbol_sec_type_and_side_filters(ib_lib, tws_two_accounts):
    tws = tws_two_accounts
    first, second = TWO_ACCOUNTS

    async def scenario():
        ib = await _connect(ib_lib, tws, client_id=1)
        try:
            stock = await _stock(ib_lib, ib)
            a = ib.placeOrder(stock, _order(ib_lib, "BUY", 10, "bifrost:f:1", account=first))
            b = ib.placeOrder(stock, _order(ib_lib, "SELL", 5, "bifrost:f:2", account=second))
            await wait_for(lambda: a.orderStatus.status == b.orderStatus.status == "Filled", 5, "fills")
            await asyncio.to_thread(tws.command, f"foreign_fill AAPL BUY 3 {first}")
            queries = {
                "all": ib_lib.ExecutionFilter(), "client 1": ib_lib.ExecutionFilter(clientId=1),
                "client 99": ib_lib.ExecutionFilter(clientId=99), "second": ib_lib.ExecutionFilter(acctCode=second),
                "aapl": ib_lib.ExecutionFilter(symbol="AAPL"), "stk": ib_lib.ExecutionFilter(secType="STK"),
                "opt": ib_lib.ExecutionFilter(secType="OPT"), "sells": ib_lib.ExecutionFilter(side="SELL"),
                "first buys": ib_lib.ExecutionFilter(acctCode=first, side="BUY"),
            }
            return {name: sorted((f.execution.orderRef, f.execution.acctNumber, f.contract.symbol, f.execution.side,
                                  f.execution.clientId) for f in await ib.reqExecutionsAsync(q))
                    for name, q in queries.items()}
        finally:
            ib.disconnect()

    found = run(scenario())

    ours_first = ("bifrost:f:1", first, "NVDA", "BOT", 1)
    ours_second = ("bifrost:f:2", second, "NVDA", "SLD", 1)
    foreign = ("", first, "AAPL", "BOT", 99)
    assert found["all"] == found["stk"] == sorted([ours_first, ours_second, foreign])
    assert found["client 1"] == [ours_first, ours_second] and found["client 99"] == [foreign]
    assert found["second"] == [ours_second] and found["aapl"] == [foreign] and found["opt"] == []
    assert found["sells"] == [ours_second] and found["first buys"] == sorted([ours_first, foreign])


def test_all_open_orders_include_every_clients_working_orders_with_their_account(ib_lib, tws):
    tws.command(f"foreign_order AAPL BUY 5 150 {ACCOUNT} manual:7 42")

    async def scenario():
        ib = await _connect(ib_lib, tws, client_id=1)
        try:
            stock = await _stock(ib_lib, ib)
            own = ib.placeOrder(stock, _order(ib_lib, "SELL", 8, "bifrost:o:1", limit=999.0, account=ACCOUNT))
            await wait_for(lambda: own.orderStatus.status == "Submitted", 5, "working")
            every = await ib.reqAllOpenOrdersAsync()
            mine = await ib.reqOpenOrdersAsync()
            return every, mine
        finally:
            ib.disconnect()

    every, mine = run(scenario())

    assert sorted((t.order.orderRef, t.order.clientId, t.order.account, t.contract.symbol, t.order.totalQuantity,
                   t.orderStatus.status) for t in every) == [
        ("bifrost:o:1", 1, ACCOUNT, "NVDA", 8, "Submitted"), ("manual:7", 42, ACCOUNT, "AAPL", 5, "Submitted")]
    assert [t.order.orderRef for t in mine] == ["bifrost:o:1"]
    assert _sim_order(tws, "manual:7")["status"] == "Submitted"


# ---- several managed accounts -------------------------------------------------------------------------------------------

def test_several_managed_accounts_report_their_own_positions_values_and_book_orders_where_they_say(
        ib_lib, tws_two_accounts):
    tws = tws_two_accounts
    first, second = TWO_ACCOUNTS

    async def scenario():
        ib = await _connect(ib_lib, tws, client_id=1)
        errors = _errors(ib)
        try:
            stock = await _stock(ib_lib, ib)
            positions_at_start = [(p.account, p.contract.symbol, p.contract.secType, p.position)
                                  for p in ib.positions()]
            summary = await ib.accountSummaryAsync()
            trade = ib.placeOrder(stock, _order(ib_lib, "BUY", 10, "bifrost:m:1", account=second))
            await wait_for(lambda: trade.orderStatus.status == "Filled", 5, "fill in the second account")
            await wait_for(lambda: (second, NVDA_ID, 310) in {(p.account, p.contract.conId, p.position)
                                                              for p in ib.positions()}, 5, "position push")
            unassigned = ib.placeOrder(stock, _order(ib_lib, "BUY", 10, "bifrost:m:none"))
            await wait_for(lambda: any(code == 435 for _, code, _ in errors), 5, "435")
            return (ib.managedAccounts(), positions_at_start, summary, trade, unassigned,
                    {(p.account, p.contract.conId): p.position for p in ib.positions()})
        finally:
            ib.disconnect()

    accounts, at_start, summary, trade, unassigned, positions = run(scenario())

    assert accounts == list(TWO_ACCOUNTS)
    assert ("NVDA", "STK", 300) in {(s, t, q) for a, s, t, q in at_start if a == second}
    assert len([p for p in at_start if p[0] == second]) == 1
    assert len([p for p in at_start if p[0] == first]) == len(seed_account(MarketConfig(), _utc()))
    gross = {v.account: float(v.value) for v in summary if v.tag == "GrossPositionValue"}
    assert set(gross) == set(TWO_ACCOUNTS) and gross[second] == pytest.approx(300 * 180.0, rel=0.05)
    assert gross[first] != pytest.approx(gross[second], rel=0.05)  # the straddle, manual shares, AAPL, far call
    assert trade.fills[0].execution.acctNumber == second
    assert positions[(first, NVDA_ID)] == 100  # the first account's manual shares are untouched
    assert unassigned.orderStatus.status == "Cancelled" and not unassigned.fills
    state = tws.state()
    assert state["accounts"] == list(TWO_ACCOUNTS)
    assert _sim_order(tws, "bifrost:m:none")["status"] == "Inactive"
    assert {(p["account"], p["qty"]) for p in state["positions"] if p["con_id"] == NVDA_ID} == {(first, 100),
                                                                                               (second, 310)}
    booked = _sim_order(tws, "bifrost:m:1")
    assert (booked["client_id"], booked["account"], booked["status"], booked["filled"]) == (1, second, "Filled", 10)
    assert booked["received_at"] > 0


# ---- foreign activity, corrections, partial fills, clock skew ----------------------------------------------------------

def test_a_foreign_fill_is_live_only_for_its_client_and_visible_to_others_afterwards(ib_lib, tws):
    async def scenario():
        ib = await _connect(ib_lib, tws, client_id=1)
        foreign = await _connect(ib_lib, tws, client_id=99)
        live_ours, live_foreign = [], []
        ib.execDetailsEvent += lambda trade, fill: live_ours.append(fill)
        ib.orderStatusEvent += lambda trade: live_ours.append(trade)
        foreign.execDetailsEvent += lambda trade, fill: live_foreign.append(fill)
        try:
            reply = await asyncio.to_thread(tws.command, "foreign_fill NVDA BUY 15 - bifrost:zzzz:1")
            await wait_for(lambda: live_foreign, 5, "the live report to the placing client")
            await wait_for(lambda: {p.contract.conId: p.position for p in ib.positions()}[NVDA_ID] == 115, 5,
                           "the position push to every subscriber")
            seen_live = list(live_ours)
            fills = await ib.reqExecutionsAsync(ib_lib.ExecutionFilter())
            completed = await ib.reqCompletedOrdersAsync(apiOnly=False)
            return reply, seen_live, live_foreign, fills, completed
        finally:
            ib.disconnect()
            foreign.disconnect()

    reply, seen_live, live_foreign, fills, completed = run(scenario())

    assert seen_live == []
    assert [(f.execution.orderRef, f.execution.clientId, f.execution.shares) for f in live_foreign] == [
        ("bifrost:zzzz:1", 99, 15)]
    assert [(f.execution.orderRef, f.execution.clientId, f.execution.acctNumber, f.execution.side) for f in fills] == [
        ("bifrost:zzzz:1", 99, ACCOUNT, "BOT")]
    assert fills[0].execution.execId == reply["executions"][0]["exec_id"]
    assert [(t.order.orderRef, t.orderStatus.status, t.order.permId) for t in completed] == [
        ("bifrost:zzzz:1", "Filled", reply["order"]["perm_id"])]


def test_a_foreign_fill_in_another_account_with_a_bifrost_like_ref_leaves_the_first_account_alone(
        ib_lib, tws_two_accounts):
    tws = tws_two_accounts
    first, second = TWO_ACCOUNTS
    nvda_before = {(p["account"], p["con_id"]): p["qty"] for p in tws.state()["positions"]}

    reply = tws.command(f"foreign_fill NVDA SELL 20 {second} bifrost:zzzz:2 7")

    after = {(p["account"], p["con_id"]): p["qty"] for p in tws.state()["positions"]}
    assert after[(second, NVDA_ID)] == nvda_before[(second, NVDA_ID)] - 20
    assert after[(first, NVDA_ID)] == nvda_before[(first, NVDA_ID)]
    assert (reply["order"]["client_id"], reply["order"]["account"], reply["order"]["status"]) == (7, second, "Filled")
    assert reply["executions"][0]["account"] == second


def test_foreign_commands_refuse_bad_arguments_and_change_nothing(tws):
    before = tws.state()["orders"]

    replies = [tws.call(tws.server.command(line)) for line in (
        "foreign_fill NVDA HOLD 5", "foreign_fill NVDA BUY -5", "foreign_fill NVDA BUY 5 DU0000000",
        "foreign_order NVDA BUY 5", "foreign_order NVDA BUY 5 abc", "correct_exec 0000.nope.01")]

    assert [r["ok"] for r in replies] == [False] * 6
    assert "SIDE" in replies[0]["error"] and "ACCOUNT" in replies[2]["error"] and "usage" in replies[3]["error"]
    assert tws.state()["orders"] == before


def test_an_execution_correction_arrives_live_as_02_with_the_same_prefix_and_is_in_req_executions(ib_lib, tws):
    async def scenario():
        ib = await _connect(ib_lib, tws, client_id=1)
        try:
            stock = await _stock(ib_lib, ib)
            trade = ib.placeOrder(stock, _order(ib_lib, "BUY", 10, "bifrost:x:1"))
            await wait_for(lambda: trade.fills, 5, "the fill")
            original = trade.fills[0].execution
            await asyncio.to_thread(tws.command, f"correct_exec {original.execId}")
            await wait_for(lambda: len(trade.fills) == 2 and trade.fills[1].commissionReport.commission > 0, 5,
                           "the correction")
            fills = await ib.reqExecutionsAsync(ib_lib.ExecutionFilter())
            return original, trade.fills[1].execution, fills
        finally:
            ib.disconnect()

    original, correction, fills = run(scenario())

    prefix = original.execId.rpartition(".")[0]
    assert original.execId == prefix + ".01" and correction.execId == prefix + ".02"
    assert (correction.orderRef, correction.permId, correction.shares, correction.price, correction.side) == (
        original.orderRef, original.permId, original.shares, original.price, original.side)
    assert sorted(f.execution.execId for f in fills) == [prefix + ".01", prefix + ".02"]
    assert {p["con_id"]: p["qty"] for p in tws.state()["positions"]}[NVDA_ID] == 110  # replaced, not added


def test_partial_fills_n_shares_then_rests_open_and_a_cancel_leaves_the_partial_fill(ib_lib, tws):
    tws.command("partial 4")

    async def scenario():
        ib = await _connect(ib_lib, tws, client_id=1)
        try:
            stock = await _stock(ib_lib, ib)
            trade = ib.placeOrder(stock, _order(ib_lib, "BUY", 10, "bifrost:p:1"))
            await wait_for(lambda: trade.orderStatus.filled == 4 and trade.fills, 5, "the partial fill")
            still_open = [(t.order.orderRef, t.orderStatus.filled, t.orderStatus.remaining)
                          for t in await ib.reqAllOpenOrdersAsync()]
            ib.cancelOrder(trade.order)
            await wait_for(lambda: trade.orderStatus.status == "Cancelled", 5, "cancelled")
            completed = await ib.reqCompletedOrdersAsync(apiOnly=False)
            return trade, still_open, completed
        finally:
            ib.disconnect()

    trade, still_open, completed = run(scenario())

    assert still_open == [("bifrost:p:1", 4, 6)]
    assert [f.execution.shares for f in trade.fills] == [4]
    assert [(t.order.orderRef, t.orderStatus.status, t.order.filledQuantity) for t in completed] == [
        ("bifrost:p:1", "Cancelled", 4)]
    assert tws.state()["faults"]["partial_next"] == 0  # one order only


def test_partial_with_lose_exec_withholds_the_partial_execution_but_req_executions_has_it(ib_lib, tws):
    tws.command("partial 3")
    tws.command("lose_exec 1")

    async def scenario():
        ib = await _connect(ib_lib, tws, client_id=1)
        try:
            stock = await _stock(ib_lib, ib)
            trade = ib.placeOrder(stock, _order(ib_lib, "SELL", 10, "bifrost:p:2"))
            await wait_for(lambda: trade.orderStatus.filled == 3, 5, "the partial status")
            live = list(trade.fills)
            fills = await ib.reqExecutionsAsync(ib_lib.ExecutionFilter())
            return trade, live, fills
        finally:
            ib.disconnect()

    trade, live, fills = run(scenario())

    assert live == [] and trade.orderStatus.status == "Submitted"
    assert [(f.execution.orderRef, f.execution.shares) for f in fills] == [("bifrost:p:2", 3)]


def test_skew_shifts_the_answer_to_req_current_time(ib_lib, tws):
    tws.command("skew 30")

    async def scenario():
        ib = await _connect(ib_lib, tws)
        try:
            return await ib.reqCurrentTimeAsync()
        finally:
            ib.disconnect()

    broker_time = run(scenario())

    assert 27 <= (broker_time - _utc()).total_seconds() <= 31


# ---- kill cycles --------------------------------------------------------------------------------------------------------

_PLACE_AND_HANG = """
import asyncio, importlib, sys

lib = importlib.import_module(sys.argv[1])

async def main():
    ib = lib.IB()
    await ib.connectAsync("127.0.0.1", int(sys.argv[2]), clientId=5, timeout=4)
    stock = lib.Stock("NVDA", "SMART", "USD")
    await ib.qualifyContractsAsync(stock)
    order = lib.LimitOrder("BUY", 10, 1.0)
    order.orderRef = "bifrost:kill:1"
    order.account = sys.argv[3]
    trade = ib.placeOrder(stock, order)
    while trade.orderStatus.status != "Submitted":
        await asyncio.sleep(0.02)
    print("placed", trade.order.orderId, trade.order.permId, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_client_restarted_after_sigkill_gets_its_working_orders_back_and_can_cancel_them(ib_lib, tws):
    import signal
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", _PLACE_AND_HANG, ib_lib.__name__, str(tws.port), ACCOUNT],
                             stdout=subprocess.PIPE, text=True)
    try:
        placed = child.stdout.readline().split()  # blocks until the order works (or the child dies: "")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    assert placed[:1] == ["placed"], placed
    order_id, perm_id = int(placed[1]), int(placed[2])

    async def scenario():
        await wait_for(lambda: 5 not in tws.state()["clients"], 5, "the killed client's connection to close")
        ib = await _connect(ib_lib, tws, client_id=5)
        try:
            bound = [(t.order.orderRef, t.order.orderId, t.order.permId, t.order.account) for t in ib.openTrades()]
            every = [(t.order.orderRef, t.order.clientId, t.order.account) for t in await ib.reqAllOpenOrdersAsync()]
            trade = next(t for t in ib.openTrades() if t.order.orderRef == "bifrost:kill:1")
            ib.cancelOrder(trade.order)
            await wait_for(lambda: trade.orderStatus.status == "Cancelled", 5, "cancelled by the restarted client")
            return bound, every
        finally:
            ib.disconnect()

    bound, every = run(scenario())

    assert bound == [("bifrost:kill:1", order_id, perm_id, ACCOUNT)]
    assert every == [("bifrost:kill:1", 5, ACCOUNT)]
    assert _sim_order(tws, "bifrost:kill:1")["status"] == "Cancelled"


def test_start_api_binds_the_client_ids_working_orders_before_any_request(ib_lib, tws):
    async def place():
        ib = await _connect(ib_lib, tws, client_id=6)
        stock = await _stock(ib_lib, ib)
        trade = ib.placeOrder(stock, _order(ib_lib, "BUY", 3, "bifrost:bind:1", limit=1.0))
        await wait_for(lambda: trade.orderStatus.status == "Submitted", 5, "working")
        ib.disconnect()
        await wait_for(lambda: 6 not in tws.state()["clients"], 5, "disconnected")

    run(place())
    with socket.create_connection(("127.0.0.1", tws.port), timeout=5) as sock:
        sock.sendall(b"API\0" + struct.pack(">I", 9) + b"v157..176")
        _read_fields(sock)
        sock.sendall(_frame(["71", "2", "6", ""]))
        messages = [_read_fields(sock) for _ in range(7)]  # accounts, next id, 3 farm infos, openOrder, orderStatus

    open_order, order_status = messages[5], messages[6]
    assert open_order[0] == "5" and "bifrost:bind:1" in open_order and ACCOUNT in open_order
    assert order_status[0] == "3" and order_status[2] == "Submitted"


def test_the_cli_serves_several_accounts(tmp_path):
    import os
    import subprocess
    import sys

    from tests.ports import free_port
    from trading.sim.tws_server import send_command

    ports = [free_port(), free_port()]
    proc = subprocess.Popen([sys.executable, "manage.py", "tws_sim", "--port", str(ports[0]), "--control-port",
                             str(ports[1]), "--accounts", "DU7000001,DU7000002", "--state", str(tmp_path / "t.json")],
                            env={**os.environ, "BIFROST_ALLOW_DEV_SECRET": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        state = run(wait_for(lambda: _state_or_none(send_command, ports[1]), 20, "tws_sim to answer"))
    finally:
        proc.terminate()
        proc.wait(10)

    assert state["accounts"] == ["DU7000001", "DU7000002"]
    assert {p["account"] for p in state["positions"]} == {"DU7000001", "DU7000002"}


def _state_or_none(send_command, port):
    try:
        return send_command(port, "state", timeout_s=1.0)
    except OSError:
        return None
