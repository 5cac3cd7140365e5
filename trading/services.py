"""Business actions on the trading tables: control commands, strategy configs, the lease, and the daemon's records."""
from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import DurationField, ExpressionWrapper, F
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from bifrost.ratelimit import allow
from trading.core.params import StrategyParams
from trading.errors import ControlCommandError, LeaseHeldError
from trading.models import (
    AccountSnapshot,
    ControlCommand,
    ControlState,
    DaemonLease,
    Decision,
    Fill,
    ManagedLeg,
    Operation,
    Order,
    Position,
    SinkProgress,
    StatusCurrent,
    StatusHistory,
    StrategyConfig,
)
from trading.selectors import lease_age, lease_is_fresh

log = logging.getLogger(__name__)

# ---- control commands ----------------------------------------------------------------------------------


def control_command_create(*, command: str, reason: str = "", user: str, source: str = "api",
                           payload: Mapping[str, Any] | None = None) -> ControlCommand:
    """Queue a command for the daemon. An unknown command is refused, never mapped to another one.

    When no daemon is running the command is settled at once (`_settle_offline`), under the lease row's lock so a
    daemon starting at the same moment either sees its effect in the persisted state or takes it from the queue."""
    if command not in ControlCommand.Command.values:
        raise ControlCommandError("command", f"unknown command {command!r}; expected one of "
                                  + ", ".join(ControlCommand.Command.values))
    if source != "api" and not allow(f"control:{user}", settings.BIFROST_CONTROL_RATE):
        # The API has DRF's throttle (a 429) at the same rate; the admin and the CLI are bounded here.
        raise ControlCommandError("command", f"too many commands from {user}: at most "
                                  f"{settings.BIFROST_CONTROL_RATE}")
    with transaction.atomic():
        lease = DaemonLease.objects.select_for_update().annotate(age=lease_age()).filter(name="daemon").first()
        cmd = ControlCommand.objects.create(command=command, reason=reason[:500], created_by=user, source=source,
                                            payload=dict(payload or {}))
        operation_log(kind="command", actor=user, message=f"{command} queued from {source}"
                      + (f": {reason}" if reason else ""), data={"command_id": cmd.pk})
        if command != ControlCommand.Command.START and not lease_is_fresh(lease):
            _settle_offline(cmd)
    if command == ControlCommand.Command.START:
        from trading.supervisor import daemon_start

        daemon_start(command=cmd)
    else:
        _notify_daemon(cmd.pk)
    cmd.refresh_from_db()
    return cmd


def _settle_offline(cmd: ControlCommand) -> None:
    """A command no daemon will take: pause and resume go to the persisted pause state (the next daemon starts
    paused or not), stop is done (nothing runs), anything else expires — a flatten must never run late."""
    if cmd.command == ControlCommand.Command.PAUSE:
        control_state_set(paused=True, paused_reason=cmd.reason or f"paused by {cmd.created_by}")
        state, result = ControlCommand.State.DONE, "the daemon is not running: it will start paused"
    elif cmd.command == ControlCommand.Command.RESUME:
        control_state_set(paused=False, paused_reason="")
        state, result = ControlCommand.State.DONE, "the daemon is not running: it will start unpaused"
    elif cmd.command == ControlCommand.Command.STOP:
        state, result = ControlCommand.State.DONE, "the daemon is not running"
    else:
        state, result = ControlCommand.State.EXPIRED, "expired: the daemon is not running (never carried out late)"
    control_command_finish(command_id=cmd.pk, state=state, result=result)
    operation_log(kind=f"command_{state}", actor=cmd.created_by, message=f"{cmd.command} #{cmd.pk} {state}: {result}",
                  data={"command_id": cmd.pk})


