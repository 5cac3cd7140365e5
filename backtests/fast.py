"""The fast replay path: the per-event replay of `backtests.replay` compiled with numba, decision for decision.

It is a transcription, not a model: the engine's hedge path for the replay's event model (quote, option quotes,
fills at t + latency, no timers) step by step — day roll, Black-Scholes greeks with the same float operations in
the same order, the P&L ledger's average-cost arithmetic and summation order (the daily loss breaker halts on
it), the calendar's open/closed answer, gates in their fixed order, sizing, the trading-state machine
(sync, monitor, need_hedge, hedging, pause_cost, pause_liq, no_trade, safe with its dwell, halted). A test drives
both paths over scenarios where every guard fires and requires identical traces, tick by tick, float for float.

Not transcribed, so `run_backtest` falls back to the per-event path for them: limit orders (`order_type`
"limit": resting orders, timers and the working timeout).
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from backtests.calendars import et_days, open_intervals
from backtests.data import TickData
from backtests.replay import HALT_POLICIES, REASON_BIT, STATE_CODE, Execution, ProgressFn, Structure, Trace
from trading.core.calendar import in_earnings_blackout
from trading.core.fsm import TradingState
from trading.core.greeks import DAYS_PER_YEAR, SECONDS_PER_YEAR, expiry_instant
from trading.core.params import StrategyParams

# The greeks module's constants, recomputed the same way (a float is a float: same expression, same value).
_NEG_INV_SQRT2 = -1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_MIN_TOTAL_VOL = 1e-12
_HEALTHY_DWELL_S = 3.0  # trading.core.engine.HEALTHY_DWELL_S
assert DAYS_PER_YEAR == 365.0

# Trading states (codes shared with the trace).
S_BOOT = STATE_CODE[TradingState.BOOT]
S_SYNC = STATE_CODE[TradingState.SYNC]
S_IDLE = STATE_CODE[TradingState.IDLE]
S_MONITOR = STATE_CODE[TradingState.MONITOR]
S_NO_TRADE = STATE_CODE[TradingState.NO_TRADE]
S_NEED_HEDGE = STATE_CODE[TradingState.NEED_HEDGE]
S_HEDGING = STATE_CODE[TradingState.HEDGING]
S_PAUSE_COST = STATE_CODE[TradingState.PAUSE_COST]
S_PAUSE_LIQ = STATE_CODE[TradingState.PAUSE_LIQ]
S_SAFE = STATE_CODE[TradingState.SAFE]
S_HALTED = STATE_CODE[TradingState.HALTED]

B_RISK_HALT = REASON_BIT["risk_halt"]
B_DATA_STALE = REASON_BIT["data_stale"]
B_GREEKS_INVALID = REASON_BIT["greeks_invalid"]
B_OUTSIDE_HOURS = REASON_BIT["outside_trading_hours"]
B_BLACKOUT = REASON_BIT["earnings_blackout"]
B_COOLDOWN = REASON_BIT["cooldown"]
B_MAX_DAILY = REASON_BIT["max_daily_hedges"]
B_MAX_POSITION = REASON_BIT["max_position"]
B_SPREAD = REASON_BIT["spread_too_wide"]
B_MIN_MOVE = REASON_BIT["min_price_move"]
B_IN_FLIGHT = REASON_BIT["order_in_flight"]
B_BELOW_MIN = REASON_BIT["below_min_hedge"]
B_NO_OPTIONS = REASON_BIT["no_option_position"]
B_NEAR_EXPIRY = REASON_BIT["near_expiry"]
COST_MASK = REASON_BIT["cooldown"] | REASON_BIT["min_price_move"] | REASON_BIT["below_min_hedge"]
LIQ_MASK = COST_MASK | REASON_BIT["spread_too_wide"]

# ---- parameter vector -----------------------------------------------------------------------------------------
P_QTY, P_STRIKE, P_RATE, P_DIV, P_FALLBACK, P_COST_C, P_COST_P, P_THRESH, P_FORCE, P_MAXNET, P_MIN_HEDGE, \
    P_MAX_ORDER, P_COOLDOWN, P_MIN_MOVE, P_MAX_POS, P_MAX_LOSS, P_SPREAD_LIMIT, P_STALE_MS, P_COMM_PS, \
    P_COMM_MIN, P_EXPIRY_S, P_CUTOFF_MIN = range(22)
N_PF = 22
Q_EXPIRY_US, Q_LATENCY_US, Q_MAX_DAILY, Q_HOURS_ONLY, Q_HAS_EARNINGS, Q_T0, Q_RESUME = range(7)
N_PI = 7

# ---- state vector ---------------------------------------------------------------------------------------------
F_BID, F_ASK, F_HQ, F_HAVG, F_HREAL, F_HMARK, F_HS, F_CMARK, F_PMARK, F_COMM, F_DAYSTART, F_LHP, F_IVC, F_IVP, \
    F_MIDC, F_MIDP, F_DELTA, F_ORD_QTY, F_OPEN, F_SETC, F_SETP = range(21)
N_FS = 21
I_STATE, I_DAY, I_DAILY, I_LHA, I_HALTED, I_ADOPTED, I_DS_UNKNOWN, I_QUOTE_TS, I_PENDING, I_ORD_DUE, I_ORD_US, \
    I_HALT_DAY, I_HEALTHY_SINCE, I_NFILLS, I_VALID, I_OOB, I_LAST_NOW, I_DECIDED, I_CMKT, I_PMKT, I_SETTLED = range(21)
N_IS = 21
NONE_I = -(2**62)  # "None" for an instant

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


@nb.njit(cache=True)
def _bs(sign: float, spot: float, strike: float, t: float, rate: float, div: float,
        vol: float) -> tuple[float, float, float]:
    """`trading.core.greeks.bs_greeks` (price, delta, gamma), operation for operation."""
    sqrt_t = math.sqrt(t) if t > 0.0 else 0.0
    vol_sqrt_t = vol * sqrt_t
    if not (vol_sqrt_t > _MIN_TOTAL_VOL and spot > 0.0 and strike > 0.0):
        if math.isnan(spot + strike + t + rate + div + vol) or spot < 0.0 or strike < 0.0:
            return math.nan, math.nan, math.nan
        if t > 0.0:
            df_div = math.exp(-div * t)
            spot_pv = spot * df_div
            strike_pv = strike * math.exp(-rate * t)
        else:
            df_div = 1.0
            spot_pv = spot
            strike_pv = strike
        value = sign * (spot_pv - strike_pv)
        if value > 0.0:
            return value, sign * df_div, 0.0
        return 0.0, 0.0, 0.0
    df_div = math.exp(-div * t)
    spot_pv = spot * df_div
    strike_pv = strike * math.exp(-rate * t)
    d1 = (math.log(spot / strike) + (rate - div + 0.5 * vol * vol) * t) / vol_sqrt_t
    d2 = d1 - vol_sqrt_t
    n1 = 0.5 * math.erfc(sign * d1 * _NEG_INV_SQRT2)
    n2 = 0.5 * math.erfc(sign * d2 * _NEG_INV_SQRT2)
    pdf1 = _INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
    price = sign * (spot_pv * n1 - strike_pv * n2)
    if price < 0.0:
        price = 0.0
    return price, sign * df_div * n1, df_div * pdf1 / (spot * vol_sqrt_t)


@nb.njit(cache=True, inline="always")
def _bs_memo(memo: np.ndarray, leg: int, spot: float, strike: float, t: float, rate: float, div: float,
             vol: float) -> tuple[float, float, float]:
    """`_bs` for leg 0 (call) or 1 (put), reusing the last result when the inputs are the same floats: a tick
    prices each leg for its option quote and then evaluates at exactly those inputs again."""
    row = memo[leg]
    if row[0] == spot and row[1] == t and row[2] == vol:
        return row[3], row[4], row[5]
    price, delta, gamma = _bs(1.0 if leg == 0 else -1.0, spot, strike, t, rate, div, vol)
    row[0] = spot
    row[1] = t
    row[2] = vol
    row[3] = price
    row[4] = delta
    row[5] = gamma
    return price, delta, gamma


@nb.njit(cache=True, inline="always")
def _year_fraction(expiry_s: float, now: int) -> float:
    """`year_fraction`: POSIX seconds of the expiry minus `now.timestamp()` (microseconds / 1e6), in years."""
    seconds = expiry_s - now / 1e6
    return seconds / SECONDS_PER_YEAR if seconds > 0.0 else 0.0


@nb.njit(cache=True, inline="always")
def _total(fs: np.ndarray, pf: np.ndarray, adopted: int) -> float:
    """PnlLedger.total_usd: realized + unrealized - commissions, summed in the ledger's holding order."""
    hq = fs[F_HQ]
    u_hedge = 0.0
    if hq != 0.0 and not math.isnan(fs[F_HMARK]):
        u_hedge = hq * (fs[F_HMARK] - fs[F_HAVG]) * 1.0
    realized = 0.0 + fs[F_HREAL]
    unrealized = 0.0 + u_hedge
    if adopted:
        qty = pf[P_QTY]
        u_call = 0.0 if qty == 0.0 else qty * (fs[F_CMARK] - pf[P_COST_C]) * 100.0
        u_put = 0.0 if qty == 0.0 else qty * (fs[F_PMARK] - pf[P_COST_P]) * 100.0
        realized = realized + 0.0 + 0.0
        unrealized = unrealized + u_call + u_put
    return realized + unrealized - fs[F_COMM]


