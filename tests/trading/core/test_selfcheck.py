"""The self-check reports every check and every reason at once; the verdict is the worst check."""
from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime

import pytest

from trading.core.gates import Counters, GateState
from trading.core.params import StrategyParams
from trading.core.selfcheck import HealthView, SelfCheck, self_check, verdict_of

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
PARAMS = StrategyParams()


def _gate(**changes: object) -> GateState:
    gate = GateState(
        paused=False, stopping=False, halted=False, broker_connected=True, quote_age_ms=50.0, spread_bps=1.0,
        greeks_valid=True, reconciled=True, has_options=True, market_open=True, in_blackout=False,
        order_in_flight=False, spot=180.0, net_delta_shares=3.0, hedge_shares=0.0, last_hedge_price=None,
        last_hedge_at=None,
    )
    return dataclasses.replace(gate, **changes)


def _check(gate: GateState | None = None, daily_hedges: int = 0, **view: object) -> SelfCheck:
    fields: dict[str, object] = {
        "gate": gate or _gate(), "daemon_state": "running", "daily_pnl_usd": 0.0, "iv_fallback_legs": 0,
        "oldest_working_order_s": None, "unknown_orders": 0, **view,
    }
    return self_check(HealthView(**fields), PARAMS, Counters(date(2026, 3, 10), daily_hedges))


def _status(check: SelfCheck, reason: str) -> str:
    statuses = [c.status for c in check.checks if c.reason == reason]
    assert len(statuses) == 1, f"expected one check with reason {reason!r}, got {check.checks}"
    return statuses[0]


def test_a_healthy_system_is_ok_with_no_block_reasons() -> None:
    check = _check()

    assert check.verdict == "ok"
    assert check.block_reasons == ()
    assert {c.status for c in check.checks} == {"ok"}


def test_every_failing_gate_is_reported_not_only_the_first() -> None:
    gate = _gate(paused=True, broker_connected=False, greeks_valid=False, reconciled=False, spread_bps=75.0,
                 in_blackout=True)

    check = _check(gate)

    assert check.block_reasons == (
        "paused", "broker_disconnected", "greeks_invalid", "not_reconciled", "earnings_blackout", "spread_too_wide",
    )
    assert {c.reason for c in check.checks if c.status != "ok"} >= set(check.block_reasons)
    assert check.verdict == "blocked"


def test_paused_alone_is_degraded_not_blocked() -> None:
    check = _check(_gate(paused=True))

    assert check.verdict == "degraded"
    assert check.block_reasons == ("paused",)
    assert _status(check, "paused") == "degraded"


@pytest.mark.parametrize("changes", [{"market_open": False}, {"in_blackout": True}, {"has_options": False}])
def test_the_calendar_and_an_empty_book_are_expected_blocks_not_faults(changes: dict[str, object]) -> None:
    check = _check(_gate(**changes))

    assert check.verdict == "degraded"


def test_a_risk_halt_is_blocked() -> None:
    check = _check(_gate(halted=True), daily_pnl_usd=-6000.0)

    assert check.verdict == "blocked"
    assert check.block_reasons == ("risk_halt",)
    assert _status(check, "risk_halt") == "blocked"
    assert not any(c.reason == "near_loss_limit" for c in check.checks)


def test_the_verdict_is_the_worst_check() -> None:
    degraded_only = _check(_gate(paused=True, spread_bps=12.0), daily_pnl_usd=-4500.0)
    with_a_block = _check(_gate(paused=True, halted=True, spread_bps=12.0), daily_pnl_usd=-4500.0)

    assert degraded_only.verdict == "degraded"
    assert with_a_block.verdict == "blocked"
    assert verdict_of(["ok", "blocked", "degraded"]) == "blocked"
    assert verdict_of([]) == "ok"


def test_warnings_short_of_a_block_are_all_reported_together() -> None:
    gate = _gate(quote_age_ms=1500.0, spread_bps=10.0)

    check = _check(gate, daily_hedges=40, daily_pnl_usd=-4000.0, iv_fallback_legs=2,
                   oldest_working_order_s=PARAMS.working_timeout_s)

    warnings = {c.reason for c in check.checks if c.status == "degraded"}
    assert warnings == {"data_lag", "iv_fallback", "near_loss_limit", "near_hedge_limit", "spread_wide", "order_stuck"}
    assert check.verdict == "degraded"
    assert check.block_reasons == ()


def test_an_order_of_unknown_outcome_is_red_because_no_hedge_leaves_while_it_is() -> None:
    check = _check(unknown_orders=1)

    assert [(c.status, c.reason) for c in check.checks if c.name == "orders"] == [("blocked", "order_stuck")]
    assert check.verdict == "blocked"
    assert "order_stuck" in check.block_reasons


def test_an_order_working_past_the_working_timeout_is_stuck() -> None:
    fresh = _check(oldest_working_order_s=PARAMS.working_timeout_s - 1)
    stuck = _check(oldest_working_order_s=PARAMS.working_timeout_s)

    assert not any(c.reason == "order_stuck" for c in fresh.checks)
    assert _status(stuck, "order_stuck") == "degraded"


def test_per_hedge_gates_are_not_system_block_reasons() -> None:
    gate = _gate(last_hedge_at=NOW, last_hedge_price=180.0, order_in_flight=True, hedge_shares=2000.0,
                 net_delta_shares=-500.0)

    check = _check(gate)

    assert check.verdict == "ok"
    assert check.block_reasons == ()


def test_an_invalid_config_blocks_and_is_a_block_reason_with_the_others() -> None:
    check = _check(_gate(reconciled=False), config_error="cooldown_s: must be >= 0")

    assert check.block_reasons == ("not_reconciled", "config_invalid")
    assert _status(check, "config_invalid") == "blocked"


@pytest.mark.parametrize("daemon_state", ["starting", "connecting", "waiting_broker", "stopping"])
def test_a_daemon_that_is_not_running_blocks(daemon_state: str) -> None:
    check = _check(daemon_state=daemon_state)

    assert _status(check, "daemon_not_running") == "blocked"
    assert check.verdict == "blocked"


def test_every_standing_gate_is_a_block_reason_and_every_failing_check_says_why() -> None:
    gate = _gate(paused=True, stopping=True, halted=True, broker_connected=False, quote_age_ms=None,
                 greeks_valid=False, reconciled=False, has_options=False, market_open=False, in_blackout=True,
                 spread_bps=90.0)

    check = _check(gate, daily_hedges=50)

    assert all(c.detail for c in check.checks if c.status != "ok")
    assert check.block_reasons == (
        "paused", "stopping", "risk_halt", "broker_disconnected", "no_quote", "greeks_invalid", "not_reconciled",
        "no_option_position", "outside_trading_hours", "earnings_blackout", "max_daily_hedges", "spread_too_wide",
    )
