"""The engine's decisions as plain functions over scalars: written once, run as Python by the engine and compiled
by the fast replay (`backtests.jit`), so live and backtest decide alike by construction.

They keep to the subset numba compiles: floats, ints and bools in, tuples out, `math` only, module constants,
and calls to each other. None is NaN here (an instant never seen, a quote age without a quote); an absent limit
is NaN too. Dataclasses, enums and strings stay in the callers (`gates`, `engine`, `pnl`).
"""
from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from trading.core.fsm import TRADING_IGNORED, TRADING_TRANSITIONS, TradingState, TradingTrigger

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
REASON_BIT: dict[str, int] = {r: 1 << i for i, r in enumerate(GATE_REASONS)}
B_PAUSED = REASON_BIT["paused"]
B_STOPPING = REASON_BIT["stopping"]
B_RISK_HALT = REASON_BIT["risk_halt"]
B_DISCONNECTED = REASON_BIT["broker_disconnected"]
B_NO_QUOTE = REASON_BIT["no_quote"]
B_DATA_STALE = REASON_BIT["data_stale"]
B_GREEKS_INVALID = REASON_BIT["greeks_invalid"]
B_NOT_RECONCILED = REASON_BIT["not_reconciled"]
B_NO_OPTIONS = REASON_BIT["no_option_position"]
B_OUTSIDE_HOURS = REASON_BIT["outside_trading_hours"]
B_BLACKOUT = REASON_BIT["earnings_blackout"]
B_COOLDOWN = REASON_BIT["cooldown"]
B_MAX_DAILY = REASON_BIT["max_daily_hedges"]
B_MAX_POSITION = REASON_BIT["max_position"]
B_SPREAD = REASON_BIT["spread_too_wide"]
B_MIN_MOVE = REASON_BIT["min_price_move"]
B_IN_FLIGHT = REASON_BIT["order_in_flight"]
B_BELOW_MIN = REASON_BIT["below_min_hedge"]
B_NEAR_EXPIRY = REASON_BIT["near_expiry"]
B_LEASE = REASON_BIT["lease_unconfirmed"]
B_JOURNAL = REASON_BIT["journal_unwritable"]
B_CLOCK_SKEW = REASON_BIT["clock_skew"]
# Blocks that only wait for the price to move or time to pass (pause_cost), and those plus a wide spread
# (pause_liq); any other reason is a real block (no_trade).
COST_MASK = B_COOLDOWN | B_MIN_MOVE | B_BELOW_MIN
LIQ_MASK = COST_MASK | B_SPREAD
# After a rejected order nothing is sent for at least this long, whatever the delta.
REJECT_BACKOFF_S = 5.0
# Safe returns to sync only after the system has been healthy this long.
HEALTHY_DWELL_S = 3.0

# The trading state machine as integer codes and a transition array derived from its table.
STATES: tuple[TradingState, ...] = tuple(TradingState)
TRIGGERS: tuple[TradingTrigger, ...] = tuple(TradingTrigger)
STATE_CODE: dict[TradingState, int] = {s: i for i, s in enumerate(STATES)}
TRIGGER_CODE: dict[TradingTrigger, int] = {t: i for i, t in enumerate(TRIGGERS)}
UNDEFINED = -1  # a pair in neither the table nor its ignored set: the Python path raises on it


def _transition_array() -> npt.NDArray[np.int8]:
    table = np.full((len(STATES), len(TRIGGERS)), UNDEFINED, dtype=np.int8)
    for (state, trigger), target in TRADING_TRANSITIONS.items():
        table[STATE_CODE[state], TRIGGER_CODE[trigger]] = STATE_CODE[target]
    for state, trigger in TRADING_IGNORED:
        table[STATE_CODE[state], TRIGGER_CODE[trigger]] = STATE_CODE[state]
    return table


