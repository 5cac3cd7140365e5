"""Black-Scholes-Merton greeks: textbook values, no-arbitrage identities, finite differences, IV round trips,
scalar/numpy agreement, edge cases and the 16:00 New York year fraction."""
from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from trading.core.greeks import (
    IMPLIED_VOL_MAX,
    SECONDS_PER_YEAR,
    Greeks,
    bs_greeks,
    bs_greeks_np,
    bs_price,
    bs_price_np,
    implied_vol,
    implied_vol_np,
    year_fraction,
)

NEW_YORK = ZoneInfo("America/New_York")

rights = st.sampled_from(["C", "P"])
spots = st.floats(1.0, 1000.0)
moneyness = st.floats(0.5, 2.0)
years = st.floats(1.0 / 365.0, 3.0)
vols = st.floats(0.05, 2.0)
rates = st.floats(-0.01, 0.10)
divs = st.floats(0.0, 0.05)


@st.composite
def options(draw: st.DrawFn) -> tuple[str, float, float, float, float, float, float]:
    """(right, spot, strike, t_years, rate, div, vol) in the ranges a desk meets."""
    spot = draw(spots)
    return (draw(rights), spot, spot * draw(moneyness), draw(years), draw(rates), draw(divs), draw(vols))


def _scales(spot: float, strike: float, t_years: float, rate: float, div: float, vol: float) -> Greeks:
    """The natural size of each greek for this option: errors are measured against these, not against values
    that may legitimately be ~0 far from the money."""
    sqrt_t = math.sqrt(t_years)
    atm_pdf = 1.0 / math.sqrt(2.0 * math.pi)
    return Greeks(
        price=max(spot, strike),
        delta=1.0,
        gamma=atm_pdf / (spot * vol * sqrt_t),
        theta=(spot * vol * atm_pdf / (2.0 * sqrt_t) + abs(rate) * strike + div * spot) / 365.0,
        vega=spot * sqrt_t * atm_pdf / 100.0,
    )


def _lower_bound(right: str, spot: float, strike: float, t_years: float, rate: float, div: float) -> float:
    forward_intrinsic = spot * math.exp(-div * t_years) - strike * math.exp(-rate * t_years)
    return max(forward_intrinsic if right == "C" else -forward_intrinsic, 0.0)


# ------------------------------------------------------------------------------------------------ known values


def test_hull_example_prices_call_at_4_76_and_put_at_0_81():
    spot, strike, rate, t_years, vol = 42.0, 40.0, 0.10, 0.5, 0.20

    call = bs_greeks("C", spot, strike, t_years, rate, 0.0, vol)
    put = bs_greeks("P", spot, strike, t_years, rate, 0.0, vol)

    assert round(call.price, 2) == 4.76
    assert round(put.price, 2) == 0.81
    assert call.delta == pytest.approx(0.7791, abs=1e-4)  # N(d1), d1 = 0.7693
    assert put.delta == pytest.approx(0.7791 - 1.0, abs=1e-4)


def test_theta_is_per_calendar_day_and_vega_per_vol_point():
    spot, strike, t_years, rate, vol = 100.0, 100.0, 1.0, 0.0, 0.20
    d1 = 0.5 * vol * math.sqrt(t_years)
    pdf = math.exp(-0.5 * d1 * d1) / math.sqrt(2.0 * math.pi)

    greeks = bs_greeks("C", spot, strike, t_years, rate, 0.0, vol)

    assert greeks.vega == pytest.approx(spot * pdf * math.sqrt(t_years) / 100.0, rel=1e-14)
    assert greeks.theta == pytest.approx(-spot * pdf * vol / (2.0 * math.sqrt(t_years)) / 365.0, rel=1e-14)


# --------------------------------------------------------------------------------------- no-arbitrage identities