@nb.njit(cache=True, inline="always")
def _mark_leg(mark: float, market: bool, f_mark: int, p_cost: int, i_market: int, fs: np.ndarray, ist: np.ndarray,
              pf: np.ndarray) -> None:
    """Engine._mark for one leg: PnlLedger.remark when the mark's source changes (model <-> market), else mark."""
    if market != (ist[i_market] == 1):
        if math.isfinite(mark):
            qty = pf[P_QTY]
            before = 0.0 if qty == 0.0 else qty * (fs[f_mark] - pf[p_cost]) * 100.0
            fs[f_mark] = mark
            after = 0.0 if qty == 0.0 else qty * (fs[f_mark] - pf[p_cost]) * 100.0
            fs[F_DAYSTART] += after - before
        ist[i_market] = 1 if market else 0
    elif math.isfinite(mark):
        fs[f_mark] = mark


@nb.njit(cache=True, inline="always")
def _day_index(bounds: np.ndarray, now: int) -> int:
    return np.searchsorted(bounds, now, side="right") - 1


@nb.njit(cache=True, inline="always")
def _roll_day(now: int, fs: np.ndarray, ist: np.ndarray, pf: np.ndarray, bounds: np.ndarray) -> None:
    day = _day_index(bounds, now)
    if day != ist[I_DAY]:
        ist[I_DAY] = day
        ist[I_DAILY] = 0
        fs[F_DAYSTART] = _total(fs, pf, ist[I_ADOPTED])


