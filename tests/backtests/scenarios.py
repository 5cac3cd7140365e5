"""One scenario per guard: a market and params in which that guard must block hedges, and the same run with the
guard relaxed. Shared by the guard tests and the fast-path identity tests."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from backtests.data import TickData
from backtests.replay import Execution
from tests.backtests.conftest import market, params, widen_spread
from trading.core.params import StrategyParams

LIVELY = {"realized_vol": 0.9, "seed": 21}


@dataclass(frozen=True)
class Scenario:
    reason: str
    data: Callable[[], TickData]
    strict: dict[str, object]
    relaxed: dict[str, object]
    execution: Execution = field(default_factory=Execution)
    relaxed_execution: Execution | None = None

    def params(self, relaxed: bool = False) -> StrategyParams:
        return params(**(self.relaxed if relaxed else self.strict))


def _hour_and_a_half() -> TickData:
    return market(**LIVELY).slice(0, 5400)


def _wide_window() -> TickData:
    return widen_spread(_hour_and_a_half(), 1500, 3500, 80.0)


def _round_the_clock() -> TickData:
    return market(sessions_only=False, days=2, tick_s=20.0, realized_vol=0.9, seed=5)


def _three_sessions_10s() -> TickData:
    return market(days=3, tick_s=10.0, realized_vol=0.9, seed=8, start="2026-03-09")


def _quiet_expensive() -> TickData:
    return market(realized_vol=0.15, implied_vol=0.9, seed=4).slice(0, 8000)


def _expiry_friday() -> TickData:
    return market(tick_s=5.0, realized_vol=0.3, seed=4, start="2026-03-13")  # a Friday: the straddle's expiry


_TIGHT = {"hedge_threshold_shares": 5, "epsilon_band_shares": 2, "min_hedge_shares": 1}
_EXPIRING_TODAY = {"min_dte": 0, "max_dte": 0}

SCENARIOS: dict[str, Scenario] = {s.reason: s for s in (
    Scenario("cooldown", _hour_and_a_half, {"cooldown_s": 60}, {"cooldown_s": 0}),
    Scenario("min_price_move", _hour_and_a_half, {"min_price_move_bps": 40}, {"min_price_move_bps": 0}),
    Scenario("max_daily_hedges", _hour_and_a_half, {"max_daily_hedges": 5}, {"max_daily_hedges": 100_000}),
    Scenario("max_position", _hour_and_a_half, {"max_position_shares": 40}, {"max_position_shares": 100_000}),
    Scenario("spread_too_wide", _wide_window, {"extreme_spread_bps": 50}, {"extreme_spread_bps": 500}),
    Scenario("below_min_hedge", _hour_and_a_half, {"min_hedge_shares": 60}, {"min_hedge_shares": 10}),
    Scenario("outside_trading_hours", _round_the_clock, {"trading_hours_only": True}, {"trading_hours_only": False}),
    Scenario("earnings_blackout", _three_sessions_10s,
             {"earnings_dates": [date(2026, 3, 10).isoformat()], "blackout_days_before": 0, "blackout_days_after": 0},
             {"earnings_dates": []}),
    Scenario("risk_halt", _quiet_expensive, {"max_daily_loss_usd": 30, **_TIGHT}, {"max_daily_loss_usd": 1e9, **_TIGHT}),
    Scenario("order_in_flight", _hour_and_a_half, {}, {}, Execution(latency_ms=3000), Execution(latency_ms=150)),
    Scenario("near_expiry", _expiry_friday, {"expiry_cutoff_minutes": 30, **_EXPIRING_TODAY},
             {"expiry_cutoff_minutes": 0, **_EXPIRING_TODAY}),
    # Quotes every 10 s and fills 16 s after the order: the fill lands 6 s after the last quote, stale, and the
    # delta has moved on meanwhile, so the engine sits in `safe` wanting a hedge.
    Scenario("data_stale", _three_sessions_10s, {"stale_quote_ms": 5000}, {"stale_quote_ms": 10_000},
             Execution(latency_ms=16_000), Execution(latency_ms=16_000)),
)}

# Every guard at once, round the clock in 10-s ticks over four days with wide-spread windows, an earnings day, a
# loss limit that halts on the third day and fills slower than the tick spacing (in flight, and late enough after
# the last quote to find it stale): the fast path must match the engine tick by tick.
EVERYTHING = {
    "cooldown_s": 20, "min_price_move_bps": 15, "max_daily_hedges": 15, "max_position_shares": 150,
    "min_hedge_shares": 30, "hedge_threshold_shares": 25, "extreme_spread_bps": 40, "trading_hours_only": True,
    "earnings_dates": ["2026-03-11"], "blackout_days_before": 0, "blackout_days_after": 0,
    "max_daily_loss_usd": 1000, "max_net_delta_shares": 300,
}
EVERYTHING_EXECUTION = Execution(latency_ms=25_000)


def everything_data() -> TickData:
    data = market(days=4, sessions_only=False, tick_s=10.0, realized_vol=1.1, vol_of_vol=1.0, seed=35,
                  start="2026-03-09")
    return widen_spread(widen_spread(data, 2500, 2650, 70.0), 10_000, 10_050, 45.0)
