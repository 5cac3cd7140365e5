"""Hedge sizing and the gates a hedge must pass; every failing gate is reported, in one fixed order.

The rules themselves are `trading.core.rules` (compiled for the fast replay); this is their face for the engine
and the self-check: a GateState in, reason names out."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime

from trading.core import rules
from trading.core.params import StrategyParams
from trading.core.rules import GATE_REASONS, REASON_BIT, REJECT_BACKOFF_S, round_half_away

__all__ = [
    "GATE_REASONS", "PER_HEDGE_REASONS", "REASON_BIT", "REJECT_BACKOFF_S",
    "Counters", "GateResult", "GateState", "HedgeSize", "evaluate_gates", "is_force", "reasons_mask", "reasons_of",
    "round_half_away", "size_hedge", "standing_mask", "standing_reasons",
]

# Reasons that depend on the particular hedge (its size, its timing) rather than on the state of the system:
# they are normal between hedges and do not turn the lamp red.
PER_HEDGE_REASONS = frozenset({"cooldown", "min_price_move", "order_in_flight", "below_min_hedge", "max_position"})


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
    mask: int  # the reasons as REASON_BIT flags


def reasons_mask(reasons: tuple[str, ...] | list[str]) -> int:
    mask = 0
    for r in reasons:
        mask |= REASON_BIT[r]
    return mask


_REASONS_OF: dict[int, tuple[str, ...]] = {}


def reasons_of(mask: int) -> tuple[str, ...]:
    """The reasons of a REASON_BIT mask, in GATE_REASONS order."""
    reasons = _REASONS_OF.get(mask)
    if reasons is None:  # a handful of masks recur tick after tick
        reasons = _REASONS_OF[mask] = tuple(r for i, r in enumerate(GATE_REASONS) if mask >> i & 1)
    return reasons


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def is_force(net_delta_shares: float, params: StrategyParams) -> bool:
    return rules.is_force(net_delta_shares, params.force_hedge_shares, _nan(params.max_net_delta_shares))


def size_hedge(net_delta_shares: float, hedge_shares: float, params: StrategyParams) -> HedgeSize:
    """need = -net delta, rounded half away from zero, capped per order, clipped (not blocked) by max position."""
    intent, qty = rules.size_hedge(net_delta_shares, hedge_shares, params.max_hedge_shares_per_order,
                                   params.max_position_shares)
    return HedgeSize(intent, qty, is_force(net_delta_shares, params))


def standing_mask(state: GateState, params: StrategyParams, counters: Counters) -> int:
    return rules.standing_mask(
        state.paused, state.stopping, state.halted, state.broker_connected, _nan(state.quote_age_ms),
        params.stale_quote_ms, state.greeks_valid, state.reconciled, state.has_options,
        params.trading_hours_only and not state.market_open, state.in_blackout, counters.daily_hedges,
        params.max_daily_hedges, _nan(state.spread_bps),
        rules.spread_limit_bps(params.extreme_spread_bps, _nan(params.max_spread_bps)),
        _nan(state.minutes_to_expiry), params.expiry_cutoff_minutes, state.lease_confirmed, state.journal_writable,
        state.clock_skewed)


def standing_reasons(state: GateState, params: StrategyParams, counters: Counters) -> list[str]:
    """The gates that hold whatever the size of a hedge: what the self-check reports as block reasons."""
    return list(reasons_of(standing_mask(state, params, counters)))


def evaluate_gates(state: GateState, params: StrategyParams, counters: Counters, now: datetime) -> GateResult:
    """Size the hedge and check every gate; `reasons` lists all failing gates in GATE_REASONS order."""
    size = size_hedge(state.net_delta_shares, state.hedge_shares, params)
    mask = standing_mask(state, params, counters) | rules.hedge_mask(
        size.intent_shares, size.order_shares, size.force,
        math.nan if state.last_hedge_at is None else (now - state.last_hedge_at).total_seconds(),
        math.nan if state.last_reject_at is None else (now - state.last_reject_at).total_seconds(),
        params.cooldown_s, _nan(state.spot), _nan(state.last_hedge_price), params.min_price_move_bps,
        state.order_in_flight, params.min_hedge_shares)
    allowed = mask == 0 and size.order_shares != 0.0
    return GateResult(allowed=allowed, reasons=reasons_of(mask), size=size, mask=mask)
