"""The daemon: one asyncio loop wiring broker events through the engine to orders and records.

Only the sink, the control poll and the lease touch the database, each in its own task on its own database lane
(thread and connection); the trading path never waits on it. Every order is fenced: it leaves only while this
daemon's lease was confirmed within the last heartbeat, and only after its intent is in the journal."""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from datetime import time as time_of_day
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection

from trading import selectors, services
from trading.brokers.base import Broker, CompletedOrder, OpenOrder, PositionMark
from trading.core.calendar import ET, AlwaysOpenCalendar, TradingCalendar, trading_date
from trading.core.commander import COMMANDER_REF_PREFIX
from trading.core.engine import ENGINE_VERSION, Engine
from trading.core.events import (
    Action,
    AdoptLegs,
    BrokerOrder,
    BrokerPosition,
    BrokerStatus,
    CancelOrder,
    Control,
    EdgeStatus,
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
from trading.daemon.dblane import DbLane
from trading.daemon.journal import DEAD_LETTER_NAME, Journal, journal_name
from trading.daemon.sink import Sink
from trading.errors import BrokerError, ConfigError
from trading.models import CommanderRun, ControlCommand, StrategyConfig

log = logging.getLogger(__name__)
LAMP = {"ok": "green", "degraded": "yellow", "blocked": "red"}
# Exit codes (a Contract, README): supervisord restarts every non-zero one.
EXIT_STOPPED = 0  # an operator stop (command or signal)
EXIT_CONFIG = 2
EXIT_LEASE_HELD = 3
EXIT_LEASE_LOST = 4
EXIT_INTERNAL = 70
ACCOUNT_REFRESH_S = 60.0
RECONNECT_BACKOFF_MAX_S = 30.0
PERIODIC_BACKOFF_MAX_S = 60.0
CLOCK_SKEW_MAX_S = 2.0  # IB's clock comes in whole seconds: anything within this is agreement
ORDER_REF_PREFIX = "bifrost:"
FOREIGN_MEMORY = 10_000
COMMANDER_FOLLOW_S = 30.0  # how long a live commander run follows its limit orders before recording them
COMMANDER_FENCE_WAIT_S = 10.0  # how long a commander order waits for an unconfirmed lease to be confirmed again
# The shutdown budget: SIGTERM to exit in under a second, whatever the broker or the database do.
SHUTDOWN_CANCEL_S = 0.2
SHUTDOWN_FLUSH_S = 0.4
SHUTDOWN_LEASE_S = 0.2


def utc_now() -> datetime:
    return datetime.now(UTC)


class Daemon:
    def __init__(self, broker: Broker, *, clock: Callable[[], datetime] = utc_now,
                 heartbeat_s: float | None = None, history_s: float | None = None) -> None:
        self.broker = broker
        self.clock = clock
        self.heartbeat_s = heartbeat_s or settings.BIFROST_HEARTBEAT_S
        self.history_s = history_s or settings.BIFROST_HISTORY_S
        self._control_db = DbLane("control")
        self._lease_db = DbLane("lease")
        self.sink: Sink | None = None  # opened once the lease is ours: the journal is named by it
        self._web_unreachable = False
        self.state = DaemonState.STARTING
        self.exit_code = EXIT_STOPPED
        self.stop_requested = False  # once set, no new order leaves, whatever the engine says
        self.stop_reason = ""
        self.lease_lost = False  # once set, nothing more goes to the broker: another daemon is in charge
        self._lease_confirmed_at = -float("inf")  # monotonic start of the last renewal the database confirmed
        self._lease_trouble = ""
        self._journal_error = ""
        self._clock_skew = ""
        self._foreign: set[str] = set()  # refs and exec ids already reported as not ours (cleared daily)
        self._failing: dict[str, str] = {}  # periodic task -> why it last failed
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
        lease = await self._control_db(services.lease_acquire)(mode=self.broker.mode, heartbeat_s=self.heartbeat_s)
        self.lease_token = lease.token
        self._lease_confirmed_at = time.monotonic()
        journal_dir = settings.BIFROST_JOURNAL_DIR
        self.sink = Sink(services.records_write, services.order_intents_write, Journal(journal_dir / journal_name(
            lease.token)), dead_letter_path=journal_dir / DEAD_LETTER_NAME,
            on_written=self._tell_the_web if settings.REDIS_URL else None)
        try:
            # Only now, holding the lease: what dead daemons journaled, then the commands they left behind.
            replayed = await self.sink.replay_orphans()
            if replayed:
                log.warning("replayed %d journaled records and intents of earlier daemons", replayed)
            await self._control_db(services.control_commands_settle_before)(started_at=lease.started_at)
            params, self.config = await self._control_db(services.strategy_params_active)()
            self.started_at = self.clock()
            seed = await self._control_db(selectors.engine_seed_load)(today=trading_date(self.started_at))
            calendar = AlwaysOpenCalendar() if self.broker.mode == "sim" else TradingCalendar(params.exchange)
            self.engine = Engine(params, f"{ORDER_REF_PREFIX}{lease.token}", calendar, self.started_at, seed)
            self.broker.set_event_handler(self.on_broker_event)
            self._spawn(self.sink.run(), "sink")
            self._spawn(self._lease_loop(), "lease")
            self._spawn(self._heartbeat_loop(), "heartbeat")
            self._spawn(self._control_loop(), "control")
            self._spawn(self._broker_loop(), "broker")
            self._spawn(self._every("account_refresh", ACCOUNT_REFRESH_S, self._refresh_account), "account_refresh")
            self._spawn(self._every("reconcile", settings.BIFROST_RECONCILE_S, self._reconcile), "reconcile")
            if connection.vendor == "postgresql":
                self._spawn(self._listen_loop(), "listen")
            await self._stop.wait()
        finally:
            await self._shutdown()
        return self.exit_code

    def request_stop(self, reason: str, exit_code: int = EXIT_STOPPED) -> None:
        """Signal handlers and the stop command come here: it only sets flags, the loop does the work."""
        if not self.stop_requested:
            log.warning("stop requested: %s", reason)
            self.exit_code = exit_code
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
        if self.sink is None:
            return
        self._operation("daemon_stop", f"daemon stopped (exit {self.exit_code}): {self.stop_reason or 'shutdown'}")
        if self._stop_command is not None:
            self._finish(self._stop_command, "done", "daemon stopped")
        if self.engine is not None:
            self._publish_status(now, history=True)
        await self.sink.flush(SHUTDOWN_FLUSH_S)
        if not self.lease_lost:
            try:
                await asyncio.wait_for(self._lease_db(services.lease_release)(token=self.lease_token),
                                       SHUTDOWN_LEASE_S)
            except (TimeoutError, DatabaseError) as exc:
                log.error("could not release the lease (it will go stale): %s", exc)
        try:
            await asyncio.wait_for(self.broker.disconnect(), SHUTDOWN_CANCEL_S)
        except (TimeoutError, BrokerError, OSError) as exc:
            log.error("broker disconnect failed: %s", exc)
        self.sink.journal.close()

    # ---- events in, actions out --------------------------------------------------------------------------

    def on_broker_event(self, event: Event) -> None:
        if isinstance(event, BrokerStatus) and not event.connected:
            self._disconnected.set()
        if self.engine is None:
            return
        if isinstance(event, Fill) and not self._ours(event):
            if self._commanders(event):
                self._positions_stale = True  # an option of ours filled: the legs it opens are adopted from there
            return
        self._dispatch(event)

    def _dispatch(self, event: Event) -> None:
        assert self.engine is not None
        self._sync_edge()
        self._execute(self.engine.on_event(event, self.clock()))

    def _sync_edge(self) -> None:
        """Tell the engine about the fence before it decides: an expired lease confirmation must block the decision,
        not only the order (a daemon resumed after SIGSTOP decides on the very first event it sees)."""
        assert self.engine is not None
        edge = EdgeStatus(lease_confirmed=self.lease_fresh(), journal_writable=not self._journal_error,
                          clock_skewed=bool(self._clock_skew),
                          detail=self._journal_error or self._lease_trouble or self._clock_skew)
        known = self.engine.edge
        if (edge.lease_confirmed, edge.journal_writable, edge.clock_skewed) != (
                known.lease_confirmed, known.journal_writable, known.clock_skewed):
            self._execute(self.engine.on_event(edge, self.clock()))

    def lease_fresh(self) -> bool:
        """The fence: this daemon confirmed its lease within the last heartbeat interval (and never lost it)."""
        return not self.lease_lost and time.monotonic() - self._lease_confirmed_at < self.heartbeat_s

    def _execute(self, actions: list[Action]) -> None:
        suppressed: list[tuple[PlaceOrder, str]] = []
        for action in actions:
            if isinstance(action, PlaceOrder):
                why = self._why_not_send(action)
                if why:
                    suppressed.append((action, why))
                    continue
                self._spawn(self._place(action), "order-io")
            elif isinstance(action, CancelOrder):
                if not self.lease_lost:
                    self._spawn(self._cancel(action), "order-io")
            elif isinstance(action, Record):
                data = action.data
                if action.kind == "order" and "side" in data:  # a new order row says where it was sent
                    data = {**data, "account": self.broker.account, "mode": self.broker.mode}
                self._put(action.kind, data)
                if action.kind in ("order", "fill"):
                    self._history_due = True
                elif action.kind == "managed_leg":
                    self._spawn(self._subscribe(), "order-io")  # a newly adopted leg needs its quotes
                if action.kind in ("fill", "managed_leg"):
                    self._positions_stale = True  # refreshed at the next heartbeat
            elif isinstance(action, Halt):
                self._put("control_state", {"halted": True, "halt_reason": action.reason})
        for order, why in suppressed:  # after the order's own records, so its final state is the rejection
            reason = why.split(":", 1)[0]
            self._put("operation", {"ts": self.clock().isoformat(), "kind": "order_suppressed",
                                    "message": f"{order.order_ref} not sent: {why}", "order_ref": order.order_ref,
                                    "reasons": [reason]})
            self._dispatch(OrderUpdate(order.order_ref, "rejected", 0.0, None, self.clock(), f"not sent: {why}"))

    def _why_not_send(self, order: PlaceOrder) -> str:
        """The edge's last word before an order leaves; '' means it may. The engine's own gates come first."""
        if self.stop_requested:
            return "stopping"
        if not self.lease_fresh():
            return "lease_unconfirmed: lease lost" if self.lease_lost else (
                "lease_unconfirmed: lease not confirmed within the last heartbeat")
        assert self.sink is not None
        try:
            self.sink.journal.append_intent({
                "order_ref": order.order_ref, "intent": order.intent, "symbol": order.symbol, "side": order.side,
                "qty": order.qty, "order_type": order.type, "limit_price": order.limit,
                "account": self.broker.account, "ts": self.clock().isoformat()})
        except OSError as exc:
            self._journal_error = f"journal {self.sink.journal_path} unwritable: {exc}"
            log.critical("%s: order flow stopped", self._journal_error)
            return f"journal_unwritable: {exc}"
        return ""

    async def _place(self, order: PlaceOrder) -> None:
        try:
            await self.broker.place_order(order)
        except (BrokerError, OSError, ConnectionError) as exc:
            # Refused before it left us (not connected): a definite outcome, not an unknown one.
            self._dispatch(OrderUpdate(order.order_ref, "rejected", 0.0, None, self.clock(), f"not sent: {exc}"))
            return
        # The intent was written before the order left (it outlives any death of this process); once the order's
        # bytes are out it goes to the disk too, against a host crash, without slowing the order itself.
        assert self.sink is not None
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.sink.journal.sync)
        except OSError as exc:
            self._journal_error = f"journal {self.sink.journal_path} cannot be synced: {exc}"
            log.critical("%s: order flow stopped", self._journal_error)

    async def _cancel(self, cancel: CancelOrder) -> None:
        try:
            await self.broker.cancel_order(cancel.order_ref)
        except (BrokerError, OSError, ConnectionError) as exc:
            self._put("operation", {"ts": self.clock().isoformat(), "kind": "order_cancel_failed",
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
            await self._sleep(None, self._disconnected)
            self._daemon(DaemonTrigger.DISCONNECTED)

    async def _every(self, name: str, interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
        """Run `job` every `interval_s` while the broker is connected. A failure never stops the daemon: it is
        recorded, shown in the lamp, and retried with backoff until it succeeds again."""
        delay, backoff = interval_s, 1.0
        while True:
            await self._sleep(delay)
            if self.stop_requested or not self.broker.connected or self.state not in (DaemonState.RUNNING,
                                                                                      DaemonState.PAUSED):
                delay = interval_s
                continue
            try:
                await job()
            except Exception as exc:  # noqa: BLE001 - whatever failed, the daemon keeps trading and retries
                if name not in self._failing:
                    log.error("%s failed (retrying with backoff): %r", name, exc)
                self._failing[name] = f"{name} failed: {exc!r}; retrying in {backoff:g} s"
                self._operation("periodic_failed", self._failing[name])
                delay, backoff = backoff, min(backoff * 2, PERIODIC_BACKOFF_MAX_S, interval_s)
                continue
            if self._failing.pop(name, None) is not None:
                self._operation("periodic_recovered", f"{name} succeeded again")
            delay, backoff = interval_s, 1.0

    async def _sync(self) -> None:
        """Account and positions, subscriptions and the broker's clock, then our orders and executions."""
        await self._refresh_account()
        await self._subscribe()
        await self._check_clock()
        await self._reconcile(at_connect=True)

    async def _reconcile(self, at_connect: bool = False) -> None:
        """Ask the broker about our orders (open, of any client, and completed) and executions: missed fills are
        booked, orders it holds that we did not know are adopted, unknown ones settled by its word."""
        assert self.engine is not None
        asked_at = None if at_connect else self.clock()
        report_since = datetime.combine(trading_date(self.clock()), time_of_day(0), ET)  # IB reports today's
        open_orders = await self.broker.open_orders()
        completed = await self.broker.completed_orders()
        executions = [f for f in await self.broker.executions() if self._ours(f)]
        for fill in executions:
            if not self.engine.knows_exec(fill.exec_id):
                self._operation("fill_recovered", f"{fill.exec_id} of {fill.order_ref} recovered from executions")
                self._dispatch(fill)
        orders = {o.order_ref: BrokerOrder(o.order_ref, o.side, o.qty, o.filled, o.status)
                  for o in [*completed, *open_orders] if self._ours(o)}
        self._dispatch(Reconciled(tuple(orders.values()), self.clock(), asked_at,
                                  frozenset(f.exec_id for f in executions), report_since))

    def _ours(self, item: Fill | OpenOrder | CompletedOrder) -> bool:
        """Our own order or execution: our prefix, in this account, on the underlying's shares. Anything else on
        the login (another account, another instrument, a client copying our prefix) never reaches the ledger."""
        assert self.engine is not None
        if self._commanders(item):
            return False  # the commander's option orders: their run follows them, the ledger never books them
        ours = (item.order_ref.startswith(ORDER_REF_PREFIX) and item.account == self.broker.account
                and item.symbol == self.engine.params.underlying and item.sec_type == "STK")
        key = item.exec_id if isinstance(item, Fill) else item.order_ref
        if not ours and item.order_ref.startswith(ORDER_REF_PREFIX) and key not in self._foreign:
            if len(self._foreign) >= FOREIGN_MEMORY:
                self._foreign.clear()  # at worst a foreign item is reported twice; memory stays bounded
            self._foreign.add(key)
            self._operation("foreign_ignored", f"{key} ({item.sec_type} {item.symbol}, account {item.account!r}) "
                            f"carries our prefix but is not ours (account {self.broker.account!r}, "
                            f"{self.engine.params.underlying} shares): ignored")
        return ours

    async def _check_clock(self) -> None:
        """Quote ages and trading hours use our clock: it must agree with the broker's."""
        broker_now = await self.broker.current_time()
        skew_s = (self.clock() - broker_now).total_seconds()
        skewed = abs(skew_s) > CLOCK_SKEW_MAX_S
        if skewed != bool(self._clock_skew):
            self._operation("clock_skew" if skewed else "clock_ok", f"host clock {skew_s:+.1f} s against the "
                            f"broker's (limit {CLOCK_SKEW_MAX_S:g} s)")
        self._clock_skew = f"host clock {skew_s:+.1f} s against the broker's" if skewed else ""
        if self.engine is not None:
            self._sync_edge()

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
        self._put("positions", {"ts": now.isoformat(), "account": self._account.get("account", ""),
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
                         "available_funds": summary.available_funds, "buying_power": summary.buying_power,
                         "maintenance_margin": summary.maintenance_margin, "cash": summary.cash,
                         "fetched_at": summary.ts.isoformat()}
        await self._refresh_positions()
        self._put("account", {"ts": summary.ts.isoformat(), **{k: v for k, v in self._account.items()
                                                                  if k != "fetched_at"}})

    # ---- heartbeat, status, control ----------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            now = self.clock()
            self._dispatch(Timer(now))
            self._finish_flatten_if_done()
            if self._positions_stale and self.broker.connected:
                self._spawn(self._refresh_positions_between_syncs(), "order-io")
            if self._journal_error:
                self._probe_journal()
            due = self._last_history is None or (now - self._last_history).total_seconds() >= self.history_s
            if not self.lease_lost:
                self._publish_status(now, history=due or self._history_due)
            await asyncio.sleep(self.heartbeat_s)

    def _probe_journal(self) -> None:
        """Order flow stopped because the journal could not be written: see whether it can be again."""
        assert self.sink is not None
        try:
            self.sink.journal.append([b"#probe\n"], sync=True)
        except OSError as exc:
            self._journal_error = f"journal {self.sink.journal_path} unwritable: {exc}"
            return
        log.warning("journal %s writable again: order flow resumes", self.sink.journal_path)
        self._journal_error = ""

    async def _lease_loop(self) -> None:
        """Renew the lease twice a heartbeat on a database lane of its own (never behind the sink). A renewal the
        database confirms keeps the fence open; one it cannot confirm closes it (`lease_unconfirmed`) until one
        does; one that finds the lease taken stops order flow at once and ends the daemon (exit 4)."""
        renew = self._lease_db(services.lease_renew)
        while True:
            started = time.monotonic()
            try:
                held = await asyncio.wait_for(renew(token=self.lease_token, daemon_clock_at=self.clock()),
                                              self.heartbeat_s)
            except (TimeoutError, DatabaseError) as exc:
                if not self._lease_trouble:
                    log.error("lease renewal not confirmed (order flow stops until it is): %r", exc)
                    self._operation("lease_unconfirmed", f"lease renewal not confirmed: {exc!r}")
                self._lease_trouble = f"lease renewal not confirmed: {exc!r}"
            else:
                if not held:
                    self._lose_lease()
                    return
                if self._lease_trouble:
                    self._operation("lease_confirmed", "lease confirmed again: order flow resumes")
                self._lease_trouble = ""
                self._lease_confirmed_at = started
            if self.engine is not None:
                self._sync_edge()
            await self._sleep(max(self.heartbeat_s / 2 - (time.monotonic() - started), 0.0))

    def _lose_lease(self) -> None:
        self.lease_lost = True
        message = "lease lost: another daemon holds it; no order leaves this daemon, which exits"
        log.critical(message)
        self._operation("lease_lost", message)
        if self.engine is not None:
            self._sync_edge()
        self.request_stop(message, EXIT_LEASE_LOST)

    def _publish_status(self, now: datetime, *, history: bool) -> None:
        self._put("status", {"payload": self.status_payload(now), "history": history})
        if history:
            self._last_history, self._history_due = now, False

    def status_payload(self, now: datetime) -> dict[str, Any]:
        """The /api/status/ shape, as the daemon sees itself; the web adds the heartbeat-age check."""
        assert self.engine is not None and self.sink is not None
        engine, sink = self.engine, self.sink
        check = engine.self_check(str(self.state))
        checks = [c.as_dict() for c in check.checks]
        if sink.degraded:
            checks.append(Check("database", "degraded", "db_unavailable",
                                f"journaling to {sink.journal_path}: {sink.last_error}").as_dict())
        for name, why in self._failing.items():
            checks.append(Check(name, "degraded", f"{name}_failed", why).as_dict())
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
                       "engine_version": ENGINE_VERSION, "db_degraded": sink.degraded,
                       "journal_backlog": sink.backlog, "records_rejected": sink.rejected},
            **view,
            "config": {"name": config.name if config else "", "params_hash": engine.params_hash},
            "account": {**self._account, "positions": self._positions_json()},
            "ts": now.isoformat(),
        }

    async def _control_loop(self) -> None:
        failing = False
        while True:
            try:
                for command in await self._control_db(services.control_commands_due)():
                    # Effect first, ack second: nothing a command forbids can happen after its ack.
                    self._take_effect(command)
                    if await self._control_db(services.control_command_ack)(command_id=command.pk):
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
            self._put("control_state", {"paused": True, "paused_reason": command.reason or f"paused by {who}"})
            self._finish(command.pk, "done", "paused: no new hedge orders")
        elif name == "resume":
            self._daemon(DaemonTrigger.RESUME)
            self._put("control_state", {"paused": False, "paused_reason": ""})
            self._finish(command.pk, "done", "resumed")
        elif name == "reset_halt":
            self._put("control_state", {"halted": False, "halt_reason": ""})
            self._finish(command.pk, "done", "risk halt reset")
        elif name == "flatten":
            self._daemon(DaemonTrigger.PAUSE)
            self._put("control_state", {"paused": True, "paused_reason": f"flatten by {who}"})
            self._flatten_command = command.pk
            self._finish_flatten_if_done()
        elif name == "reconnect":
            self._finish(command.pk, "done", "reconnecting to the broker")
            await self.broker.disconnect()
        elif name == "commander_run":
            # Off the hot path: the broker steps are awaited in a task of their own, the decision runs on the
            # control lane's thread, and quotes keep flowing to the engine meanwhile.
            self._spawn(self._commander_run(command), "commander")
        elif name == "refresh_account":
            try:
                await self._refresh_account()
                self._finish(command.pk, "done", "account and positions refreshed")
            except (BrokerError, OSError, ConnectionError) as exc:
                self._finish(command.pk, "rejected", f"refresh failed: {exc}")
        else:
            self._finish(command.pk, "rejected", f"the daemon does not carry out {name!r}")

    async def _commander_run(self, command: ControlCommand) -> None:
        """Reconcile, read the option chain, then let the commander decide and record (trading.commander)."""
        from trading import commander
        from trading.core.strategies import MarketView

        engine = self.engine
        assert engine is not None
        run_id = command.payload.get("run_id")
        now = self.clock()

        def step(name: str, outcome: str) -> dict[str, str]:
            return {"step": name, "by": "daemon", "at": self.clock().isoformat(), "outcome": outcome}

        async def fail(at: str, why: str) -> None:
            if run_id is not None:
                await self._control_db(commander.commander_fail)(run_id=run_id, step=at, why=why, now=self.clock())
            self._finish(command.pk, "rejected", f"commander run: {at}: {why}")

        try:
            blocked = "paused" if engine.paused else ("risk halt: " + engine.halt_reason if engine.halt_reason else "")
            if blocked:
                await fail("guard", f"blocked: {blocked}")
                return
            spot = engine.mid
            if spot is None:
                await fail("market", "no quote for the underlying yet")
                return
            await self._refresh_account()
            steps = [step("reconcile", f"{len(self._marks)} position(s)")]
            chain = await self.broker.option_chain(engine.params.underlying, spot=spot,
                                                   max_dte=settings.BIFROST_COMMANDER_MAX_DTE,
                                                   strikes_each_side=settings.BIFROST_COMMANDER_STRIKES)
            steps.append(step("option_chain", f"{len(chain)} option(s) quoted"))
            market = MarketView(engine.params.underlying, spot, trading_date(now), {
                (q.contract.right, q.contract.strike, q.contract.expiry): (q.contract, q.mid) for q in chain
                if q.contract.right and q.contract.strike is not None and q.contract.expiry is not None})
            pending = [(o.order_ref, (o.qty - o.filled) * (1 if o.side == "BUY" else -1))
                       for o in await self.broker.open_orders() if self._commanders(o)]
            run = await self._control_db(commander.commander_execute)(
                run_id=run_id, market=market, account=self._account, positions=self._positions_json(),
                open_orders=pending, steps=steps, now=self.clock())
            if run.state == "running":
                run = await self._commander_send(run)
        except (BrokerError, OSError, ConnectionError, TimeoutError) as exc:
            await fail("broker", str(exc))
            return
        except DatabaseError as exc:
            log.error("commander run #%s: database error: %s", run_id, exc)
            self._finish(command.pk, "rejected", f"commander run: database error: {exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a commander bug fails its run; it must never stop the hedger
            log.exception("commander run #%s crashed", run_id)
            await fail("internal", f"{type(exc).__name__}: {exc}")
            return
        self._finish(command.pk, "done" if run.state == "completed" else "rejected", f"run #{run.pk}: {run.summary}")

    async def _commander_send(self, run: CommanderRun) -> CommanderRun:
        """Send a live run's planned orders (limits, their orderRefs persisted before), each through the same fence
        and journal as a hedge; legs it buys are adopted once the account holds them; then follow the orders a
        while and record their outcomes. A run is sent once: a restarted daemon never picks it up again."""
        from trading import commander

        engine = self.engine
        assert engine is not None
        outcomes: dict[str, str] = {}
        for order in run.orders:
            ref = order["order_ref"]
            contract = commander.contract_from_json(order["contract"])
            place = PlaceOrder(ref, contract.symbol, order["action"], float(order["qty"]), "limit",
                               order["limit_price_usd"], intent="commander", contract=contract)
            if not (engine.paused or engine.halt_reason):
                await self._lease_confirmed_within(COMMANDER_FENCE_WAIT_S)
            why = "paused" if engine.paused else ("risk halt" if engine.halt_reason else self._why_not_send(place))
            if why:
                outcomes[ref] = f"not sent: {why}"
                continue
            try:
                await self.broker.place_order(place)
                outcomes[ref] = "submitted"
            except (BrokerError, OSError, ConnectionError) as exc:
                outcomes[ref] = f"not sent: {exc}"
        await self._control_db(commander.commander_orders_update)(run_id=run.pk, outcomes=outcomes, final=False,
                                                                  now=self.clock())
        bought = frozenset(commander.contract_from_json(o["contract"]).con_id for o in run.orders
                           if o["action"] == "BUY" and outcomes[o["order_ref"]] == "submitted")
        if bought:
            self._dispatch(AdoptLegs(bought, f"commander run #{run.pk}"))
        sent = {ref for ref, outcome in outcomes.items() if outcome == "submitted"}
        deadline = time.monotonic() + COMMANDER_FOLLOW_S
        while sent:
            working = {o.order_ref: o for o in await self.broker.open_orders() if o.order_ref in sent}
            for o in await self.broker.completed_orders():
                if o.order_ref in sent:
                    outcomes[o.order_ref] = f"filled {o.filled:g}" if o.status == "filled" else o.status
            for ref, o in working.items():
                outcomes[ref] = f"working ({o.filled:g} of {o.qty:g} filled)"
            if not working or time.monotonic() > deadline or self.stop_requested:
                break
            await self._sleep(0.2)
        await self._refresh_positions()  # the legs it bought are adopted, the ones it sold go to 0
        return await self._control_db(commander.commander_orders_update)(run_id=run.pk, outcomes=outcomes,
                                                                         final=True, now=self.clock())

    async def _lease_confirmed_within(self, timeout_s: float) -> None:
        """An option order is in no hurry: a renewal the database was slow to confirm closes the fence for a
        heartbeat or two, and the order waits for it to open again rather than fail its run over a hiccup."""
        deadline = time.monotonic() + timeout_s
        while not (self.lease_fresh() or self.lease_lost or self.stop_requested or time.monotonic() > deadline):
            await self._sleep(self.heartbeat_s / 4)

    def _commanders(self, item: OpenOrder | CompletedOrder | Fill) -> bool:
        """One of the commander's option orders in this account: followed by its run, never the hedger's."""
        return item.order_ref.startswith(COMMANDER_REF_PREFIX) and item.account == self.broker.account

    def _finish_flatten_if_done(self) -> None:
        engine = self.engine
        if self._flatten_command is None or engine is None or engine.flattening or engine.flatten_outcome is None:
            return
        outcome, why = engine.flatten_outcome
        self._finish(self._flatten_command, "done" if outcome == "done" else "rejected", why)
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
        self._put("command_result", {"command_id": command_id, "state": state, "result": result,
                                         "ts": self.clock().isoformat()})
        self._operation(f"command_{state}", f"command #{command_id} {state}: {result}")

    def _put(self, kind: str, data: dict[str, Any]) -> None:
        assert self.sink is not None
        self.sink.put(kind, data)

    def _operation(self, kind: str, message: str, actor: str = "daemon") -> None:
        self._put("operation", {"ts": self.clock().isoformat(), "kind": kind, "message": message, "actor": actor})

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.append(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task in self._tasks and task.get_name() == "order-io":
            self._tasks.remove(task)
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        if isinstance(exc, ConfigError):  # e.g. the broker found several accounts and no IB_ACCOUNT
            log.critical("configuration error: %s", exc)
            self.request_stop(f"configuration error: {exc}", EXIT_CONFIG)
            return
        log.error("task %s crashed", task.get_name(), exc_info=exc)
        self.request_stop(f"internal error in {task.get_name()}: {exc!r}", EXIT_INTERNAL)

    async def _sleep(self, seconds: float | None, wake: asyncio.Event | None = None) -> None:
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
