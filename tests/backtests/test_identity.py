"""Identity by property: for generated parameter sets, seeds and event streams (gaps, crossed and zero quotes,
sparse IV, day boundaries, expiries, halts) the compiled fast path and the per-event Engine give identical traces,
tick by tick and float for float."""
from __future__ import annotations

from datetime import date, timedelta

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtests.data import TickData
from backtests.replay import HALT_POLICIES, Execution, run_backtest
from tests.backtests.conftest import market
from trading.core.params import StrategyParams

MIN_TICKS = 2_000


@st.composite
def streams(draw: st.DrawFn) -> tuple[TickData, StrategyParams, Execution, str]:
    crosses_expiry = draw(st.booleans())
    if crosses_expiry:  # Thursday to Saturday round the clock, the straddle expiring on the Friday at 16:00
        sessions_only, days = False, 3
        start = date(2026, 1, 8) + timedelta(weeks=draw(st.integers(0, 40)))
        min_dte, max_dte = 0, 1
    else:
        sessions_only, days = draw(st.booleans()), draw(st.integers(2, 3))
        start = date(2026, 1, 5) + timedelta(days=draw(st.integers(0, 300)))
        min_dte = draw(st.integers(0, 3))
        max_dte = min_dte + draw(st.integers(0, 30))
    tick_s = draw(st.floats(5.0, 17.0)) if sessions_only else draw(st.floats(40.0, 68.0))
    data = market(seed=draw(st.integers(1, 10_000)), days=days, tick_s=tick_s, start=start.isoformat(),
                  sessions_only=sessions_only, realized_vol=draw(st.floats(0.1, 1.5)),
                  implied_vol=draw(st.floats(0.1, 1.2)), vol_of_vol=draw(st.sampled_from([0.0, 0.5, 2.0])),
                  jump_intensity_per_day=draw(st.sampled_from([0.0, 2.0])))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    n = len(data)
    keep = np.ones(n, dtype=bool)
    for _ in range(draw(st.integers(0, 3))):  # gaps: whole stretches without a tick
        at = int(rng.integers(1, n - 1))
        keep[at:at + int(rng.integers(1, n // 20))] = False
    bid, ask, iv = data.bid.copy(), data.ask.copy(), data.iv.copy()
    bad = rng.random(n) < draw(st.sampled_from([0.0, 0.005, 0.03]))
    bad[0] = False
    kinds = rng.integers(0, 3, n)
    bid[bad & (kinds == 0)], ask[bad & (kinds == 0)] = ask[bad & (kinds == 0)] + 0.05, bid[bad & (kinds == 0)]
    bid[bad & (kinds == 1)] = 0.0
    ask[bad & (kinds == 2)] = -1.0
    iv[rng.random(n) < draw(st.sampled_from([0.0, 0.5, 0.99, 1.0]))] = np.nan
    data = data.with_changes(bid=bid, ask=ask, iv=iv)
    data = TickData(data.ts_us[keep], data.bid[keep], data.ask[keep], data.last[keep], data.iv[keep])
    threshold = draw(st.integers(5, 80))
    max_order = draw(st.integers(threshold, 600))
    params = StrategyParams.from_dict({
        "min_dte": min_dte, "max_dte": max_dte,
        "epsilon_band_shares": draw(st.integers(0, threshold)), "hedge_threshold_shares": threshold,
        "force_hedge_shares": draw(st.integers(threshold, 1500)), "min_hedge_shares": draw(st.integers(1, max_order)),
        "max_hedge_shares_per_order": max_order, "cooldown_s": draw(st.sampled_from([0, 5, 30, 120])),
        "min_price_move_bps": draw(st.sampled_from([0, 5, 25])),
        "max_daily_hedges": draw(st.integers(3, 300)), "max_position_shares": draw(st.integers(50, 3000)),
        "max_daily_loss_usd": draw(st.sampled_from([50.0, 400.0, 5000.0, 1e9])),
        "max_net_delta_shares": draw(st.sampled_from([None, 300.0])),
        "extreme_spread_bps": draw(st.sampled_from([10.0, 50.0, 200.0])), "wide_spread_bps": 5.0,
        "stale_quote_ms": draw(st.sampled_from([2_000.0, 20_000.0, 120_000.0])),
        "trading_hours_only": draw(st.booleans()), "expiry_cutoff_minutes": draw(st.sampled_from([0.0, 30.0, 600.0])),
        "fallback_vol": draw(st.floats(0.1, 1.0)),
    })
    execution = Execution(latency_ms=draw(st.sampled_from([50, 150, 3_000, 30_000])))
    return data, params, execution, draw(st.sampled_from(HALT_POLICIES))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams())
def test_the_fast_path_and_the_engine_make_the_same_decisions_on_any_stream(stream):
    data, params, execution, halt_policy = stream
    assert len(data) >= MIN_TICKS  # at least two trading days, gaps included
    try:
        slow = run_backtest(data, params, execution=execution, path="per_event", halt_policy=halt_policy)
    except Exception as refused:  # noqa: BLE001 - a stream both paths refuse alike (no expiry in the DTE window)
        from trading.errors import ConfigError

        assert isinstance(refused, ConfigError)
        return

    quick = run_backtest(data, params, execution=execution, path="fast", halt_policy=halt_policy)

    assert quick.trace.mismatch(slow.trace) is None, quick.trace.mismatch(slow.trace)
