"""The backtest replay: ticks through `trading.core.Engine` one event at a time with a synchronous simulated
execution, the per-tick trace both replay paths produce, and the result.json of DESIGN §7.

Event model (the fast path in `backtests.fast` mirrors it exactly):
- Before tick 0: the straddle is the engine's managed book (its seed), then BrokerStatus(connected),
  PositionsSynced (avg cost = the straddle's model value at tick 0), Reconciled and, when tick 0 has an IV, the
  legs' option quotes, so the engine's first full mark (where its daily P&L starts) prices them at that IV.
- Tick i at time t_i: Quote(bid, ask); then, when the tick has an IV, one OptionQuote per leg priced by
  Black-Scholes at the tick's mid and IV (bid = ask = model value, IV as the broker's), so the engine's greeks and
  option marks use the tick's IV; without an `iv` column the engine prices at `fallback_vol`.
- A PlaceOrder at time t is acknowledged at t and fills at d = t + latency at the quote prevailing at d (the last
  tick at or before d): causal by construction, price and commission from the sim `FillModel`. Market orders fill
  whole; a limit order fills when marketable, else rests and is retried at each later tick, with Timer events so
  the engine's working timeout can cancel it (limit orders always run on this per-event path).
- No Timer events otherwise: each quote is evaluated at its own time (quote age 0), so the data is stale only
  when a fill is evaluated `stale_quote_ms` or more after the last quote (a latency at least that long).

Per tick the trace keeps the tick's decision: the engine's last hedge evaluation during [t_i, t_i+1) (`hedge` or
`blocked` with every reason), else, when a hedge was wanted (|net delta| at or beyond the hedge threshold) while
the engine did not evaluate because it was halted or had an order in flight, the gates it stands behind
(`risk_halt`, `order_in_flight`, ...), else `none`. `blocks` in result.json counts blocked ticks per reason. The engine never evaluates gates while it
is `safe` either; a fill arriving `stale_quote_ms` or more after the last quote (latency at least that long)
makes it so, which is how `data_stale` can show up in a replay.
"""
from __future__ import annotations

import csv
import math
import time as timer
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from backtests.data import TickData, datetime_from_us, iso
from trading.core.calendar import ET, AlwaysOpenCalendar, TradingCalendar, trading_date
from trading.core.engine import ENGINE_VERSION, HEDGE_KEY, DecisionView, Engine, EngineSeed, valid_quote
from trading.core.events import (
    Action,
    BrokerPosition,
    BrokerStatus,
    CancelOrder,
    Contract,
    Control,
    Event,
    Fill,
    OptionQuote,
    OrderUpdate,
    PlaceOrder,
    PositionsSynced,
    Quote,
    Reconciled,
    Side,
    Timer,
)
from trading.core.fsm import TradingState
from trading.core.gates import GATE_REASONS, evaluate_gates, reasons_mask, reasons_of
from trading.core.greeks import bs_price, year_fraction
from trading.core.params import StrategyParams
from trading.core.rules import STATE_CODE, STATES
from trading.errors import ConfigError
from trading.sim.market import FillModel, MarketConfig, con_id_for, first_friday_on_or_after, local_symbol_for

FloatArray = npt.NDArray[np.float64]
MULTIPLIER = 100
DEFAULT_STRADDLES = 10
EQUITY_POINTS = 1000
PRICE_POINTS = 1000
MAX_HEDGE_MARKERS = 5000
ORDER_REF_PREFIX = "bt"
DECISION_NONE, DECISION_HEDGE, DECISION_BLOCKED = 0, 1, 2
# What a daily-loss halt does in a replay (a replay option, not a strategy parameter: params hashes stay put).
# Live, only an operator's reset_halt ends a halt; a replay has no operator, so by default it resets the halt at
# the next trading day's first tick, as an operator would the next morning. "stop" keeps it for the rest of the run.
HALT_POLICIES = ("resume_next_day", "stop")
DECISION_NAMES = ("none", "hedge", "blocked")
ProgressFn = Callable[[float], None]  # fraction 0..1 done; may raise to stop the run


class Cancelled(Exception):  # noqa: N818  a stop request, not an error
    """Raised by a progress callback to stop a run (the operator cancelled it)."""


# ---- the starting position ---------------------------------------------------------------------------------


def parse_start_position(text: str | None) -> int:
    """`straddle:N` (N >= 1) → N; None or empty → the default of 10 straddles."""
    if text is None or text == "":
        return DEFAULT_STRADDLES
    kind, _, count = text.partition(":")
    if kind != "straddle" or not count.isdigit() or int(count) < 1 or int(count) > 100_000:
        raise ConfigError("start_position", f"expected 'straddle:N' with N a whole number >= 1, got {text!r}")
    return int(count)