@settings(max_examples=300, deadline=None)
@given(options())
def test_put_call_parity_holds_with_a_dividend_yield(option):
    _, spot, strike, t_years, rate, div, vol = option

    call = bs_price("C", spot, strike, t_years, rate, div, vol)
    put = bs_price("P", spot, strike, t_years, rate, div, vol)

    forward_value = spot * math.exp(-div * t_years) - strike * math.exp(-rate * t_years)
    assert call - put == pytest.approx(forward_value, abs=1e-12 * max(spot, strike))


@settings(max_examples=300, deadline=None)
@given(options())
def test_price_lies_within_no_arbitrage_bounds(option):
    right, spot, strike, t_years, rate, div, vol = option

    price = bs_price(right, spot, strike, t_years, rate, div, vol)

    upper = spot * math.exp(-div * t_years) if right == "C" else strike * math.exp(-rate * t_years)
    slack = 1e-12 * max(spot, strike)
    assert _lower_bound(right, spot, strike, t_years, rate, div) - slack <= price <= upper + slack


# ------------------------------------------------------------------------------------------ finite differences


@settings(max_examples=300, deadline=None)
@given(options())
def test_greeks_match_finite_differences_of_price(option):
    right, spot, strike, t_years, rate, div, vol = option
    scale = _scales(spot, strike, t_years, rate, div, vol)
    total_vol = vol * math.sqrt(t_years)

    def price(s: float = spot, t: float = t_years, v: float = vol) -> float:
        return bs_price(right, s, strike, t, rate, div, v)

    greeks = bs_greeks(right, spot, strike, t_years, rate, div, vol)

    h_delta = 1e-4 * spot * total_vol
    fd_delta = (price(s=spot + h_delta) - price(s=spot - h_delta)) / (2.0 * h_delta)
    h_gamma = 1e-3 * spot * total_vol
    fd_gamma = (price(s=spot + h_gamma) - 2.0 * price() + price(s=spot - h_gamma)) / (h_gamma * h_gamma)
    h_t = 1e-4 * t_years
    fd_theta_per_day = -(price(t=t_years + h_t) - price(t=t_years - h_t)) / (2.0 * h_t) / 365.0
    h_vol = 1e-4 * vol
    fd_vega_per_point = (price(v=vol + h_vol) - price(v=vol - h_vol)) / (2.0 * h_vol) / 100.0
    assert greeks.price == price()
    assert greeks.delta == pytest.approx(fd_delta, rel=1e-6, abs=1e-7 * scale.delta)
    assert greeks.gamma == pytest.approx(fd_gamma, rel=1e-4, abs=1e-4 * scale.gamma)
    assert greeks.theta == pytest.approx(fd_theta_per_day, rel=1e-6, abs=1e-6 * scale.theta)
    assert greeks.vega == pytest.approx(fd_vega_per_point, rel=1e-6, abs=1e-7 * scale.vega)


# ------------------------------------------------------------------------------------------------- implied vol


@settings(max_examples=300, deadline=None)
@given(options())
def test_implied_vol_round_trips_the_price(option):
    right, spot, strike, t_years, rate, div, vol = option
    price = bs_price(right, spot, strike, t_years, rate, div, vol)
    time_value = price - _lower_bound(right, spot, strike, t_years, rate, div)
    assume(price > 1e-12 * spot and time_value > 1e-9 * price)

    iv = implied_vol(right, price, spot, strike, t_years, rate, div)

    assert iv is not None
    assert bs_price(right, spot, strike, t_years, rate, div, iv) == pytest.approx(price, rel=1e-9)


@settings(max_examples=200, deadline=None)
@given(rights, spots, st.floats(0.8, 1.25), st.floats(0.05, 3.0), rates, divs, vols)
def test_implied_vol_recovers_the_vol_near_the_money(right, spot, money, t_years, rate, div, vol):
    strike = spot * money
    price = bs_price(right, spot, strike, t_years, rate, div, vol)
    assume(price - _lower_bound(right, spot, strike, t_years, rate, div) > 1e-4 * price)

    iv = implied_vol(right, price, spot, strike, t_years, rate, div)

    assert iv == pytest.approx(vol, rel=1e-9)


