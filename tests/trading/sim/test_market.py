"""The simulated market: seeded price paths, quotes, fills, commissions and the starting account."""
from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from trading.core.greeks import year_fraction
from trading.errors import ConfigError
from trading.sim.market import (
    FillModel,
    MarketConfig,
    MarketModel,
    StockQuote,
    average_cost_after,
    con_id_for,
    first_friday_on_or_after,
    generate_ticks,
    local_symbol_for,
    seed_account,
)

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)  # a Tuesday, 11:00 in New York
NEW_YORK = ZoneInfo("America/New_York")


def _fills(**overrides: float) -> FillModel:
    return FillModel(MarketConfig(**overrides), np.random.Generator(np.random.PCG64(7)))


def _path(model: MarketModel, steps: int, dt_s: float) -> list[float]:
    spots = [model.spot]
    for _ in range(steps):
        model.step(dt_s)
        spots.append(model.spot)
    return spots


# ---- price path ---------------------------------------------------------------------------------------------


def test_same_seed_gives_the_same_path_and_another_seed_a_different_one():
    config = MarketConfig(jump_intensity_per_day=20.0)

    first = generate_ticks(config, 42, NOW, 500, 1.0)
    again = generate_ticks(config, 42, NOW, 500, 1.0)
    other = generate_ticks(config, 43, NOW, 500, 1.0)

    for name in ("ts_epoch_s", "bid", "ask", "last", "iv"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.bid, other.bid)
    assert _path(MarketModel(config, 42), 200, 1.0) == _path(MarketModel(config, 42), 200, 1.0)


def test_generated_path_has_the_configured_realised_vol():
    config = MarketConfig(realized_vol=0.60)
    dt_s = 60.0
    n = 40_001

    ticks = generate_ticks(config, 1, NOW, n, dt_s)
    log_returns = np.diff(np.log((ticks.bid + ticks.ask) / 2))
    realised = log_returns.std(ddof=1) * math.sqrt(config.seconds_per_year / dt_s)

    # The estimator's standard error is about vol / sqrt(2n) = 0.002; tick rounding adds far less.
    assert realised == pytest.approx(0.60, abs=0.015)


def test_generated_ticks_follow_the_same_process_as_stepping_the_model():
    config = MarketConfig(jump_intensity_per_day=50.0, jump_std_frac=0.01)
    model = MarketModel(config, 9)

    ticks = generate_ticks(config, 9, NOW, 300, 2.0)
    quotes = [model.stock_quote()]
    for _ in range(299):
        model.step(2.0)
        quotes.append(model.stock_quote())

    stepped_bid = np.array([q.bid for q in quotes])
    stepped_ask = np.array([q.ask for q in quotes])
    assert np.abs(ticks.bid - stepped_bid).max() <= config.tick_size + 1e-9
    assert np.abs(ticks.ask - stepped_ask).max() <= config.tick_size + 1e-9
    assert np.mean(ticks.bid == stepped_bid) > 0.99
    np.testing.assert_allclose(ticks.ts_epoch_s, NOW.timestamp() + 2.0 * np.arange(300))
    np.testing.assert_array_equal(ticks.iv, np.full(300, config.implied_vol))


def test_jumps_arrive_at_the_configured_rate():
    config = MarketConfig(realized_vol=0.01, jump_intensity_per_day=2.4, jump_mean_frac=-0.05, jump_std_frac=0.001)
    hours = 20_000

    ticks = generate_ticks(config, 3, NOW, hours + 1, 3600.0)
    drops = np.sum(np.diff(np.log(ticks.bid)) < -0.03)

    # 0.1 jumps per hour: about 20000 x (1 - e^-0.1) = 1903 hours hold at least one (sd 42); the drift that
    # compensates the jumps is only +0.5 % an hour, so every jump still shows as a drop.
    assert 1750 < drops < 2060


def test_set_spot_and_set_implied_vol_script_the_market():
    model = MarketModel(MarketConfig(), 0)
    expiry = date(2026, 4, 17)
    before = model.option_quote("C", 200.0, expiry, NOW)

    model.set_spot(200.0)
    model.set_implied_vol(0.80)
    after = model.option_quote("C", 200.0, expiry, NOW)

    assert model.spot == 200.0
    assert after.iv == 0.80
    assert after.mid > before.mid
    with pytest.raises(ValueError):
        model.set_spot(0.0)


