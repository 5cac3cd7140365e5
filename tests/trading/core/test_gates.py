"""Hedge sizing and gates: every failing gate reported in the Contract order, sizing that never makes delta worse."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.core.gates import (
    GATE_REASONS,
    Counters,
    GateState,
    evaluate_gates,
    round_half_away,
    size_hedge,
)
from trading.core.params import StrategyParams

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
PARAMS = StrategyParams()  # hedge_threshold 25, force 500, min 10, per order 500, max position 2000, cooldown 60 s
SPOT = 180.0


def _clear(**changes: object) -> GateState:
    """A state in which every gate is open and net delta asks for a 100-share sale."""
    state = GateState(
        paused=False,
        stopping=False,
        halted=False,
        broker_connected=True,
        quote_age_ms=50.0,
        spread_bps=1.0,
        greeks_valid=True,
        reconciled=True,
        has_options=True,
        market_open=True,
        in_blackout=False,
        order_in_flight=False,
        spot=SPOT,
        net_delta_shares=100.0,
        hedge_shares=0.0,
        last_hedge_price=None,
        last_hedge_at=None,
    )
    return dataclasses.replace(state, **changes)


def _counters(daily_hedges: int = 0) -> Counters:
    return Counters(date(2026, 3, 10), daily_hedges)


def test_gate_reasons_are_the_contract_codes_in_the_contract_order() -> None:
    assert GATE_REASONS == (
        "paused", "stopping", "risk_halt", "broker_disconnected", "no_quote", "data_stale", "greeks_invalid",
        "not_reconciled", "no_option_position", "outside_trading_hours", "earnings_blackout", "cooldown",
        "max_daily_hedges", "max_position", "spread_too_wide", "min_price_move", "order_in_flight",
        "below_min_hedge", "near_expiry", "lease_unconfirmed", "journal_unwritable", "clock_skew",
    )


def test_a_clear_state_allows_the_hedge_that_brings_delta_to_zero() -> None:
    state = _clear(net_delta_shares=100.0)

    result = evaluate_gates(state, PARAMS, _counters(), NOW)

    assert result.allowed
    assert result.reasons == ()
    assert result.size.order_shares == -100.0


def test_every_failing_gate_is_reported_in_contract_order_with_no_quote_and_max_position() -> None:
    state = _clear(
        paused=True, stopping=True, halted=True, broker_connected=False, quote_age_ms=None, greeks_valid=False,
        reconciled=False, has_options=False, market_open=False, in_blackout=True, spread_bps=80.0,
        last_hedge_at=NOW - timedelta(seconds=1), last_hedge_price=SPOT, order_in_flight=True,
        net_delta_shares=-100.0, hedge_shares=2000.0,
    )

    result = evaluate_gates(state, PARAMS, _counters(daily_hedges=50), NOW)

    assert not result.allowed
    assert result.reasons == (
        "paused", "stopping", "risk_halt", "broker_disconnected", "no_quote", "greeks_invalid", "not_reconciled",
        "no_option_position", "outside_trading_hours", "earnings_blackout", "cooldown", "max_daily_hedges",
        "max_position", "spread_too_wide", "min_price_move", "order_in_flight",
    )


def test_every_failing_gate_is_reported_in_contract_order_with_data_stale_and_below_min_hedge() -> None:
    state = _clear(
        paused=True, stopping=True, halted=True, broker_connected=False, quote_age_ms=5000.0, greeks_valid=False,
        reconciled=False, has_options=False, market_open=False, in_blackout=True, spread_bps=50.0,
        last_hedge_at=NOW, last_hedge_price=SPOT, order_in_flight=True, net_delta_shares=6.0,
        lease_confirmed=False, journal_writable=False, clock_skewed=True, minutes_to_expiry=10.0,
    )

    result = evaluate_gates(state, PARAMS, _counters(daily_hedges=99), NOW)

    assert result.reasons == (
        "paused", "stopping", "risk_halt", "broker_disconnected", "data_stale", "greeks_invalid", "not_reconciled",
        "no_option_position", "outside_trading_hours", "earnings_blackout", "cooldown", "max_daily_hedges",
        "spread_too_wide", "min_price_move", "order_in_flight", "below_min_hedge", "near_expiry",
        "lease_unconfirmed", "journal_unwritable", "clock_skew",
    )
    assert set(result.reasons) | {"no_quote", "max_position"} == set(GATE_REASONS)


ALONE: dict[str, Callable[[], tuple[GateState, Counters]]] = {
    "paused": lambda: (_clear(paused=True), _counters()),
    "stopping": lambda: (_clear(stopping=True), _counters()),
    "risk_halt": lambda: (_clear(halted=True), _counters()),
    "broker_disconnected": lambda: (_clear(broker_connected=False), _counters()),
    "no_quote": lambda: (_clear(quote_age_ms=None), _counters()),
    "data_stale": lambda: (_clear(quote_age_ms=PARAMS.stale_quote_ms), _counters()),
    "greeks_invalid": lambda: (_clear(greeks_valid=False), _counters()),
    "not_reconciled": lambda: (_clear(reconciled=False), _counters()),
    "no_option_position": lambda: (_clear(has_options=False), _counters()),
    "outside_trading_hours": lambda: (_clear(market_open=False), _counters()),
    "earnings_blackout": lambda: (_clear(in_blackout=True), _counters()),
    "cooldown": lambda: (_clear(last_hedge_at=NOW - timedelta(seconds=59.999)), _counters()),
    "max_daily_hedges": lambda: (_clear(), _counters(daily_hedges=PARAMS.max_daily_hedges)),
    "max_position": lambda: (_clear(hedge_shares=-2000.0), _counters()),
    "spread_too_wide": lambda: (_clear(spread_bps=PARAMS.extreme_spread_bps), _counters()),
    "min_price_move": lambda: (_clear(last_hedge_price=SPOT * (1 + 19.99e-4)), _counters()),
    "order_in_flight": lambda: (_clear(order_in_flight=True), _counters()),
    "below_min_hedge": lambda: (_clear(net_delta_shares=9.4), _counters()),
    "near_expiry": lambda: (_clear(minutes_to_expiry=PARAMS.expiry_cutoff_minutes - 0.001), _counters()),
    "lease_unconfirmed": lambda: (_clear(lease_confirmed=False), _counters()),
    "journal_unwritable": lambda: (_clear(journal_writable=False), _counters()),
    "clock_skew": lambda: (_clear(clock_skewed=True), _counters()),
}


def test_there_is_one_single_gate_case_per_reason() -> None:
    assert tuple(ALONE) == GATE_REASONS


@pytest.mark.parametrize("reason", GATE_REASONS)
def test_each_reason_alone_blocks_the_hedge(reason: str) -> None:
    state, counters = ALONE[reason]()

    result = evaluate_gates(state, PARAMS, counters, NOW)

    assert result.reasons == (reason,)
    assert not result.allowed


# ---- boundaries of the timing gates ----------------------------------------------------------------------


def test_cooldown_ends_exactly_at_cooldown_s() -> None:
    state = _clear(last_hedge_at=NOW - timedelta(seconds=PARAMS.cooldown_s))

    result = evaluate_gates(state, PARAMS, _counters(), NOW)

    assert result.allowed


def test_min_price_move_is_met_once_the_move_reaches_min_price_move_bps() -> None:
    state = _clear(last_hedge_price=100.0, spot=100.0 * (1 + PARAMS.min_price_move_bps / 1e4) + 1e-9)

    result = evaluate_gates(state, PARAMS, _counters(), NOW)

    assert result.allowed


def test_the_spread_gate_takes_the_stricter_of_extreme_and_max_spread() -> None:
    params = StrategyParams(max_spread_bps=30.0)

    at_limit = evaluate_gates(_clear(spread_bps=30.0), params, _counters(), NOW)
    below = evaluate_gates(_clear(spread_bps=29.9), params, _counters(), NOW)

    assert at_limit.reasons == ("spread_too_wide",)
    assert below.allowed


def test_trading_hours_are_not_checked_when_trading_hours_only_is_off() -> None:
    params = StrategyParams(trading_hours_only=False)

    result = evaluate_gates(_clear(market_open=False), params, _counters(), NOW)

    assert result.allowed


# ---- sizing ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("net_delta", "expected"),
    [(24.5, -25.0), (-24.5, 25.0), (24.4999, -24.0), (-24.4999, 24.0), (0.5, -1.0), (-0.5, 1.0), (0.49, 0.0),
     (100.0, -100.0)],
)
def test_sizing_rounds_half_away_from_zero(net_delta: float, expected: float) -> None:
    size = size_hedge(net_delta, 0.0, PARAMS)

    assert size.intent_shares == expected
    assert size.order_shares == expected


def test_round_half_away_keeps_whole_numbers() -> None:
    assert [round_half_away(x) for x in (-2.0, -1.5, 0.0, 1.5, 2.0, 2.5)] == [-2.0, -2.0, 0.0, 2.0, 2.0, 3.0]


def test_an_order_is_capped_by_max_hedge_shares_per_order() -> None:
    size = size_hedge(-1234.0, 0.0, PARAMS)

    assert size.intent_shares == 1234.0
    assert size.order_shares == PARAMS.max_hedge_shares_per_order


def test_the_position_limit_clips_an_order_instead_of_blocking_it() -> None:
    state = _clear(net_delta_shares=-300.0, hedge_shares=1900.0)

    result = evaluate_gates(state, PARAMS, _counters(), NOW)

    assert result.allowed
    assert result.size.intent_shares == 300.0
    assert result.size.order_shares == 100.0


def test_max_position_is_a_reason_only_when_the_clip_leaves_nothing() -> None:
    at_limit = evaluate_gates(_clear(net_delta_shares=-300.0, hedge_shares=2000.0), PARAMS, _counters(), NOW)
    beyond = evaluate_gates(_clear(net_delta_shares=-300.0, hedge_shares=2100.0), PARAMS, _counters(), NOW)

    assert at_limit.reasons == beyond.reasons == ("max_position",)
    assert at_limit.size.order_shares == beyond.size.order_shares == 0.0


def test_a_position_beyond_a_lowered_limit_may_still_shrink_by_no_more_than_the_hedge_needs() -> None:
    size = size_hedge(30.0, 2100.0, PARAMS)

    assert size.order_shares == -30.0


# ---- force hedge -----------------------------------------------------------------------------------------


def test_a_force_hedge_bypasses_cooldown_and_min_price_move() -> None:
    state = _clear(net_delta_shares=500.0, last_hedge_at=NOW, last_hedge_price=SPOT)

    result = evaluate_gates(state, PARAMS, _counters(), NOW)

    assert result.size.force
    assert result.allowed
    assert result.reasons == ()


def test_just_below_the_force_level_cooldown_and_min_price_move_hold() -> None:
    state = _clear(net_delta_shares=499.9, last_hedge_at=NOW, last_hedge_price=SPOT)

    result = evaluate_gates(state, PARAMS, _counters(), NOW)

    assert not result.size.force
    assert result.reasons == ("cooldown", "min_price_move")


def test_max_net_delta_shares_forces_a_hedge_below_the_force_level() -> None:
    params = StrategyParams(max_net_delta_shares=200.0)
    state = _clear(net_delta_shares=-200.0, last_hedge_at=NOW, last_hedge_price=SPOT)

    result = evaluate_gates(state, params, _counters(), NOW)

    assert result.size.force
    assert result.allowed


def test_a_force_hedge_bypasses_nothing_else() -> None:
    state = _clear(
        net_delta_shares=900.0, paused=True, stopping=True, halted=True, broker_connected=False, quote_age_ms=None,
        greeks_valid=False, reconciled=False, has_options=False, market_open=False, in_blackout=True,
        spread_bps=99.0, order_in_flight=True, last_hedge_at=NOW, last_hedge_price=SPOT,
    )

    result = evaluate_gates(state, PARAMS, _counters(daily_hedges=50), NOW)

    assert result.size.force
    assert result.reasons == (
        "paused", "stopping", "risk_halt", "broker_disconnected", "no_quote", "greeks_invalid", "not_reconciled",
        "no_option_position", "outside_trading_hours", "earnings_blackout", "max_daily_hedges", "spread_too_wide",
        "order_in_flight",
    )


# ---- the property ----------------------------------------------------------------------------------------

_shares = st.floats(min_value=-5000.0, max_value=5000.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    net_delta=_shares,
    hedge=_shares,
    per_order=st.integers(min_value=10, max_value=3000),
    max_position=st.integers(min_value=0, max_value=4000),
)
def test_the_sized_hedge_never_increases_abs_net_delta(
    net_delta: float, hedge: float, per_order: int, max_position: int
) -> None:
    params = dataclasses.replace(PARAMS, max_hedge_shares_per_order=per_order, max_position_shares=max_position)

    size = size_hedge(net_delta, hedge, params)

    if size.order_shares != 0:
        assert abs(net_delta + size.order_shares) <= abs(net_delta)
        assert abs(size.order_shares) <= per_order
        assert abs(hedge + size.order_shares) <= max(max_position, abs(hedge))