def _strike_step(spot: float) -> float:
    return 0.5 if spot < 25 else 1.0 if spot < 200 else 5.0


def _first_friday_in(day0: date, min_dte: int, max_dte: int) -> date:
    """The first Friday with DTE in min_dte..max_dte, else the day at min_dte."""
    earliest = day0 + timedelta(days=min_dte)
    friday = first_friday_on_or_after(earliest)
    return friday if (friday - day0).days <= max_dte else earliest


@dataclass(frozen=True)
class Structure:
    """The long straddle the replay starts with: N calls and N puts, one strike, one expiry."""

    straddles: int
    strike: float
    expiry: date
    expiry_us: int  # 16:00 America/New_York on the expiry date, as UTC microseconds
    call: Contract
    put: Contract
    iv0: float  # the IV the cost basis was priced at
    call_cost: float  # per share: Black-Scholes at tick 0 (mid, IV of tick 0 else fallback_vol)
    put_cost: float

    @property
    def qty(self) -> float:
        return float(self.straddles)

    def positions(self) -> tuple[BrokerPosition, ...]:
        # IB reports an option's avgCost per contract: price x multiplier.
        return (BrokerPosition(self.call, self.qty, self.call_cost * MULTIPLIER, "BT"),
                BrokerPosition(self.put, self.qty, self.put_cost * MULTIPLIER, "BT"))

    def engine_cost(self, per_share: float) -> float:
        """The cost basis the engine books at adoption (avg cost per contract / multiplier)."""
        avg_cost = per_share * MULTIPLIER
        return avg_cost / MULTIPLIER if avg_cost else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "straddle", "straddles": self.straddles, "strike": self.strike,
                "expiry": self.expiry.isoformat(), "iv0": self.iv0, "call_cost": self.call_cost,
                "put_cost": self.put_cost, "multiplier": MULTIPLIER}


def build_structure(data: TickData, params: StrategyParams, straddles: int) -> Structure:
    """N ATM straddles: strike = the first mid on the strike grid (or the mid itself when the grid is outside
    `atm_band_frac`), expiry = the first Friday with DTE in min_dte..max_dte from the first tick (else min_dte)."""
    t0 = data.ts(0)
    spot = float(data.mid[0])
    day0 = trading_date(t0)
    step = _strike_step(spot)
    strike = round(spot / step) * step
    if abs(strike / spot - 1.0) > params.atm_band_frac:
        strike = spot
    expiry = _first_friday_in(day0, params.min_dte, params.max_dte)
    iv0 = float(data.iv[0]) if math.isfinite(data.iv[0]) else params.fallback_vol
    t_years = year_fraction(expiry, t0)
    r, q = params.risk_free_rate, params.dividend_yield
    symbol = params.underlying

    def contract(right: str) -> Contract:
        return Contract(con_id_for(symbol, "OPT", right, strike, expiry, MULTIPLIER), symbol, "OPT",  # type: ignore[arg-type]
                        right, strike, expiry, MULTIPLIER,  # type: ignore[arg-type]
                        local_symbol_for(symbol, "OPT", right, strike, expiry))  # type: ignore[arg-type]

    expires_at = datetime.combine(expiry, time(16, 0), tzinfo=ET).astimezone(UTC)
    return Structure(
        straddles=straddles, strike=float(strike), expiry=expiry,
        expiry_us=(expires_at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1),
        call=contract("C"), put=contract("P"), iv0=iv0,
        call_cost=bs_price("C", spot, strike, t_years, r, q, iv0),
        put_cost=bs_price("P", spot, strike, t_years, r, q, iv0),
    )


# ---- execution -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Execution:
    """How orders fill: latency from the sim market config, price and commission from its FillModel."""

    latency_ms: int = MarketConfig.fill_latency_ms
    commission_per_share: float = MarketConfig.commission_per_share
    min_commission_usd: float = MarketConfig.min_commission_usd

    @property
    def latency_us(self) -> int:
        return int(self.latency_ms) * 1000

    def fill_model(self) -> FillModel:
        config = MarketConfig(fill_latency_ms=self.latency_ms, commission_per_share=self.commission_per_share,
                              min_commission_usd=self.min_commission_usd)
        # partial_fill_prob is 0: the generator is never drawn from, the seed does not matter.
        return FillModel(config, np.random.Generator(np.random.PCG64(0)))

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "commission_per_share": self.commission_per_share,
                "min_commission_usd": self.min_commission_usd, "fill": "at the touch at t + latency"}


