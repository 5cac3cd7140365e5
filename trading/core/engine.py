"""The engine: `Engine.on_event(event, now) -> actions`, the one decision path for the daemon and the backtest."""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from trading.core import rules
from trading.core.book import BookGreeks, ManagedBook, structures
from trading.core.calendar import ET, in_earnings_blackout, trading_date
from trading.core.classifier import (
    Classification,
    classify_delta,
    classify_execution,
    classify_liquidity,
    classify_option,
    classify_system,
)
from trading.core.events import (
    Action,
    AdoptLegs,
    BrokerOrder,
    BrokerPosition,
    BrokerStatus,
    CancelOrder,
    Contract,
    Control,
    EdgeStatus,
    Event,
    Fill,
    Halt,
    OptionQuote,
    OrderUpdate,
    PlaceOrder,
    PositionsSynced,
    Quote,
    Reconciled,
    Record,
    Side,
    Stop,
    Timer,
)
from trading.core.fsm import (
    ORDER_TERMINAL,
    OrderState,
    OrderTrigger,
    TradingState,
    TradingTrigger,
    order_transition,
    trading_transition,
)
from trading.core.gates import Counters, GateResult, GateState, evaluate_gates
from trading.core.params import StrategyParams
from trading.core.pnl import PnlLedger
from trading.core.rules import STATE_CODE, TRIGGERS
from trading.core.selfcheck import HealthView, SelfCheck, self_check

ENGINE_VERSION = "1.0"
HEDGE_KEY = "hedge"
# An unchanged blocked decision is recorded again after this long, so a long block stays visible in the log.
DECISION_REPEAT_S = 5.0
FINISHED_ORDERS_KEPT = 100
_IB_EXEC_ID = re.compile(r"([0-9a-f]+\.[0-9a-f]+\.[0-9a-f]+)\.(\d{2})")
# Executions are remembered (to book each once) this long: longer than any broker reports them back
# (IB: today's, or up to 7 days with a trade log), so a fill missed before a weekend is still found.
EXEC_MEMORY_DAYS = 7
_IN_BAND = ("D0", "D1")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_STATUS_TRIGGER = {
    "submitted": OrderTrigger.ACK,
    "working": OrderTrigger.ACK,
    "filled": OrderTrigger.FILLED,
    "cancelled": OrderTrigger.CANCELLED,
    "rejected": OrderTrigger.REJECTED,
}


class Calendar(Protocol):
    def is_open(self, now: datetime) -> bool: ...


@dataclass(slots=True)
class OrderTrack:
    order_ref: str
    side: Side
    qty: float
    intent: str
    state: OrderState
    created_at: datetime
    mid_at_decision: float | None = None
    filled: float = 0.0
    acked_at: datetime | None = None
    cancel_sent: bool = False

    @property
    def signed_remaining(self) -> float:
        remaining = max(self.qty - self.filled, 0.0)
        return remaining if self.side == "BUY" else -remaining


@dataclass(frozen=True, slots=True)
class BookedFill:
    """A fill in the ledger, remembered so the same execution is never booked twice and a correction of it
    (IB sends `….02` to replace `….01`) replaces it instead of adding to it."""

    exec_id: str
    signed_qty: float
    price: float
    ts: datetime


def exec_base(exec_id: str) -> tuple[str, int]:
    """An IB execution id without its correction number (`0000e0d5.6571d3b2.01.01` → `0000e0d5.6571d3b2.01`, 1);
    an id of another shape is its own base."""
    match = _IB_EXEC_ID.fullmatch(exec_id)
    return (match[1], int(match[2])) if match else (exec_id, 0)


@dataclass(frozen=True, slots=True)
class EngineSeed:
    """What the edge restores from persistence at start: the engine's memory across restarts."""

    paused: bool = False
    halt_reason: str = ""
    managed: tuple[tuple[Contract, float], ...] = ()  # (contract, qty at adoption)
    hedge_shares: float = 0.0
    hedge_avg_cost: float = 0.0
    hedge_realized_usd: float = 0.0
    commissions_usd: float = 0.0
    open_orders: tuple[tuple[str, Side, float, float, str], ...] = ()  # (ref, side, qty, filled, intent)
    # The fills of the last EXEC_MEMORY_DAYS: each booked once, and a broker's correction replaces its original.
    recent_fills: tuple[BookedFill, ...] = ()
    next_seq: int = 1
    daily_hedges: int = 0
    last_hedge_at: datetime | None = None
    last_hedge_price: float | None = None
    daily_pnl_usd: float = 0.0  # P&L made on `daily_pnl_date` (US/Eastern) before this start
    daily_pnl_date: date | None = None
    # Options Bifrost bought and not yet adopted, (con_id, why): adopted once the account holds them.
    to_adopt: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True, slots=True)
class DecisionView:
    """The last hedge evaluation, whether or not it was recorded (the backtest writes one per tick)."""

    ts: datetime
    allowed: bool
    reasons: tuple[str, ...]
    intent_shares: float
    order_shares: float
    net_delta_shares: float
    trading_state: str
    classification: str


