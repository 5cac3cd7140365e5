"""The TWS-protocol simulator: an asyncio server on 127.0.0.1 that speaks the IB socket protocol (server version 176)
well enough for the unmodified ib_insync and ib_async clients, backed by the same market model as SimBroker, with
a seeded account, an order book with fills, and fault injection for tests.

Faults are plain-text commands (`TwsServer.command`), given at start (`manage.py tws_sim --fault ...`) or sent
at run time over the control port (`manage.py tws_sim --send ...`); `help` lists them."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from trading.core.events import Side
from trading.sim.market import (
    MarketConfig,
    MarketModel,
    average_cost_after,
    con_id_for,
    first_friday_on_or_after,
    local_symbol_for,
    seed_account,
)
from trading.sim.tws_protocol import (
    MIN_CLIENT_VERSION,
    SERVER_VERSION,
    UNSET_DOUBLE,
    ContractFields,
    Cursor,
    Field,
    In,
    Out,
    frame,
    normalise_right,
    split_payload,
)

log = logging.getLogger(__name__)

ACCOUNT = "DU1234567"
STARTING_CASH_USD = 1_000_000.0
OPTION_MULTIPLIER = 100
OTHER_STOCK_PRICES = {"AAPL": 200.0}  # stocks the model does not drive: quoted flat at this price
PRIMARY_EXCHANGE = {"NVDA": "NASDAQ", "AAPL": "NASDAQ"}
OPTION_QUOTE_EVERY_S = 0.5
PORTFOLIO_PUSH_EVERY_S = 5.0
CHAIN_WEEKS = 30
FARM_INFOS = ((2104, "Market data farm connection is OK:usfarm"), (2106, "HMDS data farm connection is OK:ushmds"),
              (2158, "Sec-def data farm connection is OK:secdefnj"))
MSG_326 = "Unable to connect as the client id is already in use. Retry with a unique client id."
MSG_1100 = "Connectivity between IB and Trader Workstation has been lost."
MSG_1102 = "Connectivity between IB and Trader Workstation has been restored - data maintained."
OPEN_STATUSES = ("PreSubmitted", "Submitted", "PendingCancel")


def utc_now() -> datetime:
    return datetime.now(UTC)


def ib_time(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y%m%d %H:%M:%S UTC")


# ---- instruments ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SimContract:
    con_id: int
    symbol: str
    sec_type: str  # STK | OPT
    expiry: str = ""  # YYYYMMDD for options
    strike: float = 0.0
    right: str = ""
    multiplier: int = 1
    local_symbol: str = ""

    @property
    def primary_exchange(self) -> str:
        return PRIMARY_EXCHANGE.get(self.symbol, "NASDAQ") if self.sec_type == "STK" else "CBOE"

    @property
    def trading_class(self) -> str:
        return self.symbol if self.sec_type == "OPT" else "NMS"

    @property
    def wire_multiplier(self) -> str:
        return str(self.multiplier) if self.sec_type == "OPT" else ""

    def fields11(self, exchange: str) -> list[Field]:
        """conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, currency, localSymbol,
        tradingClass: the contract block of position, execDetails and openOrder (portfolio puts primaryExch)."""
        return [self.con_id, self.symbol, self.sec_type, self.expiry, self.strike, self.right, self.wire_multiplier,
                exchange, "USD", self.local_symbol, self.trading_class]

    @property
    def expiry_date(self) -> date | None:
        return datetime.strptime(self.expiry, "%Y%m%d").date() if self.expiry else None  # noqa: DTZ007


def stock(symbol: str) -> SimContract:
    return SimContract(con_id_for(symbol, "STK"), symbol, "STK", local_symbol=local_symbol_for(symbol, "STK"))


def option(symbol: str, right: str, strike: float, expiry: date) -> SimContract:
    return SimContract(con_id_for(symbol, "OPT", right, strike, expiry, OPTION_MULTIPLIER), symbol, "OPT",  # type: ignore[arg-type]
                       f"{expiry:%Y%m%d}", float(strike), right, OPTION_MULTIPLIER,
                       local_symbol_for(symbol, "OPT", right, strike, expiry))  # type: ignore[arg-type]


class Catalog:
    """Every instrument the simulator knows: the stocks, and a chain of Friday options on the model's symbol."""

    def __init__(self, config: MarketConfig, today: date) -> None:
        self.by_id: dict[int, SimContract] = {}
        for symbol in {config.symbol, *OTHER_STOCK_PRICES}:
            self.add(stock(symbol))
        first_friday = first_friday_on_or_after(today)
        low, high = max(5, round(config.spot0 * 0.5 / 5) * 5), round(config.spot0 * 1.7 / 5) * 5
        for week in range(CHAIN_WEEKS):
            expiry = first_friday + timedelta(weeks=week)
            for strike in range(low, high + 1, 5):
                for right in ("C", "P"):
                    self.add(option(config.symbol, right, float(strike), expiry))

    def add(self, contract: SimContract) -> SimContract:
        self.by_id.setdefault(contract.con_id, contract)
        return self.by_id[contract.con_id]

    def match(self, q: ContractFields) -> list[SimContract]:
        if q.con_id:
            found = self.by_id.get(q.con_id)
            return [found] if found is not None else []
        sec_type = q.sec_type.upper()
        right = normalise_right(q.right)
        out = []
        for c in self.by_id.values():
            if q.local_symbol and c.local_symbol.replace(" ", "") != q.local_symbol.replace(" ", ""):
                continue
            if q.symbol and c.symbol != q.symbol.upper():
                continue
            if sec_type and c.sec_type != sec_type:
                continue
            if c.sec_type == "OPT":
                if q.expiry and not c.expiry.startswith(q.expiry[:8]):
                    continue
                if q.strike and abs(c.strike - q.strike) > 1e-6:
                    continue
                if right and c.right != right:
                    continue
            out.append(c)
        return out


# ---- the account and its orders ----------------------------------------------------------------------------------