@nb.njit(cache=True, inline="always")
def _is_open(now: int, ist: np.ndarray, fs: np.ndarray, opens: np.ndarray, closes: np.ndarray) -> bool:
    ts = now / 1e6
    k = np.searchsorted(opens, ts, side="right") - 1
    fs[F_OPEN] = 1.0 if (k >= 0 and ts < closes[k]) else 0.0
    return fs[F_OPEN] == 1.0


@nb.njit(cache=True, inline="always")
def _round_half_away(x: float) -> float:
    return math.copysign(math.floor(abs(x) + 0.5), x)


@nb.njit(cache=True)
def _gates(now: int, fs: np.ndarray, ist: np.ndarray, pf: np.ndarray, pi: np.ndarray, blackout: np.ndarray,
           opens: np.ndarray, closes: np.ndarray) -> tuple[int, float, float]:
    """evaluate_gates over the engine's gate_state at `now`: (reasons mask, intent shares, order shares)."""
    mask = 0
    bid = fs[F_BID]
    ask = fs[F_ASK]
    mid = (bid + ask) / 2.0
    if ist[I_HALTED]:
        mask |= B_RISK_HALT
    quote_age_ms = (now - ist[I_QUOTE_TS]) / 1e6 * 1000.0
    if quote_age_ms >= pf[P_STALE_MS]:
        mask |= B_DATA_STALE
    if not ist[I_VALID]:
        mask |= B_GREEKS_INVALID
    market_open = _is_open(now, ist, fs, opens, closes)
    if pi[Q_HOURS_ONLY] and not market_open:
        mask |= B_OUTSIDE_HOURS
    if pi[Q_HAS_EARNINGS] and blackout[ist[I_DAY]]:
        mask |= B_BLACKOUT
    if ist[I_DAILY] >= pi[Q_MAX_DAILY]:
        mask |= B_MAX_DAILY
    if ist[I_SETTLED]:
        mask |= B_NO_OPTIONS
    elif (pf[P_EXPIRY_S] - now / 1e6) / 60.0 < pf[P_CUTOFF_MIN]:
        mask |= B_NEAR_EXPIRY
    if mid != 0.0:
        spread_bps = (ask - bid) / mid * 1e4
        if spread_bps >= pf[P_SPREAD_LIMIT]:
            mask |= B_SPREAD
    net = fs[F_HS] + fs[F_DELTA]
    hedge = fs[F_HS]
    # size_hedge
    intent = _round_half_away(-net)
    qty = math.copysign(min(abs(intent), pf[P_MAX_ORDER]), intent) if intent != 0.0 else 0.0
    target = hedge + qty
    max_pos = pf[P_MAX_POS]
    if abs(target) > max_pos and abs(target) > abs(hedge):
        qty = math.copysign(max_pos, target) - hedge
        if qty * intent < 0:
            qty = 0.0
    level = abs(net)
    force = level >= pf[P_FORCE] or (not math.isnan(pf[P_MAXNET]) and level >= pf[P_MAXNET])
    if not force:
        if ist[I_LHA] != NONE_I and (now - ist[I_LHA]) / 1e6 < pf[P_COOLDOWN]:
            mask |= B_COOLDOWN
        lhp = fs[F_LHP]
        if not math.isnan(lhp) and abs(mid / lhp - 1.0) * 1e4 < pf[P_MIN_MOVE]:
            mask |= B_MIN_MOVE
    if qty == 0.0 and intent != 0.0:
        mask |= B_MAX_POSITION
    if ist[I_PENDING]:
        mask |= B_IN_FLIGHT
    if 0 < abs(qty) < pf[P_MIN_HEDGE]:
        mask |= B_BELOW_MIN
    return mask, intent, qty