@dataclass
class Engine:
    params: StrategyParams
    order_ref_prefix: str
    calendar: Calendar
    now: datetime
    seed: EngineSeed = field(default_factory=EngineSeed)
    record_decisions: bool = True

    def __post_init__(self) -> None:
        p, s = self.params, self.seed
        self.state = TradingState.BOOT
        self.paused = s.paused
        self.halt_reason = s.halt_reason
        self.stopping = False
        self.flattening = False
        self._flatten_ref = ""
        self._flatten_started_at: datetime | None = None
        self.flatten_outcome: tuple[str, str] | None = None  # ("done" | "failed", why) once a flatten ends
        self.broker_connected = False
        self.edge = EdgeStatus()
        self.reconciled = False
        self.ledger_mismatch = ""
        self.positions_synced = False
        self.positions: tuple[BrokerPosition, ...] = ()
        self.book = ManagedBook()
        for contract, qty in s.managed:
            self.book.adopt(contract, qty, None)
        self.adopted = bool(s.managed)
        # con_id -> why: legs Bifrost opened, adopted once the account holds them
        self._to_adopt: dict[int, str] = {c: why for c, why in s.to_adopt if c not in self.book.legs}
        self.book.hedge_shares = s.hedge_shares
        self.bid: float | None = None
        self.ask: float | None = None
        self.quote_ts: datetime | None = None
        self.greeks = BookGreeks(0.0, 0.0, 0.0, 0.0, False, 0)
        self.orders: dict[str, OrderTrack] = {
            ref: OrderTrack(ref, side, qty, intent, OrderState.UNKNOWN, self.now, filled=filled)
            for ref, side, qty, filled, intent in s.open_orders
        }
        # The orders not yet filled, cancelled or rejected: every tick asks about these, never the whole history.
        self._live: dict[str, OrderTrack] = dict(self.orders)
        self.fills: dict[str, BookedFill] = {exec_base(b.exec_id)[0]: b for b in s.recent_fills}
        self.seq = s.next_seq
        self.counters = Counters(trading_date(self.now), s.daily_hedges)
        self._day_ends_at = _next_et_midnight(self.counters.trading_date)
        self.last_hedge_at = s.last_hedge_at
        self.last_hedge_price = s.last_hedge_price
        self.last_reject_at: datetime | None = None
        self.pnl = PnlLedger(trading_date(self.now))
        hedge = self.pnl.holding(HEDGE_KEY)
        hedge.qty, hedge.avg_cost, hedge.realized_usd = s.hedge_shares, s.hedge_avg_cost, s.hedge_realized_usd
        self.pnl.commissions_usd = s.commissions_usd
        self._day_start_unknown = True
        self.classification = Classification("O0", "D4", "L3", "E3", "S2")
        self.last_decision: DecisionView | None = None
        self._recorded_decision: tuple[tuple[str, ...], float, datetime] | None = None
        self._healthy_since_us = rules.NO_INSTANT
        self._last_move_at: datetime | None = None
        self.params_hash = p.params_hash

    # ---- the one entry point -----------------------------------------------------------------------------

    def on_event(self, event: Event, now: datetime) -> list[Action]:
        """Apply one event and decide. Deterministic: same events, params and times give the same actions."""
        self.now = now
        actions: list[Action] = []
        self._roll_day(now, actions)
        handler = _HANDLERS[type(event)]
        handler(self, event, actions)
        self._evaluate(now, actions)
        return actions

    # ---- event handlers ----------------------------------------------------------------------------------

    def _on_quote(self, q: Quote, actions: list[Action]) -> None:
        if q.symbol != self.params.underlying or not valid_quote(q.bid, q.ask):
            return
        self.bid, self.ask, self.quote_ts = q.bid, q.ask, q.ts

    def _on_option_quote(self, q: OptionQuote, actions: list[Action]) -> None:
        if not valid_quote(q.bid, q.ask):
            return
        self.book.on_option_quote(q.con_id, q.bid, q.ask, q.greeks, q.iv, self.spot, self.now, self.params)

    def _on_positions(self, e: PositionsSynced, actions: list[Action]) -> None:
        self.positions = e.positions
        self.positions_synced = True
        self._sync_book(actions)

    def _on_adopt_legs(self, e: AdoptLegs, actions: list[Action]) -> None:
        self._to_adopt.update({con_id: e.why for con_id in e.con_ids if con_id not in self.book.legs})
        self._sync_book(actions)

    def _sync_book(self, actions: list[Action]) -> None:
        self._adopt_if_needed(actions)
        for position in self.positions:
            why = self._to_adopt.get(position.contract.con_id)
            if why is not None and position.qty > 0 and position.contract.sec_type == "OPT":
                del self._to_adopt[position.contract.con_id]
                self._adopt(position, why, actions)
        self.book.sync_quantities(self.positions)
        for leg in self.book.legs.values():
            key = str(leg.contract.con_id)
            if key not in self.pnl.holdings:
                cost = (leg.avg_cost / leg.contract.multiplier) if leg.avg_cost else (leg.mid or 0.0)
                self.pnl.open_position(key, leg.qty, cost, leg.contract.multiplier)
            elif leg.qty != self.pnl.holdings[key].qty:
                # The operator traded a managed leg: book the change at the mark, or the unrealized P&L of the
                # contracts that left would vanish from the total and jolt the daily P&L (and the breaker).
                holding = self.pnl.holdings[key]
                holding.trade(leg.qty - holding.qty, holding.mark if holding.mark is not None else holding.avg_cost)

    def _on_order_update(self, u: OrderUpdate, actions: list[Action]) -> None:
        track = self.orders.get(u.order_ref)
        if track is None:
            return
        trigger = _STATUS_TRIGGER.get(u.status)
        if trigger is None:
            return
        if trigger == OrderTrigger.FILLED and track.filled + 1e-9 < track.qty:
            # The broker says filled before every execution reached us: the fills will follow and confirm it.
            trigger = OrderTrigger.ACK if track.filled == 0 else OrderTrigger.PARTIAL_FILL
        self._order_step(track, trigger, actions, u.message)

    def knows_exec(self, exec_id: str) -> bool:
        """Booked already (this execution, or a later correction of it)."""
        base, number = exec_base(exec_id)
        booked = self.fills.get(base)
        return booked is not None and exec_base(booked.exec_id)[1] >= number

    def _on_fill(self, f: Fill, actions: list[Action]) -> None:
        if self.knows_exec(f.exec_id):
            return
        if f.symbol and (f.symbol != self.params.underlying or f.sec_type != "STK"):
            # Only shares of the underlying are hedge shares: another instrument's fill never moves the ledger.
            self._operation(actions, "fill_ignored", f"{f.exec_id} of {f.order_ref} ({f.sec_type} {f.symbol}) is not "
                            f"a {self.params.underlying} share fill: not booked", order_ref=f.order_ref)
            return
        track = self.orders.get(f.order_ref)
        signed = f.qty if f.side == "BUY" else -f.qty
        mid = track.mid_at_decision if track is not None else self.mid
        base = exec_base(f.exec_id)[0]
        replaced = self.fills.get(base)
        self.fills[base] = BookedFill(f.exec_id, signed, f.price, f.ts)
        if replaced is not None:
            # The broker corrected an execution: take the original out at its own price, book the correction.
            self.book.hedge_shares -= replaced.signed_qty
            self.pnl.on_fill(HEDGE_KEY, -replaced.signed_qty, replaced.price, 0.0, mid)
            if track is not None:
                track.filled -= abs(replaced.signed_qty)
            self._operation(actions, "fill_corrected", f"{f.exec_id} corrects {replaced.exec_id}: "
                            f"{replaced.signed_qty:+g} @ {replaced.price:.4f} becomes {signed:+g} @ {f.price:.4f}",
                            order_ref=f.order_ref)
        self.book.hedge_shares += signed
        self.pnl.on_fill(HEDGE_KEY, signed, f.price, f.commission, mid)
        self.last_hedge_price = f.price
        actions.append(Record("fill", {
            "exec_id": f.exec_id, "order_ref": f.order_ref, "symbol": self.params.underlying, "side": f.side,
            "qty": f.qty, "price": f.price, "commission": f.commission, "ts": f.ts.isoformat(),
            "account": f.account, "con_id": f.con_id or None,
            "replaces": replaced.exec_id if replaced is not None else None,
        }))
        self._operation(actions, "fill", f"{f.side} {f.qty:g} {self.params.underlying} @ {f.price:.4f} filled",
                        order_ref=f.order_ref, side=f.side, qty=f.qty, price=f.price,
                        data={"hedge_shares": self.book.hedge_shares, "commission": f.commission})
        if track is None:
            return
        track.filled += f.qty
        done = track.filled + 1e-9 >= track.qty
        self._order_step(track, OrderTrigger.FILLED if done else OrderTrigger.PARTIAL_FILL, actions)

    def _on_broker_status(self, e: BrokerStatus, actions: list[Action]) -> None:
        if e.connected == self.broker_connected:
            return
        self.broker_connected = e.connected
        if not e.connected:
            self.reconciled = False
            for track in list(self._live.values()):
                self._order_step(track, OrderTrigger.DISCONNECTED, actions)
        self._operation(actions, "broker", "broker connected" if e.connected else f"broker disconnected {e.message}".strip())

    def _on_reconciled(self, e: Reconciled, actions: list[Action]) -> None:
        """The broker's word on our orders settles them: open ones we did not know are adopted as in flight (no new
        hedge leaves beside them), unknown ones it holds are working again, finished ones end as it says."""
        reported = {o.order_ref: o for o in e.orders}
        for o in e.orders:
            if o.status in ("working", "partial") and o.order_ref not in self.orders:
                self._adopt_order(o, actions)
        for ref, track in list(self._live.items()):
            if e.asked_at is not None and track.created_at >= e.asked_at:
                continue  # placed while the broker was being asked: its answer cannot know it yet
            at_broker = reported.get(ref)
            if at_broker is None:
                self._order_step(track, OrderTrigger.CANCELLED, actions, "not at the broker: it can no longer fill")
            elif at_broker.status in ("working", "partial"):
                if track.state == OrderState.UNKNOWN:
                    self._order_step(track, OrderTrigger.ACK, actions, "found open at the broker")
            elif at_broker.status == "filled":
                if track.filled + 1e-9 >= at_broker.filled:
                    self._order_step(track, OrderTrigger.FILLED, actions, "filled at the broker")
            else:
                trigger = OrderTrigger.REJECTED if at_broker.status == "rejected" else OrderTrigger.CANCELLED
                self._order_step(track, trigger, actions, f"{at_broker.status} at the broker")
        unresolved = sorted(r for r, t in self._live.items() if t.state == OrderState.UNKNOWN)
        self._check_ledger(e, actions)
        self.reconciled = not unresolved and not self.ledger_mismatch
        if self.reconciled:
            detail = "book reconciled"
        elif self.ledger_mismatch:
            detail = self.ledger_mismatch
        else:
            detail = "unresolved orders (the broker reports them filled, their executions are missing): " + ", ".join(
                f"{r} ({self.orders[r].filled:g} of {reported[r].filled:g} booked)" if r in reported else r
                for r in unresolved)
        self._operation(actions, "reconcile", detail, reasons=[] if self.reconciled else ["not_reconciled"])

    def _check_ledger(self, e: Reconciled, actions: list[Action]) -> None:
        """Every fill in our ledger that the broker's report covers must be one the broker calls ours."""
        if e.exec_ids is None or e.execs_since is None:
            return
        until = e.asked_at or e.ts
        reported = {exec_base(x)[0] for x in e.exec_ids}
        unexplained = sorted(b.exec_id for base, b in self.fills.items()
                             if e.execs_since <= b.ts < until and base not in reported)
        mismatch = (f"ledger mismatch: {len(unexplained)} fill(s) in the ledger the broker does not report as ours "
                    f"({', '.join(unexplained[:5])}); hedging and flatten wait for an operator") if unexplained else ""
        if mismatch and mismatch != self.ledger_mismatch:
            self._operation(actions, "reconcile_mismatch", mismatch, reasons=["not_reconciled"])
        self.ledger_mismatch = mismatch

    def _adopt_order(self, o: BrokerOrder, actions: list[Action]) -> None:
        """An open order of ours the engine did not know (its daemon died before recording it, or it was another
        Bifrost's): tracked as in flight from now on, with its row."""
        side: Side = "BUY" if o.side == "BUY" else "SELL"
        track = OrderTrack(o.order_ref, side, o.qty, "hedge", OrderState.WORKING, self.now, filled=o.filled,
                           acked_at=self.now)
        if o.filled > 0:
            track.state = OrderState.PARTIAL
        self.orders[o.order_ref] = self._live[o.order_ref] = track
        actions.append(Record("order", {
            "order_ref": o.order_ref, "intent": "hedge", "symbol": self.params.underlying, "side": side, "qty": o.qty,
            "order_type": "market", "limit_price": None, "state": str(track.state), "params_hash": self.params_hash,
            "message": "adopted: open at the broker, unknown to this daemon", "ts": self.now.isoformat()}))
        self._operation(actions, "order_adopted", f"{o.order_ref} {side} {o.qty:g} ({o.filled:g} filled) is open at "
                        "the broker: adopted as in flight", order_ref=o.order_ref, side=side, qty=o.qty)

    def _on_edge_status(self, e: EdgeStatus, actions: list[Action]) -> None:
        before, self.edge = self.edge, e
        for reason, was, now in (("lease_unconfirmed", not before.lease_confirmed, not e.lease_confirmed),
                                 ("journal_unwritable", not before.journal_writable, not e.journal_writable),
                                 ("clock_skew", before.clock_skewed, e.clock_skewed)):
            if was != now:
                self._operation(actions, "edge", f"{reason} {'set' if now else 'cleared'}"
                                + (f": {e.detail}" if now and e.detail else ""), reasons=[reason] if now else [])

    def _on_timer(self, e: Timer, actions: list[Action]) -> None:
        p = self.params
        for track in list(self._live.values()):
            if track.state == OrderState.SENT and (self.now - track.created_at).total_seconds() >= p.ack_timeout_s:
                self._order_step(track, OrderTrigger.ACK_TIMEOUT, actions, f"no ack within {p.ack_timeout_s:g} s")
            elif (track.state in (OrderState.WORKING, OrderState.PARTIAL) and not track.cancel_sent
                  and track.intent != "flatten"  # a flatten order works until flatten_timeout_s, never resent
                  and track.acked_at is not None
                  and (self.now - track.acked_at).total_seconds() >= p.working_timeout_s):
                track.cancel_sent = True
                actions.append(CancelOrder(track.order_ref))
                self._operation(actions, "order_cancel", f"cancel {track.order_ref}: working longer than "
                                f"{p.working_timeout_s:g} s", order_ref=track.order_ref)

    def _on_control(self, c: Control, actions: list[Action]) -> None:
        command = c.command
        if command == "pause":
            self.paused = True
        elif command == "resume":
            self.paused = False
            self.flattening = False
        elif command == "reset_halt":
            self.halt_reason = ""
            if self.state == TradingState.HALTED:
                self._set_state(TradingTrigger.RESET_HALT, actions)
        elif command == "flatten":
            self.paused = True
            self.flattening = True
            self._flatten_ref = ""
            self._flatten_started_at = self.now
            self.flatten_outcome = None
            self._cancel_working(actions, "flatten")
        elif command == "stop":
            self.stopping = True
            self._cancel_working(actions, "stop")
            actions.append(Stop(c.reason or "stop requested"))
        else:
            raise ValueError(f"unknown control command {command!r}")
        self._operation(actions, command, f"{command} by {c.actor}" + (f": {c.reason}" if c.reason else ""),
                        actor=c.actor)

    # ---- deciding ----------------------------------------------------------------------------------------

    def _evaluate(self, now: datetime, actions: list[Action]) -> None:
        p = self.params
        spot = self.spot
        if not self.adopted and self.positions_synced and spot is not None:
            self._sync_book(actions)  # adoption waited for the first quote (the ATM band needs a spot)
        if spot is not None and self.book.legs:
            for leg in self.book.settle_expired(spot, now.timestamp()):
                c = leg.contract
                self._operation(actions, "leg_settled", f"{c.local_symbol or c.symbol} expired: settled at its "
                                f"intrinsic value {leg.settled:.4f} (spot {spot:.4f}); no longer hedged",
                                data={"con_id": c.con_id, "settlement": leg.settled})
            self.greeks = self.book.compute_greeks(spot, now, p)
        elif not self.book.legs:
            self.greeks = BookGreeks(0.0, 0.0, 0.0, 0.0, spot is not None, 0)
        if spot is not None:
            self._mark(spot, now)  # every holding, hedge shares included even with no legs to hedge
        if self._day_start_unknown and self.positions_synced and spot is not None:
            # The day counts from the first full mark, not from the cost basis of legs held for weeks and the
            # ledger's lifetime fills (they would trip the breaker); P&L made today before a restart still counts,
            # but only if today is still the day it was made.
            carried = self.seed.daily_pnl_usd if self.seed.daily_pnl_date == self.counters.trading_date else 0.0
            self.pnl.day_start_total_usd = self.pnl.total_usd - carried
            self._day_start_unknown = False
        self._check_loss_breaker(actions)
        gate = self.gate_state(now)
        self.classification = self._classify(gate)
        if self.flattening:
            self._flatten_step(actions)
        self._advance_trading_state(gate, now, actions)

    def _advance_trading_state(self, gate: GateState, now: datetime, actions: list[Action]) -> None:
        now_us = micros(now)
        while True:  # the rules say when a step is followed by another from the new state (boot, idle)
            trigger, self._healthy_since_us, again = rules.trading_trigger(
                STATE_CODE[self.state], bool(self.halt_reason), self.positions_synced and self.quote_ts is not None,
                self.book.has_options, self._healthy(gate), self._healthy_since_us, now_us, self._in_flight(),
                self.classification.delta in _IN_BAND)
            if trigger == rules.T_DECIDE:
                self._decide(evaluate_gates(gate, self.params, self.counters, now), gate, now, actions)
            elif trigger != rules.T_NONE:
                self._set_state(TRIGGERS[trigger], actions)
            if not again:
                return

    def _decide(self, result: GateResult, gate: GateState, now: datetime, actions: list[Action]) -> None:
        allowed, trigger = rules.decision_trigger(result.mask, result.size.order_shares)
        self._set_state(TRIGGERS[trigger], actions)
        order_ref = self._next_ref() if allowed else ""
        self.last_decision = DecisionView(now, allowed, result.reasons, result.size.intent_shares,
                                          result.size.order_shares, gate.net_delta_shares, str(self.state),
                                          str(self.classification))
        self._record_decision(result, gate, order_ref, now, actions)
        if allowed:
            self._send(order_ref, result.size.order_shares, "hedge", actions)
            self.counters.daily_hedges += 1
            self.last_hedge_at = now
            self.last_hedge_price = gate.spot
            self._set_state(TradingTrigger.ORDER_SENT, actions)

    def _record_decision(self, result: GateResult, gate: GateState, order_ref: str, now: datetime,
                         actions: list[Action]) -> None:
        if not self.record_decisions:
            return
        sign = math.copysign(1.0, result.size.intent_shares)
        previous = self._recorded_decision
        if (not result.allowed and previous is not None and previous[0] == result.reasons and previous[1] == sign
                and (now - previous[2]).total_seconds() < DECISION_REPEAT_S):
            return
        self._recorded_decision = (result.reasons, sign, now)
        actions.append(Record("decision", {
            "ts": now.isoformat(), "allowed": result.allowed, "reasons": list(result.reasons),
            "intent_shares": result.size.intent_shares, "order_shares": result.size.order_shares,
            "net_delta_shares": gate.net_delta_shares, "spot": gate.spot, "trading_state": str(self.state),
            "classification": str(self.classification), "order_ref": order_ref, "params_hash": self.params_hash,
        }))
        if not result.allowed:
            self._operation(actions, "hedge_blocked",
                            f"hedge of {result.size.intent_shares:+g} shares blocked: {', '.join(result.reasons)}",
                            reasons=list(result.reasons), qty=result.size.intent_shares)

    def _flatten_step(self, actions: list[Action]) -> None:
        """Cancel ours, then one order that brings our own hedge shares to zero (manual shares are not in the
        ledger at all). It is never resent; a flatten not done within flatten_timeout_s fails, still paused."""
        assert self._flatten_started_at is not None
        track = self.orders.get(self._flatten_ref)
        waited_s = (self.now - self._flatten_started_at).total_seconds()
        if track is not None and track.state in ORDER_TERMINAL:
            if abs(self.book.hedge_shares) < 1e-9:
                self._end_flatten("done", "flatten complete: Bifrost hedge shares are 0; staying paused", actions)
            else:
                self._end_flatten("failed", f"flatten order {track.order_ref} ended {track.state} with "
                                  f"{self.book.hedge_shares:g} hedge shares left; still paused", actions)
            return
        if waited_s >= self.params.flatten_timeout_s:
            if track is not None and not track.cancel_sent:
                track.cancel_sent = True
                actions.append(CancelOrder(track.order_ref))
            self._end_flatten("failed", f"flatten not done within {self.params.flatten_timeout_s:g} s "
                              f"({self.book.hedge_shares:g} hedge shares left); its order cancelled, still paused",
                              actions)
            return
        if track is not None or self._live or not self.broker_connected or self.stopping:
            return  # our order is working, or our cancels are, or the broker is away: wait (the timeout bounds it)
        if abs(self.book.hedge_shares) < 1e-9:
            self._end_flatten("done", "flatten complete: Bifrost hedge shares are 0; staying paused", actions)
            return
        if self.ledger_mismatch:
            self._end_flatten("failed", f"refused: {self.ledger_mismatch}; trading {-self.book.hedge_shares:+g} "
                              "shares on that ledger could go through the operator's manual shares; still paused",
                              actions)
            return
        self._flatten_ref = self._next_ref()
        self._send(self._flatten_ref, -self.book.hedge_shares, "flatten", actions)

    def _end_flatten(self, outcome: str, why: str, actions: list[Action]) -> None:
        self.flattening = False
        self.flatten_outcome = (outcome, why)
        self._operation(actions, f"flatten_{outcome}", why, reasons=[] if outcome == "done" else ["flatten_failed"])

    def _send(self, order_ref: str, signed_qty: float, intent: str, actions: list[Action]) -> None:
        p = self.params
        side: Side = "BUY" if signed_qty > 0 else "SELL"
        qty = abs(signed_qty)
        limit = None
        if p.order_type == "limit" and self.bid is not None and self.ask is not None:
            offset = p.limit_offset_bps / 1e4
            limit = round(self.ask * (1 + offset), 2) if side == "BUY" else round(self.bid * (1 - offset), 2)
        self.orders[order_ref] = self._live[order_ref] = OrderTrack(order_ref, side, qty, intent, OrderState.PLAN,
                                                                    self.now, mid_at_decision=self.mid)
        actions.append(PlaceOrder(order_ref, p.underlying, side, qty, p.order_type, limit,
                                  "flatten" if intent == "flatten" else "hedge"))
        actions.append(Record("order", {
            "order_ref": order_ref, "intent": intent, "symbol": p.underlying, "side": side, "qty": qty,
            "order_type": p.order_type, "limit_price": limit, "state": "sent", "spot_at_decision": self.mid,
            "params_hash": self.params_hash, "ts": self.now.isoformat(),
        }))
        self._operation(actions, "order_sent", f"{intent} {side} {qty:g} {p.underlying} ({p.order_type})",
                        order_ref=order_ref, side=side, qty=qty,
                        data={"net_delta_shares": self.net_delta_shares, "hedge_shares": self.book.hedge_shares})
        self._order_step(self.orders[order_ref], OrderTrigger.SEND, actions, record=False)

    def _order_step(self, track: OrderTrack, trigger: OrderTrigger, actions: list[Action], message: str = "",
                    record: bool = True) -> None:
        before = track.state
        track.state = order_transition(track.state, trigger)
        if track.state == OrderState.REJECTED and before != OrderState.REJECTED:
            self.last_reject_at = self.now
        if track.state in ORDER_TERMINAL and self._live.pop(track.order_ref, None) is not None:
            self._forget_finished()
        if track.state == OrderState.WORKING and track.acked_at is None:
            track.acked_at = self.now
        if track.state == before or not record:
            return
        actions.append(Record("order", {"order_ref": track.order_ref, "state": str(track.state),
                                        "filled_qty": track.filled, "message": message, "ts": self.now.isoformat()}))
        self._operation(actions, f"order_{track.state}", f"{track.order_ref} {before} → {track.state}"
                        + (f": {message}" if message else ""), order_ref=track.order_ref, side=track.side,
                        qty=track.qty)

    def _forget_finished(self) -> None:
        """Keep the last FINISHED_ORDERS_KEPT finished orders (late reports about them change nothing anyway):
        months of hedging must not grow the engine's memory or what every heartbeat looks at."""
        excess = len(self.orders) - len(self._live) - FINISHED_ORDERS_KEPT
        if excess <= 0:
            return
        for ref in [r for r, t in self.orders.items() if r not in self._live][:excess]:
            del self.orders[ref]

    def _cancel_working(self, actions: list[Action], why: str) -> None:
        for track in self._live.values():
            if track.state != OrderState.UNKNOWN and not track.cancel_sent:
                track.cancel_sent = True
                actions.append(CancelOrder(track.order_ref))
                self._operation(actions, "order_cancel", f"cancel {track.order_ref} ({why})",
                                order_ref=track.order_ref)

    def _check_loss_breaker(self, actions: list[Action]) -> None:
        daily = self.daily_pnl_usd
        if self.halt_reason or daily is None:  # no baseline yet: lifetime P&L is not a day's loss
            return
        if rules.loss_halts(daily, self.params.max_daily_loss_usd):
            self.halt_reason = f"daily loss {daily:.2f} USD reached the limit of {self.params.max_daily_loss_usd:g} USD"
            actions.append(Halt(self.halt_reason))
            self._operation(actions, "halt", self.halt_reason, reasons=["risk_halt"])

    # ---- state views -------------------------------------------------------------------------------------

    @property
    def daily_pnl_usd(self) -> float | None:
        """Today's P&L (US/Eastern), None until the day's baseline is known (the first full mark)."""
        return None if self._day_start_unknown else self.pnl.total_usd - self.pnl.day_start_total_usd

    @property
    def spot(self) -> float | None:
        return self.mid

    @property
    def mid(self) -> float | None:
        if self.bid is None or self.ask is None:
            return None
        return rules.mid_price(self.bid, self.ask)

    @property
    def net_delta_shares(self) -> float:
        return self.book.hedge_shares + self.greeks.option_delta_shares

    def gate_state(self, now: datetime) -> GateState:
        p = self.params
        mid = self.mid
        spread = (self.ask - self.bid) / mid * 1e4 if mid and self.bid is not None and self.ask is not None else None
        quote_age = (now - self.quote_ts).total_seconds() * 1000.0 if self.quote_ts is not None else None
        today = self.counters.trading_date
        return GateState(
            paused=self.paused,
            stopping=self.stopping,
            halted=bool(self.halt_reason),
            broker_connected=self.broker_connected,
            quote_age_ms=quote_age,
            spread_bps=spread,
            greeks_valid=self.greeks.valid or not self.book.legs,
            reconciled=self.reconciled,
            has_options=self.book.has_options,
            market_open=self._is_open(now),
            in_blackout=bool(p.earnings_dates) and in_earnings_blackout(
                today, p.earnings_dates, p.blackout_days_before, p.blackout_days_after),
            order_in_flight=self._in_flight(),
            spot=mid,
            net_delta_shares=self.net_delta_shares,
            hedge_shares=self.book.hedge_shares,
            last_hedge_price=self.last_hedge_price,
            last_hedge_at=self.last_hedge_at,
            last_reject_at=self.last_reject_at,
            minutes_to_expiry=None if self.book.next_expiry_s is None else (
                self.book.next_expiry_s - now.timestamp()) / 60.0,
            lease_confirmed=self.edge.lease_confirmed,
            journal_writable=self.edge.journal_writable,
            clock_skewed=self.edge.clock_skewed,
        )

    def self_check(self, daemon_state: str, config_error: str = "") -> SelfCheck:
        now = self.now
        working_ages = [(now - t.acked_at).total_seconds() for t in self._live.values()
                        if t.state in (OrderState.WORKING, OrderState.PARTIAL) and t.acked_at is not None]
        view = HealthView(
            gate=self.gate_state(now),
            daemon_state=daemon_state,
            daily_pnl_usd=self.daily_pnl_usd or 0.0,
            iv_fallback_legs=self.greeks.iv_fallback_legs,
            oldest_working_order_s=max(working_ages) if working_ages else None,
            unknown_orders=sum(t.state == OrderState.UNKNOWN for t in self._live.values()),
            config_error=config_error,
        )
        return self_check(view, self.params, self.counters)

    def status_view(self) -> dict[str, object]:
        """The engine's part of the /api/status/ payload (the edge adds daemon, account and config)."""
        gate = self.gate_state(self.now)
        snap = self.pnl.snapshot(HEDGE_KEY)
        legs = []
        for leg in self.book.legs.values():
            c = leg.contract
            price, delta, gamma, theta, vega = leg.greeks
            holding = self.pnl.holdings.get(str(c.con_id))
            legs.append({
                "con_id": c.con_id, "symbol": c.symbol, "local_symbol": c.local_symbol, "right": c.right,
                "strike": c.strike, "expiry": c.expiry.isoformat() if c.expiry else None, "qty": leg.qty,
                "multiplier": c.multiplier, "bid": leg.bid, "ask": leg.ask, "mid": leg.mid, "iv": leg.iv,
                "iv_source": leg.iv_source, "model_price": _finite(price), "delta": _finite(delta),
                "gamma": _finite(gamma), "theta": _finite(theta), "vega": _finite(vega),
                "avg_cost": holding.avg_cost if holding is not None else None,
                "pnl_usd": holding.realized_usd + holding.unrealized_usd if holding is not None else None,
                "moneyness": (self.spot / c.strike) if self.spot and c.strike else None,
                "in_the_money": moneyness_label(c.right, self.spot, c.strike), "settled": leg.settled,
            })
        return {
            "trading": {"state": str(self.state), "paused": self.paused, "halted": bool(self.halt_reason),
                        "halt_reason": self.halt_reason, "flattening": self.flattening,
                        "classification": str(self.classification)},
            "market": {"symbol": self.params.underlying, "bid": self.bid, "ask": self.ask, "spot": self.mid,
                       "spread_bps": gate.spread_bps,
                       "data_lag_ms": None if gate.quote_age_ms is None else round(gate.quote_age_ms, 1),
                       "quote_ts": self.quote_ts.isoformat() if self.quote_ts else None},
            "book": {"net_delta_shares": self.net_delta_shares,
                     "option_delta_shares": self.greeks.option_delta_shares,
                     "hedge_shares": self.book.hedge_shares, "gamma": self.greeks.gamma_shares,
                     "theta": self.greeks.theta_usd, "vega": self.greeks.vega_usd, "legs": legs},
            "pnl": {"trading_date": snap.trading_date.isoformat(), "daily_usd": self.daily_pnl_usd,
                    "realized_usd": snap.realized_usd, "unrealized_usd": snap.unrealized_usd,
                    "commissions_usd": snap.commissions_usd, "options_usd": snap.options_usd,
                    "hedge_usd": snap.hedge_usd, "gamma_usd": snap.gamma_usd, "theta_usd": snap.theta_usd,
                    "vega_usd": snap.vega_usd, "hedge_cost_usd": snap.hedge_cost_usd},
            "counters": {"daily_hedges": self.counters.daily_hedges,
                         "trading_date": self.counters.trading_date.isoformat()},
            "orders_in_flight": list(self._live),
        }

    # ---- helpers -----------------------------------------------------------------------------------------

    def _is_open(self, now: datetime) -> bool:
        # No cache of our own: the calendar keeps the window its answer holds for (to the next open or close),
        # so a hedge can never leave a moment after the close on a stale "open".
        return self.calendar.is_open(now)

    def _healthy(self, gate: GateState) -> bool:
        age = math.nan if gate.quote_age_ms is None else gate.quote_age_ms
        return rules.is_healthy(gate.broker_connected, age, self.params.stale_quote_ms, gate.greeks_valid)

    def _in_flight(self) -> bool:
        return bool(self._live)

    def _classify(self, gate: GateState) -> Classification:
        p = self.params
        live = self._live.values()
        return Classification(
            option=classify_option(self.book.has_options, self.greeks.gamma_shares),
            delta=classify_delta(self.net_delta_shares, gate.greeks_valid and gate.spot is not None, p),
            liquidity=classify_liquidity(gate.spread_bps, p),
            execution=classify_execution(
                gate.broker_connected,
                any(t.state == OrderState.UNKNOWN for t in live),
                any(t.state == OrderState.PARTIAL for t in live),
                bool(live),
            ),
            system=classify_system(gate.halted, gate.greeks_valid, gate.quote_age_ms, p),
        )

    def _mark(self, spot: float, now: datetime) -> None:
        self.pnl.mark(HEDGE_KEY, spot)
        iv_sum = 0.0
        for leg in self.book.legs.values():
            if leg.settled is not None:
                self.pnl.mark(str(leg.contract.con_id), leg.settled)
                continue
            mid = leg.mid
            mark = mid if mid is not None else leg.greeks[0]
            if (mid is not None) != leg.market_marked:  # e.g. the first option quote after model marks
                self.pnl.remark(str(leg.contract.con_id), mark)
                leg.market_marked = mid is not None
            else:
                self.pnl.mark(str(leg.contract.con_id), mark)
            iv_sum += leg.iv or 0.0
        elapsed_days = 0.0 if self._last_move_at is None else (now - self._last_move_at).total_seconds() / 86400.0
        self._last_move_at = now
        iv = iv_sum / len(self.book.legs) if self.book.legs else None
        self.pnl.on_market_move(spot, iv, self.greeks.gamma_shares, self.greeks.theta_usd, self.greeks.vega_usd,
                                elapsed_days)

    def _adopt_if_needed(self, actions: list[Action]) -> None:
        """At first start, take over the account's straddles and strangles (`structures`); a lone option is shown
        as not adopted with the reason. Later syncs never drop a leg."""
        spot = self.spot
        if self.adopted or spot is None:
            return
        adopt, left = structures(self.positions, self.params, spot, trading_date(self.now))
        for position, why in left:
            c = position.contract
            self._operation(actions, "leg_not_adopted", f"{c.local_symbol or c.symbol} x {position.qty:g} not "
                            f"adopted: {why}", data={"con_id": c.con_id, "why": why})
        for position in adopt:
            self._adopt(position, "", actions)
        self.adopted = True

    def _adopt(self, position: BrokerPosition, why: str, actions: list[Action]) -> None:
        c = position.contract
        self.book.adopt(c, position.qty, position.avg_cost)
        actions.append(Record("managed_leg", {
            "con_id": c.con_id, "symbol": c.symbol, "local_symbol": c.local_symbol, "right": c.right,
            "strike": c.strike, "expiry": c.expiry.isoformat() if c.expiry else None,
            "multiplier": c.multiplier, "adopted_qty": position.qty, "ts": self.now.isoformat(),
        }))
        self._operation(actions, "leg_adopted", f"adopted {c.local_symbol or c.symbol} x {position.qty:g}"
                        + (f" ({why})" if why else ""))

    def _roll_day(self, now: datetime, actions: list[Action]) -> None:
        if now.timestamp() < self._day_ends_at:
            return  # the common case, without a time-zone conversion on every tick
        today = trading_date(now)
        self._day_ends_at = _next_et_midnight(today)
        if today == self.counters.trading_date:
            return
        self.counters = Counters(today)
        self.pnl.roll_if_new_day(today)
        horizon = now - timedelta(days=EXEC_MEMORY_DAYS)
        self.fills = {base: b for base, b in self.fills.items() if b.ts >= horizon}
        self._operation(actions, "new_trading_day", f"trading date {today.isoformat()}: daily counters reset")

    def _next_ref(self) -> str:
        ref = f"{self.order_ref_prefix}:{self.seq}"
        self.seq += 1
        return ref

    def _set_state(self, trigger: TradingTrigger, actions: list[Action]) -> None:
        before = self.state
        self.state = trading_transition(self.state, trigger)
        if self.state != before:
            self._operation(actions, "trading_state", f"trading {before} → {self.state} ({trigger})")

    def _operation(self, actions: list[Action], kind: str, message: str, **fields: object) -> None:
        actions.append(Record("operation", {"ts": self.now.isoformat(), "kind": kind, "message": message,
                                            "trading_state": str(self.state), "params_hash": self.params_hash,
                                            **fields}))