@dataclass
class Holding:
    contract: SimContract
    qty: float
    avg_price: float  # per share / per unit of the option quote


@dataclass
class SimOrder:
    client_id: int
    order_id: int
    perm_id: int
    con_id: int
    action: str  # BUY | SELL
    qty: float
    order_type: str  # MKT | LMT
    lmt_price: float | None
    tif: str
    account: str
    order_ref: str
    status: str = "Submitted"
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    commission: float = 0.0
    received_at: float = 0.0  # epoch seconds

    @property
    def remaining(self) -> float:
        return max(self.qty - self.filled, 0.0)


@dataclass
class SimExecution:
    exec_id: str
    client_id: int
    order_id: int
    perm_id: int
    con_id: int
    side: str  # BOT | SLD
    shares: float
    price: float
    time: str
    cum_qty: float
    avg_price: float
    order_ref: str
    commission: float
    account: str = ACCOUNT


@dataclass
class Faults:
    """What the tests switched on; see `TwsServer.command`."""

    silent: bool = False
    link_lost: bool = False
    delayed_only: bool = False
    reject_next: int = 0
    lose_exec_next: int = 0
    exec_delay_s: float = 0.0
    drop_on_order_next: int = 0
    drop_down_s: float = 0.0  # after such a drop, refuse new connections this long
    reject_reason: str = "simulated rejection"


# ---- the server -------------------------------------------------------------------------------------------------------

@dataclass
class _Sub:
    req_id: int
    contract: SimContract
    md_type: int  # what the client gets: 1 real-time, 3 delayed