@pytest.mark.parametrize("right", ["C", "P"])
def test_implied_vol_is_none_when_price_is_at_or_below_discounted_intrinsic(right):
    spot, strike, t_years, rate, div = 100.0, 90.0 if right == "C" else 110.0, 0.5, 0.05, 0.01
    floor = _lower_bound(right, spot, strike, t_years, rate, div)

    at_floor = implied_vol(right, floor, spot, strike, t_years, rate, div)
    below_floor = implied_vol(right, floor - 0.01, spot, strike, t_years, rate, div)

    assert at_floor is None
    assert below_floor is None


@pytest.mark.parametrize("right", ["C", "P"])
def test_implied_vol_is_none_at_or_above_the_upper_bound(right):
    spot, strike, t_years, rate, div = 100.0, 100.0, 0.5, 0.05, 0.01
    upper = spot * math.exp(-div * t_years) if right == "C" else strike * math.exp(-rate * t_years)

    assert implied_vol(right, upper, spot, strike, t_years, rate, div) is None
    assert implied_vol(right, upper * 1.01, spot, strike, t_years, rate, div) is None


def test_implied_vol_is_none_beyond_the_maximum_vol_but_found_just_below_it():
    spot, strike, t_years, rate, div = 100.0, 100.0, 0.25, 0.05, 0.0
    too_volatile = bs_price("C", spot, strike, t_years, rate, div, IMPLIED_VOL_MAX * 1.2)
    just_below = bs_price("C", spot, strike, t_years, rate, div, IMPLIED_VOL_MAX * 0.9)

    assert implied_vol("C", too_volatile, spot, strike, t_years, rate, div) is None
    assert implied_vol("C", just_below, spot, strike, t_years, rate, div) == pytest.approx(IMPLIED_VOL_MAX * 0.9,
                                                                                           rel=1e-9)


@pytest.mark.parametrize(
    ("price", "spot", "strike", "t_years"),
    [(0.0, 100.0, 100.0, 0.5), (-1.0, 100.0, 100.0, 0.5), (5.0, 0.0, 100.0, 0.5), (5.0, 100.0, 0.0, 0.5),
     (5.0, 100.0, 100.0, 0.0), (5.0, 100.0, 100.0, -0.1), (math.nan, 100.0, 100.0, 0.5),
     (5.0, math.nan, 100.0, 0.5)],
)
def test_implied_vol_is_none_for_non_positive_or_nan_inputs(price, spot, strike, t_years):
    scalar = implied_vol("C", price, spot, strike, t_years, 0.05, 0.0)
    vectorised = implied_vol_np("C", [price], [spot], [strike], [t_years], 0.05, 0.0)

    assert scalar is None
    assert math.isnan(vectorised[0])


def test_implied_vol_solves_deep_out_of_the_money_wings():
    spot, t_years, rate, div, vol = 100.0, 7.0 / 365.0, 0.05, 0.0, 0.30
    strikes = [60.0, 75.0, 125.0, 140.0]

    for strike in strikes:
        right = "P" if strike < spot else "C"
        price = bs_price(right, spot, strike, t_years, rate, div, vol)

        iv = implied_vol(right, price, spot, strike, t_years, rate, div)

        assert price > 0.0
        assert iv == pytest.approx(vol, rel=1e-8)


# ----------------------------------------------------------------------------------------- scalar vs numpy