def test_zero_vol_and_zero_drift_leave_the_mid_where_it_was():
    model = MarketModel(MarketConfig(realized_vol=0.0), 5)

    model.step(3600.0)

    assert model.spot == pytest.approx(180.0, rel=1e-12)


# ---- quotes ---------------------------------------------------------------------------------------------------


def test_stock_quotes_are_positive_one_sided_and_about_spread_bps_wide():
    config = MarketConfig(spread_bps=4.0)

    ticks = generate_ticks(config, 11, NOW, 5_000, 5.0)
    mid = (ticks.bid + ticks.ask) / 2
    spread_bps = (ticks.ask - ticks.bid) / mid * 1e4

    assert np.all(ticks.bid > 0)
    assert np.all(ticks.bid < ticks.ask)
    assert np.all((ticks.bid <= ticks.last) & (ticks.last <= ticks.ask))
    # Snapping each side to the nearest cent moves the width by at most one tick.
    assert np.all(np.abs(spread_bps - 4.0) <= config.tick_size / mid * 1e4 + 1e-9)


@given(st.floats(min_value=1e-4, max_value=10_000.0), st.floats(min_value=0.0, max_value=500.0))
def test_stock_quote_is_valid_at_any_price_and_spread(spot, spread_bps):
    model = MarketModel(MarketConfig(spread_bps=spread_bps), 0)
    model.set_spot(spot)

    quote = model.stock_quote()

    assert 0 < quote.bid < quote.ask
    assert quote.bid <= quote.last <= quote.ask
    assert quote.mid == pytest.approx((quote.bid + quote.ask) / 2)
    assert round(quote.bid / 0.01) * 0.01 == pytest.approx(quote.bid, abs=1e-9)


def test_option_quotes_satisfy_put_call_parity_within_the_spread():
    config = MarketConfig(rate=0.05, div=0.01)
    model = MarketModel(config, 2)
    model.step(600.0)
    expiry = date(2026, 4, 17)

    for strike in (150.0, 180.0, 210.0):
        call = model.option_quote("C", strike, expiry, NOW)
        put = model.option_quote("P", strike, expiry, NOW)
        t = year_fraction(expiry, NOW)
        parity = model.spot * math.exp(-config.div * t) - strike * math.exp(-config.rate * t)

        tolerance = (call.ask - call.bid) / 2 + (put.ask - put.bid) / 2
        assert abs((call.mid - put.mid) - parity) <= tolerance
        assert 0 <= call.bid < call.ask and 0 <= put.bid < put.ask


def test_option_quote_carries_the_model_iv_and_greeks_a_broker_would_report():
    model = MarketModel(MarketConfig(implied_vol=0.35), 0)
    expiry = date(2026, 4, 17)

    call = model.option_quote("C", 180.0, expiry, NOW)
    put = model.option_quote("P", 180.0, expiry, NOW)

    assert call.iv == put.iv == 0.35
    assert 0.4 < call.greeks.delta < 0.7 and -0.6 < put.greeks.delta < -0.3
    assert call.greeks.gamma > 0 and call.greeks.vega > 0 and call.greeks.theta < 0
    assert call.bid <= call.greeks.price <= call.ask
    assert call.ask - call.bid == pytest.approx(max(0.02 * call.greeks.price, 0.02), abs=0.011)


def test_option_spread_never_narrower_than_the_floor_for_cheap_options():
    model = MarketModel(MarketConfig(option_min_spread=0.05), 0)

    far_otm = model.option_quote("C", 400.0, date(2026, 4, 17), NOW)

    assert far_otm.bid >= 0
    assert far_otm.ask - far_otm.bid >= 0.05 - 0.011


def test_expired_option_quotes_at_intrinsic_value():
    model = MarketModel(MarketConfig(), 0)
    expiry = date(2026, 3, 6)

    call = model.option_quote("C", 170.0, expiry, NOW)
    put = model.option_quote("P", 170.0, expiry, NOW)

    assert call.greeks.price == pytest.approx(10.0)
    assert call.greeks.delta == 1.0 and put.greeks.delta == 0.0
    assert put.bid == 0.0 and put.ask > 0


