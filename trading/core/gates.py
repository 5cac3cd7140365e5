"""Hedge sizing and the gates a hedge must pass; every failing gate is reported, in one fixed order."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

from trading.core.params import StrategyParams

# The Contract order of gate reasons (DESIGN §3.2). Never reorder or rename; append new ones.
GATE_REASONS: tuple[str, ...] = (
    "paused",
    "stopping",
    "risk_halt",
    "broker_disconnected",
    "no_quote",
    "data_stale",
    "greeks_invalid",
    "not_reconciled",
    "no_option_position",
    "outside_trading_hours",
    "earnings_blackout",
    "cooldown",
    "max_daily_hedges",
    "max_position",
    "spread_too_wide",
    "min_price_move",
    "order_in_flight",
    "below_min_hedge",
    "near_expiry",
    "lease_unconfirmed",
    "journal_unwritable",
    "clock_skew",
)
# Reasons that depend on the particular hedge (its size, its timing) rather than on the state of the system:
# they are normal between hedges and do not turn the lamp red.
PER_HEDGE_REASONS = frozenset({"cooldown", "min_price_move", "order_in_flight", "below_min_hedge", "max_position"})
# After a rejected order nothing is sent for at least this long, whatever the delta.
REJECT_BACKOFF_S = 5.0
COST_REASONS = frozenset({"cooldown", "min_price_move", "below_min_hedge"})
LIQUIDITY_REASONS = frozenset({"spread_too_wide"})


@dataclass(frozen=True, slots=True)
class GateState:
    """Everything the gates look at, captured at one instant."""

    paused: bool
    stopping: bool
    halted: bool
    broker_connected: bool
    quote_age_ms: float | None  # None: no quote yet
    spread_bps: float | None
    greeks_valid: bool
    reconciled: bool
    has_options: bool
    market_open: bool
    in_blackout: bool
    order_in_flight: bool
    spot: float | None
    net_delta_shares: float
    hedge_shares: float
    last_hedge_price: float | None
    last_hedge_at: datetime | None
    last_reject_at: datetime | None = None
    minutes_to_expiry: float | None = None  # to the nearest expiry of a leg still held (None: no legs)
    # The edge's own safety (the daemon's lease, its journal, its clock); always fine in a replay.
    lease_confirmed: bool = True
    journal_writable: bool = True
    clock_skewed: bool = False


@dataclass(slots=True)
class Counters:
    """Per trading date (US/Eastern); reset when the date changes."""

    trading_date: date
    daily_hedges: int = 0


@dataclass(frozen=True, slots=True)
class HedgeSize:
    intent_shares: float  # what would bring net delta to zero, before any clip
    order_shares: float  # signed quantity to send after rounding, the per-order cap and the position clip
    force: bool  # |delta| reached the force level: cooldown and min price move do not apply


@dataclass(frozen=True, slots=True)
class GateResult:
    allowed: bool
    reasons: tuple[str, ...]
    size: HedgeSize


def round_half_away(x: float) -> float:
    return math.copysign(math.floor(abs(x) + 0.5), x)


def is_force(net_delta_shares: float, params: StrategyParams) -> bool:
    level = abs(net_delta_shares)
    return level >= params.force_hedge_shares or (
        params.max_net_delta_shares is not None and level >= params.max_net_delta_shares
    )


def size_hedge(net_delta_shares: float, hedge_shares: float, params: StrategyParams) -> HedgeSize:
    """need = -net delta, rounded half away from zero, capped per order, clipped (not blocked) by max position."""
    intent = round_half_away(-net_delta_shares)
    qty = math.copysign(min(abs(intent), params.max_hedge_shares_per_order), intent) if intent else 0.0
    target = hedge_shares + qty
    # Clip only a trade that grows the position past the limit: one that shrinks a position already beyond
    # it (the limit was lowered) goes as sized, or the clip would overshoot the hedge and grow |net delta|.
    if abs(target) > params.max_position_shares and abs(target) > abs(hedge_shares):
        qty = math.copysign(params.max_position_shares, target) - hedge_shares
        if qty * intent < 0:  # already beyond the limit on this side: never trade further that way
            qty = 0.0
    return HedgeSize(intent, qty, is_force(net_delta_shares, params))


def standing_reasons(state: GateState, params: StrategyParams, counters: Counters) -> list[str]:
    """The gates that hold whatever the size of a hedge: what the self-check reports as block reasons."""
    reasons: list[str] = []
    if state.paused:
        reasons.append("paused")
    if state.stopping:
        reasons.append("stopping")
    if state.halted:
        reasons.append("risk_halt")
    if not state.broker_connected:
        reasons.append("broker_disconnected")
    if state.quote_age_ms is None:
        reasons.append("no_quote")
    elif state.quote_age_ms >= params.stale_quote_ms:
        reasons.append("data_stale")
    if not state.greeks_valid:
        reasons.append("greeks_invalid")
    if not state.reconciled:
        reasons.append("not_reconciled")
    if not state.has_options:
        reasons.append("no_option_position")
    if params.trading_hours_only and not state.market_open:
        reasons.append("outside_trading_hours")
    if state.in_blackout:
        reasons.append("earnings_blackout")
    if counters.daily_hedges >= params.max_daily_hedges:
        reasons.append("max_daily_hedges")
    if state.spread_bps is not None and _spread_blocks(state.spread_bps, params):
        reasons.append("spread_too_wide")
    if state.minutes_to_expiry is not None and state.minutes_to_expiry < params.expiry_cutoff_minutes:
        reasons.append("near_expiry")
    if not state.lease_confirmed:
        reasons.append("lease_unconfirmed")
    if not state.journal_writable:
        reasons.append("journal_unwritable")
    if state.clock_skewed:
        reasons.append("clock_skew")
    return reasons


def _spread_blocks(spread_bps: float, params: StrategyParams) -> bool:
    limit = params.extreme_spread_bps if params.max_spread_bps is None else min(
        params.extreme_spread_bps, params.max_spread_bps
    )
    return spread_bps >= limit


def evaluate_gates(state: GateState, params: StrategyParams, counters: Counters, now: datetime) -> GateResult:
    """Size the hedge and check every gate; `reasons` lists all failing gates in GATE_REASONS order."""
    size = size_hedge(state.net_delta_shares, state.hedge_shares, params)
    failing = set(standing_reasons(state, params, counters))
    if state.last_reject_at is not None and (now - state.last_reject_at).total_seconds() < max(
            params.cooldown_s, REJECT_BACKOFF_S):
        failing.add("cooldown")  # even a force hedge waits after a rejection: no retry storm
    if not size.force:
        if state.last_hedge_at is not None and (now - state.last_hedge_at).total_seconds() < params.cooldown_s:
            failing.add("cooldown")
        if (
            state.last_hedge_price is not None
            and state.spot is not None
            and abs(state.spot / state.last_hedge_price - 1.0) * 1e4 < params.min_price_move_bps
        ):
            failing.add("min_price_move")
    if size.order_shares == 0 and size.intent_shares != 0:
        failing.add("max_position")
    if state.order_in_flight:
        failing.add("order_in_flight")
    if 0 < abs(size.order_shares) < params.min_hedge_shares:
        failing.add("below_min_hedge")
    reasons = tuple(r for r in GATE_REASONS if r in failing)
    return GateResult(allowed=not reasons and size.order_shares != 0, reasons=reasons, size=size)
