"""The daemon: one asyncio loop wiring broker events through the engine to orders and records.

Only the sink and the control poll touch the database, each in its own task; the trading path never waits on it."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection

from trading import selectors, services
from trading.brokers.base import Broker, PositionMark
from trading.core.calendar import AlwaysOpenCalendar, TradingCalendar, trading_date
from trading.core.engine import ENGINE_VERSION, Engine
from trading.core.events import (
    Action,
    BrokerPosition,
    BrokerStatus,
    CancelOrder,
    Control,
    Event,
    Fill,
    Halt,
    OrderUpdate,
    PlaceOrder,
    PositionsSynced,
    Reconciled,
    Record,
    Timer,
)
from trading.core.fsm import DaemonState, DaemonTrigger, daemon_transition
from trading.core.selfcheck import Check, verdict_of
from trading.daemon.sink import Sink
from trading.errors import BrokerError
from trading.models import ControlCommand, StrategyConfig

log = logging.getLogger(__name__)
LAMP = {"ok": "green", "degraded": "yellow", "blocked": "red"}
ACCOUNT_REFRESH_S = 60.0
RECONNECT_BACKOFF_MAX_S = 30.0
# The shutdown budget: SIGTERM to exit in under a second, whatever the broker or the database do.
SHUTDOWN_CANCEL_S = 0.2
SHUTDOWN_FLUSH_S = 0.4
SHUTDOWN_LEASE_S = 0.2


def utc_now() -> datetime:
    return datetime.now(UTC)


def db(fn: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    return sync_to_async(fn)


class Daemon:
    def __init__(self, broker: Broker, *, clock: Callable[[], datetime] = utc_now,
                 heartbeat_s: float | None = None, history_s: float | None = None) -> None:
        self.broker = broker
        self.clock = clock
        self.heartbeat_s = heartbeat_s or settings.BIFROST_HEARTBEAT_S
        self.history_s = history_s or settings.BIFROST_HISTORY_S
        self.sink = Sink(services.records_write, settings.BIFROST_JOURNAL_PATH,
                         on_written=self._tell_the_web if settings.REDIS_URL else None)
        self._web_unreachable = False
        self.state = DaemonState.STARTING
        self.stop_requested = False  # once set, no new order leaves, whatever the engine says
        self.stop_reason = ""
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._disconnected = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self._history_due = True
        self._last_history: datetime | None = None
        self._flatten_command: int | None = None
        self._stop_command: int | None = None
        self._account: dict[str, Any] = {}
        self._marks: list[PositionMark] = []
        self._positions_stale = False
        self.engine: Engine | None = None
        self.config: StrategyConfig | None = None
        self.lease_token = ""
        self.started_at = self.clock()

    # ---- life cycle --------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until stopped; returns the process exit code. LeaseHeldError propagates (the command exits 3)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, f"signal {sig.name}")
        replayed = await db(self.sink.replay_journal_sync)(services.records_write)
        if replayed:
            log.warning("replayed %d journaled records from a previous run", replayed)
        self.started_at = self.clock()
        lease = await db(services.lease_acquire)(mode=self.broker.mode, heartbeat_s=self.heartbeat_s,
                                                 now=self.started_at)
        self.lease_token = lease.token
        try:
            params, self.config = await db(services.strategy_params_active)()
            seed = await db(selectors.engine_seed_load)(today=trading_date(self.started_at))
            calendar = AlwaysOpenCalendar() if self.broker.mode == "sim" else TradingCalendar(params.exchange)
            self.engine = Engine(params, f"bifrost:{lease.token}", calendar, self.started_at, seed)
            self.broker.set_event_handler(self.on_broker_event)
            self._spawn(self.sink.run(), "sink")
            self._spawn(self._heartbeat_loop(), "heartbeat")
            self._spawn(self._control_loop(), "control")
            self._spawn(self._broker_loop(), "broker")
            if connection.vendor == "postgresql":
                self._spawn(self._listen_loop(), "listen")
            await self._stop.wait()
        finally:
            await self._shutdown()
        return 0

    def request_stop(self, reason: str) -> None:
        """Signal handlers and the stop command come here: it only sets flags, the loop does the work."""
        if not self.stop_requested:
            log.warning("stop requested: %s", reason)
        self.stop_requested = True
        self.stop_reason = self.stop_reason or reason
        self._stop.set()

    async def _shutdown(self) -> None:
        now = self.clock()
        self._daemon(DaemonTrigger.STOP)
        if self.engine is not None and not self.engine.stopping:
            self._dispatch(Control("stop", actor="daemon", reason=self.stop_reason))
        pending = [t for t in self._tasks if t.get_name() == "order-io" and not t.done()]
        if pending:  # our cancels on their way to the broker
            await asyncio.wait(pending, timeout=SHUTDOWN_CANCEL_S)
        for task in self._tasks:
            if task.get_name() != "order-io":
                task.cancel()
        self._daemon(DaemonTrigger.STOPPED)
        self.sink.put("operation", {"ts": now.isoformat(), "kind": "daemon_stop",
                                    "message": f"daemon stopped: {self.stop_reason or 'shutdown'}"})
        if self._stop_command is not None:
            self._finish(self._stop_command, "done", "daemon stopped")
        if self.engine is not None:
            self._publish_status(now, history=True)
        await self.sink.flush(SHUTDOWN_FLUSH_S)
        if self.lease_token:
            try:
                await asyncio.wait_for(db(services.lease_release)(token=self.lease_token, now=now), SHUTDOWN_LEASE_S)
            except (TimeoutError, DatabaseError) as exc:
                log.error("could not release the lease (it will go stale): %s", exc)
        try:
            await asyncio.wait_for(self.broker.disconnect(), SHUTDOWN_CANCEL_S)
        except (TimeoutError, BrokerError, OSError) as exc:
            log.error("broker disconnect failed: %s", exc)

    # ---- events in, actions out --------------------------------------------------------------------------

    def on_broker_event(self, event: Event) -> None:
        if isinstance(event, BrokerStatus) and not event.connected:
            self._disconnected.set()
        if self.engine is not None:
            self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        assert self.engine is not None
        self._execute(self.engine.on_event(event, self.clock()))

    def _execute(self, actions: list[Action]) -> None:
        suppressed: list[PlaceOrder] = []
        for action in actions:
            if isinstance(action, PlaceOrder):
                if self.stop_requested:  # belt and braces: the engine's own `stopping` gate comes first
                    suppressed.append(action)
                    continue
                self._spawn(self._place(action), "order-io")
            elif isinstance(action, CancelOrder):
                self._spawn(self._cancel(action), "order-io")
            elif isinstance(action, Record):
                self.sink.put(action.kind, action.data)
                if action.kind in ("order", "fill"):
                    self._history_due = True
                elif action.kind == "managed_leg":
                    self._spawn(self._subscribe(), "order-io")  # a newly adopted leg needs its quotes
                if action.kind in ("fill", "managed_leg"):
                    self._positions_stale = True  # refreshed at the next heartbeat
            elif isinstance(action, Halt):
                self.sink.put("control_state", {"halted": True, "halt_reason": action.reason})
        for order in suppressed:  # after the order's own records, so its final state is the rejection
            self.sink.put("operation", {"ts": self.clock().isoformat(), "kind": "order_suppressed",
                                        "message": f"{order.order_ref} not sent: daemon is stopping",
                                        "order_ref": order.order_ref, "reasons": ["stopping"]})
            self._dispatch(OrderUpdate(order.order_ref, "rejected", 0.0, None, self.clock(),
                                       "not sent: daemon is stopping"))

    async def _place(self, order: PlaceOrder) -> None:
        try:
            await self.broker.place_order(order)
        except (BrokerError, OSError, ConnectionError) as exc:
            # Refused before it left us (not connected): a definite outcome, not an unknown one.
            self._dispatch(OrderUpdate(order.order_ref, "rejected", 0.0, None, self.clock(), f"not sent: {exc}"))

    async def _cancel(self, cancel: CancelOrder) -> None:
        try:
            await self.broker.cancel_order(cancel.order_ref)
        except (BrokerError, OSError, ConnectionError) as exc:
            self.sink.put("operation", {"ts": self.clock().isoformat(), "kind": "order_cancel_failed",
                                        "message": f"cancel {cancel.order_ref} failed: {exc}",
                                        "order_ref": cancel.order_ref})

    # ---- broker connection, sync and reconciliation ------------------------------------------------------

    async def _broker_loop(self) -> None:
        backoff = 1.0
        first = True
        while not self.stop_requested:
            self._daemon(DaemonTrigger.CONNECT if first else DaemonTrigger.RETRY)
            first = False
            try:
                self._disconnected.clear()
                await self.broker.connect()
            except (BrokerError, OSError, ConnectionError, TimeoutError) as exc:
                self._daemon(DaemonTrigger.CONNECT_FAILED)
                self._operation("broker", f"connect failed: {exc}; retrying in {backoff:g} s")
                await self._sleep(backoff)
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX_S)
                continue
            backoff = 1.0
            self._daemon(DaemonTrigger.CONNECTED)
            try:
                await self._sync()
            except (BrokerError, OSError, ConnectionError, TimeoutError) as exc:
                self._operation("broker", f"sync failed: {exc}")
                await self.broker.disconnect()
                self._daemon(DaemonTrigger.DISCONNECTED)
                continue
            assert self.engine is not None
            self._daemon(DaemonTrigger.SYNCED_PAUSED if self.engine.paused else DaemonTrigger.SYNCED)
            while not self._disconnected.is_set():
                await self._sleep(ACCOUNT_REFRESH_S, self._disconnected)
                if not self._disconnected.is_set() and not self.stop_requested:
                    await self._refresh_account()
            self._daemon(DaemonTrigger.DISCONNECTED)

    async def _sync(self) -> None:
        """Positions, account, subscriptions, then re-match our orders and recover missed fills."""
        assert self.engine is not None
        await self._refresh_account()
        await self._subscribe()
        open_orders = {o.order_ref: o for o in await self.broker.open_orders()}
        for fill in await self.broker.executions():
            if fill.order_ref.startswith("bifrost:") and fill.exec_id not in self.engine.seen_exec_ids:
                self._operation("fill_recovered", f"{fill.exec_id} of {fill.order_ref} recovered from executions")
                self._dispatch(fill)
        for ref, track in list(self.engine.orders.items()):
            if track.state in ("filled", "cancelled", "rejected") or ref in open_orders:
                continue
            # Not open and not fully filled at the broker: it can no longer fill, so its outcome is known.
            self._dispatch(OrderUpdate(ref, "cancelled", track.filled, None, self.clock(),
                                       "not open at the broker after reconnect"))
        ours = tuple(ref for ref in open_orders if ref.startswith("bifrost:"))
        self._dispatch(Reconciled(open_refs=ours, unknown_refs=(), ts=self.clock()))

    async def _subscribe(self) -> None:
        assert self.engine is not None
        await self.broker.subscribe(self.engine.params.underlying,
                                    [leg.contract for leg in self.engine.book.legs.values()])

    async def _refresh_positions(self) -> None:
        assert self.engine is not None
        now = self.clock()
        self._positions_stale = False
        self._marks = await self.broker.positions()
        self._dispatch(PositionsSynced(tuple(m.position for m in self._marks), now))
        self.sink.put("positions", {"ts": now.isoformat(), "account": self._account.get("account", ""),
                                    "positions": self._positions_json()})

    async def _refresh_positions_between_syncs(self) -> None:
        try:
            await self._refresh_positions()
        except (BrokerError, OSError, ConnectionError, TimeoutError) as exc:
            self._operation("broker", f"positions refresh failed: {exc}")

    def _positions_json(self) -> list[dict[str, Any]]:
        """Account positions as shown: managed flags and the hedge/manual split as the engine knows them now."""
        assert self.engine is not None
        managed = set(self.engine.book.legs)
        return [_position_json(m.position, m.market_price, m.position.contract.con_id in managed,
                               self.engine.params.underlying, self.engine.book.hedge_shares) for m in self._marks]

    async def _refresh_account(self) -> None:
        summary = await self.broker.account_summary()
        self._account = {"account": summary.account, "net_liquidation": summary.net_liquidation,
                         "buying_power": summary.buying_power, "maintenance_margin": summary.maintenance_margin,
                         "cash": summary.cash, "fetched_at": summary.ts.isoformat()}
        await self._refresh_positions()
        self.sink.put("account", {"ts": summary.ts.isoformat(), **{k: v for k, v in self._account.items()
                                                                  if k != "fetched_at"}})

    # ---- heartbeat, status, control ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            now = self.clock()
            self._dispatch(Timer(now))
            self._finish_flatten_if_done()
            if self._positions_stale and self.broker.connected:
                self._spawn(self._refresh_positions_between_syncs(), "order-io")
            due = self._last_history is None or (now - self._last_history).total_seconds() >= self.history_s
            self._publish_status(now, history=due or self._history_due)
            self.sink.put("lease", {"token": self.lease_token, "ts": now.isoformat()})
            await asyncio.sleep(self.heartbeat_s)

    def _publish_status(self, now: datetime, *, history: bool) -> None:
        self.sink.put("status", {"payload": self.status_payload(now), "history": history})
        if history:
            self._last_history, self._history_due = now, False

    def status_payload(self, now: datetime) -> dict[str, Any]:
        """The /api/status/ shape, as the daemon sees itself; the web adds the heartbeat-age check."""
        assert self.engine is not None
        engine = self.engine
        check = engine.self_check(str(self.state))
        checks = [c.as_dict() for c in check.checks]
        if self.sink.degraded:
            checks.append(Check("database", "degraded", "db_unavailable",
                                f"journaling to {self.sink.journal_path}: {self.sink.last_error}").as_dict())
        verdict = verdict_of(c["status"] for c in checks)
        view = engine.status_view()
        config = self.config
        return {
            "lamp": LAMP[verdict],
            "verdict": verdict,
            "block_reasons": list(check.block_reasons),
            "checks": checks,
            "daemon": {"state": str(self.state), "mode": self.broker.mode, "pid": os.getpid(),
                       "host": socket.gethostname(), "started_at": self.started_at.isoformat(),
                       "heartbeat_at": now.isoformat(), "heartbeat_age_s": 0.0,
                       "broker_connected": self.broker.connected, "lease": self.lease_token,
                       "engine_version": ENGINE_VERSION, "db_degraded": self.sink.degraded},
            **view,
            "config": {"name": config.name if config else "", "params_hash": engine.params_hash},
            "account": {**self._account, "positions": self._positions_json()},
            "ts": now.isoformat(),
        }

    async def _control_loop(self) -> None:
        failing = False
        while True:
            try:
                for command in await db(services.control_commands_due)(daemon_started_at=self.started_at,
                                                                       now=self.clock()):
                    # Effect first, ack second: nothing a command forbids can happen after its ack.
                    self._take_effect(command)
                    if await db(services.control_command_ack)(command_id=command.pk, now=self.clock()):
                        await self._carry_out(command)
                failing = False
            except DatabaseError as exc:
                if not failing:
                    log.error("control poll failed (retrying every heartbeat): %s", exc)
                failing = True
            self._wake.clear()
            await self._sleep(self.heartbeat_s, self._wake)

    def _take_effect(self, command: ControlCommand) -> None:
        """What must hold before the command is acked: no order after stop, no hedge after pause or flatten."""
        if command.command == "stop":
            self.stop_requested = True
            self._dispatch(Control("stop", actor=command.created_by, reason=command.reason))
        elif command.command in ("pause", "resume", "reset_halt", "flatten"):
            self._dispatch(Control(command.command, actor=command.created_by, reason=command.reason))

    async def _carry_out(self, command: ControlCommand) -> None:
        assert self.engine is not None
        name, who = command.command, command.created_by
        self._operation("command_acked", f"{name} #{command.pk} acked", actor=who)
        if name == "stop":
            self._stop_command = command.pk
            self.request_stop(f"stop command #{command.pk} by {who}")
        elif name == "pause":
            self._daemon(DaemonTrigger.PAUSE)
            self.sink.put("control_state", {"paused": True, "paused_reason": command.reason or f"paused by {who}"})
            self._finish(command.pk, "done", "paused: no new hedge orders")
        elif name == "resume":
            self._daemon(DaemonTrigger.RESUME)
            self.sink.put("control_state", {"paused": False, "paused_reason": ""})
            self._finish(command.pk, "done", "resumed")
        elif name == "reset_halt":
            self.sink.put("control_state", {"halted": False, "halt_reason": ""})
            self._finish(command.pk, "done", "risk halt reset")
        elif name == "flatten":
            self._daemon(DaemonTrigger.PAUSE)
            self.sink.put("control_state", {"paused": True, "paused_reason": f"flatten by {who}"})
            self._flatten_command = command.pk
            self._finish_flatten_if_done()
        elif name == "reconnect":
            self._finish(command.pk, "done", "reconnecting to the broker")
            await self.broker.disconnect()
        elif name == "refresh_account":
            try:
                await self._refresh_account()
                self._finish(command.pk, "done", "account and positions refreshed")
            except (BrokerError, OSError, ConnectionError) as exc:
                self._finish(command.pk, "rejected", f"refresh failed: {exc}")
        else:
            self._finish(command.pk, "rejected", f"the daemon does not carry out {name!r}")

    def _finish_flatten_if_done(self) -> None:
        engine = self.engine
        if self._flatten_command is None or engine is None or engine.flattening:
            return
        shares = engine.book.hedge_shares
        if abs(shares) < 1e-9:
            self._finish(self._flatten_command, "done", "flattened: Bifrost hedge shares are 0; paused")
        else:
            self._finish(self._flatten_command, "rejected", f"flatten incomplete: {shares:g} hedge shares remain")
        self._flatten_command = None

    async def _tell_the_web(self, kinds: set[str]) -> None:
        """With Redis, a written status wakes every lamp page at once instead of at its next poll."""
        if "status" not in kinds:
            return
        from channels.layers import get_channel_layer
        from redis.exceptions import RedisError

        try:
            await get_channel_layer().group_send("status", {"type": "status.changed"})
            self._web_unreachable = False
        except (OSError, RedisError) as exc:
            if not self._web_unreachable:
                log.warning("could not notify the web through Redis (pages still poll): %s", exc)
            self._web_unreachable = True

    async def _listen_loop(self) -> None:
        """PostgreSQL: a NOTIFY on bifrost_control wakes the control poll at once (sub-100 ms commands)."""
        import psycopg

        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(autocommit=True, **params) as conn:
                    await conn.execute("LISTEN bifrost_control")
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                log.error("LISTEN failed, polling only: %s", exc)
                await asyncio.sleep(5.0)

    # ---- helpers -----------------------------------------------------------------------------------------

    def _daemon(self, trigger: DaemonTrigger) -> None:
        before = self.state
        self.state = daemon_transition(self.state, trigger)
        if self.state != before:
            self._operation("daemon_state", f"daemon {before} → {self.state} ({trigger})")

    def _finish(self, command_id: int, state: str, result: str) -> None:
        self.sink.put("command_result", {"command_id": command_id, "state": state, "result": result,
                                         "ts": self.clock().isoformat()})
        self._operation(f"command_{state}", f"command #{command_id} {state}: {result}")

    def _operation(self, kind: str, message: str, actor: str = "daemon") -> None:
        self.sink.put("operation", {"ts": self.clock().isoformat(), "kind": kind, "message": message, "actor": actor})

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task in self._tasks and task.get_name() == "order-io":
            self._tasks.remove(task)
        if task.cancelled() or task.exception() is None:
            return
        log.error("task %s crashed", task.get_name(), exc_info=task.exception())
        self.request_stop(f"internal error in {task.get_name()}: {task.exception()!r}")

    async def _sleep(self, seconds: float, wake: asyncio.Event | None = None) -> None:
        """Sleep, but wake at once on stop (or on `wake`): stop must be honoured within a second from anywhere."""
        waiters = [asyncio.ensure_future(self._stop.wait())]
        if wake is not None:
            waiters.append(asyncio.ensure_future(wake.wait()))
        _, pending = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in pending:
            w.cancel()


def _position_json(p: BrokerPosition, market_price: float | None, managed: bool, underlying: str,
                   hedge_shares: float) -> dict[str, Any]:
    c = p.contract
    data: dict[str, Any] = {}
    if c.sec_type == "STK" and c.symbol == underlying:
        # One broker position holds Bifrost's hedge shares and the operator's manual shares together.
        data = {"hedge_shares": hedge_shares, "manual_shares": p.qty - hedge_shares}
    avg_price = (p.avg_cost / c.multiplier) if p.avg_cost is not None else None
    return {"con_id": c.con_id, "symbol": c.symbol, "local_symbol": c.local_symbol, "sec_type": c.sec_type,
            "right": c.right, "strike": c.strike, "expiry": c.expiry.isoformat() if c.expiry else None,
            "multiplier": c.multiplier, "qty": p.qty, "avg_cost": avg_price, "market_price": market_price,
            "managed": managed, "data": data}


__all__ = ["Daemon", "Fill"]
