"""The three state machines (daemon, trading, hedge order) as explicit transition tables.

A pair that is neither in a table nor in its IGNORED set is a bug, and `transition` raises on it."""
from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from trading.errors import TransitionError


class DaemonState(StrEnum):
    STARTING = "starting"
    CONNECTING = "connecting"
    WAITING_BROKER = "waiting_broker"
    SYNCING = "syncing"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"


class DaemonTrigger(StrEnum):
    CONNECT = "connect"
    CONNECTED = "connected"
    CONNECT_FAILED = "connect_failed"
    RETRY = "retry"
    SYNCED = "synced"
    SYNCED_PAUSED = "synced_paused"
    DISCONNECTED = "disconnected"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    STOPPED = "stopped"


_D, _DT = DaemonState, DaemonTrigger
DAEMON_TRANSITIONS: dict[tuple[DaemonState, DaemonTrigger], DaemonState] = {
    (_D.STARTING, _DT.CONNECT): _D.CONNECTING,
    (_D.CONNECTING, _DT.CONNECTED): _D.SYNCING,
    (_D.CONNECTING, _DT.CONNECT_FAILED): _D.WAITING_BROKER,
    (_D.WAITING_BROKER, _DT.RETRY): _D.CONNECTING,
    (_D.WAITING_BROKER, _DT.CONNECTED): _D.SYNCING,
    (_D.SYNCING, _DT.SYNCED): _D.RUNNING,
    (_D.SYNCING, _DT.SYNCED_PAUSED): _D.PAUSED,
    (_D.SYNCING, _DT.DISCONNECTED): _D.WAITING_BROKER,
    (_D.RUNNING, _DT.DISCONNECTED): _D.WAITING_BROKER,
    (_D.RUNNING, _DT.PAUSE): _D.PAUSED,
    (_D.PAUSED, _DT.RESUME): _D.RUNNING,
    (_D.PAUSED, _DT.DISCONNECTED): _D.WAITING_BROKER,
    **{(state, _DT.STOP): _D.STOPPING for state in _D if state not in (_D.STOPPING, _D.STOPPED)},
    (_D.STOPPING, _DT.STOPPED): _D.STOPPED,
}
_CONNECT_PHASE = (_DT.CONNECT, _DT.CONNECTED, _DT.CONNECT_FAILED, _DT.RETRY, _DT.SYNCED, _DT.SYNCED_PAUSED)
# Every pair that is not a transition, listed with why it changes nothing (the walk test fails on a new pair).
DAEMON_IGNORED: frozenset[tuple[DaemonState, DaemonTrigger]] = frozenset(
    # Pause and resume outside running/paused only flip the persisted flag; the state follows at the next sync.
    {(s, t) for s in (_D.STARTING, _D.CONNECTING, _D.WAITING_BROKER, _D.SYNCING) for t in (_DT.PAUSE, _DT.RESUME)}
    | {(_D.RUNNING, _DT.RESUME), (_D.PAUSED, _DT.PAUSE)}
    # Not connected yet: there is nothing to lose.
    | {(s, _DT.DISCONNECTED) for s in (_D.STARTING, _D.CONNECTING, _D.WAITING_BROKER)}
    # Broker-loop reports that raced with a transition already taken (a second `connected`, `retry` while syncing).
    | {(_D.STARTING, t) for t in _CONNECT_PHASE if t != _DT.CONNECT}
    | {(_D.CONNECTING, t) for t in (_DT.CONNECT, _DT.RETRY, _DT.SYNCED, _DT.SYNCED_PAUSED)}
    | {(_D.WAITING_BROKER, t) for t in (_DT.CONNECT, _DT.CONNECT_FAILED, _DT.SYNCED, _DT.SYNCED_PAUSED)}
    | {(_D.SYNCING, t) for t in (_DT.CONNECT, _DT.CONNECTED, _DT.CONNECT_FAILED, _DT.RETRY)}
    | {(s, t) for s in (_D.RUNNING, _D.PAUSED) for t in _CONNECT_PHASE}
    # `stopped` follows only `stopping`.
    | {(s, _DT.STOPPED) for s in _D if s != _D.STOPPING}
    # While stopping, the broker task and the control poll still report until they are cancelled: a late
    # `connected` or `pause` there must not crash the wind-down; stopped is the end.
    | {(_D.STOPPING, t) for t in _DT if t != _DT.STOPPED}
    | {(_D.STOPPED, t) for t in _DT}
)


class TradingState(StrEnum):
    BOOT = "boot"
    SYNC = "sync"
    IDLE = "idle"
    MONITOR = "monitor"
    NO_TRADE = "no_trade"
    NEED_HEDGE = "need_hedge"
    HEDGING = "hedging"
    PAUSE_COST = "pause_cost"
    PAUSE_LIQ = "pause_liq"
    SAFE = "safe"
    HALTED = "halted"