@settings(max_examples=60, deadline=None)
@given(st.lists(options(), min_size=1, max_size=40))
def test_numpy_greeks_agree_with_scalar_to_1e_12(rows):
    right, spot, strike, t_years, rate, div, vol = (np.array(col) for col in zip(*rows, strict=True))

    vectorised = bs_greeks_np(right, spot, strike, t_years, rate, div, vol)
    prices = bs_price_np(right, spot, strike, t_years, rate, div, vol)

    for i, row in enumerate(rows):
        scalar = bs_greeks(*row)
        scale = _scales(*row[1:])
        for name in ("price", "delta", "gamma", "theta", "vega"):
            assert abs(getattr(vectorised, name)[i] - getattr(scalar, name)) <= 1e-12 * getattr(scale, name), name
        assert abs(prices[i] - scalar.price) <= 1e-12 * scale.price


@settings(max_examples=60, deadline=None)
@given(st.lists(options(), min_size=1, max_size=40))
def test_numpy_implied_vol_agrees_with_scalar(rows):
    prices = [bs_price(*row) for row in rows]
    right, spot, strike, t_years, rate, div, _ = (np.array(col) for col in zip(*rows, strict=True))

    vectorised = implied_vol_np(right, np.array(prices), spot, strike, t_years, rate, div)

    for i, (row, price) in enumerate(zip(rows, prices, strict=True)):
        right_i, spot_i, strike_i, t_i, rate_i, div_i, _ = row
        scalar = implied_vol(right_i, price, spot_i, strike_i, t_i, rate_i, div_i)
        time_value = price - _lower_bound(right_i, spot_i, strike_i, t_i, rate_i, div_i)
        if not (price > 1e-12 * spot_i and time_value > 1e-9 * price):
            continue  # the None/NaN boundary: either answer is fair, and the two paths may round across it
        assert scalar is not None and not math.isnan(vectorised[i])
        # Same price to 1e-12; same vol to 1e-12 where no parity conversion amplifies rounding (out of the money).
        assert bs_price(right_i, spot_i, strike_i, t_i, rate_i, div_i, vectorised[i]) == pytest.approx(
            bs_price(right_i, spot_i, strike_i, t_i, rate_i, div_i, scalar), rel=1e-12)
        if time_value == price:
            assert vectorised[i] == pytest.approx(scalar, rel=1e-12)


def test_numpy_implied_vol_recovers_vols_of_a_large_mixed_book():
    rng = np.random.default_rng(7)
    rows = 20_000
    spot = rng.uniform(1.0, 1000.0, rows)
    strike = spot * np.exp(rng.uniform(np.log(0.7), np.log(1.4), rows))
    t_years = rng.uniform(0.05, 3.0, rows)
    vol = rng.uniform(0.05, 2.0, rows)
    right = np.where(rng.random(rows) < 0.5, "C", "P")
    price = bs_price_np(right, spot, strike, t_years, 0.03, 0.01, vol)

    iv = implied_vol_np(right, price, spot, strike, t_years, 0.03, 0.01)

    sign = np.where(right == "C", 1.0, -1.0)
    floor = np.maximum(sign * (spot * np.exp(-0.01 * t_years) - strike * np.exp(-0.03 * t_years)), 0.0)
    readable = price - floor > 1e-4 * price  # time value large enough to pin the vol to 1e-9
    solved = np.isfinite(iv)
    assert np.all(solved[price - floor > 1e-9 * price])
    np.testing.assert_allclose(iv[readable], vol[readable], rtol=1e-9)
    round_trip = bs_price_np(right[solved], spot[solved], strike[solved], t_years[solved], 0.03, 0.01, iv[solved])
    np.testing.assert_allclose(round_trip, price[solved], rtol=1e-9)


def test_numpy_accepts_bool_is_call_arrays_like_strings():
    spot, strike = np.array([100.0, 100.0]), np.array([95.0, 105.0])

    by_string = bs_greeks_np(np.array(["C", "P"]), spot, strike, 0.5, 0.05, 0.0, 0.3)
    by_bool = bs_greeks_np(np.array([True, False]), spot, strike, 0.5, 0.05, 0.0, 0.3)
    by_list = bs_greeks_np(["C", "P"], spot, strike, 0.5, 0.05, 0.0, 0.3)

    np.testing.assert_array_equal(by_string.price, by_bool.price)
    np.testing.assert_array_equal(by_string.delta, by_list.delta)
    assert by_string.delta[0] > 0.0 > by_string.delta[1]