# ---- fills and commissions ----------------------------------------------------------------------------------


QUOTE = StockQuote(bid=179.98, ask=180.02, last=180.0, mid=180.0, spread_bps=2.2)


def test_market_orders_fill_at_the_ask_when_buying_and_the_bid_when_selling():
    fills = _fills()

    buy = fills.fill_price("BUY", 100, "market", None, QUOTE)
    sell = fills.fill_price("SELL", 100, "market", None, QUOTE)

    assert buy == 180.02
    assert sell == 179.98


def test_limit_orders_fill_at_the_touch_only_when_marketable():
    fills = _fills()

    resting_buy = fills.fill_price("BUY", 10, "limit", 180.01, QUOTE)
    resting_sell = fills.fill_price("SELL", 10, "limit", 179.99, QUOTE)
    crossing_buy = fills.fill_price("BUY", 10, "limit", 180.50, QUOTE)
    crossing_sell = fills.fill_price("SELL", 10, "limit", 179.50, QUOTE)

    assert resting_buy is None and resting_sell is None
    assert crossing_buy == 180.02
    assert crossing_sell == 179.98


def test_limit_order_without_a_limit_is_refused():
    with pytest.raises(ValueError, match="limit"):
        _fills().fill_price("BUY", 10, "limit", None, QUOTE)


def test_partial_fills_are_whole_shares_that_sum_to_the_order():
    fills = _fills(partial_fill_prob=1.0)

    splits = [fills.split_fills(qty) for qty in (2, 3, 7, 100, 500) for _ in range(50)]

    for qty, split in zip([q for q in (2, 3, 7, 100, 500) for _ in range(50)], splits, strict=True):
        assert sum(split) == qty
        assert all(isinstance(piece, int) and piece >= 1 for piece in split)
        assert 2 <= len(split) <= 4


def test_without_partial_fill_probability_an_order_fills_in_one_piece():
    fills = _fills(partial_fill_prob=0.0)

    assert fills.split_fills(250) == [250]
    assert fills.split_fills(1.0) == [1]


def test_a_single_share_cannot_be_split():
    assert _fills(partial_fill_prob=1.0).split_fills(1) == [1]


def test_commission_has_a_minimum_per_order_and_a_one_percent_cap():
    fills = _fills(commission_per_share=0.005, min_commission_usd=1.0)

    small = fills.commission_usd(10, 180.0)
    large = fills.commission_usd(1_000, 180.0)
    penny_stock = fills.commission_usd(1_000, 0.10)
    sale = fills.commission_usd(-1_000, 180.0)

    assert small == 1.0
    assert large == pytest.approx(5.0)
    assert penny_stock == pytest.approx(1.0)  # 1 % of $100; per-share would be $5
    assert sale == pytest.approx(5.0)


def test_model_owns_a_fill_model_on_its_own_random_stream():
    config = MarketConfig(partial_fill_prob=1.0)
    quiet = MarketModel(config, 4)
    busy = MarketModel(config, 4)

    for _ in range(20):
        busy.fills.split_fills(100)
    quiet.step(60.0)
    busy.step(60.0)

    assert quiet.spot == busy.spot


# ---- the starting account -----------------------------------------------------------------------------------


def _dte(expiry: date, now: datetime) -> int:
    return (expiry - now.astimezone(NEW_YORK).date()).days


@pytest.mark.parametrize("days_later", range(7))
def test_seed_account_holds_a_long_atm_straddle_inside_the_default_dte_window(days_later):
    now = NOW + timedelta(days=days_later)
    config = MarketConfig(spot0=182.4)

    positions = seed_account(config, now, straddles=10)
    straddle = [p for p in positions if p.sec_type == "OPT" and 21 <= _dte(p.expiry, now) <= 35]

    assert sorted(p.right for p in straddle) == ["C", "P"]
    for leg in straddle:
        assert leg.symbol == "NVDA" and leg.strike == 180.0 and leg.qty == 10 and leg.multiplier == 100
        assert leg.expiry.weekday() == 4
        assert leg.avg_cost == pytest.approx(MarketModel(config, 0).option_quote(leg.right, 180.0, leg.expiry, now).mid)
    assert straddle[0].expiry == straddle[1].expiry