class TradingTrigger(StrEnum):
    START = "start"
    SYNCED = "synced"
    NO_OPTIONS = "no_options"
    IN_BAND = "in_band"
    OUT_OF_BAND = "out_of_band"
    BLOCKED = "blocked"
    COST_BLOCKED = "cost_blocked"
    LIQ_BLOCKED = "liq_blocked"
    ORDER_SENT = "order_sent"
    ORDER_DONE = "order_done"
    UNHEALTHY = "unhealthy"
    HEALTHY = "healthy"
    RISK_HALT = "risk_halt"
    RESET_HALT = "reset_halt"


_T, _TT = TradingState, TradingTrigger
# The states in which the engine evaluates delta; they all react to the situation the same way.
_EVALUATING = (_T.MONITOR, _T.NO_TRADE, _T.NEED_HEDGE, _T.PAUSE_COST, _T.PAUSE_LIQ)
_SITUATION: dict[TradingTrigger, TradingState] = {
    _TT.IN_BAND: _T.MONITOR,
    _TT.OUT_OF_BAND: _T.NEED_HEDGE,
    _TT.BLOCKED: _T.NO_TRADE,
    _TT.COST_BLOCKED: _T.PAUSE_COST,
    _TT.LIQ_BLOCKED: _T.PAUSE_LIQ,
    _TT.ORDER_SENT: _T.HEDGING,
    _TT.NO_OPTIONS: _T.IDLE,
    _TT.UNHEALTHY: _T.SAFE,
}

TRADING_TRANSITIONS: dict[tuple[TradingState, TradingTrigger], TradingState] = {
    (_T.BOOT, _TT.START): _T.SYNC,
    # sync waits for the first quote and a position sync; it never falls to safe (the original locked up there).
    (_T.SYNC, _TT.SYNCED): _T.MONITOR,
    (_T.SYNC, _TT.NO_OPTIONS): _T.IDLE,
    (_T.IDLE, _TT.SYNCED): _T.MONITOR,
    (_T.IDLE, _TT.UNHEALTHY): _T.SAFE,
    (_T.IDLE, _TT.ORDER_SENT): _T.HEDGING,
    **{(state, trigger): target for state in _EVALUATING for trigger, target in _SITUATION.items() if state != target},
    (_T.HEDGING, _TT.ORDER_DONE): _T.MONITOR,
    (_T.HEDGING, _TT.UNHEALTHY): _T.SAFE,
    (_T.SAFE, _TT.HEALTHY): _T.SYNC,
    **{(state, _TT.RISK_HALT): _T.HALTED for state in _T if state != _T.HALTED},
    (_T.HALTED, _TT.RESET_HALT): _T.SYNC,
}
_DECIDING = (_TT.IN_BAND, _TT.OUT_OF_BAND, _TT.BLOCKED, _TT.COST_BLOCKED, _TT.LIQ_BLOCKED)
# Every pair that is not a transition, listed with why it changes nothing (the walk test fails on a new pair).
TRADING_IGNORED: frozenset[tuple[TradingState, TradingTrigger]] = frozenset(
    # The same situation again: the state already is its answer.
    {(target, trigger) for trigger, target in _SITUATION.items() if target in _EVALUATING}
    | {(_T.IDLE, _TT.NO_OPTIONS), (_T.HEDGING, _TT.ORDER_SENT), (_T.SAFE, _TT.UNHEALTHY), (_T.HALTED, _TT.RISK_HALT)}
    # Boot only starts; start happens once.
    | {(_T.BOOT, t) for t in _TT if t not in (_TT.START, _TT.RISK_HALT)}
    | {(s, _TT.START) for s in _T if s != _T.BOOT}
    # Sync waits for its first quote and a position sync instead of failing (the original locked itself in safe).
    | {(_T.SYNC, t) for t in (*_DECIDING, _TT.ORDER_SENT, _TT.UNHEALTHY)}
    # Idle has no options to hedge: no delta to decide on.
    | {(_T.IDLE, t) for t in _DECIDING}
    # A hedging engine waits for its order whatever the delta does.
    | {(_T.HEDGING, t) for t in (*_DECIDING, _TT.NO_OPTIONS)}
    # Safe waits for the health dwell; halted for an operator's reset_halt.
    | {(_T.SAFE, t) for t in (*_DECIDING, _TT.NO_OPTIONS, _TT.ORDER_SENT)}
    | {(_T.HALTED, t) for t in _TT if t not in (_TT.RESET_HALT, _TT.RISK_HALT, _TT.START)}
    # Reports that only mean something in one state: synced in sync and idle, order_done while hedging,
    # healthy in safe, reset_halt when halted.
    | {(s, _TT.SYNCED) for s in _T if s not in (_T.SYNC, _T.IDLE, _T.BOOT, _T.HALTED)}
    | {(s, _TT.ORDER_DONE) for s in _T if s not in (_T.HEDGING, _T.BOOT, _T.HALTED)}
    | {(s, _TT.HEALTHY) for s in _T if s not in (_T.SAFE, _T.BOOT, _T.HALTED)}
    | {(s, _TT.RESET_HALT) for s in _T if s not in (_T.HALTED, _T.BOOT)}
)


