"""The fast path decides exactly as the engine driven one event at a time: identical traces, tick by tick and
float for float, with every guard active; and where it cannot (limit orders) the replay falls back."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtests import jit
from backtests.replay import DECISION_BLOCKED, DECISION_HEDGE
from tests.backtests.conftest import market, params, replay
from tests.backtests.scenarios import EVERYTHING, EVERYTHING_EXECUTION, SCENARIOS, everything_data
from trading.core.gates import reasons_of
from trading.core.greeks import bs_greeks, bs_scalar, implied_vol, implied_vol_scalar
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


def test_a_replay_in_small_chunks_summarised_without_its_trace_gives_the_engines_trace_and_result(monkeypatch):
    """The compiled loop hands its trace over a chunk at a time; gathered, it is still the engine's, and summarised
    chunk by chunk without ever being held whole it gives the very same result.json."""
    from backtests import fast
    from backtests.replay import run_backtest

    data, p = everything_data(), params(**EVERYTHING)
    monkeypatch.setattr(fast, "CHUNK_TICKS", 997)  # chunk edges fall inside days, hedges and fills
    assert len(data) > 10 * fast.CHUNK_TICKS

    slow = assert_identical(data, p, EVERYTHING_EXECUTION)
    streamed = run_backtest(data, p, path="fast", execution=EVERYTHING_EXECUTION, straddles=10,
                            halt_policy="resume_next_day", keep_trace=False)

    assert streamed.trace is None
    a, b = dict(slow.result), dict(streamed.result)
    for key in ("timing", "path"):
        a.pop(key), b.pop(key)
    assert a == b and a["fills"] > 0 and len(a["daily"]) > 1


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


_compiled_bs = jit.compiled(bs_scalar)
_compiled_iv = jit.compiled(implied_vol_scalar)


@settings(max_examples=300, deadline=None)
@given(spot=st.floats(1.0, 1000.0), strike=st.floats(1.0, 1000.0), t=st.floats(0.0, 2.0),
       vol=st.floats(0.01, 3.0), rate=st.floats(-0.05, 0.2), put=st.booleans())
def test_compiled_black_scholes_is_bitwise_the_engines(spot, strike, t, vol, rate, put):
    g = bs_greeks("P" if put else "C", spot, strike, t, rate, 0.01, vol)

    compiled = _compiled_bs(-1.0 if put else 1.0, spot, strike, t, rate, 0.01, vol)

    assert compiled == (g.price, g.delta, g.gamma, g.theta, g.vega)


@settings(max_examples=200, deadline=None)
@given(spot=st.floats(1.0, 1000.0), moneyness=st.floats(0.5, 1.5), t=st.floats(0.01, 2.0),
       vol=st.floats(0.05, 3.0), put=st.booleans())
def test_compiled_implied_vol_is_bitwise_the_engines(spot, moneyness, t, vol, put):
    right = "P" if put else "C"
    price = bs_greeks(right, spot, spot * moneyness, t, 0.03, 0.01, vol).price
    solved = implied_vol(right, price, spot, spot * moneyness, t, 0.03, 0.01)

    compiled = _compiled_iv(-1.0 if put else 1.0, price, spot, spot * moneyness, t, 0.03, 0.01)

    assert (solved is None and math.isnan(compiled)) or compiled == solved


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


def test_rows_without_an_iv_carry_the_last_one_so_the_legs_are_repriced_at_every_tick():
    data = market(days=2, tick_s=5.0, implied_vol=0.4, vol_of_vol=0.0)
    sparse = data.with_changes(iv=np.where(np.arange(len(data)) % 120 == 0, data.iv, np.nan))

    full = replay(data, params(max_daily_loss_usd=1500.0), path="per_event").result
    gappy = assert_identical(sparse, params(max_daily_loss_usd=1500.0)).result

    assert gappy["hedges"] == full["hedges"]
    assert gappy["pnl_total_usd"] == pytest.approx(full["pnl_total_usd"], abs=1e-6)
    assert gappy["blocks"] == full["blocks"]  # no false halt from frozen option marks


def test_data_past_the_expiry_settles_the_legs_at_intrinsic_and_sends_nothing_after_it():
    data = market(days=30, tick_s=60.0, realized_vol=0.6, seed=3, start="2026-03-02")
    p = params(min_dte=0, max_dte=14)

    slow = assert_identical(data, p)

    expiry_us = slow.structure.expiry_us
    assert (slow.trace.fill_us < expiry_us).all() and len(slow.trace.fill_us) > 0
    after = data.ts_us >= expiry_us
    assert after.sum() > 1000  # weeks of data after the expiry
    last_mid_at_expiry = float(data.mid[np.flatnonzero(after)[0]])
    strike = slow.structure.strike
    assert slow.trace.call_mark[-1] == pytest.approx(max(last_mid_at_expiry - strike, 0.0))
    assert slow.trace.put_mark[-1] == pytest.approx(max(strike - last_mid_at_expiry, 0.0))
    assert slow.result["final"]["trading_state"] == "idle"


def test_a_halt_lasts_the_rest_of_the_run_with_halt_policy_stop_and_one_day_by_default():
    data = market(days=3, tick_s=10.0, realized_vol=0.15, implied_vol=0.9, seed=4)
    p = params(max_daily_loss_usd=30, hedge_threshold_shares=5, epsilon_band_shares=2, min_hedge_shares=1)

    resumed = replay(data, p, path="per_event")
    stopped = replay(data, p, path="per_event", halt_policy="stop")
    fast_resumed = replay(data, p, path="fast")
    fast_stopped = replay(data, p, path="fast", halt_policy="stop")

    assert fast_resumed.trace.mismatch(resumed.trace) is None
    assert fast_stopped.trace.mismatch(stopped.trace) is None
    days = [d["hedges"] for d in resumed.result["daily"]]
    assert len(days) == 3 and all(h > 0 for h in days)  # halted each day, trading again the next
    assert [d["hedges"] for d in stopped.result["daily"]][1:] == [0, 0]
    assert resumed.result["halt_policy"] == "resume_next_day" and stopped.result["halt_policy"] == "stop"


def test_crossed_zero_and_missing_quotes_are_ignored_the_same_way_by_both_paths():
    data = market(days=2, tick_s=5.0, realized_vol=0.8, seed=9)
    bid, ask = data.bid.copy(), data.ask.copy()
    rng = np.random.default_rng(5)
    bad = rng.choice(np.arange(1, len(data)), 300, replace=False)
    for k, row in enumerate(bad):
        bid[row], ask[row] = [(ask[row], bid[row]), (0.0, ask[row]), (bid[row], -1.0)][k % 3]
    data = data.with_changes(bid=bid, ask=ask)

    slow = assert_identical(data, params())

    assert slow.result["hedges"] > 0