def test_numpy_inputs_broadcast_to_one_shape():
    spot = np.array([[90.0], [100.0], [110.0]])
    strike = np.array([95.0, 100.0, 105.0, 110.0])

    grid = bs_greeks_np("C", spot, strike, 0.5, 0.05, 0.0, 0.3)
    single = bs_price_np("P", 100.0, 100.0, 0.5, 0.05, 0.0, 0.3)

    assert grid.vega.shape == (3, 4)
    assert grid.price[2, 1] == bs_price("C", 110.0, 100.0, 0.5, 0.05, 0.0, 0.3)
    assert single.shape == ()
    assert float(single) == bs_price("P", 100.0, 100.0, 0.5, 0.05, 0.0, 0.3)


@pytest.mark.parametrize("bad_right", ["X", "c", "CALL", ""])
def test_an_unknown_right_is_refused(bad_right):
    with pytest.raises(ValueError, match="right"):
        bs_greeks(bad_right, 100.0, 100.0, 0.5, 0.05, 0.0, 0.3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="right"):
        bs_greeks_np(["C", bad_right], 100.0, 100.0, 0.5, 0.05, 0.0, 0.3)
    with pytest.raises(ValueError, match="right"):
        implied_vol(bad_right, 5.0, 100.0, 100.0, 0.5, 0.05, 0.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize(
    ("right", "spot", "expected_price", "expected_delta"),
    [("C", 110.0, 10.0, 1.0), ("C", 90.0, 0.0, 0.0), ("C", 100.0, 0.0, 0.0),
     ("P", 90.0, 10.0, -1.0), ("P", 110.0, 0.0, 0.0), ("P", 100.0, 0.0, 0.0)],
)
@pytest.mark.parametrize("t_years", [0.0, -0.01])
def test_an_expired_option_is_worth_intrinsic_with_a_step_delta(right, spot, expected_price, expected_delta,
                                                                  t_years):
    greeks = bs_greeks(right, spot, 100.0, t_years, 0.05, 0.02, 0.3)

    assert greeks == Greeks(expected_price, expected_delta, 0.0, 0.0, 0.0)
    assert bs_price(right, spot, 100.0, t_years, 0.05, 0.02, 0.3) == expected_price


@pytest.mark.parametrize("vol", [0.0, -0.2])
def test_zero_vol_is_worth_discounted_forward_intrinsic(vol):
    spot, strike, t_years, rate, div = 100.0, 90.0, 0.5, 0.05, 0.02

    call = bs_greeks("C", spot, strike, t_years, rate, div, vol)
    put = bs_greeks("P", spot, strike, t_years, rate, div, vol)

    assert call.price == pytest.approx(spot * math.exp(-div * t_years) - strike * math.exp(-rate * t_years))
    assert call.delta == pytest.approx(math.exp(-div * t_years))
    assert (call.gamma, call.theta, call.vega) == (0.0, 0.0, 0.0)
    assert put == Greeks(0.0, 0.0, 0.0, 0.0, 0.0)


@settings(max_examples=200, deadline=None)
@given(rights, spots, moneyness, st.floats(-1.0, 3.0), rates, divs, st.floats(-1.0, 2.0))
def test_greeks_never_raise_and_never_return_nan_for_finite_inputs(right, spot, money, t_years, rate, div, vol):
    greeks = bs_greeks(right, spot, spot * money, t_years, rate, div, vol)
    vectorised = bs_greeks_np(right, [spot], [spot * money], [t_years], rate, div, [vol])

    values = (greeks.price, greeks.delta, greeks.gamma, greeks.theta, greeks.vega)
    assert all(math.isfinite(value) for value in values)
    assert greeks.price >= 0.0
    for name, value in zip(("price", "delta", "gamma", "theta", "vega"), values, strict=True):
        assert getattr(vectorised, name)[0] == pytest.approx(value, rel=1e-12, abs=1e-12 * max(spot, 1.0)), name


def test_numpy_degenerate_rows_match_scalar_and_nan_stays_nan():
    rows = [("C", 110.0, 100.0, 0.0, 0.05, 0.0, 0.3), ("P", 90.0, 100.0, -1.0, 0.05, 0.0, 0.3),
            ("C", 110.0, 100.0, 0.5, 0.05, 0.02, 0.0), ("P", 0.0, 100.0, 0.5, 0.05, 0.0, 0.3),
            ("C", math.nan, 100.0, 0.5, 0.05, 0.0, 0.3), ("C", 100.0, 100.0, 0.5, 0.05, 0.0, 0.3)]
    right, spot, strike, t_years, rate, div, vol = (np.array(col) for col in zip(*rows, strict=True))

    vectorised = bs_greeks_np(right, spot, strike, t_years, rate, div, vol)

    for i, row in enumerate(rows):
        scalar = bs_greeks(*row)
        for name in ("price", "delta", "gamma", "theta", "vega"):
            np.testing.assert_allclose(getattr(vectorised, name)[i], getattr(scalar, name), rtol=1e-14,
                                       err_msg=f"row {i} {name}")
    assert math.isnan(bs_greeks(*rows[4]).price)


# ------------------------------------------------------------------------------------------- year fraction


def test_year_fraction_counts_exact_seconds_to_1600_new_york_on_expiry():
    now = datetime(2026, 6, 19, 15, 0, 0, 500_000, tzinfo=NEW_YORK)

    years = year_fraction(date(2026, 6, 19), now)

    assert years == 3599.5 / SECONDS_PER_YEAR


def test_year_fraction_is_the_same_instant_whatever_zone_now_is_given_in():
    new_york = datetime(2026, 1, 15, 10, 30, tzinfo=NEW_YORK)
    utc = new_york.astimezone(UTC)
    tokyo = new_york.astimezone(timezone(timedelta(hours=9)))

    fractions = {year_fraction(date(2026, 2, 20), when) for when in (new_york, utc, tokyo)}

    assert len(fractions) == 1


def test_year_fraction_loses_an_hour_across_the_spring_dst_change():
    # DST starts Sunday 2026-03-08: Friday 16:00 EST to Monday 16:00 EDT is 3 days less an hour.
    now = datetime.combine(date(2026, 3, 6), time(16, 0), NEW_YORK)

    years = year_fraction(date(2026, 3, 9), now)

    assert years * SECONDS_PER_YEAR == pytest.approx(3 * 86_400 - 3_600, abs=1e-6)


def test_year_fraction_gains_an_hour_across_the_autumn_dst_change():
    # DST ends Sunday 2026-11-01: Friday 16:00 EDT to Monday 16:00 EST is 3 days and an hour.
    now = datetime.combine(date(2026, 10, 30), time(16, 0), NEW_YORK)

    years = year_fraction(date(2026, 11, 2), now)

    assert years * SECONDS_PER_YEAR == pytest.approx(3 * 86_400 + 3_600, abs=1e-6)


def test_year_fraction_is_zero_at_and_after_the_close_of_expiry_day():
    expiry = date(2026, 6, 19)

    at_close = year_fraction(expiry, datetime(2026, 6, 19, 16, 0, tzinfo=NEW_YORK))
    after = year_fraction(expiry, datetime(2026, 6, 22, 9, 30, tzinfo=NEW_YORK))

    assert at_close == 0.0
    assert after == 0.0


def test_year_fraction_refuses_a_naive_datetime():
    with pytest.raises(ValueError, match="timezone-aware"):
        year_fraction(date(2026, 6, 19), datetime(2026, 6, 19, 10, 0))
