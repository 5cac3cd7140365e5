"""P&L: average-cost realized, marked unrealized, commissions, the US/Eastern trading day and attribution."""
from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.core.calendar import trading_date
from trading.core.pnl import Holding, PnlLedger

HEDGE = "hedge"


def test_adding_to_a_position_averages_its_cost() -> None:
    holding = Holding()

    holding.trade(100, 10.0)
    holding.trade(100, 12.0)

    assert (holding.qty, holding.avg_cost, holding.realized_usd) == (200, 11.0, 0.0)


def test_reducing_a_long_realizes_against_the_average_cost() -> None:
    holding = Holding()
    holding.trade(100, 10.0)
    holding.trade(100, 12.0)

    realized = holding.trade(-150, 13.0)

    assert realized == pytest.approx(300.0)
    assert (holding.qty, holding.avg_cost) == (50, 11.0)


def test_covering_a_short_realizes_the_price_drop_as_profit() -> None:
    holding = Holding()
    holding.trade(-100, 20.0)

    realized = holding.trade(40, 18.0)

    assert realized == pytest.approx(80.0)
    assert (holding.qty, holding.avg_cost) == (-60, 20.0)


def test_a_trade_through_zero_realizes_the_closed_part_and_opens_the_rest_at_its_price() -> None:
    holding = Holding()
    holding.trade(100, 10.0)

    realized = holding.trade(-150, 12.0)

    assert realized == pytest.approx(200.0)
    assert (holding.qty, holding.avg_cost) == (-50, 12.0)


def test_closing_the_flipped_position_realizes_against_the_flip_price_and_leaves_no_cost() -> None:
    holding = Holding()
    holding.trade(100, 10.0)
    holding.trade(-150, 12.0)

    realized = holding.trade(50, 11.0)

    assert realized == pytest.approx(50.0)
    assert (holding.qty, holding.avg_cost, holding.realized_usd) == (0.0, 0.0, pytest.approx(250.0))


def test_an_option_holding_realizes_in_dollars_through_its_multiplier() -> None:
    holding = Holding(multiplier=100)
    holding.trade(10, 5.0)

    realized = holding.trade(-10, 6.0)

    assert realized == pytest.approx(1000.0)


def test_unrealized_follows_the_mark() -> None:
    holding = Holding(multiplier=100)
    holding.trade(-3, 4.0)

    holding.mark = 4.5

    assert holding.unrealized_usd == pytest.approx(-150.0)


@settings(max_examples=150, deadline=None)
@given(
    trades=st.lists(
        st.tuples(st.integers(min_value=-500, max_value=500).filter(bool), st.integers(min_value=1, max_value=50_000)),
        min_size=1,
        max_size=12,
    ),
    close_cents=st.integers(min_value=1, max_value=50_000),
)
def test_a_round_trip_realizes_exactly_the_cash_it_made(trades: list[tuple[int, int]], close_cents: int) -> None:
    holding = Holding()
    cash = 0.0
    for qty, cents in trades:
        holding.trade(qty, cents / 100)
        cash -= qty * cents / 100

    open_qty = holding.qty

    holding.trade(-open_qty, close_cents / 100)

    assert holding.qty == 0
    assert holding.realized_usd == pytest.approx(cash + open_qty * close_cents / 100, rel=1e-9, abs=1e-6)


# ---- the ledger ------------------------------------------------------------------------------------------


def test_commissions_are_a_cost_of_the_total() -> None:
    ledger = PnlLedger(date(2026, 3, 10))

    ledger.on_fill(HEDGE, 100, 50.0, 1.25, mid=50.0)
    ledger.on_fill(HEDGE, -100, 51.0, 1.25, mid=51.0)

    assert ledger.commissions_usd == pytest.approx(2.5)
    assert ledger.realized_usd == pytest.approx(100.0)
    assert ledger.total_usd == pytest.approx(97.5)


def test_hedge_cost_is_slippage_from_the_decision_mid_plus_commission() -> None:
    ledger = PnlLedger(date(2026, 3, 10))

    ledger.on_fill(HEDGE, 100, 100.02, 1.0, mid=100.0)

    assert ledger.snapshot(HEDGE).hedge_cost_usd == pytest.approx(3.0)