@nb.njit(cache=True, inline="always")
def _evaluate(now: int, fs: np.ndarray, ist: np.ndarray, pf: np.ndarray, pi: np.ndarray, bounds: np.ndarray,
              blackout: np.ndarray, opens: np.ndarray, closes: np.ndarray, dec_f: np.ndarray,
              dec_i: np.ndarray, memo: np.ndarray) -> None:
    """Engine._evaluate after an event's handler; a hedge decision lands in dec_f/dec_i and ist[I_DECIDED]."""
    ist[I_LAST_NOW] = now
    has_quote = ist[I_QUOTE_TS] != NONE_I
    bid = fs[F_BID]
    ask = fs[F_ASK]
    spot = (bid + ask) / 2.0
    if not ist[I_ADOPTED] and has_quote:
        ist[I_ADOPTED] = 1  # adoption at the first quote; open_position marks each leg at its cost
        fs[F_CMARK] = pf[P_COST_C]
        fs[F_PMARK] = pf[P_COST_P]
    if has_quote and ist[I_ADOPTED] and not ist[I_SETTLED] and now / 1e6 >= pf[P_EXPIRY_S]:
        # ManagedBook.settle_expired: past 16:00 New York on the expiry, each leg is worth its intrinsic value
        ist[I_SETTLED] = 1
        fs[F_SETC] = max(spot - pf[P_STRIKE], 0.0)
        fs[F_SETP] = max(pf[P_STRIKE] - spot, 0.0)
    if has_quote and ist[I_ADOPTED] and ist[I_SETTLED]:
        fs[F_DELTA] = 0.0
        valid = spot > 0 and math.isfinite(spot)
        ist[I_VALID] = 1 if valid else 0
        if math.isfinite(spot):
            fs[F_HMARK] = spot
        fs[F_CMARK] = fs[F_SETC]
        fs[F_PMARK] = fs[F_SETP]
    elif has_quote and ist[I_ADOPTED]:
        t = _year_fraction(pf[P_EXPIRY_S], now)
        ivc = fs[F_IVC] if not math.isnan(fs[F_IVC]) else pf[P_FALLBACK]
        ivp = fs[F_IVP] if not math.isnan(fs[F_IVP]) else pf[P_FALLBACK]
        price_c, delta_c, gamma_c = _bs_memo(memo, 0, spot, pf[P_STRIKE], t, pf[P_RATE], pf[P_DIV], ivc)
        price_p, delta_p, gamma_p = _bs_memo(memo, 1, spot, pf[P_STRIKE], t, pf[P_RATE], pf[P_DIV], ivp)
        units = pf[P_QTY] * 100.0
        delta = 0.0
        delta += units * delta_c
        delta += units * delta_p
        valid = spot > 0 and math.isfinite(spot)
        valid = valid and math.isfinite(delta_c) and math.isfinite(gamma_c)
        valid = valid and math.isfinite(delta_p) and math.isfinite(gamma_p)
        fs[F_DELTA] = delta
        ist[I_VALID] = 1 if valid else 0
        if math.isfinite(spot):
            fs[F_HMARK] = spot
        market_c = not math.isnan(fs[F_MIDC])
        market_p = not math.isnan(fs[F_MIDP])
        _mark_leg(fs[F_MIDC] if market_c else price_c, market_c, F_CMARK, P_COST_C, I_CMKT, fs, ist, pf)
        _mark_leg(fs[F_MIDP] if market_p else price_p, market_p, F_PMARK, P_COST_P, I_PMKT, fs, ist, pf)
    if ist[I_DS_UNKNOWN] and has_quote:
        fs[F_DAYSTART] = _total(fs, pf, ist[I_ADOPTED]) - 0.0  # minus the seed's daily_pnl_usd, 0 in a replay
        ist[I_DS_UNKNOWN] = 0
    if not ist[I_HALTED] and not ist[I_DS_UNKNOWN]:  # no baseline yet: lifetime P&L is not a day's loss
        daily = _total(fs, pf, ist[I_ADOPTED]) - fs[F_DAYSTART]
        if daily <= -pf[P_MAX_LOSS]:
            ist[I_HALTED] = 1
            ist[I_HALT_DAY] = ist[I_DAY]
    # gate_state: the quote age, the open/closed cache (touched on every evaluation, as the engine does)
    quote_age_ms = (now - ist[I_QUOTE_TS]) / 1e6 * 1000.0 if has_quote else math.inf
    _is_open(now, ist, fs, opens, closes)
    valid_greeks = ist[I_VALID] == 1
    net = fs[F_HS] + fs[F_DELTA]
    level = abs(net)
    oob = 0
    if valid_greeks and has_quote:
        if level >= pf[P_FORCE] or (not math.isnan(pf[P_MAXNET]) and level >= pf[P_MAXNET]):
            oob = 1
        elif level >= pf[P_THRESH]:
            oob = 1
    else:
        oob = 2  # D4: invalid
    ist[I_OOB] = oob
    state = ist[I_STATE]
    # _advance_trading_state
    if ist[I_HALTED]:
        ist[I_STATE] = S_HALTED
        return
    if state == S_BOOT:
        state = S_SYNC
        ist[I_STATE] = state
    if state == S_SYNC:
        if has_quote:
            ist[I_STATE] = S_IDLE if ist[I_SETTLED] else S_MONITOR
        return
    healthy = not (quote_age_ms >= pf[P_STALE_MS]) and valid_greeks
    if state == S_SAFE:
        if healthy:
            if ist[I_HEALTHY_SINCE] == NONE_I:
                ist[I_HEALTHY_SINCE] = now
        else:
            ist[I_HEALTHY_SINCE] = NONE_I
        if ist[I_HEALTHY_SINCE] != NONE_I and (now - ist[I_HEALTHY_SINCE]) / 1e6 >= _HEALTHY_DWELL_S:
            ist[I_STATE] = S_SYNC
        return
    evaluating = (state == S_MONITOR or state == S_NO_TRADE or state == S_NEED_HEDGE or state == S_PAUSE_COST
                  or state == S_PAUSE_LIQ)
    if not healthy:
        ist[I_HEALTHY_SINCE] = NONE_I
        if evaluating or state == S_IDLE or state == S_HEDGING:
            ist[I_STATE] = S_SAFE
        return
    if state == S_HEDGING:
        if not ist[I_PENDING]:
            ist[I_STATE] = S_MONITOR
        return
    if ist[I_SETTLED]:  # no options left to hedge
        ist[I_STATE] = S_IDLE
        return
    if state == S_IDLE:
        state = S_MONITOR
        ist[I_STATE] = state
    if ist[I_PENDING]:
        ist[I_STATE] = S_HEDGING
        return
    if oob == 0:
        ist[I_STATE] = S_MONITOR
        return
    mask, intent, qty = _gates(now, fs, ist, pf, pi, blackout, opens, closes)
    allowed = mask == 0 and qty != 0.0
    if allowed:
        ist[I_STATE] = S_NEED_HEDGE
    elif (mask & ~COST_MASK) == 0:
        ist[I_STATE] = S_PAUSE_COST
    elif (mask & ~LIQ_MASK) == 0:
        ist[I_STATE] = S_PAUSE_LIQ
    else:
        ist[I_STATE] = S_NO_TRADE
    ist[I_DECIDED] = 1
    dec_i[0] = 1 if allowed else (2 if mask != 0 else 0)
    dec_i[1] = mask
    dec_f[0] = intent
    dec_f[1] = qty
    dec_f[2] = net
    if allowed:
        ist[I_PENDING] = 1
        fs[F_ORD_QTY] = qty
        ist[I_ORD_US] = now
        ist[I_ORD_DUE] = now + pi[Q_LATENCY_US]
        ist[I_DAILY] += 1
        ist[I_LHA] = now
        fs[F_LHP] = spot
        ist[I_STATE] = S_HEDGING