TRADING_NEXT = _transition_array()
S_BOOT, S_SYNC, S_IDLE, S_MONITOR, S_NO_TRADE, S_NEED_HEDGE, S_HEDGING, S_PAUSE_COST, S_PAUSE_LIQ, S_SAFE, \
    S_HALTED = (STATE_CODE[s] for s in (
        TradingState.BOOT, TradingState.SYNC, TradingState.IDLE, TradingState.MONITOR, TradingState.NO_TRADE,
        TradingState.NEED_HEDGE, TradingState.HEDGING, TradingState.PAUSE_COST, TradingState.PAUSE_LIQ,
        TradingState.SAFE, TradingState.HALTED))
T_START, T_SYNCED, T_NO_OPTIONS, T_IN_BAND, T_OUT_OF_BAND, T_BLOCKED, T_COST_BLOCKED, T_LIQ_BLOCKED, \
    T_ORDER_SENT, T_ORDER_DONE, T_UNHEALTHY, T_HEALTHY, T_RISK_HALT, T_RESET_HALT = (TRIGGER_CODE[t] for t in (
        TradingTrigger.START, TradingTrigger.SYNCED, TradingTrigger.NO_OPTIONS, TradingTrigger.IN_BAND,
        TradingTrigger.OUT_OF_BAND, TradingTrigger.BLOCKED, TradingTrigger.COST_BLOCKED,
        TradingTrigger.LIQ_BLOCKED, TradingTrigger.ORDER_SENT, TradingTrigger.ORDER_DONE, TradingTrigger.UNHEALTHY,
        TradingTrigger.HEALTHY, TradingTrigger.RISK_HALT, TradingTrigger.RESET_HALT))
T_NONE = -1  # the state stays as it is
NO_INSTANT = -(2**62)  # "never" for an instant in integer microseconds
T_DECIDE = -2  # out of band and free to act: the gates decide (then `decision_trigger`)

# Delta classes D0..D4 (classifier): in band, minor, hedge needed, force, invalid.
D_IN_BAND, D_MINOR, D_HEDGE, D_FORCE, D_INVALID = range(5)


# ---- delta and sizing ---------------------------------------------------------------------------------------


def is_force(net_delta_shares: float, force_hedge_shares: float, max_net_delta_shares: float) -> bool:
    """|net delta| reached the force level (or the hard cap, NaN when unset): cost gates do not apply."""
    level = abs(net_delta_shares)
    return level >= force_hedge_shares or (not math.isnan(max_net_delta_shares) and level >= max_net_delta_shares)


def delta_class(net_delta_shares: float, valid: bool, force_hedge_shares: float, max_net_delta_shares: float,
                hedge_threshold_shares: float, epsilon_band_shares: float) -> int:
    """D0..D4 with one comparison rule everywhere: a level is reached when abs(x) >= level."""
    if not valid:
        return D_INVALID
    if is_force(net_delta_shares, force_hedge_shares, max_net_delta_shares):
        return D_FORCE
    level = abs(net_delta_shares)
    if level >= hedge_threshold_shares:
        return D_HEDGE
    if level >= epsilon_band_shares:
        return D_MINOR
    return D_IN_BAND


def round_half_away(x: float) -> float:
    return math.copysign(math.floor(abs(x) + 0.5), x)


def size_hedge(net_delta_shares: float, hedge_shares: float, max_hedge_shares_per_order: float,
               max_position_shares: float) -> tuple[float, float]:
    """(intent, order) shares: need = -net delta rounded half away from zero, capped per order, clipped (not
    blocked) by the max position."""
    intent = round_half_away(-net_delta_shares)
    qty = math.copysign(min(abs(intent), max_hedge_shares_per_order), intent) if intent != 0.0 else 0.0
    target = hedge_shares + qty
    # Clip only a trade that grows the position past the limit: one that shrinks a position already beyond
    # it (the limit was lowered) goes as sized, or the clip would overshoot the hedge and grow |net delta|.
    if abs(target) > max_position_shares and abs(target) > abs(hedge_shares):
        qty = math.copysign(max_position_shares, target) - hedge_shares
        if qty * intent < 0:  # already beyond the limit on this side: never trade further that way
            qty = 0.0
    return intent, qty


# ---- gates --------------------------------------------------------------------------------------------------


def spread_limit_bps(extreme_spread_bps: float, max_spread_bps: float) -> float:
    """The spread at which hedging stops: the extreme level, or the operator's max when lower (NaN: unset)."""
    return extreme_spread_bps if math.isnan(max_spread_bps) else min(extreme_spread_bps, max_spread_bps)


