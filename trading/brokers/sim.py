"""SimBroker: the simulated market served in process, trading one account ("SIM") of the simulated account
(`trading.sim.account`, the same one the TWS-protocol simulator serves), which survives daemon restarts."""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

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
from trading.sim.account import SimAccount, SimExecution, SimOrder, stock_contract
from trading.sim.market import (
    MarketConfig,
    MarketModel,
    chain_expiries,
    chain_strikes,
    con_id_for,
    option_contract,
)

log = logging.getLogger(__name__)
OPTION_QUOTE_EVERY_S = 1.0
SIM_ACCOUNT = "SIM"
SIM_CLIENT_ID = 1  # SimBroker is one API client of the simulated account


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SimFaults:
    """Switches tests flip to make the market misbehave."""

    silent: bool = False  # no quotes at all
    reject_next: int = 0  # reject this many coming orders
    extra_latency_s: float = 0.0
    connect_hang: bool = False  # connect() never completes, like a TWS that accepts and then says nothing

    def apply(self, names: frozenset[str]) -> None:
        known = {"connect_hang", "silent", "reject_orders"}
        unknown = names - known
        if unknown:
            raise ConfigError("BIFROST_SIM_FAULTS", f"unknown fault(s) {sorted(unknown)}; known: {sorted(known)}")
        self.connect_hang = "connect_hang" in names
        self.silent = "silent" in names
        if "reject_orders" in names:
            self.reject_next = 10**9