@nb.njit(cache=True, inline="always")
def _fill(i: int, at: int, fs: np.ndarray, ist: np.ndarray, pf: np.ndarray, fill_i: np.ndarray,
          fill_f: np.ndarray) -> None:
    """The sim fill at the prevailing quote (FillModel: the touch, IB-style commission) and Engine._on_fill:
    book hedge shares, the ledger's average-cost trade, commissions, last hedge price, the order done."""
    qty = fs[F_ORD_QTY]
    shares = abs(qty)
    price = fs[F_ASK] if qty > 0 else fs[F_BID]
    fee = pf[P_COMM_MIN]
    per_share = shares * pf[P_COMM_PS]
    if per_share > fee:
        fee = per_share
    cap = 0.01 * shares * abs(price)
    commission = cap if cap < fee else fee
    signed = shares if qty > 0 else -shares
    fs[F_HS] += signed
    hq = fs[F_HQ]
    realized = 0.0
    if hq == 0 or (hq > 0) == (signed > 0):
        total = hq + signed
        fs[F_HAVG] = (fs[F_HAVG] * hq + price * signed) / total if total != 0.0 else 0.0
        fs[F_HQ] = total
    else:
        closing = min(abs(signed), abs(hq))
        direction = 1.0 if hq > 0 else -1.0
        realized = closing * direction * (price - fs[F_HAVG]) * 1.0
        hq = hq + signed
        fs[F_HQ] = hq
        if abs(hq) < 1e-9:
            fs[F_HQ] = 0.0
            fs[F_HAVG] = 0.0
        elif (hq > 0) != (direction > 0):
            fs[F_HAVG] = price
    fs[F_HREAL] += realized
    if math.isnan(fs[F_HMARK]):
        fs[F_HMARK] = price
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


