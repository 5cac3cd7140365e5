"""The rules in scalar form agree with the tables and names the rest of the engine speaks."""
from __future__ import annotations

import pytest

from trading.core import rules
from trading.core.fsm import TradingState, TradingTrigger, trading_transition
from trading.core.gates import GATE_REASONS, reasons_mask, reasons_of
from trading.errors import TransitionError


@pytest.mark.parametrize("state", list(TradingState))
def test_the_transition_array_is_the_trading_table(state):
    for trigger in TradingTrigger:
        code = rules.TRADING_NEXT[rules.STATE_CODE[state], rules.TRIGGER_CODE[trigger]]
        try:
            expected = rules.STATE_CODE[trading_transition(state, trigger)]
        except TransitionError:
            expected = rules.UNDEFINED
        assert code == expected, (state, trigger)


def test_every_reason_has_its_own_bit_and_masks_read_back_in_contract_order():
    everything = reasons_mask(list(GATE_REASONS))

    assert everything == (1 << len(GATE_REASONS)) - 1
    assert reasons_of(everything) == GATE_REASONS
    assert reasons_of(rules.B_SPREAD | rules.B_COOLDOWN) == ("cooldown", "spread_too_wide")


@pytest.mark.parametrize(("mask", "qty", "expected"), [
    (0, 10.0, (True, rules.T_OUT_OF_BAND)),
    (0, 0.0, (False, rules.T_COST_BLOCKED)),
    (rules.B_COOLDOWN | rules.B_MIN_MOVE, 10.0, (False, rules.T_COST_BLOCKED)),
    (rules.B_COOLDOWN | rules.B_SPREAD, 10.0, (False, rules.T_LIQ_BLOCKED)),
    (rules.B_SPREAD | rules.B_RISK_HALT, 10.0, (False, rules.T_BLOCKED)),
])
def test_a_decision_is_a_hedge_or_blocked_by_cost_liquidity_or_worse(mask, qty, expected):
    assert rules.decision_trigger(mask, qty) == expected


def test_safe_returns_only_after_the_dwell_of_uninterrupted_health():
    step = rules.trading_trigger
    args = dict(halted=False, synced=True, has_options=True, order_in_flight=False, in_band=True)

    trigger, since, _ = step(rules.S_SAFE, healthy=True, healthy_since_us=rules.NO_INSTANT, now_us=0, **args)
    assert (trigger, since) == (rules.T_NONE, 0)
    trigger, since, _ = step(rules.S_SAFE, healthy=False, healthy_since_us=since, now_us=2_000_000, **args)
    assert (trigger, since) == (rules.T_NONE, rules.NO_INSTANT)
    trigger, since, _ = step(rules.S_SAFE, healthy=True, healthy_since_us=since, now_us=2_500_000, **args)
    trigger, since, _ = step(rules.S_SAFE, healthy=True, healthy_since_us=since, now_us=5_499_999, **args)
    assert trigger == rules.T_NONE
    trigger, _, _ = step(rules.S_SAFE, healthy=True, healthy_since_us=since, now_us=5_500_000, **args)
    assert trigger == rules.T_HEALTHY