def micros(instant: datetime) -> int:
    """An aware instant as integer microseconds since the epoch: how the rules take instants."""
    return (instant - _EPOCH) // _ONE_US


def _next_et_midnight(day: date) -> float:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=ET).timestamp()


def valid_quote(bid: float, ask: float) -> bool:
    """IB sends -1, 0 and NaN for 'no price': such a quote is not a quote."""
    return math.isfinite(bid) and math.isfinite(ask) and bid > 0 and ask > 0 and ask >= bid


ATM_BAND_FRAC = 0.01  # within 1 % of the strike a leg reads as at the money


def moneyness_label(right: str | None, spot: float | None, strike: float | None) -> str | None:
    """ITM, OTM or ATM for a call or put at `spot`."""
    if not spot or not strike or right not in ("C", "P"):
        return None
    if abs(spot / strike - 1.0) < ATM_BAND_FRAC:
        return "ATM"
    return "ITM" if (spot > strike) == (right == "C") else "OTM"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


_HANDLERS: dict[type, Callable[[Engine, Any, list[Action]], None]] = {
    Quote: Engine._on_quote,
    OptionQuote: Engine._on_option_quote,
    PositionsSynced: Engine._on_positions,
    OrderUpdate: Engine._on_order_update,
    Fill: Engine._on_fill,
    BrokerStatus: Engine._on_broker_status,
    Reconciled: Engine._on_reconciled,
    EdgeStatus: Engine._on_edge_status,
    Timer: Engine._on_timer,
    Control: Engine._on_control,
    AdoptLegs: Engine._on_adopt_legs,
}
