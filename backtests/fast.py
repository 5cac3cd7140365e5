"""The fast replay path: the per-event replay's event loop over state arrays, compiled with numba.

Only the loop and its state live here. Every decision it takes is a function of `trading.core` the engine calls
too — the gates, the sizing, the delta class, the trading state machine's triggers and its transition array, the
loss breaker, Black-Scholes, the average-cost ledger, settlement, fills and commissions — compiled by
`backtests.jit` together with this loop. The loop follows `Engine.on_event` for the replay's event model (a
quote, an option quote per leg, fills at t + latency, no timers): the day roll, the book's greeks and marks, the
day's baseline, then the state machine. The identity tests drive both paths over scenarios where every guard
fires and require identical traces, tick by tick, float for float.

Not supported, so `run_backtest` falls back to the per-event path for them: limit orders (`order_type`
"limit": resting orders, timers and the working timeout).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from backtests import jit
from backtests.calendars import et_days, open_intervals
from backtests.data import TickData
from backtests.replay import (
    DECISION_BLOCKED,
    DECISION_HEDGE,
    DECISION_NONE,
    HALT_POLICIES,
    Execution,
    ProgressFn,
    Structure,
    Trace,
    TraceParts,
)
from trading.core.calendar import in_earnings_blackout
from trading.core.greeks import bs_scalar, expiry_instant, years_to
from trading.core.params import StrategyParams
from trading.core.rules import (
    D_INVALID,
    D_MINOR,
    NO_INSTANT,
    S_HALTED,
    S_SAFE,
    S_SYNC,
    T_DECIDE,
    T_NONE,
    T_ORDER_SENT,
    T_RESET_HALT,
    TRADING_NEXT,
    book_trade,
    commission_usd,
    decision_trigger,
    delta_class,
    hedge_mask,
    intrinsic_value,
    is_force,
    is_healthy,
    loss_halts,
    mid_price,
    size_hedge,
    spread_limit_bps,
    standing_mask,
    touch_price,
    trading_trigger,
    unrealized_usd,
)

# ---- parameters -----------------------------------------------------------------------------------------------
P_QTY, P_STRIKE, P_RATE, P_DIV, P_FALLBACK, P_THRESH, P_FORCE, P_MAXNET, P_EPSILON, P_MIN_HEDGE, P_MAX_ORDER, \
    P_COOLDOWN, P_MIN_MOVE, P_MAX_POS, P_MAX_LOSS, P_SPREAD_LIMIT, P_STALE_MS, P_COMM_PS, P_COMM_MIN, \
    P_EXPIRY_S, P_CUTOFF_MIN = range(21)
N_PF = 21
Q_LATENCY_US, Q_MAX_DAILY, Q_HOURS_ONLY, Q_HAS_EARNINGS, Q_RESUME = range(5)
N_PI = 5

# ---- state ----------------------------------------------------------------------------------------------------
# Floats: the last valid quote, the book's hedge shares and delta, the ledger's commissions and day baseline, the
# last hedge price and the order in flight.
F_BID, F_ASK, F_HEDGE, F_DELTA, F_COMM, F_DAYSTART, F_LHP, F_ORD_QTY = range(8)
N_FS = 8
# Integers: the trading state, the US/Eastern day (index into the day bounds) and its hedge count, instants (µs).
I_STATE, I_DAY, I_DAILY, I_LAST_HEDGE, I_HALTED, I_DS_UNKNOWN, I_QUOTE_TS, I_PENDING, I_ORD_DUE, I_ORD_US, \
    I_HALT_DAY, I_HEALTHY_SINCE, I_NFILLS, I_VALID, I_DCLASS, I_LAST_NOW, I_DECIDED, I_SETTLED, I_SESSION = range(19)
N_IS = 19
# The ledger's holdings, in the engine's order (the hedge first, then the legs as adopted): each booked by
# `book_trade` and counted by `unrealized_usd`.
H_QTY, H_AVG, H_MULT, H_REAL, H_MARK = range(5)
HOLD_HEDGE = 0
# The legs (call, put): the sign of their payoff, their market mid and IV (NaN until an option quote), whether
# the ledger marks them at that mid, their settlement value; the Black-Scholes inputs and outputs last computed.
L_SIGN, L_MID, L_IV, L_MARKET, L_SETTLED, L_SPOT, L_T, L_VOL, L_PRICE, L_DELTA, L_GAMMA = range(11)
N_LF = 11
LEGS = 2

EV_RESET, EV_QUOTE, EV_CALL_QUOTE, EV_PUT_QUOTE, EV_FILL = range(5)

# ---- per-row outputs ------------------------------------------------------------------------------------------
O_INTENT, O_ORDER, O_NET, O_HS, O_HQ, O_HAVG, O_HREAL, O_HMARK, O_CMARK, O_PMARK, O_COMM = range(11)
N_OF = 11
OI_DECISION, OI_REASONS, OI_STATE = range(3)
N_OI = 3


def unsupported(params: StrategyParams) -> tuple[str, str] | None:
    """(field, why) when the fast path cannot reproduce the engine for these params, else None."""
    if params.order_type == "limit":
        return "order_type", "limit orders rest, time out and are cancelled through timers"
    return None


# ---- state-array helpers --------------------------------------------------------------------------------------


def _leg_price(legs: np.ndarray, k: int, spot: float, strike: float, t: float, rate: float, div: float,
               vol: float) -> None:
    """Black-Scholes for leg k, skipped when the inputs are the floats of the last call: a tick prices each leg
    for its option quote, then the engine evaluates it at exactly those inputs again. (Legs are indexed, never
    taken as row views: a view costs an allocation per call in compiled code.)"""
    if legs[k, L_SPOT] == spot and legs[k, L_T] == t and legs[k, L_VOL] == vol:
        return
    price, delta, gamma, _, _ = bs_scalar(legs[k, L_SIGN], spot, strike, t, rate, div, vol)
    legs[k, L_SPOT], legs[k, L_T], legs[k, L_VOL] = spot, t, vol
    legs[k, L_PRICE], legs[k, L_DELTA], legs[k, L_GAMMA] = price, delta, gamma


def _ledger_total(hold: np.ndarray, fs: np.ndarray) -> float:
    """PnlLedger.total_usd: realized + unrealized - commissions, each summed in holding order."""
    realized = 0.0
    unrealized = 0.0
    for h in range(hold.shape[0]):
        realized += hold[h, H_REAL]
    for h in range(hold.shape[0]):
        unrealized += unrealized_usd(hold[h, H_QTY], hold[h, H_MARK], hold[h, H_AVG], hold[h, H_MULT])
    return realized + unrealized - fs[F_COMM]


def _day_index(bounds: np.ndarray, now: int, day: int = -1) -> int:
    """The index of the US/Eastern day holding `now`: `day` when it still does (nearly always: a search at every
    event took a sixth of the kernel's time), else found by a search."""
    if day >= 0 and bounds[day] <= now and (day + 1 == bounds.shape[0] or now < bounds[day + 1]):
        return day
    return np.searchsorted(bounds, now, side="right") - 1


def _roll_day(now: int, fs: np.ndarray, ist: np.ndarray, hold: np.ndarray, bounds: np.ndarray) -> None:
    """Engine._roll_day: a new US/Eastern date resets the day's hedge count and its P&L baseline."""
    day = _day_index(bounds, now, ist[I_DAY])
    if day != ist[I_DAY]:
        ist[I_DAY] = day
        ist[I_DAILY] = 0
        fs[F_DAYSTART] = _ledger_total(hold, fs)


def _is_open(now: int, opens: np.ndarray, closes: np.ndarray, ist: np.ndarray) -> bool:
    """The calendar's answer from its own session bounds (`backtests.calendars.open_intervals`), searched for
    only when `now` has left the session it was last in."""
    ts = now / 1e6
    k = ist[I_SESSION]
    if not (k >= 0 and opens[k] <= ts and (k + 1 == opens.shape[0] or ts < opens[k + 1])):
        k = np.searchsorted(opens, ts, side="right") - 1
        ist[I_SESSION] = k
    return k >= 0 and ts < closes[k]


def _gate_mask(now: int, fs: np.ndarray, ist: np.ndarray, pf: np.ndarray, pi: np.ndarray, blackout: np.ndarray,
               opens: np.ndarray, closes: np.ndarray) -> tuple[int, float, float]:
    """Engine.gate_state then evaluate_gates at `now`: (reasons mask, intent shares, order shares). The edge's
    own gates (paused, stopping, broker, reconciled, lease, journal, clock) always pass in a replay."""
    bid = fs[F_BID]
    ask = fs[F_ASK]
    mid = mid_price(bid, ask)
    spread_bps = (ask - bid) / mid * 1e4 if mid != 0.0 else math.nan
    quote_age_ms = (now - ist[I_QUOTE_TS]) / 1e6 * 1000.0
    settled = ist[I_SETTLED] == 1
    minutes_to_expiry = math.nan if settled else (pf[P_EXPIRY_S] - now / 1e6) / 60.0
    closed = pi[Q_HOURS_ONLY] == 1 and not _is_open(now, opens, closes, ist)
    net = fs[F_HEDGE] + fs[F_DELTA]
    intent, qty = size_hedge(net, fs[F_HEDGE], pf[P_MAX_ORDER], pf[P_MAX_POS])
    since_hedge_s = math.nan if ist[I_LAST_HEDGE] == NO_INSTANT else (now - ist[I_LAST_HEDGE]) / 1e6
    mask = standing_mask(
        False, False, ist[I_HALTED] == 1, True, quote_age_ms, pf[P_STALE_MS], ist[I_VALID] == 1, True, not settled,
        closed, pi[Q_HAS_EARNINGS] == 1 and blackout[ist[I_DAY]], ist[I_DAILY], pi[Q_MAX_DAILY], spread_bps,
        pf[P_SPREAD_LIMIT], minutes_to_expiry, pf[P_CUTOFF_MIN], True, True, False,
    ) | hedge_mask(
        intent, qty, is_force(net, pf[P_FORCE], pf[P_MAXNET]), since_hedge_s, math.nan, pf[P_COOLDOWN], mid,
        fs[F_LHP], pf[P_MIN_MOVE], ist[I_PENDING] == 1, pf[P_MIN_HEDGE],
    )
    return mask, intent, qty


def _mark(fs: np.ndarray, hold: np.ndarray, legs: np.ndarray, spot: float) -> None:
    """Engine._mark: the hedge at the spot, each leg at its settlement, its market mid or its model price; a
    change of source (model <-> market) moves the day's baseline with it (PnlLedger.remark)."""
    if math.isfinite(spot):
        hold[HOLD_HEDGE, H_MARK] = spot
    for k in range(LEGS):
        h = HOLD_HEDGE + 1 + k
        if not math.isnan(legs[k, L_SETTLED]):
            hold[h, H_MARK] = legs[k, L_SETTLED]
            continue
        market = not math.isnan(legs[k, L_MID])
        mark = legs[k, L_MID] if market else legs[k, L_PRICE]
        if market != (legs[k, L_MARKET] == 1.0):
            if math.isfinite(mark):
                before = unrealized_usd(hold[h, H_QTY], hold[h, H_MARK], hold[h, H_AVG], hold[h, H_MULT])
                hold[h, H_MARK] = mark
                fs[F_DAYSTART] += unrealized_usd(hold[h, H_QTY], hold[h, H_MARK], hold[h, H_AVG],
                                                 hold[h, H_MULT]) - before
            legs[k, L_MARKET] = 1.0 if market else 0.0
        elif math.isfinite(mark):
            hold[h, H_MARK] = mark


def _step(state: int, trigger: int) -> int:
    target = TRADING_NEXT[state, trigger]
    if target < 0:
        raise ValueError("undefined trading transition")  # trading_transition raises TransitionError
    return target


def _evaluate(now: int, fs: np.ndarray, ist: np.ndarray, hold: np.ndarray, legs: np.ndarray, pf: np.ndarray,
              pi: np.ndarray, blackout: np.ndarray, opens: np.ndarray, closes: np.ndarray, dec_f: np.ndarray,
              dec_i: np.ndarray) -> None:
    """Engine._evaluate after an event's handler; a decision lands in dec_f/dec_i and ist[I_DECIDED]."""
    ist[I_LAST_NOW] = now
    has_quote = ist[I_QUOTE_TS] != NO_INSTANT
    spot = mid_price(fs[F_BID], fs[F_ASK])
    if has_quote:
        if ist[I_SETTLED] == 0 and now / 1e6 >= pf[P_EXPIRY_S]:  # ManagedBook.settle_expired
            ist[I_SETTLED] = 1
            for k in range(LEGS):
                legs[k, L_SETTLED] = intrinsic_value(legs[k, L_SIGN], spot, pf[P_STRIKE])
        valid = spot > 0 and math.isfinite(spot)
        delta = 0.0
        if ist[I_SETTLED] == 0:  # ManagedBook.compute_greeks
            t = years_to(pf[P_EXPIRY_S], now / 1e6)
            units = pf[P_QTY] * 100.0
            for k in range(LEGS):
                _leg_price(legs, k, spot, pf[P_STRIKE], t, pf[P_RATE], pf[P_DIV],
                           pf[P_FALLBACK] if math.isnan(legs[k, L_IV]) else legs[k, L_IV])
                delta += units * legs[k, L_DELTA]
                valid = valid and math.isfinite(legs[k, L_DELTA]) and math.isfinite(legs[k, L_GAMMA])
        fs[F_DELTA] = delta
        ist[I_VALID] = 1 if valid else 0
        _mark(fs, hold, legs, spot)
        if ist[I_DS_UNKNOWN] == 1:  # the day counts from the first full mark
            fs[F_DAYSTART] = _ledger_total(hold, fs)
            ist[I_DS_UNKNOWN] = 0
    if ist[I_HALTED] == 0 and ist[I_DS_UNKNOWN] == 0:
        if loss_halts(_ledger_total(hold, fs) - fs[F_DAYSTART], pf[P_MAX_LOSS]):
            ist[I_HALTED] = 1
            ist[I_HALT_DAY] = ist[I_DAY]
    valid_greeks = ist[I_VALID] == 1
    net = fs[F_HEDGE] + fs[F_DELTA]
    ist[I_DCLASS] = delta_class(net, valid_greeks and has_quote, pf[P_FORCE], pf[P_MAXNET], pf[P_THRESH],
                                pf[P_EPSILON])
    quote_age_ms = (now - ist[I_QUOTE_TS]) / 1e6 * 1000.0 if has_quote else math.nan
    healthy = is_healthy(True, quote_age_ms, pf[P_STALE_MS], valid_greeks)
    state = ist[I_STATE]
    again = True
    while again:
        trigger, ist[I_HEALTHY_SINCE], again = trading_trigger(
            state, ist[I_HALTED] == 1, has_quote, ist[I_SETTLED] == 0, healthy, ist[I_HEALTHY_SINCE], now,
            ist[I_PENDING] == 1, ist[I_DCLASS] <= D_MINOR)
        if trigger == T_DECIDE:
            mask, intent, qty = _gate_mask(now, fs, ist, pf, pi, blackout, opens, closes)
            allowed, trigger = decision_trigger(mask, qty)
            state = _step(state, trigger)
            ist[I_DECIDED] = 1
            dec_i[0] = DECISION_HEDGE if allowed else (DECISION_BLOCKED if mask != 0 else DECISION_NONE)
            dec_i[1] = mask
            dec_f[0] = intent
            dec_f[1] = qty
            dec_f[2] = net
            if allowed:  # Engine._send: the order leaves, the day counts it, cooldown and min move start here
                ist[I_PENDING] = 1
                fs[F_ORD_QTY] = qty
                ist[I_ORD_US] = now
                ist[I_ORD_DUE] = now + pi[Q_LATENCY_US]
                ist[I_DAILY] += 1
                ist[I_LAST_HEDGE] = now
                fs[F_LHP] = spot
                state = _step(state, T_ORDER_SENT)
        elif trigger != T_NONE:
            state = _step(state, trigger)
    ist[I_STATE] = state


def _fill(i: int, at: int, fs: np.ndarray, ist: np.ndarray, hold: np.ndarray, pf: np.ndarray, fill_i: np.ndarray,
          fill_f: np.ndarray) -> None:
    """The sim fill (FillModel: the touch, IB-style commission) and Engine._on_fill: hedge shares, the ledger's
    average-cost trade and commissions, the last hedge price; the order is done."""
    qty = fs[F_ORD_QTY]
    shares = abs(qty)
    price = touch_price(qty > 0, fs[F_BID], fs[F_ASK])
    commission = commission_usd(shares, price, pf[P_COMM_PS], pf[P_COMM_MIN])
    signed = shares if qty > 0 else -shares
    fs[F_HEDGE] += signed
    h = HOLD_HEDGE
    hold[h, H_QTY], hold[h, H_AVG], realized = book_trade(hold[h, H_QTY], hold[h, H_AVG], signed, price,
                                                          hold[h, H_MULT])
    hold[h, H_REAL] += realized
    if math.isnan(hold[h, H_MARK]):
        hold[h, H_MARK] = price
    fs[F_COMM] += commission
    fs[F_LHP] = price
    ist[I_PENDING] = 0
    k = ist[I_NFILLS]
    fill_i[k, 0] = i
    fill_i[k, 1] = at
    fill_i[k, 2] = ist[I_ORD_US]
    fill_f[k, 0] = signed
    fill_f[k, 1] = price
    fill_f[k, 2] = commission
    ist[I_NFILLS] = k + 1


def _option_quote(legs: np.ndarray, k: int, mid: float, t: float, pf: np.ndarray, iv: float) -> bool:
    """The replay's OptionQuote for leg k (Black-Scholes at the tick's mid and IV, bid = ask = price) and the
    book taking it; False when the price is no valid quote, so none is sent."""
    _leg_price(legs, k, mid, pf[P_STRIKE], t, pf[P_RATE], pf[P_DIV], iv)
    price = legs[k, L_PRICE]
    if not price > 0.0:
        return False
    if math.isnan(legs[k, L_SETTLED]):  # a settled leg takes no quotes
        legs[k, L_MID] = mid_price(price, price)
        legs[k, L_IV] = iv
    return True


def _kernel(i0: int, i1: int, ts: np.ndarray, bid: np.ndarray, ask: np.ndarray, iv: np.ndarray, pf: np.ndarray,
            pi: np.ndarray, bounds: np.ndarray, blackout: np.ndarray, opens: np.ndarray, closes: np.ndarray,
            fs: np.ndarray, ist: np.ndarray, hold: np.ndarray, legs: np.ndarray, out_f: np.ndarray,
            out_i: np.ndarray, fill_i: np.ndarray, fill_f: np.ndarray, dec_f: np.ndarray,
            dec_i: np.ndarray) -> None:
    """Ticks i0..i1: each tick's events in order, each followed by the engine's evaluation, then the trace row
    (row i - i0 of the chunk's trace buffers; fills from row 0 of theirs; dec_f/dec_i the decision of the tick
    being replayed). It allocates nothing: every array is the caller's."""
    n = ts.shape[0]
    for i in range(i0, i1):
        ist[I_DECIDED] = 0
        has_iv = not math.isnan(iv[i])
        for event in range(5):
            now = ts[i]
            if event == EV_RESET:
                # halt_policy resume_next_day: the replay's Control("reset_halt") before a new day's first quote
                if not (pi[Q_RESUME] == 1 and ist[I_HALTED] == 1 and _day_index(bounds, now, ist[I_DAY]) > ist[I_HALT_DAY]):
                    continue
                _roll_day(now, fs, ist, hold, bounds)
                ist[I_HALTED] = 0
                if ist[I_STATE] == S_HALTED:
                    ist[I_STATE] = _step(S_HALTED, T_RESET_HALT)
            elif event == EV_QUOTE:
                _roll_day(now, fs, ist, hold, bounds)  # Engine.on_event rolls the day before the handler
                b = bid[i]
                a = ask[i]
                if math.isfinite(b) and math.isfinite(a) and b > 0 and a > 0 and a >= b:  # else ignored
                    fs[F_BID] = b
                    fs[F_ASK] = a
                    ist[I_QUOTE_TS] = now
            elif event == EV_CALL_QUOTE or event == EV_PUT_QUOTE:
                if not has_iv:
                    continue
                t = years_to(pf[P_EXPIRY_S], now / 1e6)
                if not _option_quote(legs, event - EV_CALL_QUOTE, mid_price(bid[i], ask[i]), t, pf, iv[i]):
                    continue
                _roll_day(now, fs, ist, hold, bounds)
            else:
                if not (ist[I_PENDING] == 1 and (i + 1 >= n or ist[I_ORD_DUE] < ts[i + 1])):
                    continue
                now = ist[I_ORD_DUE]
                _roll_day(now, fs, ist, hold, bounds)
                _fill(i, now, fs, ist, hold, pf, fill_i, fill_f)
            _evaluate(now, fs, ist, hold, legs, pf, pi, blackout, opens, closes, dec_f, dec_i)
        _row(i - i0, fs, ist, hold, pf, pi, blackout, opens, closes, dec_f, dec_i, out_f, out_i)


def _row(i: int, fs: np.ndarray, ist: np.ndarray, hold: np.ndarray, pf: np.ndarray, pi: np.ndarray,
         blackout: np.ndarray, opens: np.ndarray, closes: np.ndarray, dec_f: np.ndarray, dec_i: np.ndarray,
         out_f: np.ndarray, out_i: np.ndarray) -> None:
    """The tick's trace row, as `_EventReplay.capture` writes it."""
    if ist[I_DECIDED] == 1:
        out_i[OI_DECISION, i] = dec_i[0]
        out_i[OI_REASONS, i] = dec_i[1]
        out_f[O_INTENT, i] = dec_f[0]
        out_f[O_ORDER, i] = dec_f[1]
        out_f[O_NET, i] = dec_f[2]
    else:
        out_f[O_NET, i] = fs[F_HEDGE] + fs[F_DELTA]
        out_f[O_INTENT, i] = math.nan
        out_f[O_ORDER, i] = math.nan
        out_i[OI_DECISION, i] = DECISION_NONE
        out_i[OI_REASONS, i] = 0
        standing_still = ist[I_HALTED] == 1 or ist[I_PENDING] == 1 or ist[I_STATE] == S_SAFE
        if standing_still and D_MINOR < ist[I_DCLASS] < D_INVALID:  # out of band (D2, D3): what stands in its way
            mask, intent, qty = _gate_mask(ist[I_LAST_NOW], fs, ist, pf, pi, blackout, opens, closes)
            out_i[OI_DECISION, i] = DECISION_BLOCKED if mask != 0 else DECISION_NONE
            out_i[OI_REASONS, i] = mask
            out_f[O_INTENT, i] = intent
            out_f[O_ORDER, i] = qty
    out_f[O_HS, i] = fs[F_HEDGE]
    out_f[O_HQ, i] = hold[HOLD_HEDGE, H_QTY]
    out_f[O_HAVG, i] = hold[HOLD_HEDGE, H_AVG]
    out_f[O_HREAL, i] = hold[HOLD_HEDGE, H_REAL]
    out_f[O_HMARK, i] = hold[HOLD_HEDGE, H_MARK]
    out_f[O_CMARK, i] = hold[HOLD_HEDGE + 1, H_MARK]
    out_f[O_PMARK, i] = hold[HOLD_HEDGE + 2, H_MARK]
    out_f[O_COMM, i] = fs[F_COMM]
    out_i[OI_STATE, i] = ist[I_STATE]


# `_kernel`'s arguments as `run_fast` passes them: C-contiguous int64 (i8), float64 (f8) and bool (b1) arrays.
KERNEL_SIGNATURE = ("void(i8, i8, i8[::1], f8[::1], f8[::1], f8[::1], f8[::1], i8[::1], i8[::1], b1[::1], f8[::1], "
                    "f8[::1], f8[::1], i8[::1], f8[:, ::1], f8[:, ::1], f8[:, ::1], i8[:, ::1], i8[:, ::1], "
                    "f8[:, ::1], f8[::1], i8[::1])")
_compiled_kernel: Callable[..., Any] | None = None


def compiled_kernel() -> Callable[..., Any]:
    """`_kernel` and everything it calls, built once per code hash into a native module, imported once per process."""
    global _compiled_kernel
    if _compiled_kernel is None:
        _compiled_kernel = jit.native(_kernel, KERNEL_SIGNATURE)
    return _compiled_kernel


# Ticks per call of the compiled event loop: its trace buffers hold one chunk, handed over before the next.
CHUNK_TICKS = 65_536
ChunkFn = Callable[[int, Trace], None]


def run_fast(data: TickData, params: StrategyParams, structure: Structure, execution: Execution,
             *, halt_policy: str = HALT_POLICIES[0], progress: ProgressFn | None = None,
             on_chunk: ChunkFn | None = None) -> Trace | None:
    """The per-event replay's trace, computed by the compiled event loop; see the module docstring. With
    `on_chunk`, each chunk's trace goes to it in order instead, as `on_chunk(first_row, part)` with `part` a view of
    buffers the next chunk reuses, and None is returned: a long replay never holds its per-tick trace."""
    why = unsupported(params)
    if why is not None:
        raise ValueError(f"fast path does not support {why[0]}: {why[1]}")
    kernel = compiled_kernel()
    n = len(data)
    ts = np.ascontiguousarray(data.ts_us, dtype=np.int64)
    t0 = int(ts[0])
    latency_us = execution.latency_us
    day0, bounds = et_days(t0, int(ts[-1]) + latency_us)
    blackout = np.array([bool(params.earnings_dates) and in_earnings_blackout(
        day0.fromordinal(day0.toordinal() + k), params.earnings_dates, params.blackout_days_before,
        params.blackout_days_after) for k in range(len(bounds))], dtype=np.bool_)
    if params.trading_hours_only:
        opens, closes = open_intervals(params.exchange)
    else:
        opens, closes = np.array([-math.inf]), np.array([math.inf])
    pf = np.zeros(N_PF)
    pf[P_QTY] = structure.qty
    pf[P_STRIKE] = structure.strike
    pf[P_RATE] = params.risk_free_rate
    pf[P_DIV] = params.dividend_yield
    pf[P_FALLBACK] = params.fallback_vol
    pf[P_THRESH] = params.hedge_threshold_shares
    pf[P_FORCE] = params.force_hedge_shares
    pf[P_MAXNET] = math.nan if params.max_net_delta_shares is None else params.max_net_delta_shares
    pf[P_EPSILON] = params.epsilon_band_shares
    pf[P_MIN_HEDGE] = params.min_hedge_shares
    pf[P_MAX_ORDER] = params.max_hedge_shares_per_order
    pf[P_COOLDOWN] = params.cooldown_s
    pf[P_MIN_MOVE] = params.min_price_move_bps
    pf[P_MAX_POS] = params.max_position_shares
    pf[P_MAX_LOSS] = params.max_daily_loss_usd
    pf[P_SPREAD_LIMIT] = spread_limit_bps(
        params.extreme_spread_bps, math.nan if params.max_spread_bps is None else params.max_spread_bps)
    pf[P_STALE_MS] = params.stale_quote_ms
    pf[P_COMM_PS] = execution.commission_per_share
    pf[P_COMM_MIN] = execution.min_commission_usd
    pf[P_EXPIRY_S] = expiry_instant(structure.expiry)
    pf[P_CUTOFF_MIN] = params.expiry_cutoff_minutes
    pi = np.zeros(N_PI, dtype=np.int64)
    pi[Q_LATENCY_US] = latency_us
    pi[Q_MAX_DAILY] = params.max_daily_hedges
    pi[Q_HOURS_ONLY] = 1 if params.trading_hours_only else 0
    pi[Q_HAS_EARNINGS] = 1 if params.earnings_dates else 0
    pi[Q_RESUME] = 1 if halt_policy == "resume_next_day" else 0
    fs = np.zeros(N_FS)
    fs[F_BID] = fs[F_ASK] = fs[F_LHP] = math.nan
    ist = np.zeros(N_IS, dtype=np.int64)
    ist[I_DAY] = _day_index(bounds, t0)
    ist[I_LAST_HEDGE] = ist[I_QUOTE_TS] = ist[I_HEALTHY_SINCE] = NO_INSTANT
    ist[I_SESSION] = -1
    ist[I_DS_UNKNOWN] = 1
    # The managed book from the seed; PositionsSynced opened both legs at cost (marked at cost).
    hold = np.zeros((1 + LEGS, 5))
    hold[HOLD_HEDGE] = (0.0, 0.0, 1.0, 0.0, math.nan)
    for k, cost in enumerate((structure.call_cost, structure.put_cost)):
        hold[HOLD_HEDGE + 1 + k] = (structure.qty, structure.engine_cost(cost), 100.0, 0.0,
                                    structure.engine_cost(cost))
    legs = np.full((LEGS, N_LF), math.nan)
    legs[:, L_SIGN] = (1.0, -1.0)
    legs[:, L_MARKET] = 0.0
    if not math.isnan(data.iv[0]):  # tick 0's option quotes reach the book before its stock quote
        mid0 = mid_price(float(data.bid[0]), float(data.ask[0]))
        for k in range(LEGS):
            _option_quote(legs, k, mid0, years_to(pf[P_EXPIRY_S], t0 / 1e6), pf, float(data.iv[0]))
    ist[I_STATE] = S_SYNC  # BrokerStatus, PositionsSynced and Reconciled before tick 0: boot → sync
    # Column-major chunk buffers: each trace column is one contiguous row here, handed over without a copy.
    size = min(n, CHUNK_TICKS)
    out_f = np.empty((N_OF, size))
    out_i = np.zeros((N_OI, size), dtype=np.int64)
    fill_i = np.zeros((size + 1, 3), dtype=np.int64)  # a tick has one fill at most
    fill_f = np.zeros((size + 1, 3))
    dec_f = np.zeros(3)
    dec_i = np.zeros(2, dtype=np.int64)
    iv = np.ascontiguousarray(data.iv, dtype=np.float64)
    bid = np.ascontiguousarray(data.bid, dtype=np.float64)
    ask = np.ascontiguousarray(data.ask, dtype=np.float64)
    whole = TraceParts(n) if on_chunk is None else None
    for start in range(0, n, CHUNK_TICKS):
        stop = min(start + CHUNK_TICKS, n)
        ist[I_NFILLS] = 0
        kernel(start, stop, ts, bid, ask, iv, pf, pi, bounds, blackout, opens, closes, fs, ist, hold, legs, out_f,
               out_i, fill_i, fill_f, dec_f, dec_i)
        rows, k = stop - start, int(ist[I_NFILLS])
        part = Trace(
            decision=out_i[OI_DECISION, :rows].astype(np.int8), reasons=out_i[OI_REASONS, :rows],
            intent_shares=out_f[O_INTENT, :rows], order_shares=out_f[O_ORDER, :rows],
            net_delta_shares=out_f[O_NET, :rows], hedge_shares=out_f[O_HS, :rows], hedge_qty=out_f[O_HQ, :rows],
            hedge_avg=out_f[O_HAVG, :rows], hedge_realized=out_f[O_HREAL, :rows], hedge_mark=out_f[O_HMARK, :rows],
            call_mark=out_f[O_CMARK, :rows], put_mark=out_f[O_PMARK, :rows], commissions=out_f[O_COMM, :rows],
            state=out_i[OI_STATE, :rows].astype(np.int8),
            fill_row=fill_i[:k, 0], fill_us=fill_i[:k, 1], order_us=fill_i[:k, 2],
            fill_qty=fill_f[:k, 0], fill_price=fill_f[:k, 1], fill_commission=fill_f[:k, 2], path="fast")
        (whole.add if whole is not None else on_chunk)(start, part)  # type: ignore[misc]
        if progress is not None:
            progress(stop / n)
    return whole.trace() if whole is not None else None