@nb.njit(cache=True)
def _kernel(i0: int, i1: int, ts: np.ndarray, bid: np.ndarray, ask: np.ndarray, iv: np.ndarray, pf: np.ndarray,
            pi: np.ndarray, bounds: np.ndarray, blackout: np.ndarray, opens: np.ndarray, closes: np.ndarray,
            fs: np.ndarray, ist: np.ndarray, out_f: np.ndarray, out_i: np.ndarray, fill_i: np.ndarray,
            fill_f: np.ndarray) -> None:
    n = ts.shape[0]
    dec_f = np.zeros(3)
    dec_i = np.zeros(2, dtype=np.int64)
    memo = np.full((2, 6), np.nan)
    for i in range(i0, i1):
        ist[I_DECIDED] = 0
        has_iv = not math.isnan(iv[i])
        # Events of the tick, in order: its Quote, an OptionQuote per leg (when it has an IV), then the fill of
        # an order due before the next tick. One evaluation site keeps the compiled engine loop small.
        for event in range(5):
            now = ts[i]
            if event == EV_RESET:
                # halt_policy resume_next_day: the replay's Control("reset_halt") before a new day's first quote
                if not (pi[Q_RESUME] and ist[I_HALTED] and _day_index(bounds, now) > ist[I_HALT_DAY]):
                    continue
                _roll_day(now, fs, ist, pf, bounds)
                ist[I_HALTED] = 0
                ist[I_STATE] = S_SYNC
            elif event == EV_QUOTE:
                _roll_day(now, fs, ist, pf, bounds)  # Engine.on_event rolls the day before the handler
                b = bid[i]
                a = ask[i]
                if math.isfinite(b) and math.isfinite(a) and b > 0 and a > 0 and a >= b:  # else ignored
                    fs[F_BID] = b
                    fs[F_ASK] = a
                    ist[I_QUOTE_TS] = now
            elif event == EV_CALL_QUOTE or event == EV_PUT_QUOTE:
                if not has_iv:
                    continue
                leg = event - EV_CALL_QUOTE
                mid = (bid[i] + ask[i]) / 2.0
                t = _year_fraction(pf[P_EXPIRY_S], now)
                price = _bs_memo(memo, leg, mid, pf[P_STRIKE], t, pf[P_RATE], pf[P_DIV], iv[i])[0]
                if not price > 0.0:
                    continue  # not a valid quote: the engine would ignore it, so it is not sent
                _roll_day(now, fs, ist, pf, bounds)
                if leg == 0:
                    fs[F_MIDC] = (price + price) / 2.0
                    fs[F_IVC] = iv[i]
                else:
                    fs[F_MIDP] = (price + price) / 2.0
                    fs[F_IVP] = iv[i]
            else:
                if not (ist[I_PENDING] and (i + 1 >= n or ist[I_ORD_DUE] < ts[i + 1])):
                    continue
                now = ist[I_ORD_DUE]
                _roll_day(now, fs, ist, pf, bounds)
                _fill(i, now, fs, ist, pf, fill_i, fill_f)
            _evaluate(now, fs, ist, pf, pi, bounds, blackout, opens, closes, dec_f, dec_i, memo)
        # ---- the row ------------------------------------------------------------------------------------------
        net_now = fs[F_HS] + fs[F_DELTA]
        if ist[I_DECIDED]:
            out_i[OI_DECISION, i] = dec_i[0]
            out_i[OI_REASONS, i] = dec_i[1]
            out_f[O_INTENT, i] = dec_f[0]
            out_f[O_ORDER, i] = dec_f[1]
            out_f[O_NET, i] = dec_f[2]
        else:
            out_f[O_NET, i] = net_now
            out_f[O_INTENT, i] = math.nan
            out_f[O_ORDER, i] = math.nan
            out_i[OI_DECISION, i] = 0
            out_i[OI_REASONS, i] = 0
            if (ist[I_HALTED] or ist[I_PENDING] or ist[I_STATE] == S_SAFE) and ist[I_OOB] == 1:
                mask, intent, qty = _gates(ist[I_LAST_NOW], fs, ist, pf, pi, blackout, opens, closes)
                out_i[OI_DECISION, i] = 2 if mask != 0 else 0
                out_i[OI_REASONS, i] = mask
                out_f[O_INTENT, i] = intent
                out_f[O_ORDER, i] = qty
        out_f[O_HS, i] = fs[F_HS]
        out_f[O_HQ, i] = fs[F_HQ]
        out_f[O_HAVG, i] = fs[F_HAVG]
        out_f[O_HREAL, i] = fs[F_HREAL]
        out_f[O_HMARK, i] = fs[F_HMARK]
        out_f[O_CMARK, i] = fs[F_CMARK] if ist[I_ADOPTED] else math.nan
        out_f[O_PMARK, i] = fs[F_PMARK] if ist[I_ADOPTED] else math.nan
        out_f[O_COMM, i] = fs[F_COMM]
        out_i[OI_STATE, i] = ist[I_STATE]