def control_commands_settle_before(*, started_at: datetime) -> None:
    """At a daemon's start: commands queued for a daemon that died before taking them are settled as offline."""
    pending = ControlCommand.objects.filter(state=ControlCommand.State.PENDING, created_at__lt=started_at).exclude(
        command=ControlCommand.Command.START).order_by("created_at", "pk")
    for cmd in pending:
        with transaction.atomic():
            if ControlCommand.objects.select_for_update().filter(pk=cmd.pk, state=ControlCommand.State.PENDING).exists():
                _settle_offline(cmd)


def _notify_daemon(command_id: int) -> None:
    """On PostgreSQL, wake the daemon at once instead of at its next poll."""
    from django.db import connection

    if connection.vendor == "postgresql":
        transaction.on_commit(lambda: _pg_notify(command_id))


def _pg_notify(command_id: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify('bifrost_control', %s)", [str(command_id)])


def control_commands_due() -> list[ControlCommand]:
    """Pending commands for the daemon in order, stop first; those older than the TTL (by the database's clock)
    are expired here instead of returned.

    Claiming is separate (`control_command_ack`): the daemon applies a command's effect in its own loop first
    and acks it after, so nothing the command forbids can happen after its ack."""
    ttl = timedelta(seconds=settings.BIFROST_COMMAND_TTL_S)
    pending = ControlCommand.objects.filter(state=ControlCommand.State.PENDING).exclude(
        command=ControlCommand.Command.START).annotate(  # start belongs to the supervisor path
        age=ExpressionWrapper(Now() - F("created_at"), output_field=DurationField()))
    due: list[ControlCommand] = []
    for cmd in sorted(pending, key=lambda c: (c.command != ControlCommand.Command.STOP, c.created_at, c.pk)):
        if cmd.age <= ttl:
            due.append(cmd)
            continue
        why = f"older than {ttl.total_seconds():g} s"
        expired = ControlCommand.objects.filter(pk=cmd.pk, state=ControlCommand.State.PENDING).update(
            state=ControlCommand.State.EXPIRED, result=f"expired: {why}", done_at=Now())
        if expired:
            operation_log(kind="command_expired", message=f"{cmd.command} #{cmd.pk} expired: {why}",
                          data={"command_id": cmd.pk})
    return due


def control_command_ack(*, command_id: int) -> bool:
    """Atomically move a command from pending to acked; False if someone else already took it."""
    return ControlCommand.objects.filter(pk=command_id, state=ControlCommand.State.PENDING).update(
        state=ControlCommand.State.ACKED, acked_at=Now()) == 1


def control_command_finish(*, command_id: int, state: str, result: str) -> None:
    ControlCommand.objects.filter(pk=command_id).exclude(
        state__in=[ControlCommand.State.DONE, ControlCommand.State.REJECTED, ControlCommand.State.EXPIRED]
    ).update(state=state, result=result, done_at=Now())


def control_state_set(**fields: object) -> ControlState:
    state = ControlState.load()
    for name, value in fields.items():
        setattr(state, name, value)
    state.save()
    return state


# ---- strategy configs ----------------------------------------------------------------------------------


def strategy_config_create(*, name: str, params: Mapping[str, object], user: str, activate: bool = False,
                           note: str = "") -> StrategyConfig:
    """Save a new immutable version; invalid params are refused with the field named."""
    parsed = StrategyParams.from_dict(params)
    with transaction.atomic():
        config = StrategyConfig.objects.create(name=name, params=parsed.to_dict(), params_hash=parsed.params_hash,
                                               created_by=user, note=note)
        if activate:
            strategy_config_activate(config=config, user=user)
    return config


def strategy_config_activate(*, config: StrategyConfig, user: str) -> None:
    with transaction.atomic():
        StrategyConfig.objects.filter(active=True).exclude(pk=config.pk).update(active=False)
        StrategyConfig.objects.filter(pk=config.pk).update(active=True)
        config.active = True
        operation_log(kind="config_activated", actor=user,
                      message=f"strategy config {config.name} [{config.params_hash[:8]}] activated",
                      params_hash=config.params_hash, data={"config_id": config.pk})


def strategy_params_active() -> tuple[StrategyParams, StrategyConfig]:
    """The active parameters; the defaults are saved as the first version when none exists."""
    config = StrategyConfig.objects.filter(active=True).first()
    if config is None:
        return StrategyParams(), strategy_config_create(name="default", params={}, user="system", activate=True)
    return StrategyParams.from_dict(config.params), config


# ---- the lease -----------------------------------------------------------------------------------------


def lease_acquire(*, mode: str, heartbeat_s: float) -> DaemonLease:
    """Take the single-instance lease, or raise LeaseHeldError naming the holder of a fresh one.

    Fresh means: renewed less than LEASE_STALE_INTERVALS of the *holder's* interval ago by the *database's* clock,
    so a newcomer's shorter heartbeat or a host clock running ahead cannot take a healthy daemon's lease."""
    owner = f"{socket.gethostname()}:{os.getpid()}"
    fields = dict(token=uuid.uuid4().hex[:8], owner=owner, host=socket.gethostname(), pid=os.getpid(), mode=mode,
                  started_at=Now(), heartbeat_at=Now(), heartbeat_interval=timedelta(seconds=heartbeat_s),
                  daemon_clock_at=timezone.now(), released_at=None)
    with transaction.atomic():
        lease = DaemonLease.objects.select_for_update().annotate(age=lease_age()).filter(name="daemon").first()
        if lease is None:
            DaemonLease.objects.create(name="daemon", **fields)
        else:
            if lease_is_fresh(lease):
                raise LeaseHeldError(lease.owner, lease.heartbeat_at.isoformat())
            DaemonLease.objects.filter(pk=lease.pk).update(**fields)
            if lease.released_at is None:
                operation_log(kind="lease_takeover", message=f"stale lease of {lease.owner} (last renewed "
                              f"{lease.age.total_seconds():.1f} s ago by the database clock) taken over by {owner}")
    operation_log(kind="daemon_start", message=f"daemon {owner} started in {mode} mode (lease {fields['token']})")
    return DaemonLease.objects.get(name="daemon")


def lease_renew(*, token: str, daemon_clock_at: datetime) -> bool:
    """Renew our lease at the database's now(); False means another daemon holds it (ours was taken over)."""
    return DaemonLease.objects.filter(name="daemon", token=token, released_at__isnull=True).update(
        heartbeat_at=Now(), daemon_clock_at=daemon_clock_at) == 1


def lease_release(*, token: str) -> None:
    DaemonLease.objects.filter(name="daemon", token=token).update(released_at=Now(), heartbeat_at=Now())


# ---- the operations log --------------------------------------------------------------------------------


def operation_log(*, kind: str, message: str, actor: str = "system", ts: datetime | None = None,
                  **fields: Any) -> Operation:
    return Operation.objects.create(ts=ts or timezone.now(), kind=kind, message=message, actor=actor, **fields)


# ---- the daemon's records ------------------------------------------------------------------------------

_OPERATION_FIELDS = {"kind", "message", "actor", "order_ref", "side", "qty", "price", "reasons", "trading_state",
                     "params_hash", "data"}


def records_write(*, source: str, records: Sequence[tuple[int, str, Mapping[str, Any]]]) -> int:
    """Write a batch of one daemon's numbered records in one transaction: all of it or none of it.

    Records at or below the source's progress mark were applied before (a replayed journal, a write that outlived
    its deadline) and are skipped, so a record is never applied twice. Returns how many were applied."""
    with transaction.atomic():
        progress, _ = SinkProgress.objects.select_for_update().get_or_create(source=source)
        fresh = [(seq, kind, data) for seq, kind, data in records if seq > progress.last_seq]
        for _, kind, data in fresh:
            writer = _WRITERS.get(kind)
            if writer is None:
                raise ValueError(f"unknown record kind {kind!r}")
            writer(data)
        if fresh:
            SinkProgress.objects.filter(pk=progress.pk).update(last_seq=max(seq for seq, _, _ in fresh))
    return len(fresh)


def order_intents_write(intents: Iterable[Mapping[str, Any]]) -> int:
    """Orders whose placement was journaled before they left, written if the database never got them: their
    outcome is unknown until the broker's word (reconciliation) settles it. Idempotent, in any order. A commander
    order is not one of these: its run stored its orderRef before it left and follows it (an `Order` row would be a
    hedge order nobody settles)."""
    created = 0
    for data in intents:
        if data["intent"] == "commander":
            continue
        ts = _ts(data["ts"])
        _, new = Order.objects.get_or_create(order_ref=data["order_ref"], defaults=dict(
            intent=data["intent"], account=data.get("account", ""), mode=data.get("mode", ""), symbol=data["symbol"], side=data["side"],
            qty=data["qty"], order_type=data["order_type"], limit_price=_dec(data.get("limit_price")), state="sent",
            spot_at_decision=data.get("spot_at_decision"), params_hash=data.get("params_hash", ""),
            message="recovered from the journal: placed, outcome unknown until reconciled", created_at=ts,
            updated_at=ts))
        created += new
    return created


def _ts(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    parsed = parse_datetime(str(value))
    if parsed is None:
        raise ValueError(f"bad timestamp {value!r}")
    return parsed


def _dec(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(round(float(value), 6)))  # type: ignore[arg-type]


def _write_operation(data: Mapping[str, Any]) -> None:
    fields = {k: v for k, v in data.items() if k in _OPERATION_FIELDS and v is not None}
    extra = {k: v for k, v in data.items() if k not in _OPERATION_FIELDS and k != "ts"}
    if extra:
        fields["data"] = {**fields.get("data", {}), **extra}
    if "price" in fields:
        fields["price"] = _dec(fields["price"])
    fields.setdefault("actor", "daemon")
    Operation.objects.create(ts=_ts(data["ts"]), **fields)


def _write_decision(data: Mapping[str, Any]) -> None:
    Decision.objects.create(
        ts=_ts(data["ts"]), allowed=data["allowed"], reasons=list(data["reasons"]),
        intent_shares=data["intent_shares"], order_shares=data.get("order_shares"),
        net_delta_shares=data["net_delta_shares"], spot=data.get("spot"),
        trading_state=data["trading_state"], classification=data.get("classification", ""),
        order_ref=data.get("order_ref", ""), params_hash=data.get("params_hash", ""),
    )


def _write_order(data: Mapping[str, Any]) -> None:
    ts = _ts(data["ts"])
    ref = data["order_ref"]
    if "side" in data:  # a new order, or one a later daemon adopted at the broker
        fields = dict(
            intent=data["intent"], account=data.get("account", ""), mode=data.get("mode", ""), symbol=data["symbol"],
            side=data["side"], qty=data["qty"], order_type=data["order_type"],
            limit_price=_dec(data.get("limit_price")), state=data["state"],
            spot_at_decision=data.get("spot_at_decision"), params_hash=data.get("params_hash", ""), updated_at=ts,
        )
        # The row may exist already (its journaled intent, written first): the record completes it, but the time the
        # order was decided stays, even when a later daemon adopts the order at the broker.
        Order.objects.update_or_create(order_ref=ref, defaults=fields, create_defaults={**fields, "created_at": ts})
        return
    updates: dict[str, Any] = {"state": data["state"], "updated_at": ts}
    if "filled_qty" in data:
        updates["filled_qty"] = data["filled_qty"]
    if data.get("message"):
        updates["message"] = data["message"]
    Order.objects.filter(order_ref=ref).update(**updates)


def _write_fill(data: Mapping[str, Any]) -> None:
    if data.get("replaces"):  # a broker's correction: the corrected execution is no longer a fill of ours
        Fill.objects.filter(exec_id=data["replaces"]).delete()
    _, created = Fill.objects.get_or_create(exec_id=data["exec_id"], defaults=dict(
        order_ref=data["order_ref"], account=data.get("account", ""), con_id=data.get("con_id"), symbol=data["symbol"], side=data["side"], qty=data["qty"],
        price=_dec(data["price"]), commission=_dec(data["commission"]), ts=_ts(data["ts"]),
    ))
    if created or data.get("replaces"):
        order = Order.objects.filter(order_ref=data["order_ref"]).first()
        if order is not None:
            fills = Fill.objects.filter(order_ref=order.order_ref)
            qty = sum(f.qty for f in fills)
            order.filled_qty = qty
            order.avg_price = _dec(sum(f.qty * float(f.price) for f in fills) / qty) if qty else None
            order.save(update_fields=["filled_qty", "avg_price"])


def _write_managed_leg(data: Mapping[str, Any]) -> None:
    ManagedLeg.objects.update_or_create(con_id=data["con_id"], defaults=dict(
        symbol=data["symbol"], local_symbol=data.get("local_symbol", ""), right=data["right"],
        strike=data["strike"], expiry=date.fromisoformat(data["expiry"]), multiplier=data["multiplier"],
        adopted_qty=data["adopted_qty"], adopted_at=_ts(data["ts"]), active=True,
    ))


def _write_status(data: Mapping[str, Any]) -> None:
    payload = data["payload"]
    fields = dict(ts=_ts(payload["ts"]), daemon_state=payload["daemon"]["state"],
                  trading_state=payload["trading"]["state"], verdict=payload["verdict"], payload=payload)
    # Only the lease holder's snapshot is current: a daemon whose lease was taken over, or a dead one's journal
    # replayed late, must not flip the control room to its old view.
    if DaemonLease.objects.filter(name="daemon", token=payload["daemon"].get("lease")).exists():
        StatusCurrent.objects.update_or_create(id=1, defaults=fields)
    if data.get("history"):
        StatusHistory.objects.create(**fields)


def _write_control_state(data: Mapping[str, Any]) -> None:
    control_state_set(**data)


def _write_command_result(data: Mapping[str, Any]) -> None:
    control_command_finish(command_id=data["command_id"], state=data["state"], result=data["result"])


def _write_positions(data: Mapping[str, Any]) -> None:
    ts = _ts(data["ts"])
    account = data.get("account", "")
    seen = []
    for p in data["positions"]:
        seen.append(p["con_id"])
        Position.objects.update_or_create(account=account, con_id=p["con_id"], defaults=dict(
            symbol=p["symbol"], local_symbol=p.get("local_symbol", ""), sec_type=p["sec_type"],
            right=p.get("right") or "", strike=p.get("strike"),
            expiry=date.fromisoformat(p["expiry"]) if p.get("expiry") else None,
            multiplier=p.get("multiplier", 1), qty=p["qty"], avg_cost=p.get("avg_cost"),
            market_price=p.get("market_price"), managed=p.get("managed", False), data=p.get("data", {}),
            updated_at=ts,
        ))
    Position.objects.filter(account=account).exclude(con_id__in=seen).delete()


def _write_account(data: Mapping[str, Any]) -> None:
    AccountSnapshot.objects.create(
        ts=_ts(data["ts"]), account=data.get("account", ""), net_liquidation=_dec(data.get("net_liquidation")),
        buying_power=_dec(data.get("buying_power")), maintenance_margin=_dec(data.get("maintenance_margin")),
        cash=_dec(data.get("cash")), data={**data.get("data", {}), "available_funds": data.get("available_funds")},
    )


_WRITERS = {
    "operation": _write_operation,
    "decision": _write_decision,
    "order": _write_order,
    "fill": _write_fill,
    "managed_leg": _write_managed_leg,
    "status": _write_status,
    "control_state": _write_control_state,
    "command_result": _write_command_result,
    "positions": _write_positions,
    "account": _write_account,
    "lease": lambda data: None,  # journals from before the lease was renewed outside the sink
}
