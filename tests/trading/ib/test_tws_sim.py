"""The TWS-protocol simulator driven by the unmodified IB client (ib_insync, or ib_async in its own venv) over a real
loopback socket: handshake, contracts, market data with greeks, positions, account, orders, executions, errors."""
from __future__ import annotations

import asyncio
import math
import socket
import struct

from tests.trading.ib.conftest import run, wait_for
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
    """Book one fill straight through the server's order path (no client needed for this one)."""
    from trading.sim.tws_server import SimOrder

    order = SimOrder(1, 1, server.next_perm_id, con_id_for("NVDA", "STK"), "BUY", 10, "MKT", None, "DAY", ACCOUNT,
                     "bifrost:test:kept")
    server.orders[(1, 1)] = order
    server._try_fill(order)


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