# ---- the trace: what both paths produce, tick by tick ---------------------------------------------------------


@dataclass
class Trace:
    """One row per tick (state at the end of the tick's interval) plus the list of fills."""

    decision: npt.NDArray[np.int8]
    reasons: npt.NDArray[np.int64]
    intent_shares: FloatArray
    order_shares: FloatArray
    net_delta_shares: FloatArray
    hedge_shares: FloatArray
    hedge_qty: FloatArray  # the P&L ledger's hedge position
    hedge_avg: FloatArray
    hedge_realized: FloatArray
    hedge_mark: FloatArray
    call_mark: FloatArray
    put_mark: FloatArray
    commissions: FloatArray
    state: npt.NDArray[np.int8]
    fill_row: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fill_us: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    order_us: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    fill_qty: FloatArray = field(default_factory=lambda: np.zeros(0))
    fill_price: FloatArray = field(default_factory=lambda: np.zeros(0))
    fill_commission: FloatArray = field(default_factory=lambda: np.zeros(0))
    path: str = "per_event"

    ROW_FIELDS = ("decision", "reasons", "intent_shares", "order_shares", "net_delta_shares", "hedge_shares",
                  "hedge_qty", "hedge_avg", "hedge_realized", "hedge_mark", "call_mark", "put_mark", "commissions",
                  "state")
    FILL_FIELDS = ("fill_row", "fill_us", "order_us", "fill_qty", "fill_price", "fill_commission")

    @classmethod
    def empty(cls, n: int) -> Trace:
        f = lambda: np.full(n, math.nan)  # noqa: E731
        return cls(np.zeros(n, dtype=np.int8), np.zeros(n, dtype=np.int64), f(), f(), f(), f(), f(), f(), f(), f(),
                   f(), f(), f(), np.zeros(n, dtype=np.int8))

    def mismatch(self, other: Trace) -> str | None:
        """The first difference from `other` (row and column), or None when identical (NaN equals NaN)."""
        for name in self.ROW_FIELDS + self.FILL_FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            if a.shape != b.shape:
                return f"{name}: {a.shape} vs {b.shape}"
            same = (a == b) | (np.isnan(a) & np.isnan(b)) if a.dtype.kind == "f" else a == b
            if not same.all():
                row = int(np.flatnonzero(~same)[0])
                return f"{name} differs first at row {row}: {a[row]!r} vs {b[row]!r}"
        return None


def calendar_for(params: StrategyParams) -> TradingCalendar | AlwaysOpenCalendar:
    return TradingCalendar(params.exchange) if params.trading_hours_only else AlwaysOpenCalendar()


@dataclass
class _Order:
    ref: str
    side: Side
    qty: float
    order_type: str
    limit: float | None
    placed_us: int
    due_us: int
    arrived: bool = False


