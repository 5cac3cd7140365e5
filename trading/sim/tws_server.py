"""The TWS-protocol simulator: an asyncio server on 127.0.0.1 that speaks the IB socket protocol (server version 176)
well enough for the unmodified ib_insync and ib_async clients, backed by the same market model and the same simulated
account (`trading.sim.account`) as SimBroker: one or several managed accounts, every client's orders and executions,
completed orders, and fault injection for tests.

Faults and foreign activity (another API client trading on the same login) are plain-text commands
(`TwsServer.command`), given at start (`manage.py tws_sim --fault ...`) or sent at run time over the control port
(`manage.py tws_sim --send ...`); `help` lists them."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from trading.core.events import Contract, OrderType, Side
from trading.sim.account import (
    CANCELLED,
    FILLED,
    FLAT_STOCK_PRICES,
    REJECTED,
    WORKING,
    SimAccount,
    SimExecution,
    SimHolding,
    SimOrder,
)
from trading.sim.market import (
    MarketConfig,
    MarketModel,
    chain_expiries,
    chain_strikes,
    con_id_for,
    local_symbol_for,
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

ACCOUNT = "DU1234567"  # the default (and first) managed account
OPTION_MULTIPLIER = 100
PRIMARY_EXCHANGE = {"NVDA": "NASDAQ", "AAPL": "NASDAQ"}
OPTION_QUOTE_EVERY_S = 0.5
PORTFOLIO_PUSH_EVERY_S = 5.0
FOREIGN_CLIENT_ID = 99  # the other API client of `foreign_fill` / `foreign_order`
FARM_INFOS = ((2104, "Market data farm connection is OK:usfarm"), (2106, "HMDS data farm connection is OK:ushmds"),
              (2158, "Sec-def data farm connection is OK:secdefnj"))
MSG_326 = "Unable to connect as the client id is already in use. Retry with a unique client id."
MSG_435 = "You must specify an account."
MSG_1100 = "Connectivity between IB and Trader Workstation has been lost."
MSG_1102 = "Connectivity between IB and Trader Workstation has been restored - data maintained."
# The account's order states as TWS names them (orderStatus, openOrder, completedOrder).
IB_STATUS = {WORKING: "Submitted", FILLED: "Filled", CANCELLED: "Cancelled", REJECTED: "Inactive"}
IB_ORDER_TYPE: dict[OrderType, str] = {"market": "MKT", "limit": "LMT"}
IB_SIDE: dict[Side, str] = {"BUY": "BOT", "SELL": "SLD"}


def utc_now() -> datetime:
    return datetime.now(UTC)


def ib_time(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y%m%d %H:%M:%S UTC")


# ---- instruments ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SimContract:
    """An instrument as it travels on the wire (strings where IB sends strings); `core()` is the model's view."""

    con_id: int
    symbol: str
    sec_type: str  # STK | OPT
    expiry: str = ""  # YYYYMMDD for options
    strike: float = 0.0
    right: str = ""
    multiplier: int = 1
    local_symbol: str = ""

    @classmethod
    def from_core(cls, c: Contract) -> SimContract:
        return cls(c.con_id, c.symbol, c.sec_type, f"{c.expiry:%Y%m%d}" if c.expiry else "", float(c.strike or 0.0),
                   c.right or "", c.multiplier, c.local_symbol)

    def core(self) -> Contract:
        return Contract(self.con_id, self.symbol, "OPT" if self.sec_type == "OPT" else "STK",
                        right="C" if self.right == "C" else "P" if self.right == "P" else None,
                        strike=self.strike if self.sec_type == "OPT" else None, expiry=self.expiry_date,
                        multiplier=self.multiplier, local_symbol=self.local_symbol)

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
        self._options: dict[tuple[str, str, float, str], SimContract] = {}
        for symbol in {config.symbol, *FLAT_STOCK_PRICES}:
            self.add(stock(symbol))
        for expiry in chain_expiries(today):
            for strike in chain_strikes(config.spot0):
                for right in ("C", "P"):
                    self.add(option(config.symbol, right, strike, expiry))

    def add(self, contract: SimContract) -> SimContract:
        known = self.by_id.setdefault(contract.con_id, contract)
        if known.sec_type == "OPT":
            self._options.setdefault((known.symbol, known.expiry[:8], round(known.strike, 6), known.right), known)
        return known

    def match(self, q: ContractFields) -> list[SimContract]:
        if q.con_id:
            found = self.by_id.get(q.con_id)
            return [found] if found is not None else []
        sec_type = q.sec_type.upper()
        right = normalise_right(q.right)
        if sec_type == "OPT" and q.symbol and len(q.expiry) >= 8 and q.strike and right and not q.local_symbol:
            # One option named in full, as a client qualifies a chain: looked up, not scanned (a chain read asks
            # hundreds of these, and a scan of the whole catalog each held the simulator's loop for milliseconds).
            found = self._options.get((q.symbol.upper(), q.expiry[:8], round(q.strike, 6), right))
            return [found] if found is not None else []
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
    partial_next: float = 0.0  # the next order fills only this many shares and then rests open (0: off)
    unanswered_snapshots: int = 0  # the next N snapshot requests get no answer at all
    time_skew_s: float = 0.0  # reqCurrentTime answers this far from the server's clock


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
        self.account_sub: str | None = None  # the account whose updates this client subscribed to
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
    """The simulator. `await start()`, then it serves until `await stop()`.

    `accounts` are the login's managed accounts: the first holds the seeded straddle (`straddles` long calls and
    puts) and the manual positions (`manual_shares` of the underlying among them), the others cash and some shares."""

    def __init__(self, config: MarketConfig | None = None, *, seed: int = 7, host: str = "127.0.0.1", port: int = 7497,
                 speed: float = 1.0, tick_s: float = 0.25, state_path: Path | None = None,
                 clock: Callable[[], datetime] = utc_now, straddles: int = 10, manual_shares: int = 100,
                 accounts: Sequence[str] = (ACCOUNT,)) -> None:
        self.config = config or MarketConfig()
        self.seed = seed
        self.host = host
        self.port = port
        self.speed = speed
        self.tick_s = tick_s
        self.state_path = state_path
        self.clock = clock
        self.accounts = list(accounts)
        self.model = MarketModel(self.config, seed)
        self.catalog = Catalog(self.config, clock().date())
        self.book = SimAccount(self.model, accounts=self.accounts, clock=clock, state_path=state_path, seed=seed,
                               straddles=straddles, manual_shares=manual_shares)
        # What the account holds or has ordered may lie outside today's chain (a restart after an expiry roll).
        for _, holding in self.book.positions():
            self.catalog.add(SimContract.from_core(holding.contract))
        for order in self.book.orders.values():
            self.catalog.add(SimContract.from_core(order.contract))
        self.faults = Faults()
        self.fill_latency_s = self.config.fill_latency_ms / 1000.0
        self.sessions: list[Session] = []
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
            In.REQ_MANAGED_ACCTS: lambda s, c: s.send(self._managed_accounts_msg()),
            In.REQ_CURRENT_TIME: self._req_current_time,
            In.REQ_MARKET_DATA_TYPE: self._req_market_data_type, In.REQ_POSITIONS: self._req_positions,
            In.CANCEL_POSITIONS: self._cancel_positions, In.REQ_ACCOUNT_SUMMARY: self._req_account_summary,
            In.START_API: self._start_api, In.REQ_ACCOUNT_UPDATES_MULTI: self._req_account_updates_multi,
            In.REQ_SEC_DEF_OPT_PARAMS: self._req_sec_def_opt_params,
            In.REQ_COMPLETED_ORDERS: self._req_completed_orders,
            In.REQ_GLOBAL_CANCEL: self._req_global_cancel,
            In.REQ_AUTO_OPEN_ORDERS: lambda s, c: None, In.CANCEL_ACCOUNT_SUMMARY: lambda s, c: None,
            In.CANCEL_ACCOUNT_UPDATES_MULTI: lambda s, c: None,
        }

    # ---- life cycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._listen()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._market_loop(), name="tws-market")]
        log.info("tws_sim listening on %s:%s (server version %s, accounts %s)", self.host, self.port,
                 SERVER_VERSION, ",".join(self.accounts))

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
        self.book.save()
        self.book.close()

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
        s.send(self._managed_accounts_msg(), [Out.NEXT_VALID_ID, 1, self.book.next_order_id], *farm_infos)
        # As TWS: a client id's working orders are bound to it again when it reconnects (after a crash too), so a
        # restarted client can cancel and follow them before it asks for anything.
        for order in self.book.open_orders():
            if order.client_id == client_id:
                s.send(self._open_order_msg(order), self._order_status_msg(order))
        if self.faults.link_lost:
            s.error(-1, 1100, MSG_1100)

    def _managed_accounts_msg(self) -> list[Field]:
        return [Out.MANAGED_ACCTS, 1, ",".join(self.accounts)]

    def _req_ids(self, s: Session, cur: Cursor) -> None:
        s.send([Out.NEXT_VALID_ID, 1, self.book.next_order_id])

    def _req_current_time(self, s: Session, cur: Cursor) -> None:
        s.send([Out.CURRENT_TIME, 1, int(self.clock().timestamp() + self.faults.time_skew_s)])

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
        if snapshot and self.faults.unanswered_snapshots > 0:
            self.faults.unanswered_snapshots -= 1
            return
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
                flat = self.book.quote(c.core())
                bid, ask, last = flat.bid, flat.ask, round((flat.bid + flat.ask) / 2, 2)
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
            self._sweep_orders()
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

    def _wire(self, c: Contract) -> SimContract:
        return self.catalog.by_id.get(c.con_id) or self.catalog.add(SimContract.from_core(c))

    def _req_positions(self, s: Session, cur: Cursor) -> None:
        s.positions_sub = True
        s.send(*(self._position_msg(a, h) for a, h in self.book.positions()), [Out.POSITION_END, 1])

    def _cancel_positions(self, s: Session, cur: Cursor) -> None:
        s.positions_sub = False

    def _position_msg(self, account: str, h: SimHolding) -> list[Field]:
        c = self._wire(h.contract)
        exchange = c.primary_exchange if c.sec_type == "STK" else ""
        return [Out.POSITION_DATA, 3, account, *c.fields11(exchange), h.qty, h.avg_price * c.multiplier]

    def account_values(self, account: str | None = None) -> dict[str, float | str]:
        """The tags TWS reports for one account (the first by default), in USD."""
        v = self.book.values(account or self.accounts[0])
        return {"AccountCode": v.account, "AccountType": "INDIVIDUAL", "NetLiquidation": round(v.net_liquidation_usd, 2),
                "TotalCashValue": round(v.cash_usd, 2), "CashBalance": round(v.cash_usd, 2),
                "BuyingPower": round(v.buying_power_usd, 2), "AvailableFunds": round(v.available_funds_usd, 2),
                "ExcessLiquidity": round(v.available_funds_usd, 2), "InitMarginReq": round(v.maint_margin_usd, 2),
                "MaintMarginReq": round(v.maint_margin_usd, 2), "EquityWithLoanValue": round(v.net_liquidation_usd, 2),
                "GrossPositionValue": round(v.gross_position_usd, 2), "UnrealizedPnL": round(v.unrealized_pnl_usd, 2),
                "RealizedPnL": 0.0}

    def _account_value_msgs(self, account: str) -> list[list[Field]]:
        return [[Out.ACCT_VALUE, 2, key, value, "" if isinstance(value, str) else "USD", account]
                for key, value in self.account_values(account).items()]

    def _portfolio_msg(self, account: str, h: SimHolding) -> list[Field]:
        c = self._wire(h.contract)
        price = self.book.mark(h.contract)
        fields = c.fields11(c.primary_exchange)
        return [Out.PORTFOLIO_VALUE, 8, *fields, h.qty, round(price, 6), round(h.qty * c.multiplier * price, 2),
                h.avg_price * c.multiplier, round(h.qty * c.multiplier * (price - h.avg_price), 2), 0.0, account]

    def _req_account_updates(self, s: Session, cur: Cursor) -> None:
        cur.skip()
        subscribe = cur.integer() == 1
        code = cur.text()
        account = code if code in self.accounts else self.accounts[0]
        s.account_sub = account if subscribe else None
        if subscribe:
            s.send(*self._account_value_msgs(account),
                   *(self._portfolio_msg(account, h) for _, h in self.book.positions(account)),
                   [Out.ACCT_UPDATE_TIME, 1, self.clock().strftime("%H:%M")], [Out.ACCT_DOWNLOAD_END, 1, account])

    def _req_account_updates_multi(self, s: Session, cur: Cursor) -> None:
        cur.skip()
        req_id = cur.integer()
        code = cur.text()
        accounts = self.accounts if code in ("", "All") else [a for a in self.accounts if a == code]
        s.send(*([Out.ACCOUNT_UPDATE_MULTI, 1, req_id, account, "", key, value,
                  "" if isinstance(value, str) else "USD"]
                 for account in accounts for key, value in self.account_values(account).items()),
               [Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id])

    def _req_account_summary(self, s: Session, cur: Cursor) -> None:
        cur.skip()
        req_id = cur.integer()
        cur.skip()  # group: every managed account is in "All"
        tags = {t for t in cur.text().split(",") if t}
        rows: list[list[Field]] = []
        for account in self.accounts:
            values = self.account_values(account)
            wanted = [k for k in values if k in tags] or list(values)
            rows += [[Out.ACCOUNT_SUMMARY, 1, req_id, account, k, values[k],
                      "" if isinstance(values[k], str) else "USD"] for k in wanted]
        s.send(*rows, [Out.ACCOUNT_SUMMARY_END, 1, req_id])

    def _push_account(self, account: str | None = None, holdings: list[SimHolding] | None = None) -> None:
        """Account values and portfolio rows to every session subscribed to that account (all accounts: None)."""
        for s in self.sessions:
            if s.account_sub is None or (account is not None and s.account_sub != account):
                continue
            rows = holdings if holdings is not None else [h for _, h in self.book.positions(s.account_sub)]
            s.send(*self._account_value_msgs(s.account_sub), *(self._portfolio_msg(s.account_sub, h) for h in rows))

    def _push_positions(self, account: str, holding: SimHolding | None) -> None:
        if holding is None:
            return
        for s in self.sessions:
            if s.positions_sub:
                s.send(self._position_msg(account, holding))
        self._push_account(account, [holding])

    # ---- orders --------------------------------------------------------------------------------------------------

    def _place_order(self, s: Session, cur: Cursor) -> None:
        order_id = cur.integer()
        query = ContractFields.read(cur)
        cur.skip(2)  # secIdType, secId
        action, qty, order_type = cur.text().upper(), cur.number(), cur.text().upper()
        lmt, _aux, tif = cur.text(), cur.text(), cur.text()
        cur.skip()  # ocaGroup
        account_field = cur.text()
        cur.skip(2)  # openClose, origin
        order_ref = cur.text()
        assert s.client_id is not None
        self.book.see_order_id(order_id)
        existing = self.book.order(s.client_id, order_id)
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
        account, refusal = self._order_account(account_field)
        accepted = refusal is None and self.faults.reject_next == 0
        fill_cap = None
        if accepted and self.faults.partial_next > 0:
            fill_cap, self.faults.partial_next = min(self.faults.partial_next, qty), 0.0
        order = self.book.new_order(
            client_id=s.client_id, order_id=order_id, account=account, contract=found[0].core(),
            side="BUY" if action == "BUY" else "SELL", qty=qty, order_type="limit" if order_type == "LMT" else "market",
            limit=float(lmt) if order_type == "LMT" else None, tif=tif or "DAY", order_ref=order_ref,
            fill_cap=fill_cap)
        if refusal is not None:
            code, text = refusal
            self.book.reject(order, text)
            s.error(order_id, code, text)
            return
        if self.faults.reject_next > 0:
            self.faults.reject_next -= 1
            self.book.reject(order, self.faults.reject_reason)
            s.error(order_id, 201, f"Order rejected - reason:{self.faults.reject_reason}")
            return
        if self.faults.drop_on_order_next > 0:
            # The order reached us and will work; the client never hears about it on this connection.
            self.faults.drop_on_order_next -= 1
            s.abort()
            if self.faults.drop_down_s > 0:
                self._background(self.restart(self.faults.drop_down_s))
        else:
            self._send_order_state(order, pre=True)
        asyncio.get_running_loop().call_later(self.fill_latency_s, self._try_fill, order)

    def _order_account(self, requested: str) -> tuple[str, tuple[int, str] | None]:
        """The account an order books into, or why TWS refuses it: with several managed accounts it must say which."""
        if requested:
            if requested in self.accounts:
                return requested, None
            return requested, (201, f"Order rejected - reason:account {requested} is not managed by this login "
                                    f"({','.join(self.accounts)})")
        if len(self.accounts) == 1:
            return self.accounts[0], None
        return "", (435, MSG_435)

    def _modify(self, s: Session, order: SimOrder, qty: float, lmt: str) -> None:
        if not order.is_open:
            s.error(order.order_id, 104, "Cannot modify a filled order.")
            return
        self.book.modify(order, qty, float(lmt) if lmt else None)
        self._send_order_state(order)

    def _cancel_order(self, s: Session, cur: Cursor) -> None:
        cur.skip()
        order_id = cur.integer()
        assert s.client_id is not None
        order = self.book.order(s.client_id, order_id)
        if order is None:
            s.error(order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found.")
            return
        if not self.book.cancel(order):
            s.error(order_id, 10148, f"OrderId {order_id} that needs to be cancelled cannot be cancelled, "
                                     f"state: {IB_STATUS[order.status]}.")
            return
        self._send_order_state(order)
        s.error(order_id, 202, "Order Canceled - reason:")

    def _req_global_cancel(self, s: Session, cur: Cursor) -> None:
        for order in self.book.open_orders():
            self.book.cancel(order)
            self._send_order_state(order)

    def _req_open_orders(self, s: Session, cur: Cursor) -> None:
        """reqAllOpenOrders: every client's working orders; reqOpenOrders: this client's (client 0: all, as TWS binds
        every order to the master client 0)."""
        mine_only = int(cur.fields[0]) == In.REQ_OPEN_ORDERS and s.client_id != 0
        messages = []
        for order in self.book.open_orders():
            if not mine_only or order.client_id == s.client_id:
                messages += [self._open_order_msg(order), self._order_status_msg(order)]
        s.send(*messages, [Out.OPEN_ORDER_END, 1])

    def _req_completed_orders(self, s: Session, cur: Cursor) -> None:
        """Every finished order (Filled, Cancelled, Inactive) of every client; all of ours are API orders, so
        apiOnly changes nothing."""
        s.send(*(self._completed_order_msg(o, s.version) for o in self.book.finished_orders()),
               [Out.COMPLETED_ORDERS_END])

    def _session_of(self, client_id: int) -> Session | None:
        return next((s for s in self.sessions if s.client_id == client_id and not s.closed), None)

    def _send_order_state(self, order: SimOrder, *, pre: bool = False) -> None:
        """openOrder and orderStatus go to the client that placed the order, only (as TWS)."""
        s = self._session_of(order.client_id)
        if s is None:
            return
        if pre:
            s.send(self._open_order_msg(order, "PreSubmitted"), self._order_status_msg(order, "PreSubmitted"))
        s.send(self._open_order_msg(order), self._order_status_msg(order))

    def _order_status_msg(self, o: SimOrder, status: str | None = None) -> list[Field]:
        return [Out.ORDER_STATUS, o.order_id, status or IB_STATUS[o.status], o.filled, o.remaining, o.avg_fill_price,
                o.perm_id, 0, o.last_fill_price, o.client_id, "", 0.0]

    def _open_order_msg(self, o: SimOrder, status: str | None = None) -> list[Field]:
        """openOrder at v176 for a plain (non-combo, non-algo, unconditional) order: 128 fields."""
        c = self._wire(o.contract)
        status = status or IB_STATUS[o.status]
        lmt = o.limit if o.limit is not None else UNSET_DOUBLE
        head: list[Field] = [Out.OPEN_ORDER, o.order_id, *c.fields11("SMART")]
        order: list[tuple[str, Field]] = [
            ("action", o.side), ("totalQuantity", o.qty), ("orderType", IB_ORDER_TYPE[o.order_type]),
            ("lmtPrice", lmt), ("auxPrice", 0.0), ("tif", o.tif), ("ocaGroup", ""), ("account", o.account),
            ("openClose", ""), ("origin", 0), ("orderRef", o.order_ref), ("clientId", o.client_id),
            ("permId", o.perm_id), ("outsideRth", 0), ("hidden", 0), ("discretionaryAmt", 0.0), ("goodAfterTime", ""),
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

    def _completed_order_msg(self, o: SimOrder, version: int) -> list[Field]:
        """completedOrder (101, no version field, no orderId or clientId: keyed by permId) for a plain order, in the
        order of the clients' decoder `completedOrder`; faProfile below 177, the minTradeQty block from 170."""
        c = self._wire(o.contract)
        status = IB_STATUS[o.status]
        completed_status = {FILLED: "Filled", CANCELLED: "Cancelled by Trader"}.get(o.status, f"Rejected: {o.reason}")
        finished = datetime.fromtimestamp(o.done_at if o.done_at is not None else o.received_at, UTC)
        order: list[tuple[str, Field]] = [
            ("action", o.side), ("totalQuantity", o.qty), ("orderType", IB_ORDER_TYPE[o.order_type]),
            ("lmtPrice", o.limit if o.limit is not None else UNSET_DOUBLE), ("auxPrice", 0.0), ("tif", o.tif),
            ("ocaGroup", ""), ("account", o.account), ("openClose", ""), ("origin", 0), ("orderRef", o.order_ref),
            ("permId", o.perm_id), ("outsideRth", 0), ("hidden", 0), ("discretionaryAmt", 0.0),
            ("goodAfterTime", ""), ("faGroup", ""), ("faMethod", ""), ("faPercentage", ""),
            *([("faProfile", "")] if version < 177 else []),
            ("modelCode", ""), ("goodTillDate", ""), ("rule80A", ""), ("percentOffset", ""), ("settlingFirm", ""),
            ("shortSaleSlot", 0), ("designatedLocation", ""), ("exemptCode", -1), ("startingPrice", ""),
            ("stockRefPrice", ""), ("delta", ""), ("stockRangeLower", ""), ("stockRangeUpper", ""),
            ("displaySize", 0), ("sweepToFill", 0), ("allOrNone", 0), ("minQty", ""), ("ocaType", 3),
            ("triggerMethod", 0), ("volatility", ""), ("volatilityType", 0), ("deltaNeutralOrderType", ""),
            ("deltaNeutralAuxPrice", ""), ("continuousUpdate", 0), ("referencePriceType", 0),
            ("trailStopPrice", ""), ("trailingPercent", ""), ("comboLegsDescrip", ""), ("comboLegs", 0),
            ("orderComboLegs", 0), ("smartComboRoutingParams", 0), ("scaleInitLevelSize", ""),
            ("scaleSubsLevelSize", ""), ("scalePriceIncrement", ""), ("hedgeType", ""), ("clearingAccount", ""),
            ("clearingIntent", "IB"), ("notHeld", 0), ("deltaNeutralContract", 0), ("algoStrategy", ""),
            ("solicited", 0), ("status", status), ("randomizeSize", 0), ("randomizePrice", 0), ("conditions", 0),
            ("trailStopPrice", ""), ("lmtPriceOffset", ""), ("cashQty", UNSET_DOUBLE),
            ("dontUseAutoPriceForHedge", 0), ("isOmsContainer", 0), ("autoCancelDate", ""),
            ("filledQuantity", o.filled), ("refFuturesConId", 0), ("autoCancelParent", 0), ("shareholder", ""),
            ("imbalanceOnly", 0), ("routeMarketableToBbo", 0), ("parentPermId", 0),
            ("completedTime", ib_time(finished)), ("completedStatus", completed_status),
            *([("minTradeQty", ""), ("minCompeteSize", ""), ("competeAgainstBestOffset", ""),
               ("midOffsetAtWhole", ""), ("midOffsetAtHalf", "")] if version >= 170 else []),
        ]
        return [Out.COMPLETED_ORDER, *c.fields11("SMART"), *(value for _, value in order)]

    def _sweep_orders(self) -> None:
        for order in self.book.due_orders(self.fill_latency_s):
            self._try_fill(order)

    def _try_fill(self, order: SimOrder) -> None:
        executions = self.book.try_fill(order)
        if not executions:
            return
        for execution in executions:
            self._report_execution(execution)
        self._send_order_state(order)
        self._push_positions(order.account, self.book.holding(order.account, order.contract.con_id))

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
        """execDetails and its commissionReport; live ones (reqId -1) only to the client that placed the order."""
        s = session or self._session_of(e.client_id)
        if s is None:
            return
        c = self._wire(e.contract)
        s.send([Out.EXECUTION_DATA, req_id, e.order_id, *c.fields11("SMART"), e.exec_id, ib_time(e.ts), e.account,
                "ISLAND" if c.sec_type == "STK" else "CBOE", IB_SIDE[e.side], e.shares, e.price, e.perm_id,
                e.client_id, 0, e.cum_qty, e.avg_price, e.order_ref, "", "", "", 2],
               [Out.COMMISSION_REPORT, 1, e.exec_id, round(e.commission, 4), "USD", UNSET_DOUBLE, UNSET_DOUBLE, ""])

    def _req_executions(self, s: Session, cur: Cursor) -> None:
        """The filter as TWS applies it: clientId 0 means every client; empty fields match everything."""
        cur.skip()
        req_id = cur.integer()
        client_id, account, _since, symbol, sec_type, _exchange, side = (cur.integer(), cur.text(), cur.text(),
                                                                         cur.text(), cur.text(), cur.text(),
                                                                         cur.text())
        side = {"BUY": "BOT", "SELL": "SLD"}.get(side.upper(), side.upper())
        for e in self.book.executions:
            if ((client_id and e.client_id != client_id) or (account and e.account != account)
                    or (symbol and e.contract.symbol != symbol.upper())
                    or (sec_type and e.contract.sec_type != sec_type.upper())
                    or (side and IB_SIDE[e.side] != side)):
                continue
            self._send_execution(e, req_id, s)
        s.send([Out.EXECUTION_DATA_END, 1, req_id])

    # ---- faults, foreign activity and inspection -----------------------------------------------------------------

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
        try:
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
            if name in ("foreign_fill", "foreign_order"):
                return self.foreign_order(args, resting=name == "foreign_order")
            if name == "correct_exec":
                return self.correct_execution(args)
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
            elif name == "partial":
                f.partial_next = _positive_or_zero("N", number(0.0))
            elif name == "unanswered_snapshots":
                f.unanswered_snapshots = int(number(1))
            elif name == "skew":
                f.time_skew_s = number(0.0)
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
        except ValueError as exc:
            return {"ok": False, "error": f"{name}: {exc}"}
        return {"ok": True, "faults": asdict(f), "fill_latency_ms": self.fill_latency_s * 1000}

    def foreign_order(self, args: Sequence[str], *, resting: bool) -> dict[str, Any]:
        """Another API client on this login places an order: `SYMBOL SIDE QTY [LIMIT] [ACCOUNT] [ORDER_REF]
        [CLIENT_ID]` (LIMIT only when `resting`; `-` keeps a default). A market order fills at once; a limit order
        works like any other. Its openOrder, orderStatus and execDetails go only to that client, as TWS does, so a
        connected Bifrost sees it through reqAllOpenOrders, reqExecutions, completed orders and positions only."""
        fixed = 4 if resting else 3
        if len(args) < fixed:
            usage = "SYMBOL SIDE QTY LIMIT" if resting else "SYMBOL SIDE QTY"
            return {"ok": False, "error": f"usage: {usage} [ACCOUNT] [ORDER_REF] [CLIENT_ID]"}
        symbol, side, qty = args[0].upper(), args[1].upper(), float(args[2])
        limit = float(args[3]) if resting else None
        extra = [None if a == "-" else a for a in args[fixed:]] + [None, None, None]
        account = extra[0] or self.accounts[0]
        order_ref = extra[1] or ""
        client_id = int(extra[2]) if extra[2] else FOREIGN_CLIENT_ID
        if side not in ("BUY", "SELL"):
            raise ValueError(f"SIDE must be BUY or SELL, got {args[1]!r}")
        if not (math.isfinite(qty) and qty > 0):
            raise ValueError(f"QTY must be a number > 0, got {args[2]!r}")
        if limit is not None and not (math.isfinite(limit) and limit > 0):
            raise ValueError(f"LIMIT must be a price > 0, got {args[3]!r}")
        if account not in self.accounts:
            raise ValueError(f"ACCOUNT {account!r} is not one of {self.accounts}")
        contract = self.catalog.add(stock(symbol)).core()
        order = self.book.new_order(client_id=client_id, order_id=self.book.take_order_id(), account=account,
                                    contract=contract, side="BUY" if side == "BUY" else "SELL", qty=qty,
                                    order_type="limit" if resting else "market", limit=limit, order_ref=order_ref)
        self._send_order_state(order, pre=True)
        executions = self.book.try_fill(order)
        for execution in executions:
            self._send_execution(execution, -1)
        if executions:
            self._send_order_state(order)
            self._push_positions(account, self.book.holding(account, contract.con_id))
        return {"ok": True, "order": self._order_json(order), "executions": [self._execution_json(e)
                                                                            for e in executions]}

    def correct_execution(self, args: Sequence[str]) -> dict[str, Any]:
        """`EXEC_ID [SHARES] [PRICE]`: IB's execution correction, reported live to the placing client."""
        if not args:
            return {"ok": False, "error": "usage: correct_exec EXEC_ID [SHARES] [PRICE]"}
        shares = float(args[1]) if len(args) > 1 else None
        price = float(args[2]) if len(args) > 2 else None
        try:
            correction = self.book.correct_execution(args[0], shares, price)
        except KeyError:
            return {"ok": False, "error": f"no execution {args[0]!r}"}
        self._send_execution(correction, -1)
        if correction.shares != self._replaced(correction).shares:
            self._push_positions(correction.account,
                                 self.book.holding(correction.account, correction.contract.con_id))
        return {"ok": True, "execution": self._execution_json(correction)}

    def _replaced(self, correction: SimExecution) -> SimExecution:
        return self.book.execution(correction.replaces) or correction

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
        self.book.save()
        await asyncio.sleep(down_s)
        await self._listen()

    def snapshot(self) -> dict[str, Any]:
        """Everything a test or an operator checks at the "exchange": per-account positions and cash, every client's
        orders and executions, the connected client ids and the faults switched on."""
        return {
            "port": self.port, "spot": self.model.spot, "accounts": self.accounts,
            "cash": {a: self.book.cash.get(a, 0.0) for a in self.accounts},
            "clients": sorted(s.client_id for s in self.sessions if s.client_id is not None and not s.closed),
            "positions": [{"account": a, "con_id": h.contract.con_id, "symbol": h.contract.symbol,
                           "sec_type": h.contract.sec_type, "local_symbol": h.contract.local_symbol, "qty": h.qty,
                           "avg_price": h.avg_price} for a, h in self.book.positions()],
            "orders": [self._order_json(o) for o in self.book.orders.values()],
            "executions": [self._execution_json(e) for e in self.book.executions],
            "faults": asdict(self.faults),
        }

    @staticmethod
    def _order_json(o: SimOrder) -> dict[str, Any]:
        return {"client_id": o.client_id, "order_id": o.order_id, "perm_id": o.perm_id, "account": o.account,
                "con_id": o.contract.con_id, "symbol": o.contract.symbol, "sec_type": o.contract.sec_type,
                "action": o.side, "qty": o.qty, "order_type": IB_ORDER_TYPE[o.order_type], "lmt_price": o.limit,
                "tif": o.tif, "order_ref": o.order_ref, "status": IB_STATUS[o.status], "filled": o.filled,
                "remaining": o.remaining, "avg_fill_price": o.avg_fill_price, "commission": o.commission,
                "received_at": o.received_at, "done_at": o.done_at, "reason": o.reason}

    @staticmethod
    def _execution_json(e: SimExecution) -> dict[str, Any]:
        return {"exec_id": e.exec_id, "client_id": e.client_id, "order_id": e.order_id, "perm_id": e.perm_id,
                "account": e.account, "con_id": e.contract.con_id, "symbol": e.contract.symbol,
                "sec_type": e.contract.sec_type, "side": IB_SIDE[e.side], "shares": e.shares, "price": e.price,
                "time": ib_time(e.ts), "cum_qty": e.cum_qty, "avg_price": e.avg_price, "order_ref": e.order_ref,
                "commission": e.commission, "replaces": e.replaces}


def _positive_or_zero(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a number >= 0, got {value!r}")
    return value


COMMANDS = {
    "state": "JSON snapshot: accounts, per-account positions and cash, every client's orders (client_id, account, "
             "order_ref, status, filled, received_at ...), executions, connected client ids, faults",
    "drop": "close every client connection now (clients reconnect)",
    "restart SECONDS": "drop every connection and refuse new ones for SECONDS; orders and fills are kept",
    "reject N [REASON]": "reject the next N orders with error 201",
    "lose_exec N": "the next N executions are not reported live (only reqExecutions shows them)",
    "delay_exec SECONDS": "report executions SECONDS after the fill (0: at once)",
    "drop_on_order N [DOWN_S]": "the next N orders are accepted and worked, but their sender is disconnected at "
                                "once (and new connections refused for DOWN_S)",
    "unanswered_snapshots N": "the next N snapshot market-data requests are never answered (an illiquid strike)",
    "partial N": "the next order fills only N shares and then rests open (a later cancel leaves a partial fill); "
                 "combines with lose_exec",
    "foreign_fill SYMBOL SIDE QTY [ACCOUNT] [ORDER_REF] [CLIENT_ID]": "another API client (default 99) on this login "
        "places a market order that fills at once (default: first account, no orderRef; '-' keeps a default); only "
        "that client hears it live, others see it via reqExecutions, completed orders and positions",
    "foreign_order SYMBOL SIDE QTY LIMIT [ACCOUNT] [ORDER_REF] [CLIENT_ID]": "another API client's limit order, "
        "working (visible in reqAllOpenOrders) until it is marketable",
    "correct_exec EXEC_ID [SHARES] [PRICE]": "an execution correction as IB sends it: a new execution with the same "
        "prefix and the next suffix (.02) replacing EXEC_ID, reported live to the placing client and by reqExecutions",
    "skew SECONDS": "reqCurrentTime answers with the server's time shifted by SECONDS (0: off)",
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