class Session:
    """One client connection."""

    def __init__(self, server: TwsServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.client_id: int | None = None
        self.version = 0
        self.md_type = 1
        self.subs: dict[int, _Sub] = {}
        self.positions_sub = False
        self.account_sub = False
        self.closed = False

    def send(self, *messages: Sequence[Field]) -> None:
        if self.closed or not messages:
            return
        self.writer.write(b"".join(frame(m) for m in messages))

    def error(self, req_id: int, code: int, message: str) -> None:
        self.send([Out.ERR_MSG, 2, req_id, code, message, ""])

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.transport.abort()

    async def run(self) -> None:
        try:
            if await self.reader.readexactly(4) != b"API\0":
                return
            if not self._handshake(split_payload(await self._read_frame())):
                return
            while not self.closed:
                payload = await self._read_frame()
                if self.server.on_bytes_in is not None:
                    self.server.on_bytes_in(payload)
                self.server.dispatch(self, split_payload(payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed = True
            self.server.forget(self)
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _read_frame(self) -> bytes:
        size = int.from_bytes(await self.reader.readexactly(4), "big")
        return await self.reader.readexactly(size)

    def _handshake(self, fields: list[str]) -> bool:
        text = fields[0] if fields else ""
        try:
            span = text.split()[0].lstrip("v")
            lo, _, hi = span.partition("..")
            client_min, client_max = int(lo), int(hi or lo)
        except (IndexError, ValueError):
            log.warning("bad handshake %r", text)
            return False
        self.version = min(client_max, SERVER_VERSION)
        if self.version < max(client_min, MIN_CLIENT_VERSION):
            log.warning("client versions %s..%s cannot talk to server version %s", client_min, client_max,
                        SERVER_VERSION)
            return False
        self.send([self.version, ib_time(utc_now())])
        return True


class TwsServer:
    """The simulator. `await start()`, then it serves until `await stop()`."""

    def __init__(self, config: MarketConfig | None = None, *, seed: int = 7, host: str = "127.0.0.1", port: int = 7497,
                 speed: float = 1.0, tick_s: float = 0.25, state_path: Path | None = None,
                 clock: Callable[[], datetime] = utc_now, straddles: int = 10, manual_shares: int = 100) -> None:
        self.config = config or MarketConfig()
        self.seed = seed
        self.host = host
        self.port = port
        self.speed = speed
        self.tick_s = tick_s
        self.state_path = state_path
        self.clock = clock
        self.model = MarketModel(self.config, seed)
        self.catalog = Catalog(self.config, clock().date())
        self.faults = Faults()
        self.fill_latency_s = self.config.fill_latency_ms / 1000.0
        self.sessions: list[Session] = []
        self.holdings: dict[int, Holding] = {}
        self.orders: dict[tuple[int, int], SimOrder] = {}
        self.executions: list[SimExecution] = []
        self.cash = STARTING_CASH_USD
        self.next_order_id = 1
        self.next_perm_id = 1_000_001
        self.exec_seq = 0
        self.on_bytes_in: Callable[[bytes], None] | None = None  # the latency bench's stopwatch
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._handlers: dict[int, Callable[[Session, Cursor], None]] = {
            In.REQ_MKT_DATA: self._req_mkt_data, In.CANCEL_MKT_DATA: self._cancel_mkt_data,
            In.PLACE_ORDER: self._place_order, In.CANCEL_ORDER: self._cancel_order,
            In.REQ_OPEN_ORDERS: self._req_open_orders, In.REQ_ALL_OPEN_ORDERS: self._req_open_orders,
            In.REQ_ACCOUNT_UPDATES: self._req_account_updates, In.REQ_EXECUTIONS: self._req_executions,
            In.REQ_IDS: self._req_ids, In.REQ_CONTRACT_DATA: self._req_contract_data,
            In.REQ_MANAGED_ACCTS: lambda s, c: s.send([Out.MANAGED_ACCTS, 1, ACCOUNT]),
            In.REQ_CURRENT_TIME: lambda s, c: s.send([Out.CURRENT_TIME, 1, int(time.time())]),
            In.REQ_MARKET_DATA_TYPE: self._req_market_data_type, In.REQ_POSITIONS: self._req_positions,
            In.CANCEL_POSITIONS: self._cancel_positions, In.REQ_ACCOUNT_SUMMARY: self._req_account_summary,
            In.START_API: self._start_api, In.REQ_ACCOUNT_UPDATES_MULTI: self._req_account_updates_multi,
            In.REQ_SEC_DEF_OPT_PARAMS: self._req_sec_def_opt_params,
            In.REQ_COMPLETED_ORDERS: lambda s, c: s.send([Out.COMPLETED_ORDERS_END]),
            In.REQ_GLOBAL_CANCEL: self._req_global_cancel,
            In.REQ_AUTO_OPEN_ORDERS: lambda s, c: None, In.CANCEL_ACCOUNT_SUMMARY: lambda s, c: None,
            In.CANCEL_ACCOUNT_UPDATES_MULTI: lambda s, c: None,
        }
        self._load_or_seed()

    # ---- life cycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._listen()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._market_loop(), name="tws-market")]
        log.info("tws_sim listening on %s:%s (server version %s, account %s)", self.host, self.port,
                 SERVER_VERSION, ACCOUNT)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self.host, self.port, reuse_address=True)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._close_listener()
        for s in list(self.sessions):
            s.abort()
        await asyncio.sleep(0)  # let the sessions see their connection gone
        self._save()

    async def _close_listener(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(self, reader, writer)
        self.sessions.append(session)
        await session.run()

    def forget(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.remove(session)

    def dispatch(self, session: Session, fields: list[str]) -> None:
        if not fields:
            return
        cur = Cursor(fields, 1)
        try:
            msg_id = int(fields[0])
        except ValueError:
            return
        if session.client_id is None and msg_id != In.START_API:
            return  # nothing before startApi, as TWS
        handler = self._handlers.get(msg_id)
        if handler is None:
            log.info("tws_sim ignores message %s: %s", msg_id, fields)
            return
        try:
            handler(session, cur)
        except (ValueError, IndexError) as exc:
            log.warning("tws_sim could not parse %s: %s", fields, exc)
            session.error(-1, 321, f"Error validating request: {exc}")

    # ---- session -----------------------------------------------------------------------------------------------

    def _start_api(self, s: Session, cur: Cursor) -> None:
        cur.skip()  # version
        client_id = cur.integer()
        if any(o is not s and o.client_id == client_id and not o.closed for o in self.sessions):
            s.error(-1, 326, MSG_326)
            asyncio.get_running_loop().call_soon(s.abort)
            return
        s.client_id = client_id
        farm_infos: list[list[Field]] = [[Out.ERR_MSG, 2, -1, code, text, ""] for code, text in FARM_INFOS]
        s.send([Out.MANAGED_ACCTS, 1, ACCOUNT], [Out.NEXT_VALID_ID, 1, self.next_order_id], *farm_infos)
        if self.faults.link_lost:
            s.error(-1, 1100, MSG_1100)

    def _req_ids(self, s: Session, cur: Cursor) -> None:
        s.send([Out.NEXT_VALID_ID, 1, self.next_order_id])

    # ---- contracts ---------------------------------------------------------------------------------------------

    def _req_contract_data(self, s: Session, cur: Cursor) -> None:
        cur.skip()  # version
        req_id = cur.integer()
        query = ContractFields.read(cur)
        found = self.catalog.match(query)
        if not found:
            s.error(req_id, 200, "No security definition has been found for the request")
            return
        s.send(*(self._contract_details(req_id, c, query.exchange or "SMART") for c in found),
               [Out.CONTRACT_DATA_END, 1, req_id])

    def _contract_details(self, req_id: int, c: SimContract, exchange: str) -> list[Field]:
        today = self.clock().date()
        hours = ";".join(f"{d:%Y%m%d}:0930-{d:%Y%m%d}:1600" for d in (today + timedelta(days=i) for i in range(3)))
        under_con_id = con_id_for(c.symbol, "STK") if c.sec_type == "OPT" else 0
        long_name = f"{c.symbol} CORP" if c.sec_type == "STK" else f"{c.symbol} {c.expiry} {c.strike:g} {c.right}"
        return [
            Out.CONTRACT_DATA, req_id, c.symbol, c.sec_type, c.expiry, c.strike, c.right, exchange, "USD",
            c.local_symbol, c.trading_class, c.trading_class, c.con_id, 0.01, c.wire_multiplier,
            "ACTIVETIM,ADJUST,ALERT,ALLOC,LMT,MKT,STP", "SMART,NASDAQ,CBOE", 1, under_con_id, long_name,
            c.primary_exchange, c.expiry[:6], "Technology" if c.sec_type == "STK" else "",
            "", "", "US/Eastern", hours, hours, "", "", 0,
            1, c.symbol if c.sec_type == "OPT" else "", "STK" if c.sec_type == "OPT" else "", "26",
            c.expiry, "COMMON" if c.sec_type == "STK" else "", 1, 1, 1,
        ]

    def _req_sec_def_opt_params(self, s: Session, cur: Cursor) -> None:
        req_id = cur.integer()
        symbol = cur.text()
        chain = [c for c in self.catalog.by_id.values() if c.sec_type == "OPT" and c.symbol == symbol]
        if chain:
            expiries = sorted({c.expiry for c in chain})
            strikes = sorted({c.strike for c in chain})
            s.send([Out.SEC_DEF_OPT_PARAMS, req_id, "SMART", con_id_for(symbol, "STK"), symbol, OPTION_MULTIPLIER,
                    len(expiries), *expiries, len(strikes), *strikes])
        s.send([Out.SEC_DEF_OPT_PARAMS_END, req_id])

    # ---- market data -------------------------------------------------------------------------------------------

    def _req_market_data_type(self, s: Session, cur: Cursor) -> None:
        cur.skip()
        s.md_type = cur.integer(1)

    def _req_mkt_data(self, s: Session, cur: Cursor) -> None:
        cur.skip()  # version
        req_id = cur.integer()
        query = ContractFields.read(cur)
        found = self.catalog.match(query)
        if len(found) != 1:
            s.error(req_id, 200, "No security definition has been found for the request")
            return
        if self.faults.delayed_only and s.md_type in (1, 2):
            s.error(req_id, 10089, "Requested market data requires additional subscription for API. "
                                   "Delayed market data is available.")
            return
        md_type = 3 if self.faults.delayed_only else 1
        if cur.integer():  # dncFlag: a delta-neutral contract (conId, delta, price) follows
            cur.skip(3)
        cur.skip()  # genericTickList: model greeks come with every option subscription anyway
        snapshot = cur.integer() == 1
        sub = _Sub(req_id, found[0], md_type)
        messages: list[list[Field]] = [[Out.MARKET_DATA_TYPE, 1, req_id, md_type]]
        if md_type == 3:
            messages.insert(0, [Out.ERR_MSG, 2, req_id, 10167,
                                "Requested market data is not subscribed. Displaying delayed market data.", ""])
        if not (self.faults.silent or self.faults.link_lost):
            messages += self._ticks(sub, options=True)
        if snapshot:
            messages.append([Out.TICK_SNAPSHOT_END, 1, req_id])
        else:
            s.subs[req_id] = sub
        s.send(*messages)

    def _cancel_mkt_data(self, s: Session, cur: Cursor) -> None:
        cur.skip()
        s.subs.pop(cur.integer(), None)

    def _ticks(self, sub: _Sub, *, options: bool) -> list[list[Field]]:
        c = sub.contract
        d = 65 if sub.md_type == 3 else 0  # delayed tick types are the real-time ones + 65 (bid 66, ask 67 ...)
        rnd = self._rng.randint
        if c.sec_type == "STK":
            if c.symbol == self.config.symbol:
                q = self.model.stock_quote()
                bid, ask, last = q.bid, q.ask, q.last
            else:
                price = OTHER_STOCK_PRICES.get(c.symbol, 100.0)
                bid, ask, last = price - 0.01, price + 0.01, price
            return [[Out.TICK_PRICE, 6, sub.req_id, 1 + d, bid, 100 * rnd(1, 30), 0],
                    [Out.TICK_PRICE, 6, sub.req_id, 2 + d, ask, 100 * rnd(1, 30), 0],
                    [Out.TICK_PRICE, 6, sub.req_id, 4 + d, last, 100 * rnd(1, 5), 0],
                    [Out.TICK_STRING, 6, sub.req_id, 88 if d else 45, int(time.time())]]
        if not options or c.symbol != self.config.symbol:
            return []
        oq = self.model.option_quote(c.right, c.strike, c.expiry_date or self.clock().date(), self.clock())  # type: ignore[arg-type]
        g = oq.greeks
        return [[Out.TICK_PRICE, 6, sub.req_id, 1 + d, oq.bid, rnd(1, 50), 0],
                [Out.TICK_PRICE, 6, sub.req_id, 2 + d, oq.ask, rnd(1, 50), 0],
                [Out.TICK_OPTION_COMPUTATION, sub.req_id, 83 if d else 13, 0, oq.iv, g.delta, g.price, 0.0, g.gamma,
                 g.vega, g.theta, self.model.spot]]

    async def _market_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        last_options = last_portfolio = -1e9
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            self.model.step(max(now - last, 1e-6) * self.speed)
            last = now
            self._fill_resting_limits()
            if now - last_portfolio >= PORTFOLIO_PUSH_EVERY_S:
                last_portfolio = now
                self._push_account()
            if self.faults.silent or self.faults.link_lost:
                continue
            options = now - last_options >= OPTION_QUOTE_EVERY_S
            if options:
                last_options = now
            self.publish_quotes(options=options)

    def publish_quotes(self, *, options: bool = True, symbol: str | None = None) -> None:
        """Send the current quotes to every subscriber (the market loop's tick; the bench calls it directly)."""
        for s in list(self.sessions):
            messages = [m for sub in s.subs.values() if symbol is None or sub.contract.symbol == symbol
                        for m in self._ticks(sub, options=options)]
            if messages:
                s.send(*messages)

    # ---- positions and account ---------------------------------------------------------------------------------

    def _req_positions(self, s: Session, cur: Cursor) -> None:
        s.positions_sub = True
        s.send(*(self._position_msg(h) for h in self.holdings.values()), [Out.POSITION_END, 1])

    def _cancel_positions(self, s: Session, cur: Cursor) -> None:
        s.positions_sub = False

    def _position_msg(self, h: Holding) -> list[Field]:
        c = h.contract
        exchange = c.primary_exchange if c.sec_type == "STK" else ""
        return [Out.POSITION_DATA, 3, ACCOUNT, *c.fields11(exchange), h.qty, h.avg_price * c.multiplier]

    def mark(self, c: SimContract) -> float:
        if c.sec_type == "STK":
            return self.model.stock_quote().mid if c.symbol == self.config.symbol else OTHER_STOCK_PRICES.get(
                c.symbol, 100.0)
        if c.symbol != self.config.symbol:
            return 0.0
        return self.model.option_quote(c.right, c.strike, c.expiry_date or self.clock().date(),  # type: ignore[arg-type]
                                       self.clock()).mid

    def account_values(self) -> dict[str, float | str]:
        gross = sum(abs(h.qty) * h.contract.multiplier * self.mark(h.contract) for h in self.holdings.values())
        value = sum(h.qty * h.contract.multiplier * self.mark(h.contract) for h in self.holdings.values())
        unrealized = sum(h.qty * h.contract.multiplier * (self.mark(h.contract) - h.avg_price)
                         for h in self.holdings.values())
        stock_margin = sum(abs(h.qty) * self.mark(h.contract) * 0.25 for h in self.holdings.values()
                           if h.contract.sec_type == "STK")
        net_liq = self.cash + value
        return {"AccountCode": ACCOUNT, "AccountType": "INDIVIDUAL", "NetLiquidation": round(net_liq, 2),
                "TotalCashValue": round(self.cash, 2), "CashBalance": round(self.cash, 2),
                "BuyingPower": round(max(net_liq - stock_margin, 0.0) * 4, 2),
                "AvailableFunds": round(net_liq - stock_margin, 2), "ExcessLiquidity": round(net_liq - stock_margin, 2),
                "InitMarginReq": round(stock_margin, 2), "MaintMarginReq": round(stock_margin, 2),
                "EquityWithLoanValue": round(net_liq, 2), "GrossPositionValue": round(gross, 2),
                "UnrealizedPnL": round(unrealized, 2), "RealizedPnL": 0.0}

    def _account_value_msgs(self) -> list[list[Field]]:
        return [[Out.ACCT_VALUE, 2, key, value, "" if isinstance(value, str) else "USD", ACCOUNT]
                for key, value in self.account_values().items()]

    def _portfolio_msg(self, h: Holding) -> list[Field]:
        c = h.contract
        price = self.mark(c)
        fields = c.fields11(c.primary_exchange)
        return [Out.PORTFOLIO_VALUE, 8, *fields, h.qty, round(price, 6), round(h.qty * c.multiplier * price, 2),
                h.avg_price * c.multiplier, round(h.qty * c.multiplier * (price - h.avg_price), 2), 0.0, ACCOUNT]

    def _req_account_updates(self, s: Session, cur: Cursor) -> None:
        cur.skip()
        subscribe = cur.integer() == 1
        s.account_sub = subscribe
        if subscribe:
            s.send(*self._account_value_msgs(), *(self._portfolio_msg(h) for h in self.holdings.values()),
                   [Out.ACCT_UPDATE_TIME, 1, self.clock().strftime("%H:%M")], [Out.ACCT_DOWNLOAD_END, 1, ACCOUNT])

    def _req_account_updates_multi(self, s: Session, cur: Cursor) -> None:
        cur.skip()
        req_id = cur.integer()
        s.send(*([Out.ACCOUNT_UPDATE_MULTI, 1, req_id, ACCOUNT, "", key, value,
                  "" if isinstance(value, str) else "USD"] for key, value in self.account_values().items()),
               [Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id])

    def _req_account_summary(self, s: Session, cur: Cursor) -> None:
        cur.skip()
        req_id = cur.integer()
        cur.skip()  # group
        tags = {t for t in cur.text().split(",") if t}
        values = self.account_values()
        wanted = [k for k in values if k in tags] or list(values)
        s.send(*([Out.ACCOUNT_SUMMARY, 1, req_id, ACCOUNT, k, values[k], "" if isinstance(values[k], str) else "USD"]
                 for k in wanted), [Out.ACCOUNT_SUMMARY_END, 1, req_id])

    def _push_account(self, holdings: list[Holding] | None = None) -> None:
        for s in self.sessions:
            if s.account_sub:
                s.send(*self._account_value_msgs(),
                       *(self._portfolio_msg(h) for h in (holdings if holdings is not None else self.holdings.values())))

    # ---- orders --------------------------------------------------------------------------------------------------

    def _place_order(self, s: Session, cur: Cursor) -> None:
        order_id = cur.integer()
        query = ContractFields.read(cur)
        cur.skip(2)  # secIdType, secId
        action, qty, order_type = cur.text().upper(), cur.number(), cur.text().upper()
        lmt, _aux, tif = cur.text(), cur.text(), cur.text()
        cur.skip()  # ocaGroup
        account = cur.text() or ACCOUNT
        cur.skip(2)  # openClose, origin
        order_ref = cur.text()
        assert s.client_id is not None
        key = (s.client_id, order_id)
        self.next_order_id = max(self.next_order_id, order_id + 1)
        existing = self.orders.get(key)
        if existing is not None:
            self._modify(s, existing, qty, lmt)
            return
        found = self.catalog.match(query)
        if len(found) != 1:
            s.error(order_id, 200, "No security definition has been found for the request")
            return
        if action not in ("BUY", "SELL") or qty <= 0 or order_type not in ("MKT", "LMT") or (
                order_type == "LMT" and lmt == ""):
            s.error(order_id, 321, f"Error validating request:-'bW' : cause - unsupported order "
                                   f"{action} {qty:g} {order_type} {lmt}")
            return
        order = SimOrder(s.client_id, order_id, self.next_perm_id, found[0].con_id, action, qty, order_type,
                         float(lmt) if order_type == "LMT" else None, tif or "DAY", account, order_ref,
                         received_at=time.time())
        self.next_perm_id += 1
        self.orders[key] = order
        if self.faults.reject_next > 0:
            self.faults.reject_next -= 1
            order.status = "Inactive"
            s.error(order_id, 201, f"Order rejected - reason:{self.faults.reject_reason}")
            self._save()
            return
        if self.faults.drop_on_order_next > 0:
            # The order reached us and will work; the client never hears about it on this connection.
            self.faults.drop_on_order_next -= 1
            s.abort()
            if self.faults.drop_down_s > 0:
                self._background(self.restart(self.faults.drop_down_s))
        else:
            self._send_order_state(order, pre=True)
        self._save()
        asyncio.get_running_loop().call_later(self.fill_latency_s, self._try_fill, order)

    def _modify(self, s: Session, order: SimOrder, qty: float, lmt: str) -> None:
        if order.status not in OPEN_STATUSES:
            s.error(order.order_id, 104, "Cannot modify a filled order.")
            return
        order.qty = max(qty, order.filled)
        if lmt:
            order.lmt_price = float(lmt)
        self._send_order_state(order)

    def _cancel_order(self, s: Session, cur: Cursor) -> None:
        cur.skip()
        order_id = cur.integer()
        assert s.client_id is not None
        order = self.orders.get((s.client_id, order_id))
        if order is None:
            s.error(order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.")
            return
        if order.status not in OPEN_STATUSES:
            s.error(order_id, 10148, f"OrderId {order_id} that needs to be cancelled cannot be cancelled, "
                                     f"state: {order.status}.")
            return
        order.status = "Cancelled"
        self._send_order_state(order)
        s.error(order_id, 202, "Order Canceled - reason:")
        self._save()

    def _req_global_cancel(self, s: Session, cur: Cursor) -> None:
        for order in self.orders.values():
            if order.status in OPEN_STATUSES:
                order.status = "Cancelled"
                self._send_order_state(order)
        self._save()

    def _req_open_orders(self, s: Session, cur: Cursor) -> None:
        mine_only = int(cur.fields[0]) == In.REQ_OPEN_ORDERS and s.client_id != 0
        messages = []
        for order in self.orders.values():
            if order.status in OPEN_STATUSES and (not mine_only or order.client_id == s.client_id):
                messages += [self._open_order_msg(order), self._order_status_msg(order)]
        s.send(*messages, [Out.OPEN_ORDER_END, 1])

    def _session_of(self, client_id: int) -> Session | None:
        return next((s for s in self.sessions if s.client_id == client_id and not s.closed), None)

    def _send_order_state(self, order: SimOrder, *, pre: bool = False) -> None:
        s = self._session_of(order.client_id)
        if s is None:
            return
        if pre:
            s.send(self._open_order_msg(order, "PreSubmitted"), self._order_status_msg(order, "PreSubmitted"))
        s.send(self._open_order_msg(order), self._order_status_msg(order))

    def _order_status_msg(self, o: SimOrder, status: str | None = None) -> list[Field]:
        return [Out.ORDER_STATUS, o.order_id, status or o.status, o.filled, o.remaining, o.avg_fill_price, o.perm_id,
                0, o.last_fill_price, o.client_id, "", 0.0]

    def _open_order_msg(self, o: SimOrder, status: str | None = None) -> list[Field]:
        """openOrder at v176 for a plain (non-combo, non-algo, unconditional) order: 128 fields."""
        c = self.catalog.by_id[o.con_id]
        status = status or o.status
        lmt = o.lmt_price if o.lmt_price is not None else UNSET_DOUBLE
        head: list[Field] = [Out.OPEN_ORDER, o.order_id, *c.fields11("SMART")]
        order: list[tuple[str, Field]] = [
            ("action", o.action), ("totalQuantity", o.qty), ("orderType", o.order_type), ("lmtPrice", lmt),
            ("auxPrice", 0.0), ("tif", o.tif), ("ocaGroup", ""), ("account", o.account), ("openClose", ""),
            ("origin", 0), ("orderRef", o.order_ref), ("clientId", o.client_id), ("permId", o.perm_id),
            ("outsideRth", 0), ("hidden", 0), ("discretionaryAmt", 0.0), ("goodAfterTime", ""),
            ("sharesAllocation", ""), ("faGroup", ""), ("faMethod", ""), ("faPercentage", ""), ("faProfile", ""),
            ("modelCode", ""), ("goodTillDate", ""), ("rule80A", ""), ("percentOffset", ""), ("settlingFirm", ""),
            ("shortSaleSlot", 0), ("designatedLocation", ""), ("exemptCode", -1), ("auctionStrategy", 0),
            ("startingPrice", ""), ("stockRefPrice", ""), ("delta", ""), ("stockRangeLower", ""),
            ("stockRangeUpper", ""), ("displaySize", 0), ("blockOrder", 0), ("sweepToFill", 0), ("allOrNone", 0),
            ("minQty", ""), ("ocaType", 3), ("eTradeOnly", 0), ("firmQuoteOnly", 0), ("nbboPriceCap", ""),
            ("parentId", 0), ("triggerMethod", 0), ("volatility", ""), ("volatilityType", 0),
            ("deltaNeutralOrderType", ""), ("deltaNeutralAuxPrice", ""),
            ("continuousUpdate", 0), ("referencePriceType", 0), ("trailStopPrice", ""), ("trailingPercent", ""),
            ("basisPoints", ""), ("basisPointsType", ""), ("comboLegsDescrip", ""), ("comboLegs", 0),
            ("orderComboLegs", 0), ("smartComboRoutingParams", 0), ("scaleInitLevelSize", ""),
            ("scaleSubsLevelSize", ""), ("scalePriceIncrement", ""), ("hedgeType", ""), ("optOutSmartRouting", 0),
            ("clearingAccount", ""), ("clearingIntent", "IB"), ("notHeld", 0), ("deltaNeutralContract", 0),
            ("algoStrategy", ""), ("solicited", 0), ("whatIf", 0), ("status", status),
            *((name, "") for name in ("initMarginBefore", "maintMarginBefore", "equityWithLoanBefore",
                                      "initMarginChange", "maintMarginChange", "equityWithLoanChange",
                                      "initMarginAfter", "maintMarginAfter", "equityWithLoanAfter")),
            ("commission", o.commission if status == "Filled" else UNSET_DOUBLE), ("minCommission", UNSET_DOUBLE),
            ("maxCommission", UNSET_DOUBLE), ("commissionCurrency", "USD"), ("warningText", ""),
            ("randomizeSize", 0), ("randomizePrice", 0), ("conditions", 0), ("adjustedOrderType", ""),
            ("triggerPrice", ""), ("trailStopPrice", ""), ("lmtPriceOffset", ""), ("adjustedStopPrice", ""),
            ("adjustedStopLimitPrice", ""), ("adjustedTrailingAmount", ""), ("adjustableTrailingUnit", 0),
            ("softDollarTierName", ""), ("softDollarTierValue", ""), ("softDollarTierDisplayName", ""),
            ("cashQty", UNSET_DOUBLE), ("dontUseAutoPriceForHedge", 0), ("isOmsContainer", 0),
            ("discretionaryUpToLimitPrice", 0), ("usePriceMgmtAlgo", 0), ("duration", ""), ("postToAts", ""),
            ("autoCancelParent", 0), ("minTradeQty", ""), ("minCompeteSize", ""), ("competeAgainstBestOffset", ""),
            ("midOffsetAtWhole", ""), ("midOffsetAtHalf", ""),
        ]
        return head + [value for _, value in order]

    def _fill_resting_limits(self) -> None:
        for order in list(self.orders.values()):
            if order.status == "Submitted" and order.order_type == "LMT":
                self._try_fill(order)

    def _try_fill(self, order: SimOrder) -> None:
        if order.status not in ("PreSubmitted", "Submitted") or order.remaining <= 0:
            return
        contract = self.catalog.by_id[order.con_id]
        if contract.sec_type == "STK" and contract.symbol == self.config.symbol:
            quote: Any = self.model.stock_quote()
        elif contract.sec_type == "OPT" and contract.symbol == self.config.symbol:
            quote = self.model.option_quote(contract.right, contract.strike,  # type: ignore[arg-type]
                                            contract.expiry_date or self.clock().date(), self.clock())
        else:
            flat = OTHER_STOCK_PRICES.get(contract.symbol, 100.0)
            quote = _Flat(flat - 0.01, flat + 0.01)
        side: Side = "BUY" if order.action == "BUY" else "SELL"
        price = self.model.fills.fill_price(side, order.remaining, "limit" if order.order_type == "LMT" else "market",
                                            order.lmt_price, quote)
        if price is None:
            return
        now = self.clock()
        for piece in self.model.fills.split_fills(order.remaining):
            self.exec_seq += 1
            commission = self.model.fills.commission_usd(piece, price)
            order.avg_fill_price = (order.avg_fill_price * order.filled + price * piece) / (order.filled + piece)
            order.filled += piece
            order.last_fill_price = price
            order.commission += commission
            execution = SimExecution(
                exec_id=f"0000f{self.seed:03x}.{int(now.timestamp()):x}.{self.exec_seq:04d}.01",
                client_id=order.client_id, order_id=order.order_id, perm_id=order.perm_id, con_id=order.con_id,
                side="BOT" if side == "BUY" else "SLD", shares=float(piece), price=price, time=ib_time(now),
                cum_qty=order.filled, avg_price=order.avg_fill_price, order_ref=order.order_ref, commission=commission,
                account=order.account)
            self.executions.append(execution)
            holding = self._book(contract, side, piece, price, commission)
            self._report_execution(execution)
        order.status = "Filled"
        self._send_order_state(order)
        self._push_positions(holding)
        self._save()

    def _report_execution(self, execution: SimExecution) -> None:
        if self.faults.lose_exec_next > 0:
            self.faults.lose_exec_next -= 1
            log.warning("tws_sim: execution %s not reported live (fault lose_exec)", execution.exec_id)
            return
        if self.faults.exec_delay_s > 0:
            asyncio.get_running_loop().call_later(self.faults.exec_delay_s, self._send_execution, execution, -1)
            return
        self._send_execution(execution, -1)

    def _send_execution(self, e: SimExecution, req_id: int, session: Session | None = None) -> None:
        s = session or self._session_of(e.client_id)
        if s is None:
            return
        c = self.catalog.by_id[e.con_id]
        s.send([Out.EXECUTION_DATA, req_id, e.order_id, *c.fields11("SMART"), e.exec_id, e.time, e.account,
                "ISLAND" if c.sec_type == "STK" else "CBOE", e.side, e.shares, e.price, e.perm_id, e.client_id, 0,
                e.cum_qty, e.avg_price, e.order_ref, "", "", "", 2],
               [Out.COMMISSION_REPORT, 1, e.exec_id, round(e.commission, 4), "USD", UNSET_DOUBLE, UNSET_DOUBLE, ""])

    def _req_executions(self, s: Session, cur: Cursor) -> None:
        cur.skip()
        req_id = cur.integer()
        client_id, account, _since, symbol, sec_type, _exchange, side = (cur.integer(), cur.text(), cur.text(), cur.text(),
                                                                         cur.text(), cur.text(), cur.text())
        for e in self.executions:
            c = self.catalog.by_id[e.con_id]
            if ((client_id and e.client_id != client_id) or (account and e.account != account)
                    or (symbol and c.symbol != symbol) or (sec_type and c.sec_type != sec_type)
                    or (side and {"BUY": "BOT", "SELL": "SLD"}.get(side, side) != e.side)):
                continue
            self._send_execution(e, req_id, s)
        s.send([Out.EXECUTION_DATA_END, 1, req_id])

    def _book(self, c: SimContract, side: str, qty: float, price: float, commission: float) -> Holding:
        holding = self.holdings.get(c.con_id)
        if holding is None:
            holding = self.holdings[c.con_id] = Holding(c, 0.0, price)
        signed = qty if side == "BUY" else -qty
        holding.qty, holding.avg_price = average_cost_after(holding.qty, holding.avg_price, signed, price)
        self.cash -= signed * price * c.multiplier + commission
        return holding

    def _push_positions(self, holding: Holding) -> None:
        for s in self.sessions:
            if s.positions_sub:
                s.send(self._position_msg(holding))
        self._push_account([holding])

    # ---- faults and inspection ---------------------------------------------------------------------------------

    async def command(self, line: str) -> dict[str, Any]:
        """Run one control command; the reply says what happened. `help` lists them."""
        words = line.split()
        if not words:
            return {"ok": False, "error": "empty command"}
        name, args = words[0].lower(), words[1:]

        def number(default: float) -> float:
            return float(args[0]) if args else default

        def on() -> bool:
            return not args or args[0].lower() in ("on", "1", "true", "yes")

        f = self.faults
        if name == "help":
            return {"ok": True, "commands": COMMANDS}
        if name == "state":
            return {"ok": True, **self.snapshot()}
        if name == "drop":
            n = self.drop_connections()
            return {"ok": True, "dropped": n}
        if name == "restart":
            seconds = number(1.0)
            await self.restart(seconds)
            return {"ok": True, "restarted_after_s": seconds}
        if name == "reject":
            f.reject_next = int(number(1))
            if len(args) > 1:
                f.reject_reason = " ".join(args[1:])
        elif name == "lose_exec":
            f.lose_exec_next = int(number(1))
        elif name == "delay_exec":
            f.exec_delay_s = number(2.0)
        elif name == "drop_on_order":
            f.drop_on_order_next = int(number(1))
            f.drop_down_s = float(args[1]) if len(args) > 1 else 0.0
        elif name == "silent":
            f.silent = on()
        elif name == "delayed":
            f.delayed_only = on()
        elif name == "connectivity":
            lost = bool(args) and args[0].lower() == "lost"
            f.link_lost = lost
            for s in self.sessions:
                if s.client_id is not None:
                    s.error(-1, 1100 if lost else 1102, MSG_1100 if lost else MSG_1102)
        elif name == "fill_latency_ms":
            self.fill_latency_s = number(150) / 1000.0
        elif name == "spot":
            self.model.set_spot(number(self.config.spot0))
            self.publish_quotes(options=True)
        else:
            return {"ok": False, "error": f"unknown command {name!r}", "commands": COMMANDS}
        return {"ok": True, "faults": asdict(f), "fill_latency_ms": self.fill_latency_s * 1000}

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    def drop_connections(self) -> int:
        sessions = [s for s in self.sessions if not s.closed]
        for s in sessions:
            s.abort()
        return len(sessions)

    async def restart(self, down_s: float) -> None:
        """Like a TWS restart: every connection dropped, nobody can connect for `down_s`, orders and fills kept."""
        await self._close_listener()
        self.drop_connections()
        self._save()
        await asyncio.sleep(down_s)
        await self._listen()

    def snapshot(self) -> dict[str, Any]:
        return {
            "port": self.port, "spot": self.model.spot, "cash": self.cash,
            "clients": sorted(s.client_id for s in self.sessions if s.client_id is not None and not s.closed),
            "positions": [{"con_id": h.contract.con_id, "symbol": h.contract.symbol, "sec_type": h.contract.sec_type,
                           "local_symbol": h.contract.local_symbol, "qty": h.qty, "avg_price": h.avg_price}
                          for h in self.holdings.values()],
            "orders": [asdict(o) for o in self.orders.values()],
            "executions": [asdict(e) for e in self.executions],
            "faults": asdict(self.faults),
        }

    # ---- persistence: a restarted simulator keeps its account, orders and executions ---------------------------------

    def _load_or_seed(self) -> None:
        if self.state_path is not None and self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            self.cash = state["cash"]
            self.model.set_spot(state["spot"])
            self.next_order_id, self.next_perm_id, self.exec_seq = (state["next_order_id"], state["next_perm_id"],
                                                                    state["exec_seq"])
            for h in state["holdings"]:
                c = self.catalog.add(SimContract(**h["contract"]))
                self.holdings[c.con_id] = Holding(c, h["qty"], h["avg_price"])
            for o in state["orders"]:
                order = SimOrder(**o)
                self.orders[(order.client_id, order.order_id)] = order
            self.executions = [SimExecution(**e) for e in state["executions"]]
            return
        for p in seed_account(self.config, self.clock()):
            if p.sec_type == "OPT":
                assert p.right is not None and p.strike is not None and p.expiry is not None
                c = self.catalog.add(option(p.symbol, p.right, p.strike, p.expiry))
            else:
                c = self.catalog.add(stock(p.symbol))
            self.holdings[c.con_id] = Holding(c, p.qty, p.avg_cost)
            self.cash -= p.qty * p.multiplier * p.avg_cost
        self._save()

    def _save(self) -> None:
        if self.state_path is None:
            return
        state = {"cash": self.cash, "spot": self.model.spot, "next_order_id": self.next_order_id,
                 "next_perm_id": self.next_perm_id, "exec_seq": self.exec_seq,
                 "holdings": [{"contract": asdict(h.contract), "qty": h.qty, "avg_price": h.avg_price}
                              for h in self.holdings.values()],
                 "orders": [asdict(o) for o in self.orders.values()],
                 "executions": [asdict(e) for e in self.executions[-5000:]]}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_path)


@dataclass(frozen=True)
class _Flat:
    bid: float
    ask: float


COMMANDS = {
    "state": "JSON snapshot: positions, orders, executions, connected client ids, faults",
    "drop": "close every client connection now (clients reconnect)",
    "restart SECONDS": "drop every connection and refuse new ones for SECONDS; orders and fills are kept",
    "reject N [REASON]": "reject the next N orders with error 201",
    "lose_exec N": "the next N executions are not reported live (only reqExecutions shows them)",
    "delay_exec SECONDS": "report executions SECONDS after the fill (0: at once)",
    "drop_on_order N [DOWN_S]": "the next N orders are accepted and worked, but their sender is disconnected at "
                                "once (and new connections refused for DOWN_S)",
    "silent on|off": "stop / resume all market data",
    "delayed on|off": "no real-time entitlement: type 1 requests get 10089, delayed (type 3) requests delayed ticks",
    "connectivity lost|restored": "send 1100 (and stop data) / 1102 to every client",
    "fill_latency_ms N": "order-to-fill delay",
    "spot PRICE": "jump the underlying's mid to PRICE and publish quotes at once",
}


@dataclass
class ControlServer:
    """Line-based control port: one command per line in, one JSON line out."""

    tws: TwsServer
    port: int
    host: str = "127.0.0.1"
    _server: asyncio.Server | None = field(default=None, init=False)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_client, self.host, self.port, reuse_address=True)
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                reply = await self.tws.command(line.decode().strip())
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def send_command(port: int, line: str, host: str = "127.0.0.1", timeout_s: float = 30.0) -> dict[str, Any]:
    """Send one control command to a running simulator (blocking; for tests and the CLI)."""
    import socket

    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(line.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    result: dict[str, Any] = json.loads(data)
    return result
