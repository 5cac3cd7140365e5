"""IBBroker: the Broker protocol over TWS / IB Gateway through ib_insync 0.9.86 (default) or ib_async 2.1 (its
maintained continuation, same API), inside the daemon's own asyncio loop with `*Async` calls only.

What the adapter owns: client id in use (326) → BrokerError naming it (the daemon retries our own id with backoff:
silently becoming another client would make our orders someone else's); several managed accounts and no IB_ACCOUNT
→ ConfigError (never guess an account); connection loss and 1100 → BrokerStatus(False) (the daemon goes
waiting_broker, reconnects with backoff, re-subscribes and reconciles); an order is sent once per orderRef and
never again, and only this client's own orders are ever cancelled; executions are asked for this account only, and
every Fill says its account and contract; fills whose live report went missing are recovered with reqExecutions;
quotes without a price (NaN, -1, 0) never leave the adapter."""
from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from types import ModuleType
from typing import Any, TypeVar

from trading.brokers.base import (
    AccountSummary,
    ChainQuote,
    CompletedOrder,
    EventHandler,
    OpenOrder,
    PositionMark,
)
from trading.core.calendar import trading_date
from trading.core.events import (
    BrokerPosition,
    BrokerStatus,
    Contract,
    Event,
    Fill,
    LegGreeks,
    OptionQuote,
    OrderUpdate,
    PlaceOrder,
    Quote,
)
from trading.errors import BrokerError, ConfigError

log = logging.getLogger(__name__)