def test_the_snapshot_splits_option_and_hedge_pnl() -> None:
    ledger = PnlLedger(date(2026, 3, 10))
    ledger.open_position("101", 10, 5.0, 100)
    ledger.on_fill(HEDGE, -50, 180.0, 0.0, mid=180.0)

    ledger.mark("101", 5.5)
    ledger.mark(HEDGE, 181.0)
    snap = ledger.snapshot(HEDGE)

    assert snap.options_usd == pytest.approx(500.0)
    assert snap.hedge_usd == pytest.approx(-50.0)
    assert snap.unrealized_usd == pytest.approx(450.0)


def test_a_non_finite_mark_is_ignored() -> None:
    ledger = PnlLedger(date(2026, 3, 10))
    ledger.open_position("101", 10, 5.0, 100)

    ledger.mark("101", float("nan"))

    assert ledger.unrealized_usd == 0.0


def test_the_trading_date_changes_at_us_eastern_midnight_not_utc_midnight() -> None:
    before = datetime(2026, 3, 10, 3, 59, tzinfo=UTC)
    after = datetime(2026, 3, 10, 4, 1, tzinfo=UTC)

    assert trading_date(before) == date(2026, 3, 9)
    assert trading_date(after) == date(2026, 3, 10)


def test_daily_pnl_follows_the_market_and_rolls_at_the_us_eastern_date_change() -> None:
    ledger = PnlLedger(trading_date(datetime(2026, 3, 9, 20, 0, tzinfo=UTC)))
    ledger.on_fill(HEDGE, 100, 100.0, 0.0, mid=100.0)
    ledger.mark(HEDGE, 101.0)

    rolled_late_evening = ledger.roll_if_new_day(trading_date(datetime(2026, 3, 10, 3, 59, tzinfo=UTC)))
    daily_late_evening = ledger.snapshot(HEDGE).daily_usd
    rolled_after_midnight = ledger.roll_if_new_day(trading_date(datetime(2026, 3, 10, 4, 1, tzinfo=UTC)))
    daily_at_roll = ledger.snapshot(HEDGE).daily_usd
    ledger.mark(HEDGE, 103.0)
    daily_next_day = ledger.snapshot(HEDGE)

    assert not rolled_late_evening
    assert daily_late_evening == pytest.approx(100.0)
    assert rolled_after_midnight
    assert daily_at_roll == 0.0
    assert daily_next_day.daily_usd == pytest.approx(200.0)
    assert daily_next_day.trading_date == date(2026, 3, 10)


def test_the_roll_starts_the_days_attribution_again() -> None:
    ledger = PnlLedger(date(2026, 3, 9))
    ledger.on_market_move(100.0, 0.35, 50.0, 0.0, 0.0, 0.0)
    ledger.on_market_move(102.0, 0.35, 50.0, 0.0, 0.0, 0.0)

    ledger.roll_if_new_day(date(2026, 3, 10))

    assert ledger.snapshot(HEDGE).gamma_usd == 0.0


def test_attribution_gamma_is_half_gamma_times_the_squared_move() -> None:
    ledger = PnlLedger(date(2026, 3, 10))
    ledger.on_market_move(100.0, 0.35, 50.0, -240.0, 400.0, 0.0)

    ledger.on_market_move(102.0, 0.36, 50.0, -240.0, 400.0, 0.5)
    ledger.on_market_move(99.0, 0.36, 50.0, -240.0, 400.0, 0.0)
    snap = ledger.snapshot(HEDGE)

    assert snap.gamma_usd == pytest.approx(0.5 * 50.0 * (2.0**2 + 3.0**2))
    assert snap.theta_usd == pytest.approx(-120.0)
    assert snap.vega_usd == pytest.approx(400.0)


def test_the_first_tick_attributes_nothing() -> None:
    ledger = PnlLedger(date(2026, 3, 10))

    ledger.on_market_move(100.0, 0.35, 50.0, -240.0, 400.0, 1.0)
    snap = ledger.snapshot(HEDGE)

    assert (snap.gamma_usd, snap.theta_usd, snap.vega_usd) == (0.0, 0.0, 0.0)
