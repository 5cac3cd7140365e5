"""Each guard demonstrably blocks hedges in a scenario built for it, its count shows in result.json `blocks`, and
relaxing it removes those blocks. Guards that cannot fire in a replay say why."""
from __future__ import annotations

import pytest

from backtests.replay import Execution
from tests.backtests.conftest import params, replay
from tests.backtests.scenarios import SCENARIOS
from trading.core.gates import GATE_REASONS

# The broker is always connected, positions are synced and reconciled, the straddle is held, nobody pauses or
# stops a replay, and greeks are valid for valid quotes: these gates cannot fire in a backtest. (`data_stale`
# can, but only one way: every quote is evaluated at its own time, so only a fill landing stale_quote_ms or more
# after the last quote finds the data stale; the engine then sits in `safe`, and the replay reports what blocks
# the hedge it wants.) The daemon's own safety (its lease, its journal, its clock) is not part of a replay.
NOT_IN_A_REPLAY = {"paused", "stopping", "broker_disconnected", "no_quote", "greeks_invalid", "not_reconciled",
                   "no_option_position", "lease_unconfirmed", "journal_unwritable", "clock_skew"}


def test_every_gate_reason_has_a_scenario_or_a_reason_it_cannot_fire():
    assert set(SCENARIOS) | NOT_IN_A_REPLAY == set(GATE_REASONS)


@pytest.mark.parametrize("reason", sorted(SCENARIOS))
def test_each_guard_blocks_in_its_scenario_and_is_counted(reason):
    scenario = SCENARIOS[reason]
    data = scenario.data()

    strict = replay(data, scenario.params(), path="fast", execution=scenario.execution).result
    relaxed = replay(data, scenario.params(relaxed=True), path="fast",
                     execution=scenario.relaxed_execution or scenario.execution).result

    assert strict["blocks"].get(reason, 0) > 0, strict["blocks"]
    assert relaxed["blocks"].get(reason, 0) == 0, relaxed["blocks"]
    assert relaxed["hedges"] > 0


def test_a_fill_long_after_the_last_quote_makes_the_engine_safe_for_a_dwell():
    from backtests.replay import STATE_CODE
    from tests.backtests.scenarios import _three_sessions_10s
    from trading.core.fsm import TradingState

    data = _three_sessions_10s()

    slow = replay(data, params(stale_quote_ms=5000), path="fast", execution=Execution(latency_ms=6000))
    quick = replay(data, params(stale_quote_ms=5000), path="fast", execution=Execution(latency_ms=4000))

    safe = STATE_CODE[TradingState.SAFE]
    assert (slow.trace.state == safe).sum() > 0 and (quick.trace.state == safe).sum() == 0
    assert slow.result["hedges"] < quick.result["hedges"]


def test_the_loss_breaker_halts_and_stays_halted():
    scenario = SCENARIOS["risk_halt"]

    result = replay(scenario.data(), scenario.params(), path="fast").result

    assert result["halted"] and result["final"]["trading_state"] == "halted"
    assert result["pnl_total_usd"] < -30 * 0.5