@dataclass
class SimBroker:
    config: MarketConfig = field(default_factory=MarketConfig)
    seed: int = 7
    state_path: Path | None = None
    tick_s: float = 0.25
    speed: float = 1.0  # the price process runs this many times faster than the wall clock
    clock: Callable[[], datetime] = utc_now
    straddles: int = 10
    manual_shares: int = 100
    name: str = "sim"
    mode: str = "sim"
    account: str = SIM_ACCOUNT

    def __post_init__(self) -> None:
        self.model = MarketModel(self.config, self.seed)
        self.book = SimAccount(self.model, accounts=[self.account], clock=self.clock, state_path=self.state_path,
                               seed=self.seed, straddles=self.straddles, manual_shares=self.manual_shares)
        self.faults = SimFaults()
        self._handler: EventHandler | None = None
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._legs: list[Contract] = []

    # ---- Broker protocol ---------------------------------------------------------------------------------

    def set_event_handler(self, handler: EventHandler) -> None:
        self._handler = handler

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        if self.faults.connect_hang:
            await asyncio.Event().wait()
        self._connected = True
        self._task = asyncio.get_running_loop().create_task(self._run(), name="sim-market")
        self._emit(BrokerStatus(True, self.clock()))

    async def disconnect(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._connected:
            self._connected = False
            self._emit(BrokerStatus(False, self.clock(), "disconnected"))

    async def positions(self) -> list[PositionMark]:
        return [PositionMark(BrokerPosition(h.contract, h.qty, h.avg_price * h.contract.multiplier, self.account),
                             self.book.mark(h.contract))
                for _, h in self.book.positions(self.account) if h.qty != 0]

    async def account_summary(self) -> AccountSummary:
        v = self.book.values(self.account)
        return AccountSummary(self.account, v.net_liquidation_usd, v.buying_power_usd, v.maint_margin_usd, v.cash_usd,
                              self.clock(), available_funds=v.available_funds_usd)

    async def subscribe(self, symbol: str, legs: Sequence[Contract]) -> None:
        self._legs = list(legs)

    async def place_order(self, order: PlaceOrder) -> None:
        self._require_connected()
        if self.book.order_by_ref(order.order_ref) is not None:
            return  # idempotent: the same orderRef is the same order
        tracked = self.book.new_order(client_id=SIM_CLIENT_ID, order_id=self.book.take_order_id(),
                                      account=self.account, contract=order.contract or stock_contract(order.symbol),
                                      side=order.side,
                                      qty=order.qty, order_type=order.type, limit=order.limit,
                                      order_ref=order.order_ref)
        loop = asyncio.get_running_loop()
        if self.faults.reject_next > 0:
            self.faults.reject_next -= 1
            self.book.reject(tracked, "201: order rejected by the simulator")
            loop.call_soon(self._emit, OrderUpdate(order.order_ref, "rejected", 0.0, None, self.clock(),
                                                   "201: order rejected by the simulator"))
            return
        loop.call_soon(self._emit, OrderUpdate(order.order_ref, "submitted", 0.0, None, self.clock()))
        loop.call_later(self._latency_s(), self._try_fill, tracked)

    async def cancel_order(self, order_ref: str) -> None:
        self._require_connected()
        order = self.book.order_by_ref(order_ref)
        if order is None or not self.book.cancel(order):
            return
        self._emit(OrderUpdate(order_ref, "cancelled", order.filled, None, self.clock()))

    async def open_orders(self) -> list[OpenOrder]:
        return [OpenOrder(o.order_ref, o.side, o.qty, o.filled, "working" if o.filled == 0 else "partial", o.account,
                          o.contract.con_id, o.contract.symbol, o.contract.sec_type, o.perm_id)
                for o in self.book.open_orders() if o.account == self.account]

    async def completed_orders(self) -> list[CompletedOrder]:
        return [CompletedOrder(o.order_ref, o.side, o.qty, o.filled, o.status, o.account, o.contract.con_id,
                               o.contract.symbol, o.contract.sec_type, o.perm_id)
                for o in self.book.finished_orders() if o.account == self.account]

    async def executions(self) -> list[Fill]:
        return [self._fill(e) for e in self.book.executions if e.account == self.account]

    async def current_time(self) -> datetime:
        return self.clock()

    async def option_chain(self, symbol: str, *, spot: float, max_dte: int,
                           strikes_each_side: int) -> list[ChainQuote]:
        self._require_connected()
        if symbol != self.config.symbol:
            return []
        now = self.clock()
        today = trading_date(now)
        strikes = chain_strikes(self.config.spot0)
        below = [k for k in strikes if k <= spot][-strikes_each_side:]
        above = [k for k in strikes if k > spot][:strikes_each_side]
        out = []
        for expiry in chain_expiries(today):
            if (expiry - today).days > max_dte:
                break
            for strike in below + above:
                for right in ("C", "P"):
                    quote = self.model.option_quote(right, strike, expiry, now)
                    out.append(ChainQuote(option_contract(symbol, right, strike, expiry), quote.bid, quote.ask))
        return out

    # ---- the market --------------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        last_options = -math.inf
        while True:
            await asyncio.sleep(self.tick_s)
            now_t = loop.time()
            self.model.step(max(now_t - last, 1e-6) * self.speed)
            last = now_t
            self._fill_resting()
            if self.faults.silent:
                continue
            now = self.clock()
            q = self.model.stock_quote()
            self._emit(Quote(self.config.symbol, q.bid, q.ask, q.last, now))
            if now_t - last_options >= OPTION_QUOTE_EVERY_S:
                last_options = now_t
                for leg in self._legs:
                    oq = self.model.option_quote(leg.right or "C", leg.strike or 0.0, leg.expiry or now.date(), now)
                    g = oq.greeks
                    self._emit(OptionQuote(leg.con_id, oq.bid, oq.ask, now, oq.iv,
                                           LegGreeks(oq.iv, g.delta, g.gamma, g.theta, g.vega)))

    def _latency_s(self) -> float:
        return self.config.fill_latency_ms / 1000.0 + self.faults.extra_latency_s

    def _try_fill(self, order: SimOrder) -> None:
        if not self._connected:
            return  # the market sweep picks it up after the reconnect
        executions = self.book.try_fill(order)
        for execution in executions:
            self._emit(self._fill(execution))
        if executions and not order.is_open:
            self._emit(OrderUpdate(order.order_ref, "filled", order.filled, order.last_fill_price, self.clock()))

    def _fill_resting(self) -> None:
        for order in self.book.due_orders(self._latency_s()):
            if order.account == self.account:
                self._try_fill(order)

    def _fill(self, e: SimExecution) -> Fill:
        return Fill(e.order_ref, e.exec_id, e.side, e.shares, e.price, e.commission, e.ts, symbol=e.contract.symbol,
                    sec_type=e.contract.sec_type, con_id=e.contract.con_id, account=e.account)

    def _emit(self, event: Event) -> None:
        if self._handler is not None:
            self._handler(event)

    def _require_connected(self) -> None:
        if not self._connected:
            raise BrokerError("simulated broker is not connected")

    # ---- inspection for tests and the demo -----------------------------------------------------------------

    def sent_refs(self) -> list[str]:
        """The orderRef of every order that reached this broker, oldest first (rejected ones too): what a test checks
        to prove nothing left while it must not."""
        return [o.order_ref for o in self.book.orders.values() if o.account == self.account and o.order_ref]

    def holding_qty(self, symbol: str) -> float:
        h = self.book.holding(self.account, con_id_for(symbol, "STK"))
        return h.qty if h else 0.0