class OrderState(StrEnum):
    IDLE = "idle"
    PLAN = "plan"
    SENT = "sent"
    WORKING = "working"
    PARTIAL = "partial"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


class OrderTrigger(StrEnum):
    PLAN = "plan"
    SEND = "send"
    ACK = "ack"
    PARTIAL_FILL = "partial_fill"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    ACK_TIMEOUT = "ack_timeout"
    DISCONNECTED = "disconnected"


_O, _OT = OrderState, OrderTrigger
ORDER_TERMINAL = frozenset({_O.FILLED, _O.CANCELLED, _O.REJECTED})
ORDER_TRANSITIONS: dict[tuple[OrderState, OrderTrigger], OrderState] = {
    (_O.IDLE, _OT.PLAN): _O.PLAN,
    (_O.PLAN, _OT.SEND): _O.SENT,
    (_O.SENT, _OT.ACK): _O.WORKING,
    (_O.SENT, _OT.ACK_TIMEOUT): _O.UNKNOWN,
    (_O.SENT, _OT.DISCONNECTED): _O.UNKNOWN,
    (_O.WORKING, _OT.DISCONNECTED): _O.UNKNOWN,
    (_O.PARTIAL, _OT.DISCONNECTED): _O.UNKNOWN,
    **{(s, _OT.PARTIAL_FILL): _O.PARTIAL for s in (_O.SENT, _O.WORKING, _O.UNKNOWN)},
    **{(s, _OT.FILLED): _O.FILLED for s in (_O.SENT, _O.WORKING, _O.PARTIAL, _O.UNKNOWN)},
    **{(s, _OT.CANCELLED): _O.CANCELLED for s in (_O.SENT, _O.WORKING, _O.PARTIAL, _O.UNKNOWN)},
    **{(s, _OT.REJECTED): _O.REJECTED for s in (_O.SENT, _O.WORKING, _O.UNKNOWN)},
    # Only reconciliation (the broker's own word) leads out of unknown: ack means it is live after all.
    (_O.UNKNOWN, _OT.ACK): _O.WORKING,
}
ORDER_IGNORED: frozenset[tuple[OrderState, OrderTrigger]] = frozenset(
    {(s, t) for s in ORDER_TERMINAL for t in _OT}  # late or duplicate reports after the end change nothing
    | {(_O.WORKING, _OT.ACK), (_O.PARTIAL, _OT.ACK), (_O.PARTIAL, _OT.PARTIAL_FILL)}
    | {(_O.WORKING, _OT.ACK_TIMEOUT), (_O.PARTIAL, _OT.ACK_TIMEOUT), (_O.UNKNOWN, _OT.ACK_TIMEOUT)}
    | {(_O.UNKNOWN, _OT.DISCONNECTED), (_O.PARTIAL, _OT.REJECTED)}
    | {(_O.IDLE, t) for t in _OT if t != _OT.PLAN}
    | {(_O.PLAN, t) for t in _OT if t != _OT.SEND}
    | {(s, _OT.PLAN) for s in (_O.SENT, _O.WORKING, _O.PARTIAL, _O.UNKNOWN)}
    | {(s, _OT.SEND) for s in (_O.SENT, _O.WORKING, _O.PARTIAL, _O.UNKNOWN)}
)


S = TypeVar("S", bound=StrEnum)
T = TypeVar("T", bound=StrEnum)


def transition(
    machine: str,
    table: dict[tuple[S, T], S],
    ignored: frozenset[tuple[S, T]],
    state: S,
    trigger: T,
) -> S:
    """The next state; `state` itself for a deliberately ignored pair; TransitionError for an undefined one."""
    target = table.get((state, trigger))
    if target is not None:
        return target
    if (state, trigger) in ignored:
        return state
    raise TransitionError(machine, str(state), str(trigger))


def daemon_transition(state: DaemonState, trigger: DaemonTrigger) -> DaemonState:
    return transition("daemon", DAEMON_TRANSITIONS, DAEMON_IGNORED, state, trigger)


def trading_transition(state: TradingState, trigger: TradingTrigger) -> TradingState:
    return transition("trading", TRADING_TRANSITIONS, TRADING_IGNORED, state, trigger)


def order_transition(state: OrderState, trigger: OrderTrigger) -> OrderState:
    return transition("order", ORDER_TRANSITIONS, ORDER_IGNORED, state, trigger)