CLIENT_LIBS = ("ib_insync", "ib_async")
LIVE_PORTS = frozenset({7496, 4001})  # TWS live, IB Gateway live
PAPER_PORTS = frozenset({7497, 4002})
REF_PREFIX = "bifrost:"
REQUEST_TIMEOUT_S = 10.0
LINK_WAIT_S = 5.0  # how long connect() waits for TWS to get its IB link back (1100 → 1101/1102)
COMMISSION_WAIT_S = 1.0  # a fill waits this long for its commission report before it is passed on without one
EXEC_GRACE_S = 1.0  # an order reported filled whose executions are missing this long is looked up (reqExecutions)
NO_SUBSCRIPTION_CODES = frozenset({354, 10089, 10090, 10186})
LINK_LOST_CODES = frozenset({1100, 2110})
LINK_RESTORED_CODES = frozenset({1101, 1102})
_STATUS = {
    "PendingSubmit": None, "ApiPending": None,  # our own local states: nothing from the broker yet
    "PreSubmitted": "submitted", "Submitted": "submitted", "PendingCancel": "submitted", "ValidationError": "submitted",
    "Filled": "filled", "Cancelled": "cancelled", "ApiCancelled": "cancelled", "Inactive": "rejected",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


K = TypeVar("K")
V = TypeVar("V")
RECENT = 10_000


class Recent(OrderedDict[K, V]):
    """A dict that forgets its oldest entries beyond `size`."""

    def __init__(self, size: int = RECENT) -> None:
        super().__init__()
        self.size = size

    def __setitem__(self, key: K, value: V) -> None:
        super().__setitem__(key, value)
        if len(self) > self.size:
            self.popitem(last=False)


# Reading a chain (IBBroker.option_chain): TWS takes at most 50 messages a second from a client, and the client
# libraries queue anything over 45 in order, a hedge order behind the rest. The chain's requests are spaced to
# under half of that, so a chain read never makes an order wait; and at most this many snapshots are open at
# once, well inside the account's market-data lines (the hedge's own subscriptions need some).
CHAIN_REQUESTS_PER_S = 20.0
CHAIN_SNAPSHOTS_OPEN = 40


class Pacer:
    """Spaces awaited starts at least 1/per_s seconds apart (first come, first served)."""

    def __init__(self, per_s: float) -> None:
        self.gap_s = 1.0 / per_s
        self._next_at = 0.0

    async def wait(self) -> None:
        now = asyncio.get_running_loop().time()
        at = max(now, self._next_at)
        self._next_at = at + self.gap_s
        if at > now:
            await asyncio.sleep(at - now)


def price_or_none(x: Any) -> float | None:
    """IB's 'no price' comes as NaN, -1 or 0: none of them is a price."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _finite(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def check_mode(mode: str, port: int, live_confirm: str) -> None:
    """Paper is the default; live needs BIFROST_LIVE_CONFIRM=yes and a live port, and paper refuses a live port."""
    if mode not in ("paper", "live"):
        raise ConfigError("BIFROST_MODE", f"must be paper or live, got {mode!r}")
    if mode == "live":
        if live_confirm != "yes":
            raise ConfigError("BIFROST_LIVE_CONFIRM", "BIFROST_MODE=live trades real money: set BIFROST_LIVE_CONFIRM=yes")
        if port not in LIVE_PORTS:
            raise ConfigError("IB_PORT", f"live mode needs a live API port ({sorted(LIVE_PORTS)}), got {port}")
    elif port in LIVE_PORTS:
        raise ConfigError("IB_PORT", f"port {port} is a live trading port; paper mode refuses it "
                                     f"(paper ports: {sorted(PAPER_PORTS)})")


def load_client(name: str) -> ModuleType:
    if name not in CLIENT_LIBS:
        raise ConfigError("BIFROST_IB_CLIENT", f"must be one of {list(CLIENT_LIBS)}, got {name!r}")
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError("BIFROST_IB_CLIENT", f"{name} is not installed in this venv ({exc}); ib_insync and "
                                               "ib_async live in separate venvs (make test-ib-async)") from exc


class IBBroker:
    """The Broker protocol against TWS / IB Gateway. One instance lives as long as the daemon; it reconnects."""

    name = "ib"
    account: str

    def __init__(self, *, host: str = "127.0.0.1", port: int = 7497, client_id: int = 1, account: str = "",
                 mode: str = "paper", live_confirm: str = "", client_lib: str = "ib_insync",
                 clock: Callable[[], datetime] = utc_now, connect_timeout_s: float = 4.0) -> None:
        check_mode(mode, port, live_confirm)
        self.lib = load_client(client_lib)
        self.client_lib = client_lib
        self.host, self.port, self.client_id = host, port, client_id
        self.account_setting = account
        self.account = account
        self.mode = mode
        self.clock = clock
        self.connect_timeout_s = connect_timeout_s
        self.ib: Any = None
        self._handler: EventHandler | None = None
        self._connected = False
        self._link_lost = False
        self._link_up = asyncio.Event()
        self._delayed = False
        self._client_id_in_use: asyncio.Future[int] | None = None
        self._underlying = ""
        self._stock_contracts: dict[str, Any] = {}
        self._tickers: dict[int, Any] = {}  # conId → ticker, this connection only
        self._wanted: dict[int, Any] = {}  # conId → qualified contract we want quotes for
        # What idempotency needs, bounded: refs are never reused and reports come back within minutes, so the
        # last RECENT of each is plenty (the engine keeps its own day-long memory of executions).
        self._placed: Recent[str, int] = Recent()  # orderRef → orderId: each ref leaves once, whatever happens
        self._emitted: Recent[str, bool] = Recent()  # execIds passed on as Fill
        self._pending_fills: dict[str, tuple[Any, asyncio.TimerHandle]] = {}
        self._order_errors: Recent[int, str] = Recent()
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.throttled = 0  # times the client library held our requests back (IB's pacing): orders waited
        # Shared by every chain read, so two at once (a scheduled run and a manual one) still keep to the budget.
        self._chain_pacer = Pacer(CHAIN_REQUESTS_PER_S)
        self._chain_slots = asyncio.Semaphore(CHAIN_SNAPSHOTS_OPEN)
        if mode == "live":
            log.warning("!!! IBBroker in LIVE mode: real orders on %s:%s — BIFROST_LIVE_CONFIRM=yes !!!", host, port)

    # ---- Broker protocol ---------------------------------------------------------------------------------------

    def set_event_handler(self, handler: EventHandler) -> None:
        self._handler = handler

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        if self.ib is None:
            self.ib = self._new_client()
        if self.ib.isConnected():
            if self._link_lost:
                await self._wait_link()
            self._on_connected()
            return
        self._link_lost = False
        if not await self._connect_once():
            raise BrokerError(f"IB client id {self.client_id} is in use by another API client (326): retrying our "
                              "own id; Bifrost never takes another client's id")
        accounts = list(self.ib.managedAccounts())
        if self.account_setting and self.account_setting not in accounts:
            self.ib.disconnect()
            raise ConfigError("IB_ACCOUNT", f"{self.account_setting!r} is not among the managed accounts {accounts}")
        if not self.account_setting and len(accounts) > 1:
            self.ib.disconnect()
            raise ConfigError("IB_ACCOUNT", f"this login manages several accounts {accounts}: set IB_ACCOUNT to "
                                            "the one Bifrost trades")
        self.account = self.account_setting or (accounts[0] if accounts else "")
        if self._delayed:
            self.ib.reqMarketDataType(3)  # a new session starts real-time again; this account has no subscription
        if self.mode == "live":
            log.warning("!!! LIVE TRADING: connected to %s:%s as client %d, account %s !!!", self.host, self.port,
                        self.client_id, self.account)
        else:
            log.info("connected to IB %s:%s as client %d, account %s (%s)", self.host, self.port, self.client_id,
                     self.account, self.client_lib)
        self._on_connected()

    async def disconnect(self) -> None:
        was = self._connected
        self._connected = False
        self._drop_connection_state()
        if self.ib is not None and self.ib.isConnected():
            self.ib.disconnect()
        if was:
            self._emit(BrokerStatus(False, self.clock(), "disconnected"))

    async def positions(self) -> list[PositionMark]:
        self._require_connected()
        positions = await self._request("positions", self.ib.reqPositionsAsync)
        prices = {item.contract.conId: price_or_none(item.marketPrice) for item in self.ib.portfolio()}
        marks = []
        for p in positions:
            if p.position == 0 or (self.account and p.account != self.account):
                continue
            contract = core_contract(p.contract)
            marks.append(PositionMark(BrokerPosition(contract, float(p.position), float(p.avgCost), p.account),
                                      prices.get(contract.con_id)))
        return marks

    async def account_summary(self) -> AccountSummary:
        self._require_connected()
        values = self.ib.accountValues(self.account) if self.account else self.ib.accountValues()
        if not values:
            values = await self._request("summary", lambda: self.ib.accountSummaryAsync(self.account))
        by_tag: dict[str, float | str] = {}
        for v in values:
            if v.currency not in ("USD", "BASE", ""):
                continue
            number = _finite(v.value)
            if v.tag not in by_tag or v.currency == "USD":
                by_tag[v.tag] = number if number is not None else v.value

        def num(tag: str) -> float | None:
            value = by_tag.get(tag)
            return value if isinstance(value, float) else None

        extra: dict[str, float | str] = {k: by_tag[k] for k in ("AvailableFunds", "ExcessLiquidity", "InitMarginReq", "GrossPositionValue",
                                        "UnrealizedPnL", "RealizedPnL", "EquityWithLoanValue", "AccountType")
                 if k in by_tag}
        return AccountSummary(self.account, num("NetLiquidation"), num("BuyingPower"), num("MaintMarginReq"),
                              num("TotalCashValue"), self.clock(), extra, num("AvailableFunds"))

    async def subscribe(self, symbol: str, legs: Sequence[Contract]) -> None:
        self._require_connected()
        self._underlying = symbol
        stock = await self._stock(symbol)
        self._wanted[stock.conId] = stock
        new_legs = [leg for leg in legs if leg.con_id not in self._wanted]
        if new_legs:
            contracts = [self.lib.Contract(conId=leg.con_id, exchange="SMART") for leg in new_legs]
            for c in await self._qualify(contracts):
                self._wanted[c.conId] = c
        for con_id, contract in self._wanted.items():
            if con_id not in self._tickers:
                self._tickers[con_id] = self.ib.reqMktData(contract, "", False, False)

    async def place_order(self, order: PlaceOrder) -> None:
        self._require_connected()
        if order.order_ref in self._placed:
            return  # the same orderRef is the same order: it has left once, it never leaves again
        contract = await (self._stock(order.symbol) if order.contract is None else self._option(order.contract))
        if order.type == "limit":
            if order.limit is None:
                raise BrokerError(f"{order.order_ref}: a limit order needs a limit price")
            ib_order = self.lib.LimitOrder(order.side, order.qty, order.limit)
        else:
            ib_order = self.lib.MarketOrder(order.side, order.qty)
        ib_order.orderRef = order.order_ref
        ib_order.account = self.account
        ib_order.tif = "DAY"
        self._placed[order.order_ref] = -1  # claimed before the bytes leave: a failure below is not a licence to resend
        trade = self.ib.placeOrder(contract, ib_order)
        self._placed[order.order_ref] = trade.order.orderId

    async def cancel_order(self, order_ref: str) -> None:
        self._require_connected()
        for trade in self.ib.openTrades():
            if trade.order.orderRef != order_ref:
                continue
            if trade.order.clientId not in (0, self.client_id):
                # An order id belongs to the client that placed it: cancelling by it would hit one of ours.
                raise BrokerError(f"cancel {order_ref}: placed by API client {trade.order.clientId} "
                                  f"(permId {trade.order.permId}); only that client can cancel it")
            self.ib.cancelOrder(trade.order)
            return
        log.info("cancel %s: not open at the broker (filled, cancelled or never placed)", order_ref)

    async def open_orders(self) -> list[OpenOrder]:
        """Every open order with our prefix, whichever client placed it (the caller checks account and contract)."""
        self._require_connected()
        trades = await self._request("open orders", self.ib.reqAllOpenOrdersAsync)
        out = []
        for t in trades:
            ref = t.order.orderRef or ""
            if not ref.startswith(REF_PREFIX) or t.orderStatus.status not in _OPEN_STATUSES:
                continue
            filled = float(t.orderStatus.filled or 0.0)
            out.append(OpenOrder(ref, t.order.action, float(t.order.totalQuantity), filled,
                                 "working" if filled == 0 else "partial", t.order.account or "",
                                 int(t.contract.conId or 0), t.contract.symbol or "", t.contract.secType or "",
                                 int(t.order.permId or 0)))
        return out

    async def completed_orders(self) -> list[CompletedOrder]:
        """Every finished order with our prefix the broker still reports (filled, cancelled, rejected)."""
        self._require_connected()
        trades = await self._request("completed orders", lambda: self.ib.reqCompletedOrdersAsync(False))
        out = []
        for t in trades:
            ref = t.order.orderRef or ""
            status = _COMPLETED.get(t.orderStatus.status)
            if not ref.startswith(REF_PREFIX) or status is None:
                continue
            filled = _finite(t.order.filledQuantity)
            out.append(CompletedOrder(ref, t.order.action, float(t.order.totalQuantity),
                                      filled if filled is not None and filled < 1e300 else 0.0, status,
                                      t.order.account or "", int(t.contract.conId or 0), t.contract.symbol or "",
                                      t.contract.secType or "", int(t.order.permId or 0)))
        return out

    async def executions(self) -> list[Fill]:
        """Every execution of ours in this account the broker still knows (reqExecutions), with commissions."""
        self._require_connected()
        query = self.lib.ExecutionFilter(acctCode=self.account)
        fills = await self._request("executions", lambda: self.ib.reqExecutionsAsync(query))
        known = self.ib.wrapper.fills  # the commission reports land on these, keyed by execId
        out = []
        for f in fills:
            if not (f.execution.orderRef or "").startswith(REF_PREFIX):
                continue
            report = known.get(f.execution.execId, f).commissionReport
            out.append(self._fill(f, float(report.commission or 0.0)))
        return out

    async def current_time(self) -> datetime:
        """The broker's clock (reqCurrentTime), to compare with ours."""
        self._require_connected()
        value = await self._request("current time", self.ib.reqCurrentTimeAsync)
        return _aware(value) or self.clock()

    async def option_chain(self, symbol: str, *, spot: float, max_dte: int,
                           strikes_each_side: int) -> list[ChainQuote]:
        """reqSecDefOptParams for the chain's terms, one reqContractDetails per expiry for its contracts, then one
        snapshot quote for each option near spot: a request or two a day, paced (CHAIN_REQUESTS_PER_S) so the
        hedge's orders never queue behind it."""
        self._require_connected()
        stock = await self._stock(symbol)
        pacer = self._chain_pacer
        await pacer.wait()
        params = await self._request("option chain", lambda: self.ib.reqSecDefOptParamsAsync(
            symbol, "", "STK", stock.conId))
        chain = next((p for p in params if p.exchange == "SMART"), params[0] if params else None)
        if chain is None:
            raise BrokerError(f"IB lists no options on {symbol!r}")
        today = trading_date(self.clock())
        expiries = [e for e in sorted(chain.expirations)
                    if 0 <= (date(int(e[:4]), int(e[4:6]), int(e[6:8])) - today).days <= max_dte]
        strikes = sorted(float(k) for k in chain.strikes)
        near = {*[k for k in strikes if k <= spot][-strikes_each_side:],
                *[k for k in strikes if k > spot][:strikes_each_side]}
        wanted = []
        for expiry in expiries:  # one request lists an expiry's every contract (answers are not paced, requests are)
            await pacer.wait()
            details = await self._request("option contracts", lambda e=expiry: self.ib.reqContractDetailsAsync(
                self.lib.Option(symbol, e, exchange="SMART", tradingClass=chain.tradingClass,
                                multiplier=chain.multiplier, currency="USD")), lock=False)
            wanted += sorted((d.contract for d in details if d.contract.strike in near),
                             key=lambda c: (c.strike, c.right))

        async def quote(contract: Any) -> ChainQuote:
            async with self._chain_slots:
                await pacer.wait()
                try:
                    (ticker,) = await self._request("option quote", lambda: self.ib.reqTickersAsync(contract),
                                                    lock=False)
                except BrokerError as exc:  # one silent strike is an option without a quote, not a failed read
                    if not self._connected:
                        raise
                    log.warning("no snapshot for %s: %s", contract.localSymbol or contract.conId, exc)
                    return ChainQuote(core_contract(contract), math.nan, math.nan)
            return ChainQuote(core_contract(ticker.contract), _or_nan(price_or_none(ticker.bid)),
                              _or_nan(price_or_none(ticker.ask)))

        quotes = [asyncio.ensure_future(quote(c)) for c in wanted]
        try:
            return list(await asyncio.gather(*quotes))
        finally:
            for q in quotes:  # after a failure: the others are not waited for
                q.cancel()

    # ---- connecting ----------------------------------------------------------------------------------------------

    def _new_client(self) -> Any:
        ib = self.lib.IB()
        ib.pendingTickersEvent += self._on_tickers
        ib.orderStatusEvent += self._on_order_status
        ib.execDetailsEvent += self._on_exec_details
        ib.commissionReportEvent += self._on_commission
        ib.errorEvent += self._on_error
        ib.disconnectedEvent += self._on_disconnected
        ib.client.throttleStart += self._on_throttled
        return ib

    async def _connect_once(self) -> bool:
        """One connect attempt; False when the client id is in use (326), so the caller tries the next id."""
        loop = asyncio.get_running_loop()
        in_use: asyncio.Future[int] = loop.create_future()
        self._client_id_in_use = in_use
        task = loop.create_task(self.ib.connectAsync(self.host, self.port, clientId=self.client_id,
                                                     timeout=self.connect_timeout_s, account=self.account_setting))
        try:
            await asyncio.wait({task, in_use}, return_when=asyncio.FIRST_COMPLETED)
            if in_use.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError, TimeoutError):
                    await task
                self.ib.disconnect()
                return False
            task.result()
            return True
        except (OSError, TimeoutError, ConnectionError) as exc:
            raise BrokerError(f"cannot connect to IB at {self.host}:{self.port} as client {self.client_id}: "
                              f"{exc!r}") from exc
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            self._client_id_in_use = None
            if not in_use.done():
                in_use.cancel()

    async def _wait_link(self) -> None:
        self._link_up.clear()
        try:
            await asyncio.wait_for(self._link_up.wait(), LINK_WAIT_S)
        except TimeoutError as exc:
            raise BrokerError("TWS has lost its connection to IB (1100) and has not got it back") from exc

    def _on_connected(self) -> None:
        self._connected = True
        self._emit(BrokerStatus(True, self.clock(), f"client {self.client_id}"))

    def _drop_connection_state(self) -> None:
        """The client library forgets tickers and trades on disconnect; so do we (orderRefs and execIds stay)."""
        self._tickers.clear()
        for _, timer in self._pending_fills.values():
            timer.cancel()
        self._pending_fills.clear()

    def _on_disconnected(self) -> None:
        self._drop_connection_state()
        if self._connected:
            self._connected = False
            log.warning("connection to IB at %s:%s lost", self.host, self.port)
            self._emit(BrokerStatus(False, self.clock(), "connection to TWS lost"))

    # ---- events from the client library ------------------------------------------------------------------------

    def _on_error(self, req_id: int, code: int, message: str, contract: Any = None) -> None:
        if code == 326:
            if self._client_id_in_use is not None and not self._client_id_in_use.done():
                self._client_id_in_use.set_result(code)
        elif code in LINK_LOST_CODES:
            self._link_lost = True
            self._link_up.clear()
            if self._connected:
                self._connected = False
                log.warning("IB link lost (%d): %s", code, message)
                self._emit(BrokerStatus(False, self.clock(), f"{code}: {message}"))
        elif code in LINK_RESTORED_CODES:
            self._link_lost = False
            self._link_up.set()
            if code == 1101:
                self._tickers.clear()  # "data lost": the subscriptions are gone, the next subscribe() renews them
        elif code in NO_SUBSCRIPTION_CODES:
            self._switch_to_delayed(code, message)
        elif req_id > 0 and not 2100 <= code < 2200:
            self._order_errors[req_id] = f"{code}: {message}"
            log.warning("IB error %d for request/order %d: %s", code, req_id, message)

    def _switch_to_delayed(self, code: int, message: str) -> None:
        if self._delayed:
            return
        if self.mode == "live":
            log.error("no real-time market data subscription (%d: %s); live mode never hedges on delayed data",
                      code, message)
            return
        log.warning("no real-time market data subscription (%d): switching to delayed data (paper)", code)
        self._delayed = True
        self.ib.reqMarketDataType(3)
        for con_id in list(self._tickers):
            self._tickers[con_id] = self.ib.reqMktData(self._wanted[con_id], "", False, False)

    def _on_throttled(self) -> None:
        self.throttled += 1
        log.warning("IB pacing: over %d requests a second, the client library queues them (orders wait too)",
                    self.ib.client.MaxRequests)

    def _on_tickers(self, tickers: Any) -> None:
        now = self.clock()
        for t in tickers:
            c = t.contract
            bid, ask = price_or_none(t.bid), price_or_none(t.ask)
            if bid is None or ask is None or ask < bid:
                continue
            if c.secType == "STK":
                if c.symbol == self._underlying:
                    self._emit(Quote(c.symbol, bid, ask, price_or_none(t.last), now))
            elif c.secType == "OPT":
                g = t.modelGreeks
                iv = _finite(g.impliedVol) if g is not None else None
                greeks = None
                if g is not None:
                    parts = [iv, _finite(g.delta), _finite(g.gamma), _finite(g.theta), _finite(g.vega)]
                    if all(p is not None for p in parts) and iv is not None and iv > 0:
                        greeks = LegGreeks(*parts)  # type: ignore[arg-type]
                self._emit(OptionQuote(c.conId, bid, ask, now, iv if iv and iv > 0 else None, greeks))

    def _on_order_status(self, trade: Any) -> None:
        ref = trade.order.orderRef or ""
        if not ref.startswith(REF_PREFIX):
            return
        status = trade.orderStatus.status
        mapped = _STATUS.get(status, "submitted")
        if mapped is None:
            return
        message = status
        if status in ("Cancelled", "ApiCancelled", "Inactive"):
            error = self._order_errors.get(trade.order.orderId) or next(
                (f"{e.errorCode}: {e.message}" for e in reversed(trade.log) if getattr(e, "errorCode", 0)), "")
            if error and not error.startswith(("202:", "10148:")):
                mapped, message = "rejected", error
        filled = float(trade.orderStatus.filled or 0.0)
        avg = price_or_none(trade.orderStatus.avgFillPrice)
        self._emit(OrderUpdate(ref, mapped, filled, avg, self.clock(), message))
        if mapped == "filled":
            reported = sum(float(f.execution.shares) for f in trade.fills)
            if reported + 1e-9 < filled:
                self._later(EXEC_GRACE_S, self._recover_fills, f"{ref}: broker says filled {filled:g}, "
                                                               f"executions reported {reported:g}")

    def _on_exec_details(self, trade: Any, fill: Any) -> None:
        ex = fill.execution
        if not (ex.orderRef or "").startswith(REF_PREFIX) or ex.execId in self._emitted:
            return
        if ex.execId in self._pending_fills:
            return
        loop = asyncio.get_running_loop()
        timer = loop.call_later(COMMISSION_WAIT_S, self._flush_fill, ex.execId)
        self._pending_fills[ex.execId] = (fill, timer)

    def _on_commission(self, trade: Any, fill: Any, report: Any) -> None:
        pending = self._pending_fills.pop(report.execId, None)
        if pending is None:
            return
        pending[1].cancel()
        self._emit_fill(fill, float(report.commission or 0.0))

    def _flush_fill(self, exec_id: str) -> None:
        pending = self._pending_fills.pop(exec_id, None)
        if pending is not None:
            log.warning("no commission report for execution %s: passed on with commission 0", exec_id)
            self._emit_fill(pending[0], 0.0)

    def _emit_fill(self, fill: Any, commission: float) -> None:
        ex = fill.execution
        if ex.execId in self._emitted:
            return
        self._emitted[ex.execId] = True
        self._emit(self._fill(fill, commission))

    def _fill(self, fill: Any, commission: float) -> Fill:
        ex, c = fill.execution, fill.contract
        return Fill(ex.orderRef, ex.execId, "BUY" if ex.side == "BOT" else "SELL", float(ex.shares), float(ex.price),
                    commission, _aware(fill.time) or _aware(ex.time) or self.clock(), symbol=c.symbol or "",
                    sec_type=c.secType or "", con_id=int(c.conId or 0), account=ex.acctNumber or "")

    async def _recover_fills(self, why: str) -> None:
        """A fill the broker confirmed but whose execution report never came: ask for today's executions."""
        if not self._connected:
            return  # the reconnect's reconciliation reads the executions anyway
        log.warning("recovering executions: %s", why)
        try:
            fills = await self.executions()
        except (BrokerError, ConnectionError) as exc:
            log.error("execution recovery failed: %s", exc)
            return
        for f in fills:
            if f.exec_id in self._emitted:
                continue
            pending = self._pending_fills.pop(f.exec_id, None)
            if pending is not None:
                pending[1].cancel()
            self._emitted[f.exec_id] = True
            log.warning("execution %s of %s recovered by reqExecutions", f.exec_id, f.order_ref)
            self._emit(f)

    # ---- helpers ---------------------------------------------------------------------------------------------------

    async def _stock(self, symbol: str) -> Any:
        contract = self._stock_contracts.get(symbol)
        if contract is None:
            qualified = await self._qualify([self.lib.Stock(symbol, "SMART", "USD")])
            if not qualified:
                raise BrokerError(f"IB does not know the stock {symbol!r}")
            contract = self._stock_contracts[symbol] = qualified[0]
        return contract

    async def _option(self, contract: Contract) -> Any:
        qualified = await self._qualify([self.lib.Contract(conId=contract.con_id, exchange="SMART")])
        if not qualified:
            raise BrokerError(f"IB does not know the contract {contract.local_symbol or contract.con_id}")
        return qualified[0]

    async def _qualify(self, contracts: list[Any]) -> list[Any]:
        """qualifyContractsAsync, whichever client: ib_insync drops failures, ib_async puts None in their slot."""
        result = await self._request("contract details", lambda: self.ib.qualifyContractsAsync(*contracts), lock=False)
        qualified = [c for c in result if c is not None and c.conId]
        if len(qualified) != len(contracts):
            log.error("IB could not qualify %d of %d contracts", len(contracts) - len(qualified), len(contracts))
        return qualified

    async def _request(self, what: str, request: Callable[[], Any], *, lock: bool = True) -> Any:
        """Make one client request and await it with a deadline. Same-kind requests are serialised (the request is
        only made once the lock is held): the client libraries keep one future per kind (positions, open orders),
        so two at once would leave the first waiting forever."""
        async def run() -> Any:
            try:
                return await asyncio.wait_for(request(), REQUEST_TIMEOUT_S)
            except TimeoutError as exc:
                raise BrokerError(f"IB {what} request timed out after {REQUEST_TIMEOUT_S:g} s") from exc
            except ConnectionError as exc:
                raise BrokerError(f"IB {what} request failed: {exc}") from exc

        if not lock:
            return await run()
        async with self._locks.setdefault(what, asyncio.Lock()):
            return await run()

    def _later(self, delay_s: float, fn: Callable[[str], Any], arg: str) -> None:
        loop = asyncio.get_running_loop()

        def start() -> None:
            task = loop.create_task(fn(arg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.call_later(delay_s, start)

    def _emit(self, event: Event) -> None:
        if self._handler is not None:
            self._handler(event)

    def _require_connected(self) -> None:
        if not self._connected or self.ib is None or not self.ib.isConnected():
            raise BrokerError("not connected to IB")


_OPEN_STATUSES = frozenset({"PendingSubmit", "ApiPending", "PreSubmitted", "Submitted", "PendingCancel",
                            "ValidationError"})
_COMPLETED = {"Filled": "filled", "Cancelled": "cancelled", "ApiCancelled": "cancelled", "Inactive": "rejected"}


def core_contract(c: Any) -> Contract:
    """The core's Contract from an ib_insync / ib_async one (expiry YYYYMMDD, multiplier '100')."""
    expiry = None
    raw = (c.lastTradeDateOrContractMonth or "").split()[0] if c.lastTradeDateOrContractMonth else ""
    if len(raw) == 8:
        expiry = date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
    try:
        multiplier = int(float(c.multiplier)) if c.multiplier else 1
    except ValueError:
        multiplier = 1
    right = {"CALL": "C", "PUT": "P"}.get(c.right, c.right) or None
    return Contract(con_id=int(c.conId), symbol=c.symbol, sec_type=c.secType, right=right,
                    strike=float(c.strike) if c.secType == "OPT" else None, expiry=expiry, multiplier=multiplier,
                    local_symbol=c.localSymbol or c.symbol)


def _or_nan(price: float | None) -> float:
    return math.nan if price is None else price


def _aware(ts: Any) -> datetime | None:
    if not isinstance(ts, datetime):
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