def standing_mask(paused: bool, stopping: bool, halted: bool, broker_connected: bool, quote_age_ms: float,
                  stale_quote_ms: float, greeks_valid: bool, reconciled: bool, has_options: bool,
                  closed_for_hedging: bool, in_blackout: bool, daily_hedges: int, max_daily_hedges: int,
                  spread_bps: float, limit_spread_bps: float, minutes_to_expiry: float,
                  expiry_cutoff_minutes: float, lease_confirmed: bool, journal_writable: bool,
                  clock_skewed: bool) -> int:
    """The gates that hold whatever the size of a hedge, as a REASON_BIT mask (what the self-check reports).
    `closed_for_hedging`: trading_hours_only and the market is closed."""
    mask = 0
    if paused:
        mask |= B_PAUSED
    if stopping:
        mask |= B_STOPPING
    if halted:
        mask |= B_RISK_HALT
    if not broker_connected:
        mask |= B_DISCONNECTED
    if math.isnan(quote_age_ms):
        mask |= B_NO_QUOTE
    elif quote_age_ms >= stale_quote_ms:
        mask |= B_DATA_STALE
    if not greeks_valid:
        mask |= B_GREEKS_INVALID
    if not reconciled:
        mask |= B_NOT_RECONCILED
    if not has_options:
        mask |= B_NO_OPTIONS
    if closed_for_hedging:
        mask |= B_OUTSIDE_HOURS
    if in_blackout:
        mask |= B_BLACKOUT
    if daily_hedges >= max_daily_hedges:
        mask |= B_MAX_DAILY
    if spread_bps >= limit_spread_bps:  # NaN (no spread) never blocks
        mask |= B_SPREAD
    if minutes_to_expiry < expiry_cutoff_minutes:
        mask |= B_NEAR_EXPIRY
    if not lease_confirmed:
        mask |= B_LEASE
    if not journal_writable:
        mask |= B_JOURNAL
    if clock_skewed:
        mask |= B_CLOCK_SKEW
    return mask


def hedge_mask(intent_shares: float, order_shares: float, force: bool, since_hedge_s: float,
               since_reject_s: float, cooldown_s: float, spot: float, last_hedge_price: float,
               min_price_move_bps: float, order_in_flight: bool, min_hedge_shares: float) -> int:
    """The gates that depend on this particular hedge (its size, its timing); NaN: never hedged / rejected."""
    mask = 0
    if since_reject_s < max(cooldown_s, REJECT_BACKOFF_S):
        mask |= B_COOLDOWN  # even a force hedge waits after a rejection: no retry storm
    if not force:
        if since_hedge_s < cooldown_s:
            mask |= B_COOLDOWN
        if abs(spot / last_hedge_price - 1.0) * 1e4 < min_price_move_bps:
            mask |= B_MIN_MOVE
    if order_shares == 0.0 and intent_shares != 0.0:
        mask |= B_MAX_POSITION
    if order_in_flight:
        mask |= B_IN_FLIGHT
    if 0.0 < abs(order_shares) < min_hedge_shares:
        mask |= B_BELOW_MIN
    return mask


# ---- the trading state machine ------------------------------------------------------------------------------


