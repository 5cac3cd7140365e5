"""Black-Scholes-Merton price, greeks, implied vol and time to expiry: math for the live tick, numpy for backtests."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

__all__ = [
    "DAYS_PER_YEAR", "IMPLIED_VOL_MAX", "SECONDS_PER_YEAR", "FloatArray", "Greeks", "GreeksArrays", "Right",
    "bs_greeks", "bs_greeks_np", "bs_price", "bs_price_np", "bs_scalar", "implied_vol", "implied_vol_np",
    "implied_vol_scalar", "year_fraction", "years_to",
]

Right = Literal["C", "P"]
FloatArray = npt.NDArray[np.float64]

DAYS_PER_YEAR = 365.0
SECONDS_PER_YEAR = DAYS_PER_YEAR * 86_400.0
# An option whose mid needs more than 1000 % vol is a bad quote, not a vol: callers fall back instead.
IMPLIED_VOL_MAX = 10.0

_EASTERN = ZoneInfo("America/New_York")
_EXPIRY_TIME = time(16, 0)
# N(x) = erfc(-x/√2)/2 keeps full relative precision in the lower tail, where 1 - N(-x) would cancel.
_NEG_INV_SQRT2 = -1.0 / math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_INV_SQRT_2PI = 1.0 / _SQRT_2PI
_INV_PI = 1.0 / math.pi
# Newton stops once a step moves total vol by less than this fraction; convergence is quadratic, so the
# vol returned is accurate far below it.
_IV_STEP_TOL = 1e-10
_IV_BRACKET_TOL = 1e-15
_IV_MAX_ITER = 100
# Smallest normal float: below it logs of subnormals lose precision (and vectorised log may flush them to zero).
_TINY = 2.2250738585072014e-308
# A time value below this fraction of the price is rounding noise of the parity conversion, not a vol.
_TIME_VALUE_FLOOR = 1e-12
# Total vol (vol·√t) below this is treated as zero vol: d1 and gamma would overflow long before it matters.
_MIN_TOTAL_VOL = 1e-12
# Rows per numpy block: small enough that a block's temporaries stay in L2 cache.
_BLOCK_ROWS = 8192


@dataclass(frozen=True, slots=True)
class Greeks:
    """Per-share value and sensitivities: theta per calendar day, vega per vol point (0.01)."""

    price: float
    delta: float
    gamma: float
    theta: float
    vega: float


@dataclass(frozen=True, slots=True)
class GreeksArrays:
    """The numpy twin of `Greeks`: five arrays of the broadcast shape of the inputs, same units."""

    price: FloatArray
    delta: FloatArray
    gamma: FloatArray
    theta: FloatArray
    vega: FloatArray


# --------------------------------------------------------------------------------------------- scalar path


def _sign(right: str) -> float:
    if right == "C":
        return 1.0
    if right == "P":
        return -1.0
    raise ValueError(f"right must be 'C' or 'P', got {right!r}")


def _degenerate(sign: float, spot: float, strike: float, t_years: float, rate: float, div: float,
                vol: float) -> tuple[float, float, float, float, float]:
    """Expired (t <= 0) or zero-vol (vol·√t <= 1e-12) option: discounted forward intrinsic value and a step delta,
    no time greeks."""
    if math.isnan(spot + strike + t_years + rate + div + vol) or spot < 0.0 or strike < 0.0:
        return math.nan, math.nan, math.nan, math.nan, math.nan
    if t_years > 0.0:
        df_div = math.exp(-div * t_years)
        spot_pv = spot * df_div
        strike_pv = strike * math.exp(-rate * t_years)
    else:
        df_div = 1.0
        spot_pv = spot
        strike_pv = strike
    value = sign * (spot_pv - strike_pv)
    if value > 0.0:
        return value, sign * df_div, 0.0, 0.0, 0.0
    return 0.0, 0.0, 0.0, 0.0, 0.0


def bs_scalar(sign: float, spot: float, strike: float, t_years: float, rate: float, div: float,
              vol: float) -> tuple[float, float, float, float, float]:
    """`bs_greeks` over scalars (sign +1 a call, -1 a put): (price, delta, gamma, theta per day, vega per point).
    In the subset numba compiles: the fast replay runs this very function (see `trading.core.rules`)."""
    sqrt_t = math.sqrt(t_years) if t_years > 0.0 else 0.0
    vol_sqrt_t = vol * sqrt_t
    if not (vol_sqrt_t > _MIN_TOTAL_VOL and spot > 0.0 and strike > 0.0):
        return _degenerate(sign, spot, strike, t_years, rate, div, vol)
    df_div = math.exp(-div * t_years)
    spot_pv = spot * df_div
    strike_pv = strike * math.exp(-rate * t_years)
    d1 = (math.log(spot / strike) + (rate - div + 0.5 * vol * vol) * t_years) / vol_sqrt_t
    d2 = d1 - vol_sqrt_t
    n1 = 0.5 * math.erfc(sign * d1 * _NEG_INV_SQRT2)
    n2 = 0.5 * math.erfc(sign * d2 * _NEG_INV_SQRT2)
    pdf1 = _INV_SQRT_2PI * math.exp(-0.5 * d1 * d1)
    spot_pdf = spot_pv * pdf1
    price = sign * (spot_pv * n1 - strike_pv * n2)
    theta_year = -(spot_pdf * vol / (2.0 * sqrt_t)) - sign * (rate * strike_pv * n2 - div * spot_pv * n1)
    # Deep out of the money the two price terms cancel to a few ulps, which may fall below zero.
    return (0.0 if price < 0.0 else price, sign * df_div * n1, df_div * pdf1 / (spot * vol_sqrt_t),
            theta_year / DAYS_PER_YEAR, spot_pdf * sqrt_t / 100.0)


def bs_price(right: Right, spot: float, strike: float, t_years: float, rate: float, div: float, vol: float) -> float:
    """Black-Scholes-Merton value per share of a European option; intrinsic when expired or vol <= 0."""
    return bs_scalar(_sign(right), spot, strike, t_years, rate, div, vol)[0]


def bs_greeks(right: Right, spot: float, strike: float, t_years: float, rate: float, div: float,
              vol: float) -> Greeks:
    """Black-Scholes-Merton price, delta, gamma, theta per calendar day and vega per vol point, per share.

    Expired (t_years <= 0) or vol <= 0 (or vol·√t below 1e-12): discounted forward intrinsic value, delta a step (±e^(-q t) or 0),
    gamma, theta and vega 0. NaN inputs, or a negative spot or strike, give NaN greeks; nothing raises except
    a `right` other than "C" or "P".
    """
    return Greeks(*bs_scalar(_sign(right), spot, strike, t_years, rate, div, vol))


def _otm_value(otm: float, x: float, w: float, spot_pv: float, strike_pv: float) -> tuple[float, float]:
    """Value of the out-of-the-money side at total vol w = vol·√t, and its derivative in w."""
    d1 = x / w + 0.5 * w
    d2 = d1 - w
    n1 = 0.5 * math.erfc(otm * d1 * _NEG_INV_SQRT2)
    n2 = 0.5 * math.erfc(otm * d2 * _NEG_INV_SQRT2)
    value = otm * (spot_pv * n1 - strike_pv * n2)
    dvalue_dw = spot_pv * (_INV_SQRT_2PI * math.exp(-0.5 * d1 * d1))
    return value, dvalue_dw


def implied_vol(right: Right, price: float, spot: float, strike: float, t_years: float, rate: float,
                div: float) -> float | None:
    """The Black-Scholes-Merton vol (annualised, 0.2 = 20 %) at which the option is worth `price`, or None.

    None when no vol in (0, IMPLIED_VOL_MAX] fits: the price is at or below the discounted intrinsic value or at
    or above the price at IMPLIED_VOL_MAX, t_years <= 0, spot, strike or price not positive, or a NaN input.
    The solver works on the out-of-the-money side (in-the-money prices go through put-call parity) with Newton
    steps on log value, safeguarded by a bracket that falls back to bisection, so it always terminates.
    """
    vol = implied_vol_scalar(_sign(right), price, spot, strike, t_years, rate, div)
    return None if math.isnan(vol) else vol


def implied_vol_scalar(sign: float, price: float, spot: float, strike: float, t_years: float, rate: float,
                       div: float) -> float:
    """`implied_vol` over scalars (sign +1 a call, -1 a put), NaN where that returns None."""
    if not (price > 0.0 and spot > 0.0 and strike > 0.0 and t_years > 0.0) or math.isnan(rate + div):
        return math.nan
    sqrt_t = math.sqrt(t_years)
    spot_pv = spot * math.exp(-div * t_years)
    strike_pv = strike * math.exp(-rate * t_years)
    x = math.log(spot / strike) + (rate - div) * t_years
    fwd = spot_pv - strike_pv
    otm = 1.0 if fwd <= 0.0 else -1.0
    target = price + 0.5 * (otm - sign) * fwd
    upper = spot_pv if otm > 0.0 else strike_pv
    if not (_TINY < target < upper and target > _TIME_VALUE_FLOOR * price):
        return math.nan
    w_max = IMPLIED_VOL_MAX * sqrt_t
    # Corrado-Miller: good near the money; the safeguarded Newton takes care of the wings.
    u = target + 0.5 * abs(fwd)
    w = _SQRT_2PI / (spot_pv + strike_pv) * (u + math.sqrt(max(u * u - fwd * fwd * _INV_PI, 0.0)))
    if not w < w_max:
        w = 0.5 * w_max
    log_target = math.log(target)
    lo = 0.0
    hi = w_max
    converged = False
    for _ in range(_IV_MAX_ITER):
        value, dvalue_dw = _otm_value(otm, x, w, spot_pv, strike_pv)
        if value > 0.0:
            res = math.log(value) - log_target
            step = res * value / dvalue_dw if dvalue_dw > 0.0 else math.nan
        else:
            res = -math.inf
            step = math.nan
        if res > 0.0:
            hi = w
        else:
            lo = w
        w_new = w - step
        if abs(step) <= _IV_STEP_TOL * w:
            w = w_new
            converged = True
            break
        if not (lo < w_new < hi):
            w_new = 0.5 * (lo + hi)
        w = w_new
        if hi - lo <= _IV_BRACKET_TOL * hi:
            converged = True
            break
    if not converged:
        return math.nan
    if w > 0.5 * w_max and not target < _otm_value(otm, x, w_max, spot_pv, strike_pv)[0]:
        return math.nan
    return w / sqrt_t


# ---------------------------------------------------------------------------------------------- numpy path


def _sign_np(right: Right | npt.ArrayLike) -> FloatArray:
    """+1.0 for calls, -1.0 for puts: from "C"/"P", an array of "C"/"P" strings, or a bool array (True = call)."""
    if isinstance(right, str):
        return np.asarray(_sign(right))
    arr = np.asarray(right)
    if arr.dtype == np.bool_:
        return np.where(arr, 1.0, -1.0)
    if arr.dtype == np.dtype("U1"):
        # One-character strings compared as code points: ten times faster than string comparison.
        codes = arr.view(np.uint32)
        is_call, is_put = codes == ord("C"), codes == ord("P")
    elif arr.dtype.kind in "USO":
        is_call, is_put = arr == "C", arr == "P"
    else:
        raise ValueError(f"right must be 'C'/'P' strings or booleans (True = call), got dtype {arr.dtype}")
    if not np.all(is_call | is_put):
        raise ValueError("right must contain only 'C' or 'P'")
    return np.where(is_call, 1.0, -1.0)


def _flatten(*args: npt.ArrayLike) -> tuple[tuple[int, ...], int, list[FloatArray]]:
    """Broadcast shape, row count and the inputs as float64: 0-d arrays stay 0-d, the rest become 1-d rows."""
    arrays = [np.asarray(a, dtype=np.float64) for a in args]
    shape = np.broadcast_shapes(*(a.shape for a in arrays))
    rows = math.prod(shape)
    flat = [a if a.ndim == 0 else np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(rows) for a in arrays]
    return shape, rows, flat


def _erfc_np(x: FloatArray) -> FloatArray:
    """scipy's vectorised erfc, imported on first use: the engine and the compiled replay never need scipy, and
    importing it cost every process 0.2 s at start."""
    from scipy.special import erfc

    return erfc(x)  # type: ignore[no-any-return]


def _block(a: FloatArray, start: int, stop: int) -> FloatArray:
    return a if a.ndim == 0 else a[start:stop]


def _bsm_block(sign: FloatArray, s: FloatArray, k: FloatArray, t: FloatArray, r: FloatArray, q: FloatArray,
               v: FloatArray, *, outs: list[FloatArray]) -> None:
    """The formulas of `bs_greeks`, term for term, on one block of rows, written into `outs` (price first).

    `sign * d1 * c` in the scalar path and `d1 * (sign * c)` here are the same float: sign is ±1.
    """
    sqrt_t = np.sqrt(t)  # NaN for t < 0: such rows fail the total-vol test below and become degenerate
    vol_sqrt_t = v * sqrt_t
    df_div = np.exp(-q * t)
    spot_pv = s * df_div
    strike_pv = k * np.exp(-r * t)
    d1 = (np.log(s / k) + (r - q + 0.5 * v * v) * t) / vol_sqrt_t
    d2 = d1 - vol_sqrt_t
    cdf_scale = sign * _NEG_INV_SQRT2
    n1 = 0.5 * _erfc_np(d1 * cdf_scale)
    n2 = 0.5 * _erfc_np(d2 * cdf_scale)
    price = outs[0]
    np.multiply(sign, spot_pv * n1 - strike_pv * n2, out=price)
    np.maximum(price, 0.0, out=price)
    if len(outs) > 1:
        pdf1 = _INV_SQRT_2PI * np.exp(-0.5 * d1 * d1)
        spot_pdf = spot_pv * pdf1
        np.multiply(sign * df_div, n1, out=outs[1])
        np.divide(df_div * pdf1, s * vol_sqrt_t, out=outs[2])
        theta_year = -(spot_pdf * v / (2.0 * sqrt_t)) - sign * (r * strike_pv * n2 - q * spot_pv * n1)
        np.divide(theta_year, DAYS_PER_YEAR, out=outs[3])
        np.divide(spot_pdf * sqrt_t, 100.0, out=outs[4])
    if np.min(vol_sqrt_t) > _MIN_TOTAL_VOL and np.min(s) > 0.0 and np.min(k) > 0.0:
        return
    # Degenerate rows, as `_degenerate`: discounted forward intrinsic (undiscounted once expired), step delta.
    bad = ~((vol_sqrt_t > _MIN_TOTAL_VOL) & (s > 0.0) & (k > 0.0))
    live = t > 0.0
    value = sign * (np.where(live, spot_pv, s) - np.where(live, strike_pv, k))
    itm = value > 0.0
    nan_row = np.isnan(s + k + t + r + q + v) | (s < 0.0) | (k < 0.0)
    fills = [value, sign * np.where(live, df_div, 1.0)]
    for i, out in enumerate(outs):
        fill = np.where(itm, fills[i], 0.0) if i < 2 else 0.0
        np.copyto(out, np.where(nan_row, np.nan, fill), where=bad)


def _bsm_np(right: Right | npt.ArrayLike, spot: npt.ArrayLike, strike: npt.ArrayLike, t_years: npt.ArrayLike,
            rate: npt.ArrayLike, div: npt.ArrayLike, vol: npt.ArrayLike, *, with_greeks: bool) -> list[FloatArray]:
    shape, rows, (sign, s, k, t, r, q, v) = _flatten(_sign_np(right), spot, strike, t_years, rate, div, vol)
    outs = [np.empty(rows) for _ in range(5 if with_greeks else 1)]
    with np.errstate(all="ignore"):
        for start in range(0, rows, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, rows)
            _bsm_block(*(_block(a, start, stop) for a in (sign, s, k, t, r, q, v)),
                       outs=[out[start:stop] for out in outs])
    return [out.reshape(shape) for out in outs]


def bs_price_np(right: Right | npt.ArrayLike, spot: npt.ArrayLike, strike: npt.ArrayLike, t_years: npt.ArrayLike,
                rate: npt.ArrayLike, div: npt.ArrayLike, vol: npt.ArrayLike) -> FloatArray:
    """`bs_price` over arrays. Numeric arguments broadcast; `right` is "C"/"P", an array of "C"/"P" strings, or a
    bool array (True = call) that broadcasts with them."""
    return _bsm_np(right, spot, strike, t_years, rate, div, vol, with_greeks=False)[0]


def bs_greeks_np(right: Right | npt.ArrayLike, spot: npt.ArrayLike, strike: npt.ArrayLike, t_years: npt.ArrayLike,
                 rate: npt.ArrayLike, div: npt.ArrayLike, vol: npt.ArrayLike) -> GreeksArrays:
    """`bs_greeks` over arrays, same units and edge cases; arguments as for `bs_price_np`."""
    price, delta, gamma, theta, vega = _bsm_np(right, spot, strike, t_years, rate, div, vol, with_greeks=True)
    return GreeksArrays(price=price, delta=delta, gamma=gamma, theta=theta, vega=vega)


def _otm_value_np(otm: FloatArray, x: FloatArray, w: FloatArray, spot_pv: FloatArray,
                  strike_pv: FloatArray) -> tuple[FloatArray, FloatArray]:
    d1 = x / w + 0.5 * w
    d2 = d1 - w
    cdf_scale = otm * _NEG_INV_SQRT2
    value = otm * (spot_pv * (0.5 * _erfc_np(d1 * cdf_scale)) - strike_pv * (0.5 * _erfc_np(d2 * cdf_scale)))
    dvalue_dw = spot_pv * (_INV_SQRT_2PI * np.exp(-0.5 * d1 * d1))
    return value, dvalue_dw


def _implied_vol_block(sign: FloatArray, price: FloatArray, s: FloatArray, k: FloatArray, t: FloatArray,
                       r: FloatArray, q: FloatArray, *, rows: int) -> FloatArray:
    """`implied_vol`, step for step, on one block of rows; NaN where it would return None."""
    full = np.zeros(rows)
    sign, price, s, k, t, r, q = (a + full for a in (sign, price, s, k, t, r, q))
    result = np.full(rows, np.nan)
    with np.errstate(all="ignore"):
        ok = (price > 0.0) & (s > 0.0) & (k > 0.0) & (t > 0.0) & ~np.isnan(r + q)
        sqrt_t = np.sqrt(t)
        spot_pv = s * np.exp(-q * t)
        strike_pv = k * np.exp(-r * t)
        x = np.log(s / k) + (r - q) * t
        fwd = spot_pv - strike_pv
        otm = np.where(fwd <= 0.0, 1.0, -1.0)
        target = price + 0.5 * (otm - sign) * fwd
        upper = np.where(otm > 0.0, spot_pv, strike_pv)
        ok &= (target > _TINY) & (target < upper) & (target > _TIME_VALUE_FLOOR * price)
        w_max = IMPLIED_VOL_MAX * sqrt_t
        u = target + 0.5 * np.abs(fwd)
        w0 = _SQRT_2PI / (spot_pv + strike_pv) * (u + np.sqrt(np.maximum(u * u - fwd * fwd * _INV_PI, 0.0)))
        w0 = np.where(w0 < w_max, w0, 0.5 * w_max)

        idx = np.flatnonzero(ok)
        w = w0[idx]
        lo = np.zeros(idx.size)
        hi = w_max[idx]
        log_target = np.log(target[idx])
        a_otm, a_x, a_spot_pv, a_strike_pv = otm[idx], x[idx], spot_pv[idx], strike_pv[idx]
        for _ in range(_IV_MAX_ITER):
            value, dvalue_dw = _otm_value_np(a_otm, a_x, w, a_spot_pv, a_strike_pv)
            positive = value > 0.0
            res = np.where(positive, np.log(value) - log_target, -np.inf)
            step = np.where(positive & (dvalue_dw > 0.0), res * value / dvalue_dw, np.nan)
            above = res > 0.0
            hi = np.where(above, w, hi)
            lo = np.where(above, lo, w)
            w_new = w - step
            done = np.abs(step) <= _IV_STEP_TOL * w
            inside = (lo < w_new) & (w_new < hi)
            w_new = np.where(done | inside, w_new, 0.5 * (lo + hi))
            done |= hi - lo <= _IV_BRACKET_TOL * hi
            result[idx[done]] = w_new[done]
            keep = ~done
            if not keep.any():
                break
            idx, w, lo, hi, log_target = idx[keep], w_new[keep], lo[keep], hi[keep], log_target[keep]
            a_otm, a_x, a_spot_pv, a_strike_pv = a_otm[keep], a_x[keep], a_spot_pv[keep], a_strike_pv[keep]

        near_cap = np.flatnonzero(result > 0.5 * w_max)
        if near_cap.size:
            cap_value, _ = _otm_value_np(otm[near_cap], x[near_cap], w_max[near_cap], spot_pv[near_cap],
                                         strike_pv[near_cap])
            result[near_cap[~(target[near_cap] < cap_value)]] = np.nan
        return result / sqrt_t


def implied_vol_np(right: Right | npt.ArrayLike, price: npt.ArrayLike, spot: npt.ArrayLike, strike: npt.ArrayLike,
                   t_years: npt.ArrayLike, rate: npt.ArrayLike, div: npt.ArrayLike) -> FloatArray:
    """`implied_vol` over arrays, NaN where it would return None; arguments broadcast as for `bs_price_np`."""
    shape, rows, (sign, p, s, k, t, r, q) = _flatten(_sign_np(right), price, spot, strike, t_years, rate, div)
    out = np.empty(rows)
    for start in range(0, rows, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, rows)
        out[start:stop] = _implied_vol_block(*(_block(a, start, stop) for a in (sign, p, s, k, t, r, q)),
                                             rows=stop - start)
    return out.reshape(shape)


# ----------------------------------------------------------------------------------------------------- time


def year_fraction(expiry: date, now: datetime) -> float:
    """Years (exact seconds / 365 days) from `now` to 16:00 America/New_York on `expiry`; 0.0 once past.

    `now` must be timezone-aware: a naive datetime is refused with ValueError.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    # POSIX seconds on both sides: immune to DST offsets, and the expiry instant is cached (live hot path).
    return years_to(expiry_instant(expiry), now.timestamp())


def years_to(expiry_s: float, now_s: float) -> float:
    """Years from `now_s` to `expiry_s` (POSIX seconds), 0.0 once past."""
    seconds = expiry_s - now_s
    return seconds / SECONDS_PER_YEAR if seconds > 0.0 else 0.0


@functools.lru_cache(maxsize=4096)
def expiry_instant(expiry: date) -> float:
    """POSIX seconds of 16:00 America/New_York on `expiry`, when an option stops having time value."""
    return datetime.combine(expiry, _EXPIRY_TIME, tzinfo=_EASTERN).timestamp()
