"""The three state machines are total tables: every pair handled or deliberately ignored, no dead ends."""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from enum import StrEnum

import pytest

from trading.core.fsm import (
    DAEMON_IGNORED,
    DAEMON_TRANSITIONS,
    ORDER_IGNORED,
    ORDER_TERMINAL,
    ORDER_TRANSITIONS,
    TRADING_IGNORED,
    TRADING_TRANSITIONS,
    DaemonState,
    DaemonTrigger,
    OrderState,
    OrderTrigger,
    TradingState,
    TradingTrigger,
    daemon_transition,
    order_transition,
    trading_transition,
    transition,
)
from trading.errors import TransitionError

DAEMON_TERMINAL = frozenset({DaemonState.STOPPED})


def _reachable(table: dict[tuple[StrEnum, StrEnum], StrEnum], start: StrEnum) -> set[StrEnum]:
    seen = {start}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        for (source, _), target in table.items():
            if source == state and target not in seen:
                seen.add(target)
                queue.append(target)
    return seen


def _exits(table: dict[tuple[StrEnum, StrEnum], StrEnum], state: StrEnum) -> list[StrEnum]:
    return [target for (source, _), target in table.items() if source == state and target != state]


def _pairs(states: Iterable[StrEnum], triggers: Iterable[StrEnum]) -> list[tuple[StrEnum, StrEnum]]:
    return [(s, t) for s in states for t in triggers]


# ---- every state has an exit ------------------------------------------------------------------------------


def test_every_daemon_state_except_stopped_has_an_exit() -> None:
    without_exit = {s for s in DaemonState if not _exits(DAEMON_TRANSITIONS, s)}

    assert without_exit == set(DAEMON_TERMINAL)


def test_every_trading_state_has_an_exit() -> None:
    without_exit = {s for s in TradingState if not _exits(TRADING_TRANSITIONS, s)}

    assert without_exit == set()


def test_every_order_state_except_filled_cancelled_and_rejected_has_an_exit() -> None:
    without_exit = {s for s in OrderState if not _exits(ORDER_TRANSITIONS, s)}

    assert without_exit == set(ORDER_TERMINAL) == {OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED}


# ---- every pair is handled or deliberately ignored --------------------------------------------------------


def test_no_daemon_state_and_trigger_pair_raises() -> None:
    for state, trigger in _pairs(DaemonState, DaemonTrigger):
        daemon_transition(state, trigger)


def test_no_trading_state_and_trigger_pair_raises() -> None:
    for state, trigger in _pairs(TradingState, TradingTrigger):
        trading_transition(state, trigger)


def test_no_order_state_and_trigger_pair_raises() -> None:
    for state, trigger in _pairs(OrderState, OrderTrigger):
        order_transition(state, trigger)


@pytest.mark.parametrize(
    ("table", "ignored"),
    [
        (DAEMON_TRANSITIONS, DAEMON_IGNORED),
        (TRADING_TRANSITIONS, TRADING_IGNORED),
        (ORDER_TRANSITIONS, ORDER_IGNORED),
    ],
    ids=["daemon", "trading", "order"],
)
def test_no_pair_is_both_a_transition_and_ignored(
    table: dict[tuple[StrEnum, StrEnum], StrEnum], ignored: frozenset[tuple[StrEnum, StrEnum]]
) -> None:
    overlap = set(table) & ignored

    assert overlap == set()


def test_an_ignored_pair_keeps_the_state() -> None:
    pair = (OrderState.FILLED, OrderTrigger.CANCELLED)

    after = order_transition(*pair)

    assert pair in ORDER_IGNORED
    assert after == OrderState.FILLED


def test_an_undefined_pair_raises_a_transition_error_naming_machine_state_and_trigger() -> None:
    table = {(OrderState.IDLE, OrderTrigger.PLAN): OrderState.PLAN}

    with pytest.raises(TransitionError) as raised:
        transition("order", table, frozenset(), OrderState.PLAN, OrderTrigger.FILLED)

    assert (raised.value.machine, raised.value.state, raised.value.trigger) == ("order", "plan", "filled")


# ---- reachability -----------------------------------------------------------------------------------------


def test_every_daemon_state_is_reachable_from_starting() -> None:
    reachable = _reachable(DAEMON_TRANSITIONS, DaemonState.STARTING)

    assert reachable == set(DaemonState)


def test_every_trading_state_is_reachable_from_boot() -> None:
    reachable = _reachable(TRADING_TRANSITIONS, TradingState.BOOT)

    assert reachable == set(TradingState)


def test_every_order_state_is_reachable_from_idle() -> None:
    reachable = _reachable(ORDER_TRANSITIONS, OrderState.IDLE)

    assert reachable == set(OrderState)


@pytest.mark.parametrize("state", [s for s in DaemonState if s not in DAEMON_TERMINAL])
def test_stopped_is_reachable_from_every_daemon_state(state: DaemonState) -> None:
    reachable = _reachable(DAEMON_TRANSITIONS, state)

    assert DaemonState.STOPPED in reachable


@pytest.mark.parametrize("state", [s for s in DaemonState if s not in (DaemonState.STOPPING, DaemonState.STOPPED)])
def test_stop_is_honoured_at_once_from_every_running_daemon_state(state: DaemonState) -> None:
    after = daemon_transition(state, DaemonTrigger.STOP)

    assert after == DaemonState.STOPPING


def test_a_late_broker_report_while_stopping_does_not_crash_the_wind_down() -> None:
    state = daemon_transition(DaemonState.RUNNING, DaemonTrigger.STOP)

    for trigger in (DaemonTrigger.CONNECTED, DaemonTrigger.CONNECT_FAILED, DaemonTrigger.SYNCED,
                    DaemonTrigger.PAUSE, DaemonTrigger.DISCONNECTED):
        state = daemon_transition(state, trigger)

    assert state == DaemonState.STOPPING
    assert daemon_transition(state, DaemonTrigger.STOPPED) == DaemonState.STOPPED


# ---- the paths the original got wrong --------------------------------------------------------------------


def test_trading_sync_waits_for_data_instead_of_falling_to_safe() -> None:
    after = trading_transition(TradingState.SYNC, TradingTrigger.UNHEALTHY)

    assert after == TradingState.SYNC


@pytest.mark.parametrize(
    "trigger", [TradingTrigger.IN_BAND, TradingTrigger.BLOCKED, TradingTrigger.COST_BLOCKED,
                TradingTrigger.LIQ_BLOCKED, TradingTrigger.ORDER_SENT, TradingTrigger.UNHEALTHY],
)
def test_need_hedge_is_left_on_every_situation_change(trigger: TradingTrigger) -> None:
    after = trading_transition(TradingState.NEED_HEDGE, trigger)

    assert after != TradingState.NEED_HEDGE


def test_halted_is_left_only_by_reset_halt() -> None:
    leaving = {t for t in TradingTrigger if trading_transition(TradingState.HALTED, t) != TradingState.HALTED}

    assert leaving == {TradingTrigger.RESET_HALT}


def test_safe_returns_to_sync_once_healthy() -> None:
    after = trading_transition(TradingState.SAFE, TradingTrigger.HEALTHY)

    assert after == TradingState.SYNC


def test_an_unknown_order_is_left_only_on_the_brokers_word() -> None:
    leaving = {t for t in OrderTrigger if order_transition(OrderState.UNKNOWN, t) != OrderState.UNKNOWN}

    assert leaving == {OrderTrigger.ACK, OrderTrigger.PARTIAL_FILL, OrderTrigger.FILLED, OrderTrigger.CANCELLED,
                       OrderTrigger.REJECTED}