class _EventReplay:
    """Feeds the engine and plays the broker: acks at once, fills at t + latency at the prevailing quote."""

    def __init__(self, data: TickData, params: StrategyParams, structure: Structure, execution: Execution,
                 halt_policy: str = HALT_POLICIES[0]) -> None:
        self.data = data
        self.resume_next_day = halt_policy == "resume_next_day"
        self.halted_on: date | None = None
        self.params = params
        self.structure = structure
        self.execution = execution
        self.fills = execution.fill_model()
        self.t0 = data.ts(0)
        # The straddle is the engine's managed book from the start (as after a first run's adoption), so the
        # option quotes of tick 0 can reach it before the first stock quote: the first full mark, from which the
        # engine counts the day's P&L, then prices the legs at the data's IV, not at fallback_vol.
        seed = EngineSeed(managed=((structure.call, structure.qty), (structure.put, structure.qty)))
        self.engine = Engine(params, ORDER_REF_PREFIX, calendar_for(params), now=self.t0, seed=seed,
                             record_decisions=False)
        self.pending: list[_Order] = []
        self.fill_rows: list[tuple[int, int, int, float, float, float]] = []
        self.exec_seq = 0
        self.row_decision: DecisionView | None = None
        self._seen: DecisionView | None = None
        self.row = 0
        self.quote_bid = math.nan
        self.quote_ask = math.nan

    def feed(self, event: Event, now: datetime) -> None:
        actions = self.engine.on_event(event, now)
        if self.engine.halt_reason and self.halted_on is None:
            self.halted_on = self.engine.counters.trading_date
        decision = self.engine.last_decision
        if decision is not None and decision is not self._seen:
            self._seen = self.row_decision = decision
        self._act(actions, now)

    def _act(self, actions: list[Action], now: datetime) -> None:
        for action in actions:
            if isinstance(action, PlaceOrder):
                now_us = (now - _EPOCH) // _US
                self.pending.append(_Order(action.order_ref, action.side, action.qty, action.type, action.limit,
                                           now_us, now_us + self.execution.latency_us))
                self.feed(OrderUpdate(action.order_ref, "submitted", 0.0, None, now), now)
            elif isinstance(action, CancelOrder):
                order = next((o for o in self.pending if o.ref == action.order_ref), None)
                if order is not None:
                    self.pending.remove(order)
                    self.feed(OrderUpdate(order.ref, "cancelled", 0.0, None, now, "cancelled by the engine"), now)

    def start(self) -> None:
        t0 = self.t0
        self.feed(BrokerStatus(True, t0), t0)
        self.feed(PositionsSynced(self.structure.positions(), t0), t0)
        self.feed(Reconciled((), t0), t0)
        self._option_quotes(0, t0)

    def _option_quotes(self, i: int, now: datetime) -> None:
        """One OptionQuote per leg at Black-Scholes for the tick's mid and IV (none when the tick has no IV)."""
        d, p, s = self.data, self.params, self.structure
        iv = float(d.iv[i])
        if not math.isfinite(iv):
            return
        mid = (float(d.bid[i]) + float(d.ask[i])) / 2.0
        t_years = year_fraction(s.expiry, now)
        for contract in (s.call, s.put):
            price = bs_price(contract.right or "C", mid, s.strike, t_years, p.risk_free_rate, p.dividend_yield, iv)
            if price > 0.0:
                self.feed(OptionQuote(contract.con_id, price, price, now, iv), now)

    def tick(self, i: int, next_us: int | None) -> None:
        d, p = self.data, self.params
        self.row = i
        self.row_decision = None
        ts_us = int(d.ts_us[i])
        now = datetime_from_us(ts_us)
        if self.resume_next_day and self.halted_on is not None and trading_date(now) > self.halted_on:
            self.halted_on = None
            self.feed(Control("reset_halt", actor="replay", reason="halt_policy resume_next_day"), now)
        bid, ask = float(d.bid[i]), float(d.ask[i])
        if valid_quote(bid, ask):  # a crossed or empty row is no market: fills keep the last real quote
            self.quote_bid, self.quote_ask = bid, ask
        last = float(d.last[i])
        self.feed(Quote(p.underlying, bid, ask, last if math.isfinite(last) else None, now), now)
        self._option_quotes(i, now)
        self._execute(ts_us, next_us)

    def _execute(self, ts_us: int, next_us: int | None) -> None:
        for order in list(self.pending):
            if order not in self.pending:
                continue
            if not order.arrived:
                if next_us is not None and order.due_us >= next_us:
                    continue  # still on its way: it arrives during a later tick's interval
                order.arrived = True
                self._try_fill(order, order.due_us)
            else:
                now = datetime_from_us(ts_us)
                self.feed(Timer(now), now)  # resting limit order: the engine may time it out and cancel
                if order in self.pending:
                    self._try_fill(order, ts_us)

    def _try_fill(self, order: _Order, at_us: int) -> None:
        quote = _Touch(self.quote_bid, self.quote_ask)
        price = self.fills.fill_price(order.side, order.qty, order.order_type, order.limit, quote)  # type: ignore[arg-type]
        if price is None:
            return
        commission = self.fills.commission_usd(order.qty, price)
        self.exec_seq += 1
        now = datetime_from_us(at_us)
        self.pending.remove(order)
        signed = order.qty if order.side == "BUY" else -order.qty
        self.fill_rows.append((self.row, at_us, order.placed_us, signed, price, commission))
        self.feed(Fill(order.ref, f"{ORDER_REF_PREFIX}.{self.exec_seq}", order.side, order.qty, price, commission,
                       now), now)

    def capture(self, trace: Trace, i: int) -> None:
        e, p = self.engine, self.params
        decision = self.row_decision
        if decision is not None:
            code = DECISION_HEDGE if decision.allowed else DECISION_BLOCKED if decision.reasons else DECISION_NONE
            trace.decision[i] = code
            trace.reasons[i] = reasons_mask(decision.reasons)
            trace.intent_shares[i] = decision.intent_shares
            trace.order_shares[i] = decision.order_shares
            trace.net_delta_shares[i] = decision.net_delta_shares
        else:
            trace.net_delta_shares[i] = e.net_delta_shares
            if (e.halt_reason or self.pending or e.state == TradingState.SAFE) and e.classification.delta in ("D2", "D3"):
                # The engine stood still (halted, waiting for its order, or safe): what stands in its way.
                result = evaluate_gates(e.gate_state(e.now), p, e.counters, e.now)
                trace.decision[i] = DECISION_BLOCKED if result.reasons else DECISION_NONE
                trace.reasons[i] = reasons_mask(result.reasons)
                trace.intent_shares[i] = result.size.intent_shares
                trace.order_shares[i] = result.size.order_shares
        hedge = e.pnl.holdings[HEDGE_KEY]
        trace.hedge_shares[i] = e.book.hedge_shares
        trace.hedge_qty[i] = hedge.qty
        trace.hedge_avg[i] = hedge.avg_cost
        trace.hedge_realized[i] = hedge.realized_usd
        trace.hedge_mark[i] = math.nan if hedge.mark is None else hedge.mark
        call = e.pnl.holdings.get(str(self.structure.call.con_id))
        put = e.pnl.holdings.get(str(self.structure.put.con_id))
        trace.call_mark[i] = math.nan if call is None or call.mark is None else call.mark
        trace.put_mark[i] = math.nan if put is None or put.mark is None else put.mark
        trace.commissions[i] = e.pnl.commissions_usd
        trace.state[i] = STATE_CODE[e.state]