def trading_trigger(state: int, halted: bool, synced: bool, has_options: bool, healthy: bool,
                    healthy_since_us: int, now_us: int, order_in_flight: bool,
                    in_band: bool) -> tuple[int, int, bool]:
    """What the trading machine does next in `state` given the situation: (the trigger code, T_NONE to stay or
    T_DECIDE for the gates to decide; since when the system is healthy, NO_INSTANT when it is not; whether to
    step again from the new state). Instants in integer microseconds, so a dwell is exact."""
    if halted:
        return T_RISK_HALT, healthy_since_us, False
    if state == S_BOOT:
        return T_START, healthy_since_us, True
    if state == S_SYNC:  # waits for its first quote and a position sync, never falls to safe
        if not synced:
            return T_NONE, healthy_since_us, False
        return (T_SYNCED if has_options else T_NO_OPTIONS), healthy_since_us, False
    if state == S_SAFE:
        if not healthy:
            return T_NONE, NO_INSTANT, False
        since = now_us if healthy_since_us == NO_INSTANT else healthy_since_us
        return (T_HEALTHY if (now_us - since) / 1e6 >= HEALTHY_DWELL_S else T_NONE), since, False
    if not healthy:
        return T_UNHEALTHY, NO_INSTANT, False
    if state == S_HEDGING:
        return (T_NONE if order_in_flight else T_ORDER_DONE), healthy_since_us, False
    if not has_options:
        return T_NO_OPTIONS, healthy_since_us, False
    if state == S_IDLE:
        return T_SYNCED, healthy_since_us, True
    if order_in_flight:
        return T_ORDER_SENT, healthy_since_us, False
    if in_band:
        return T_IN_BAND, healthy_since_us, False
    return T_DECIDE, healthy_since_us, False


def decision_trigger(mask: int, order_shares: float) -> tuple[bool, int]:
    """(allowed, trigger) for a decision the gates made: out of band, or blocked by cost, liquidity or worse."""
    if mask == 0 and order_shares != 0.0:
        return True, T_OUT_OF_BAND
    if mask & ~COST_MASK == 0:
        return False, T_COST_BLOCKED
    if mask & ~LIQ_MASK == 0:
        return False, T_LIQ_BLOCKED
    return False, T_BLOCKED


def is_healthy(broker_connected: bool, quote_age_ms: float, stale_quote_ms: float, greeks_valid: bool) -> bool:
    """Connected, a fresh quote (NaN: none yet) and valid greeks: what safe waits for, what any state leaves for."""
    return broker_connected and not (math.isnan(quote_age_ms) or quote_age_ms >= stale_quote_ms) and greeks_valid


def loss_halts(daily_pnl_usd: float, max_daily_loss_usd: float) -> bool:
    return daily_pnl_usd <= -max_daily_loss_usd


# ---- the ledger and the fills -------------------------------------------------------------------------------


def book_trade(qty: float, avg_cost: float, signed_qty: float, price: float,
               multiplier: float) -> tuple[float, float, float]:
    """A trade booked at average cost: (qty, average cost, realized P&L) after it."""
    realized = 0.0
    if qty == 0.0 or (qty > 0.0) == (signed_qty > 0.0):
        total = qty + signed_qty
        avg_cost = (avg_cost * qty + price * signed_qty) / total if total != 0.0 else 0.0
        qty = total
    else:
        closing = min(abs(signed_qty), abs(qty))
        direction = 1.0 if qty > 0.0 else -1.0
        realized = closing * direction * (price - avg_cost) * multiplier
        qty += signed_qty
        if abs(qty) < 1e-9:
            qty, avg_cost = 0.0, 0.0
        elif (qty > 0.0) != (direction > 0.0):  # flipped through zero: the rest opens at this price
            avg_cost = price
    return qty, avg_cost, realized


def unrealized_usd(qty: float, mark: float, avg_cost: float, multiplier: float) -> float:
    """A holding's open P&L at its mark (NaN: never marked, nothing to count)."""
    if qty == 0.0 or math.isnan(mark):
        return 0.0
    return qty * (mark - avg_cost) * multiplier


def intrinsic_value(sign: float, spot: float, strike: float) -> float:
    """What an expired option settles at: sign +1 a call, -1 a put."""
    value = sign * (spot - strike)
    return value if value > 0.0 else 0.0


def mid_price(bid: float, ask: float) -> float:
    return (bid + ask) / 2.0


def touch_price(buy: bool, bid: float, ask: float) -> float:
    """Where a marketable order takes liquidity: buys at the ask, sells at the bid."""
    return ask if buy else bid


def commission_usd(shares: float, price: float, per_share_usd: float, min_usd: float) -> float:
    """IB Fixed-style stock commission: max(min, shares x per share), capped at 1 % of the trade value (the cap
    wins over the minimum for tiny trades)."""
    fee = max(min_usd, shares * per_share_usd)
    return min(fee, 0.01 * shares * abs(price))
