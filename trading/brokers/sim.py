"""SimBroker: the simulated market served in process, with an account that survives daemon restarts."""
from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from trading.brokers.base import AccountSummary, EventHandler, OpenOrder, PositionMark
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
    Side,
)
from trading.errors import BrokerError, ConfigError
from trading.sim.market import (
    MarketConfig,
    MarketModel,
    average_cost_after,
    con_id_for,
    local_symbol_for,
    seed_account,
)

log = logging.getLogger(__name__)
STARTING_CASH_USD = 1_000_000.0
OPTION_QUOTE_EVERY_S = 1.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Holding:
    contract: Contract
    qty: float
    avg_price: float  # per share / per unit of the option's quote


@dataclass
class _Order:
    ref: str
    symbol: str
    side: Side
    qty: float
    type: str
    limit: float | None
    status: str = "submitted"
    filled: float = 0.0


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

    def __post_init__(self) -> None:
        self.model = MarketModel(self.config, self.seed)
        self.faults = SimFaults()
        self._handler: EventHandler | None = None
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._holdings: dict[int, _Holding] = {}
        self._orders: dict[str, _Order] = {}
        self._executions: list[Fill] = []
        self._cash = STARTING_CASH_USD
        self._legs: list[Contract] = []
        self._exec_seq = 0
        self._load_or_seed()

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
        now = self.clock()
        return [PositionMark(BrokerPosition(h.contract, h.qty, h.avg_price * h.contract.multiplier, "SIM"),
                             self._mark(h.contract, now))
                for h in self._holdings.values() if h.qty != 0]

    async def account_summary(self) -> AccountSummary:
        now = self.clock()
        value = sum(h.qty * h.contract.multiplier * (self._mark(h.contract, now) or h.avg_price)
                    for h in self._holdings.values())
        net_liq = self._cash + value
        margin = sum(abs(h.qty) * h.contract.multiplier * (self._mark(h.contract, now) or h.avg_price) * 0.25
                     for h in self._holdings.values() if h.contract.sec_type == "STK")
        return AccountSummary("SIM", net_liq, max(net_liq - margin, 0.0) * 4, margin, self._cash, now)

    async def subscribe(self, symbol: str, legs: Sequence[Contract]) -> None:
        self._legs = list(legs)

    async def place_order(self, order: PlaceOrder) -> None:
        self._require_connected()
        if order.order_ref in self._orders:
            return  # idempotent: the same orderRef is the same order
        tracked = _Order(order.order_ref, order.symbol, order.side, order.qty, order.type, order.limit)
        self._orders[order.order_ref] = tracked
        loop = asyncio.get_running_loop()
        if self.faults.reject_next > 0:
            self.faults.reject_next -= 1
            tracked.status = "rejected"
            loop.call_soon(self._emit, OrderUpdate(order.order_ref, "rejected", 0.0, None, self.clock(),
                                                   "201: order rejected by the simulator"))
            return
        loop.call_soon(self._emit, OrderUpdate(order.order_ref, "submitted", 0.0, None, self.clock()))
        latency = self.config.fill_latency_ms / 1000.0 + self.faults.extra_latency_s
        loop.call_later(latency, self._try_fill, tracked)

    async def cancel_order(self, order_ref: str) -> None:
        self._require_connected()
        order = self._orders.get(order_ref)
        if order is None or order.status in ("filled", "cancelled", "rejected"):
            return
        order.status = "cancelled"
        self._emit(OrderUpdate(order_ref, "cancelled", order.filled, None, self.clock()))

    async def open_orders(self) -> list[OpenOrder]:
        return [OpenOrder(o.ref, o.side, o.qty, o.filled, o.status) for o in self._orders.values()
                if o.status == "submitted"]

    async def executions(self) -> list[Fill]:
        return list(self._executions)

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

    def _try_fill(self, order: _Order) -> None:
        if order.status != "submitted" or not self._connected:
            return
        quote = self.model.stock_quote()
        price = self.model.fills.fill_price(order.side, order.qty - order.filled, order.type,  # type: ignore[arg-type]
                                            order.limit, quote)
        if price is None:
            return  # a resting limit order: retried at every tick
        now = self.clock()
        for piece in self.model.fills.split_fills(order.qty - order.filled):
            self._exec_seq += 1
            commission = self.model.fills.commission_usd(piece, price)
            fill = Fill(order.ref, f"sim.{self.seed}.{now.timestamp():.0f}.{self._exec_seq}", order.side,
                        float(piece), price, commission, now)
            order.filled += piece
            self._book(order.symbol, order.side, piece, price, commission)
            self._executions.append(fill)
            self._emit(fill)
        order.status = "filled"
        self._emit(OrderUpdate(order.ref, "filled", order.filled, price, now))
        self._save()

    def _fill_resting(self) -> None:
        for order in list(self._orders.values()):
            if order.status == "submitted" and order.type == "limit":
                self._try_fill(order)

    def _book(self, symbol: str, side: Side, qty: float, price: float, commission: float) -> None:
        con_id = con_id_for(symbol, "STK")
        holding = self._holdings.get(con_id)
        if holding is None:
            contract = Contract(con_id, symbol, "STK", local_symbol=local_symbol_for(symbol, "STK"))
            holding = self._holdings[con_id] = _Holding(contract, 0.0, price)
        signed = qty if side == "BUY" else -qty
        holding.qty, holding.avg_price = average_cost_after(holding.qty, holding.avg_price, signed, price)
        self._cash -= signed * price + commission

    def _mark(self, contract: Contract, now: datetime) -> float | None:
        if contract.symbol != self.config.symbol:
            return None  # nothing prices other symbols in this model
        if contract.sec_type == "STK":
            return self.model.stock_quote().mid
        return self.model.option_quote(contract.right or "C", contract.strike or 0.0,
                                       contract.expiry or now.date(), now).mid

    def _emit(self, event: Event) -> None:
        if self._handler is not None:
            self._handler(event)

    def _require_connected(self) -> None:
        if not self._connected:
            raise BrokerError("simulated broker is not connected")

    # ---- persistence: the simulated account outlives the daemon, as a real broker's would ------------------

    def _load_or_seed(self) -> None:
        if self.state_path is not None and self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            self._cash = state["cash"]
            self.model.set_spot(state["spot"])
            self._exec_seq = state.get("exec_seq", 0)
            for h in state["holdings"]:
                c = h["contract"]
                c["expiry"] = date.fromisoformat(c["expiry"]) if c["expiry"] else None
                self._holdings[c["con_id"]] = _Holding(Contract(**c), h["qty"], h["avg_price"])
            for o in state.get("orders", []):
                self._orders[o["ref"]] = _Order(**o)
            for f in state.get("executions", []):
                f["ts"] = datetime.fromisoformat(f["ts"])
                self._executions.append(Fill(**f))
            return
        for p in seed_account(self.config, self.clock(), straddles=self.straddles, manual_shares=self.manual_shares):
            self._holdings[p.con_id] = _Holding(p.contract(), p.qty, p.avg_cost)
            self._cash -= p.qty * p.multiplier * p.avg_cost
        self._save()

    def _save(self) -> None:
        if self.state_path is None:
            return
        state: dict[str, Any] = {
            "cash": self._cash,
            "spot": self.model.spot,
            "exec_seq": self._exec_seq,
            "holdings": [{"contract": _contract_json(h.contract), "qty": h.qty, "avg_price": h.avg_price}
                         for h in self._holdings.values()],
            "orders": [asdict(o) for o in self._orders.values()],
            "executions": [{**asdict(f), "ts": f.ts.isoformat()} for f in self._executions[-1000:]],
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_path)

    # ---- inspection for tests and the demo -----------------------------------------------------------------

    def holding_qty(self, symbol: str) -> float:
        h = self._holdings.get(con_id_for(symbol, "STK"))
        return h.qty if h else 0.0


def _contract_json(c: Contract) -> dict[str, Any]:
    d = asdict(c)
    d["expiry"] = c.expiry.isoformat() if c.expiry else None
    return d