@dataclass(frozen=True)
class _Touch:
    bid: float
    ask: float


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def check_structure_adoptable(data: TickData, params: StrategyParams, structure: Structure) -> None:
    """Refuse a run whose straddle the engine would not adopt (it would never hedge: a silent no-op)."""
    dte = (structure.expiry - trading_date(data.ts(0))).days
    if not params.min_dte <= dte <= params.max_dte:
        raise ConfigError("min_dte", f"no expiry with DTE in {params.min_dte}..{params.max_dte} for the straddle")


def run_per_event(data: TickData, params: StrategyParams, structure: Structure, execution: Execution,
                  *, halt_policy: str = HALT_POLICIES[0], progress: ProgressFn | None = None) -> Trace:
    """Drive the engine one event at a time over every tick; see the module docstring for the event model."""
    n = len(data)
    trace = Trace.empty(n)
    replay = _EventReplay(data, params, structure, execution, halt_policy)
    replay.start()
    step = max(1, n // 100)
    for i in range(n):
        replay.tick(i, int(data.ts_us[i + 1]) if i + 1 < n else None)
        replay.capture(trace, i)
        if progress is not None and (i + 1) % step == 0:
            progress((i + 1) / n)
    if replay.fill_rows:
        rows = list(zip(*replay.fill_rows, strict=True))
        trace.fill_row = np.array(rows[0], dtype=np.int64)
        trace.fill_us = np.array(rows[1], dtype=np.int64)
        trace.order_us = np.array(rows[2], dtype=np.int64)
        trace.fill_qty = np.array(rows[3], dtype=np.float64)
        trace.fill_price = np.array(rows[4], dtype=np.float64)
        trace.fill_commission = np.array(rows[5], dtype=np.float64)
    trace.path = "per_event"
    return trace


# ---- results ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Equity:
    """Per tick, in USD since the start: options, hedge, commissions and their total (the engine's own ledger)."""

    options: FloatArray
    hedge: FloatArray
    commissions: FloatArray
    total: FloatArray


def equity_of(trace: Trace, structure: Structure) -> Equity:
    qty = structure.qty
    call_cost = structure.engine_cost(structure.call_cost)
    put_cost = structure.engine_cost(structure.put_cost)
    with np.errstate(invalid="ignore"):
        u_hedge = np.where((trace.hedge_qty == 0) | np.isnan(trace.hedge_mark), 0.0,
                           trace.hedge_qty * (trace.hedge_mark - trace.hedge_avg) * 1.0)
    u_call = np.where(np.isnan(trace.call_mark), 0.0, qty * (trace.call_mark - call_cost) * MULTIPLIER)
    u_put = np.where(np.isnan(trace.put_mark), 0.0, qty * (trace.put_mark - put_cost) * MULTIPLIER)
    options = u_call + u_put
    hedge = trace.hedge_realized + u_hedge
    # The engine's own order of summation (realized + unrealized - commissions), so `total` is what it halts on.
    total = trace.hedge_realized + ((u_hedge + u_call) + u_put) - trace.commissions
    return Equity(options, hedge, trace.commissions, total)


def forward_filled(values: FloatArray) -> FloatArray:
    """NaNs replaced by the last value before them (leading NaNs stay)."""
    seen = ~np.isnan(values)
    last = np.where(seen, np.arange(len(values)), -1)
    np.maximum.accumulate(last, out=last)
    return np.where(last >= 0, values[np.maximum(last, 0)], np.nan)


def _sample(n: int, points: int) -> npt.NDArray[np.int64]:
    if n <= points:
        return np.arange(n, dtype=np.int64)
    idx = np.linspace(0, n - 1, points).round().astype(np.int64)
    return np.unique(idx)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class FillParts:
    """The fills of a trace's chunks, copied as they come (a chunk's buffers are reused) and joined at the end."""

    def __init__(self) -> None:
        self._kept: list[list[npt.NDArray[Any]]] = [[] for _ in Trace.FILL_FIELDS]

    def add(self, part: Trace) -> None:
        for kept, name in zip(self._kept, Trace.FILL_FIELDS, strict=True):
            kept.append(getattr(part, name).copy())

    def joined(self) -> dict[str, npt.NDArray[Any]]:
        return {name: np.concatenate(kept) for kept, name in zip(self._kept, Trace.FILL_FIELDS, strict=True)}


class TraceParts:
    """A trace's chunks (`run_fast`'s on_chunk, in order) gathered into the whole trace."""

    def __init__(self, n: int) -> None:
        self._trace = Trace.empty(n)
        self._fills = FillParts()

    def add(self, start: int, part: Trace) -> None:
        stop = start + len(part.decision)
        for name in Trace.ROW_FIELDS:
            getattr(self._trace, name)[start:stop] = getattr(part, name)
        self._fills.add(part)
        self._trace.path = part.path

    def trace(self) -> Trace:
        for name, values in self._fills.joined().items():
            setattr(self._trace, name, values)
        return self._trace


class Summary:
    """result.json (DESIGN §7) from a replay's trace, fed in order a chunk at a time (`add`), so a long replay never
    holds its per-tick trace: the curves' sample rows, each day's closing row and counts, the running drawdown, the
    fills and the last row are all it keeps. `summarise` is the one-chunk case."""

    def __init__(self, data: TickData, params: StrategyParams, structure: Structure, execution: Execution) -> None:
        from backtests.calendars import et_days

        self.data, self.params, self.structure, self.execution = data, params, structure, execution
        n = len(data)
        self.sample, self.price_sample = _sample(n, EQUITY_POINTS), _sample(n, PRICE_POINTS)
        self.curve = np.full((4, len(self.sample)), math.nan)  # total, options, hedge, commissions
        self.peak, self.drawdown = -math.inf, 0.0
        self.day0, self.bounds = et_days(int(data.ts_us[0]), int(data.ts_us[-1]))
        days = len(self.bounds)
        self.day_close, self.day_mid = np.full(days, math.nan), np.full(days, math.nan)
        self.day_ticks, self.day_hedges, self.day_blocked = (np.zeros(days, np.int64) for _ in range(3))
        self.reason_counts = np.zeros(len(GATE_REASONS), np.int64)
        self.halted = False
        self.fills = FillParts()
        self.last: dict[str, float] = {}
        self.path = ""

    def add(self, start: int, part: Trace) -> None:
        rows = len(part.decision)
        stop = start + rows
        eq = equity_of(part, self.structure)
        lo, hi = np.searchsorted(self.sample, (start, stop))
        at = self.sample[lo:hi] - start
        self.curve[:, lo:hi] = eq.total[at], eq.options[at], eq.hedge[at], eq.commissions[at]
        running = np.maximum(np.maximum.accumulate(eq.total), self.peak)
        self.drawdown = max(self.drawdown, float(np.max(running - eq.total)))
        self.peak = float(running[-1])
        days = len(self.bounds)
        day = np.searchsorted(self.bounds, self.data.ts_us[start:stop], side="right") - 1
        hedge, blocked = part.decision == DECISION_HEDGE, part.decision == DECISION_BLOCKED
        self.day_ticks += np.bincount(day, minlength=days)
        self.day_hedges += np.bincount(day[hedge], minlength=days)
        self.day_blocked += np.bincount(day[blocked], minlength=days)
        ends = np.flatnonzero(np.diff(day, append=-1))  # each day's last row in this chunk: the latest wins
        self.day_close[day[ends]] = eq.total[ends]
        self.day_mid[day[ends]] = (self.data.bid[start + ends] + self.data.ask[start + ends]) / 2.0
        masks = part.reasons[blocked]
        self.reason_counts += [int(((masks >> i) & 1).sum()) for i in range(len(GATE_REASONS))]
        self.halted = self.halted or bool((part.state == STATE_CODE[TradingState.HALTED]).any())
        self.fills.add(part)
        self.last = {"total": float(eq.total[-1]), "options": float(eq.options[-1]), "hedge": float(eq.hedge[-1]),
                     "commissions": float(eq.commissions[-1]), "hedge_shares": float(part.hedge_shares[-1]),
                     "net_delta_shares": float(part.net_delta_shares[-1]), "state": float(part.state[-1])}
        self.path = part.path

    def _daily(self) -> list[dict[str, Any]]:
        """Per US/Eastern trading date with ticks: closing equity, the day's P&L, hedges, blocked ticks, close mid."""
        out: list[dict[str, Any]] = []
        previous = 0.0
        for k in np.flatnonzero(self.day_ticks):
            close = float(self.day_close[k])
            out.append({"date": (self.day0 + timedelta(days=int(k))).isoformat(), "pnl_usd": close - previous,
                        "equity_usd": close, "hedges": int(self.day_hedges[k]),
                        "blocked_ticks": int(self.day_blocked[k]), "close_mid": float(self.day_mid[k]),
                        "ticks": int(self.day_ticks[k])})
            previous = close
        return out

    def result(self) -> dict[str, Any]:
        """Every Contract key plus chartable extras; deterministic except `timing` (added by the caller)."""
        data, last = self.data, self.last
        fills = self.fills.joined()
        fill_row, fill_us, fill_qty, fill_price = (fills[k] for k in ("fill_row", "fill_us", "fill_qty", "fill_price"))
        daily = self._daily()
        pnl_days = np.array([d["pnl_usd"] for d in daily])
        sharpe = None
        if len(pnl_days) >= 2 and float(np.std(pnl_days, ddof=1)) > 0:
            sharpe = float(np.mean(pnl_days) / np.std(pnl_days, ddof=1) * math.sqrt(252.0))
        marker_step = max(1, math.ceil(len(fill_row) / MAX_HEDGE_MARKERS))
        total, options, hedge, commissions = self.curve
        mid = (data.bid[self.price_sample] + data.ask[self.price_sample]) / 2.0
        stamps = [iso(int(data.ts_us[i])) for i in self.sample]
        return {
            "params": self.params.to_dict(),
            "params_hash": self.params.params_hash,
            "ticks": len(data),
            "hedges": int(self.day_hedges.sum()),
            "hedged_shares": float(np.abs(fill_qty).sum()),
            "blocks": {r: int(c) for r, c in zip(GATE_REASONS, self.reason_counts, strict=True) if c},
            "pnl_total_usd": last["total"],
            "pnl_options_usd": last["options"],
            "pnl_hedge_usd": last["hedge"],
            "commissions_usd": last["commissions"],
            "max_drawdown_usd": self.drawdown,
            "sharpe": sharpe,
            "equity_curve": [[t, round(float(v), 6)] for t, v in zip(stamps, total, strict=True)],
            "engine_version": ENGINE_VERSION,
            # ---- extras for the pages and the API -------------------------------------------------------------
            "fills": len(fill_row),
            "blocked_ticks": int(self.day_blocked.sum()),
            "halted": self.halted,
            "first_ts": iso(int(data.ts_us[0])),
            "last_ts": iso(int(data.ts_us[-1])),
            "start_position": self.structure.to_dict(),
            "execution": self.execution.to_dict(),
            "path": self.path,
            "pnl_split_curve": [[t, round(float(o), 6), round(float(h), 6), round(float(c), 6)]
                                for t, o, h, c in zip(stamps, options, hedge, commissions, strict=True)],
            "price_curve": [[iso(int(data.ts_us[i])), float(m)] for i, m in zip(self.price_sample, mid, strict=True)],
            "hedge_markers": [[iso(int(fill_us[k])), float(fill_price[k]), float(fill_qty[k])]
                              for k in range(0, len(fill_row), marker_step)],
            "daily": daily,
            "final": {"hedge_shares": last["hedge_shares"],
                      "net_delta_shares": _finite(last["net_delta_shares"]),
                      "trading_state": str(STATES[int(last["state"])])},
        }


def summarise(data: TickData, params: StrategyParams, structure: Structure, execution: Execution,
              trace: Trace) -> dict[str, Any]:
    """result.json (DESIGN §7) of a whole trace: `Summary` fed the trace as one chunk."""
    summary = Summary(data, params, structure, execution)
    summary.add(0, trace)
    return summary.result()


def write_decisions_csv(data: TickData, trace: Trace, target: str | Path | IO[str]) -> None:
    """One row per tick: the quote, the decision (hedge | blocked | none) with every reason, the sizes and the
    book after the tick, so "should have hedged but didn't" can be reviewed row by row."""
    if isinstance(target, str | Path):
        with open(target, "w", newline="", encoding="utf-8") as f:
            write_decisions_csv(data, trace, f)
        return
    writer = csv.writer(target, lineterminator="\n")
    writer.writerow(["ts", "bid", "ask", "mid", "iv", "decision", "reasons", "intent_shares", "order_shares",
                     "net_delta_shares", "hedge_shares", "trading_state"])
    mid = data.mid
    names = [str(s) for s in STATES]
    reason_cache: dict[int, str] = {}

    def num(x: float) -> str:
        return "" if math.isnan(x) else repr(x)

    for i in range(len(data)):
        mask = int(trace.reasons[i])
        text = reason_cache.get(mask)
        if text is None:
            text = reason_cache[mask] = ";".join(reasons_of(mask))
        writer.writerow([iso(int(data.ts_us[i])), repr(float(data.bid[i])), repr(float(data.ask[i])),
                         repr(float(mid[i])), num(float(data.iv[i])), DECISION_NAMES[int(trace.decision[i])], text,
                         num(float(trace.intent_shares[i])), num(float(trace.order_shares[i])),
                         num(float(trace.net_delta_shares[i])), repr(float(trace.hedge_shares[i])),
                         names[int(trace.state[i])]])


# ---- one call to run it all ------------------------------------------------------------------------------------


@dataclass
class BacktestOutcome:
    result: dict[str, Any]
    trace: Trace | None  # None unless asked for (keep_trace)
    structure: Structure


def run_backtest(data: TickData, params: StrategyParams, *, straddles: int = DEFAULT_STRADDLES,
                 execution: Execution | None = None, path: str = "auto", halt_policy: str = HALT_POLICIES[0],
                 progress: ProgressFn | None = None, keep_trace: bool = True) -> BacktestOutcome:
    """Replay `data` under `params`. path: "auto" (the fast path when it supports the params, else per event),
    "fast" (refuses params it does not support) or "per_event"; halt_policy: see HALT_POLICIES. Without
    `keep_trace` the fast path summarises chunk by chunk and never holds the per-tick trace."""
    from backtests import fast

    if path not in ("auto", "fast", "per_event"):
        raise ConfigError("path", f"expected auto, fast or per_event, got {path!r}")
    if halt_policy not in HALT_POLICIES:
        raise ConfigError("halt_policy", f"expected one of {', '.join(HALT_POLICIES)}, got {halt_policy!r}")
    if len(data) == 0:
        raise ConfigError("data", "no ticks")
    # A row without an IV keeps the last one seen: the legs are repriced at every tick at today's stock price
    # (an empty cell froze their marks while the hedge moved, and the equity with it).
    if np.isnan(data.iv).any():
        data = data.with_changes(iv=forward_filled(data.iv))
    execution = execution or Execution()
    started = timer.perf_counter()
    started_at = datetime.now(UTC)
    structure = build_structure(data, params, straddles)
    check_structure_adoptable(data, params, structure)
    unsupported = fast.unsupported(params)
    if path == "fast" and unsupported:
        raise ConfigError(unsupported[0], f"the fast path does not support it ({unsupported[1]}); use per_event")
    summary = Summary(data, params, structure, execution)
    if path == "per_event" or (path == "auto" and unsupported):
        trace = run_per_event(data, params, structure, execution, halt_policy=halt_policy, progress=progress)
        summary.add(0, trace)
    else:
        trace = fast.run_fast(data, params, structure, execution, halt_policy=halt_policy, progress=progress,
                              on_chunk=None if keep_trace else summary.add)
        if trace is not None:
            summary.add(0, trace)
    result = summary.result()
    result["halt_policy"] = halt_policy
    elapsed = timer.perf_counter() - started
    if unsupported and path == "auto":
        result["path_note"] = f"per-event path: the fast path does not support {unsupported[0]} ({unsupported[1]})"
    result["timing"] = {"started_at": started_at.isoformat(), "elapsed_s": round(elapsed, 6),
                        "ticks_per_s": round(len(data) / elapsed, 1) if elapsed > 0 else None}
    if progress is not None:
        progress(1.0)
    return BacktestOutcome(result, trace if keep_trace else None, structure)