def test_seed_account_holds_manual_positions_bifrost_must_not_touch():
    positions = seed_account(MarketConfig(), NOW, manual_shares=100)

    same_underlying_shares = [p for p in positions if p.symbol == "NVDA" and p.sec_type == "STK"]
    other_stock = [p for p in positions if p.symbol == "AAPL"]
    far_calls = [p for p in positions if p.sec_type == "OPT" and _dte(p.expiry, NOW) > 60]

    assert [(p.qty, p.multiplier, p.right) for p in same_underlying_shares] == [(100, 1, None)]
    assert [(p.qty, p.sec_type) for p in other_stock] == [(50, "STK")]
    assert len(far_calls) == 1
    assert far_calls[0].symbol == "NVDA" and far_calls[0].right == "C" and far_calls[0].strike >= 1.3 * 180


def test_seed_account_is_deterministic():
    assert seed_account(MarketConfig(), NOW) == seed_account(MarketConfig(), NOW)


def test_con_ids_are_stable_across_runs_and_unique_per_contract():
    positions = seed_account(MarketConfig(), NOW)

    con_ids = [p.con_id for p in positions]

    # Pinned values: a salted hash() would change them in every new process.
    assert con_id_for("NVDA", "STK") == NVDA_STOCK_CON_ID
    assert con_id_for("NVDA", "OPT", "C", 180.0, date(2026, 4, 17), 100) == NVDA_CALL_CON_ID
    assert len(set(con_ids)) == len(con_ids)
    assert all(0 < c < 2**31 for c in con_ids)
    assert con_id_for("NVDA", "OPT", "C", 180.0, date(2026, 4, 17), 100) != con_id_for(
        "NVDA", "OPT", "P", 180.0, date(2026, 4, 17), 100)


NVDA_STOCK_CON_ID = 811470423
NVDA_CALL_CON_ID = 1947126643


def test_contracts_have_readable_local_symbols():
    positions = seed_account(MarketConfig(), NOW)
    call = positions[0]

    assert local_symbol_for("NVDA", "OPT", "C", 180.0, date(2026, 12, 18)) == "NVDA  261218C00180000"
    assert local_symbol_for("NVDA", "OPT", "P", 182.5, date(2026, 12, 18)) == "NVDA  261218P00182500"
    assert call.local_symbol == local_symbol_for("NVDA", "OPT", "C", call.strike, call.expiry)
    assert {p.local_symbol for p in positions if p.sec_type == "STK"} == {"NVDA", "AAPL"}
    assert call.contract().con_id == call.con_id and call.contract().local_symbol == call.local_symbol


# ---- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "value"), [("spot0", 0.0), ("realized_vol", -0.1), ("partial_fill_prob", 1.5),
                                              ("tick_size", float("nan"))])
def test_market_config_refuses_an_impossible_value_and_names_the_field(field, value):
    with pytest.raises(ConfigError) as refused:
        MarketConfig(**{field: value})

    assert refused.value.field == field


def test_generate_ticks_refuses_a_naive_start():
    with pytest.raises(ValueError, match="timezone"):
        generate_ticks(MarketConfig(), 0, datetime(2026, 3, 10, 15, 0), 10, 1.0)


def test_the_accounts_average_price_is_booked_like_the_ledger_even_through_zero():
    assert average_cost_after(100, 170.0, 50, 176.0) == (150, 172.0)  # adding averages in
    assert average_cost_after(100, 170.0, -40, 180.0) == (60, 170.0)  # reducing keeps the average
    assert average_cost_after(100, 170.0, -130, 180.0) == (-30, 180.0)  # through zero: the rest opened at 180
    assert average_cost_after(0, 0.0, -20, 181.0) == (-20, 181.0)


def test_first_friday_on_or_after():
    assert first_friday_on_or_after(date(2026, 11, 23)) == date(2026, 11, 27)  # a Monday
    assert first_friday_on_or_after(date(2026, 11, 27)) == date(2026, 11, 27)