CHUNK_TICKS = 200_000


def run_fast(data: TickData, params: StrategyParams, structure: Structure, execution: Execution,
             *, halt_policy: str = HALT_POLICIES[0], progress: ProgressFn | None = None) -> Trace:
    """The per-event replay's trace, computed by the compiled transcription; see the module docstring."""
    why = unsupported(params)
    if why is not None:
        raise ValueError(f"fast path does not support {why[0]}: {why[1]}")
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
    limit = params.extreme_spread_bps if params.max_spread_bps is None else min(params.extreme_spread_bps,
                                                                                 params.max_spread_bps)
    pf = np.zeros(N_PF)
    pf[P_QTY] = structure.qty
    pf[P_STRIKE] = structure.strike
    pf[P_RATE] = params.risk_free_rate
    pf[P_DIV] = params.dividend_yield
    pf[P_FALLBACK] = params.fallback_vol
    pf[P_COST_C] = structure.engine_cost(structure.call_cost)
    pf[P_COST_P] = structure.engine_cost(structure.put_cost)
    pf[P_THRESH] = params.hedge_threshold_shares
    pf[P_FORCE] = params.force_hedge_shares
    pf[P_MAXNET] = math.nan if params.max_net_delta_shares is None else params.max_net_delta_shares
    pf[P_MIN_HEDGE] = params.min_hedge_shares
    pf[P_MAX_ORDER] = params.max_hedge_shares_per_order
    pf[P_COOLDOWN] = params.cooldown_s
    pf[P_MIN_MOVE] = params.min_price_move_bps
    pf[P_MAX_POS] = params.max_position_shares
    pf[P_MAX_LOSS] = params.max_daily_loss_usd
    pf[P_SPREAD_LIMIT] = limit
    pf[P_STALE_MS] = params.stale_quote_ms
    pf[P_COMM_PS] = execution.commission_per_share
    pf[P_COMM_MIN] = execution.min_commission_usd
    pf[P_EXPIRY_S] = expiry_instant(structure.expiry)
    pf[P_CUTOFF_MIN] = params.expiry_cutoff_minutes
    pi = np.zeros(N_PI, dtype=np.int64)
    pi[Q_EXPIRY_US] = structure.expiry_us
    pi[Q_LATENCY_US] = latency_us
    pi[Q_MAX_DAILY] = params.max_daily_hedges
    pi[Q_HOURS_ONLY] = 1 if params.trading_hours_only else 0
    pi[Q_HAS_EARNINGS] = 1 if params.earnings_dates else 0
    pi[Q_T0] = t0
    pi[Q_RESUME] = 1 if halt_policy == "resume_next_day" else 0
    fs = np.full(N_FS, math.nan)
    fs[F_HQ] = fs[F_HAVG] = fs[F_HREAL] = fs[F_HS] = fs[F_COMM] = fs[F_DAYSTART] = fs[F_DELTA] = 0.0
    fs[F_ORD_QTY] = 0.0
    ist = np.zeros(N_IS, dtype=np.int64)
    ist[I_DAY] = _day_index(bounds, t0)
    ist[I_LHA] = ist[I_QUOTE_TS] = ist[I_HEALTHY_SINCE] = NONE_I
    ist[I_DS_UNKNOWN] = 1
    # The managed book from the seed; PositionsSynced opened both legs at cost (marked at cost).
    ist[I_ADOPTED] = 1
    fs[F_CMARK] = pf[P_COST_C]
    fs[F_PMARK] = pf[P_COST_P]
    if not math.isnan(data.iv[0]):  # tick 0's option quotes before its stock quote
        mid0 = (float(data.bid[0]) + float(data.ask[0])) / 2.0
        t = float(_year_fraction(pf[P_EXPIRY_S], t0))
        for leg, (mid_slot, iv_slot) in enumerate(((F_MIDC, F_IVC), (F_MIDP, F_IVP))):
            price = _bs(1.0 if leg == 0 else -1.0, mid0, structure.strike, t, params.risk_free_rate,
                        params.dividend_yield, float(data.iv[0]))[0]
            if price > 0.0:
                fs[mid_slot] = (price + price) / 2.0
                fs[iv_slot] = float(data.iv[0])
    ist[I_STATE] = S_SYNC  # BrokerStatus, PositionsSynced and Reconciled before tick 0: boot → sync
    # Column-major outputs: each trace column is one contiguous row here, handed over without a copy.
    out_f = np.empty((N_OF, n))
    out_i = np.zeros((N_OI, n), dtype=np.int64)
    fill_i = np.zeros((n + 1, 3), dtype=np.int64)
    fill_f = np.zeros((n + 1, 3))
    iv = np.ascontiguousarray(data.iv, dtype=np.float64)
    bid = np.ascontiguousarray(data.bid, dtype=np.float64)
    ask = np.ascontiguousarray(data.ask, dtype=np.float64)
    for start in range(0, n, CHUNK_TICKS):
        stop = min(start + CHUNK_TICKS, n)
        _kernel(start, stop, ts, bid, ask, iv, pf, pi, bounds, blackout, opens, closes, fs, ist, out_f, out_i,
                fill_i, fill_f)
        if progress is not None:
            progress(stop / n)
    k = int(ist[I_NFILLS])
    trace = Trace(
        decision=out_i[OI_DECISION].astype(np.int8), reasons=out_i[OI_REASONS],
        intent_shares=out_f[O_INTENT], order_shares=out_f[O_ORDER], net_delta_shares=out_f[O_NET],
        hedge_shares=out_f[O_HS], hedge_qty=out_f[O_HQ], hedge_avg=out_f[O_HAVG], hedge_realized=out_f[O_HREAL],
        hedge_mark=out_f[O_HMARK], call_mark=out_f[O_CMARK], put_mark=out_f[O_PMARK], commissions=out_f[O_COMM],
        state=out_i[OI_STATE].astype(np.int8),
        fill_row=fill_i[:k, 0].copy(), fill_us=fill_i[:k, 1].copy(), order_us=fill_i[:k, 2].copy(),
        fill_qty=fill_f[:k, 0].copy(), fill_price=fill_f[:k, 1].copy(), fill_commission=fill_f[:k, 2].copy(),
        path="fast",
    )
    return trace
