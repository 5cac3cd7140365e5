"""The fast path decides exactly as the engine driven one event at a time: identical traces, tick by tick and
float for float, with every guard active; and where it cannot (limit orders) the replay falls back."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtests import fast
from backtests.replay import DECISION_BLOCKED, DECISION_HEDGE, reasons_of
from tests.backtests.conftest import market, params, replay
from tests.backtests.scenarios import EVERYTHING, EVERYTHING_EXECUTION, SCENARIOS, everything_data
from trading.core.greeks import bs_greeks
from trading.core.params import StrategyParams
from trading.errors import ConfigError


def assert_identical(data, p, execution=None):
    slow = replay(data, p, path="per_event", execution=execution)
    quick = replay(data, p, path="fast", execution=execution)
    assert slow.trace.path == "per_event" and quick.trace.path == "fast"
    assert quick.trace.mismatch(slow.trace) is None, quick.trace.mismatch(slow.trace)
    a, b = dict(slow.result), dict(quick.result)
    for key in ("timing", "path"):
        a.pop(key), b.pop(key)
    assert a == b
    return slow


@pytest.mark.parametrize("reason", sorted(SCENARIOS))
def test_fast_path_matches_the_engine_in_each_guard_scenario(reason):
    scenario = SCENARIOS[reason]

    slow = assert_identical(scenario.data(), scenario.params(), scenario.execution)

    assert slow.result["blocks"].get(reason, 0) > 0


def test_fast_path_matches_the_engine_with_every_guard_active_at_once():
    data = everything_data()

    slow = assert_identical(data, params(**EVERYTHING), EVERYTHING_EXECUTION)

    trace = slow.trace
    seen = set()
    for mask in np.unique(trace.reasons[trace.decision == DECISION_BLOCKED]):
        seen.update(reasons_of(int(mask)))
    assert {"cooldown", "min_price_move", "max_daily_hedges", "max_position", "spread_too_wide", "below_min_hedge",
            "outside_trading_hours", "earnings_blackout", "order_in_flight", "risk_halt", "data_stale"} <= seen, seen
    assert (trace.decision == DECISION_HEDGE).sum() >= 20


def test_fast_path_matches_the_engine_with_default_params_and_no_iv_column():
    data = market(days=2, tick_s=5.0)
    data = data.with_changes(iv=np.full(len(data), math.nan))

    assert_identical(data, StrategyParams())


def test_fast_path_matches_the_engine_when_option_quotes_start_after_the_first_model_marks():
    data = market(days=2, tick_s=5.0, implied_vol=0.1)  # far below the fallback vol: the marks drop when quotes start
    iv = data.iv.copy()
    iv[:500] = math.nan
    data = data.with_changes(iv=iv)

    slow = assert_identical(data, params(max_daily_loss_usd=500.0))

    assert "risk_halt" not in slow.result["blocks"]  # the drop from model to market marks is not the day's loss


@settings(max_examples=300, deadline=None)
@given(spot=st.floats(1.0, 1000.0), strike=st.floats(1.0, 1000.0), t=st.floats(0.0, 2.0),
       vol=st.floats(0.01, 3.0), rate=st.floats(-0.05, 0.2), put=st.booleans())
def test_compiled_black_scholes_is_bitwise_the_engines(spot, strike, t, vol, rate, put):
    g = bs_greeks("P" if put else "C", spot, strike, t, rate, 0.01, vol)

    price, delta, gamma = fast._bs(-1.0 if put else 1.0, spot, strike, t, rate, 0.01, vol)

    assert (price, delta, gamma) == (g.price, g.delta, g.gamma)


def test_limit_orders_run_on_the_per_event_path():
    data = market().slice(0, 3000)
    p = params(order_type="limit")

    outcome = replay(data, p, path="auto")

    assert outcome.result["path"] == "per_event" and "limit" in outcome.result["path_note"]
    assert outcome.result["hedges"] > 0
    with pytest.raises(ConfigError) as info:
        replay(data, p, path="fast")
    assert info.value.field == "order_type"


def test_fast_path_matches_the_engine_when_fills_cross_midnight_in_new_york():
    from backtests.calendars import et_days
    from backtests.replay import Execution

    data = market(sessions_only=False, days=3, tick_s=20.0, realized_vol=1.2, seed=24)
    execution = Execution(latency_ms=45_000)
    p = params(max_daily_loss_usd=400)  # the breaker's day start is re-taken at each roll, fills included or not

    slow = assert_identical(data, p, execution)

    _, bounds = et_days(int(data.ts_us[0]), int(data.ts_us[-1]))
    day_of = lambda us: np.searchsorted(bounds, us, side="right")  # noqa: E731
    assert (day_of(slow.trace.order_us) != day_of(slow.trace.fill_us)).any()
