"""Business actions on the trading tables: control commands, strategy configs, the lease, and the daemon's records."""
from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

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
    StatusCurrent,
    StatusHistory,
    StrategyConfig,
)

log = logging.getLogger(__name__)
LEASE_STALE_INTERVALS = 3

# ---- control commands ----------------------------------------------------------------------------------


def control_command_create(*, command: str, reason: str = "", user: str, source: str = "api") -> ControlCommand:
    """Queue a command for the daemon. An unknown command is refused, never mapped to another one."""
    if command not in ControlCommand.Command.values:
        raise ControlCommandError("command", f"unknown command {command!r}; expected one of "
                                  + ", ".join(ControlCommand.Command.values))
    cmd = ControlCommand.objects.create(command=command, reason=reason[:500], created_by=user, source=source)
    operation_log(kind="command", actor=user, message=f"{command} queued from {source}"
                  + (f": {reason}" if reason else ""), data={"command_id": cmd.pk})
    if command == ControlCommand.Command.START:
        from trading.supervisor import daemon_start

        daemon_start(command=cmd)
    else:
        _notify_daemon(cmd.pk)
    return cmd


def _notify_daemon(command_id: int) -> None:
    """On PostgreSQL, wake the daemon at once instead of at its next poll."""
    from django.db import connection

    if connection.vendor == "postgresql":
        transaction.on_commit(lambda: _pg_notify(command_id))


def _pg_notify(command_id: int) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify('bifrost_control', %s)", [str(command_id)])


def control_commands_due(*, daemon_started_at: datetime, now: datetime) -> list[ControlCommand]:
    """Pending commands for the daemon in order, stop first; old ones are expired here instead of returned.

    Claiming is separate (`control_command_ack`): the daemon applies a command's effect in its own loop first
    and acks it after, so nothing the command forbids can happen after its ack."""
    ttl = timedelta(seconds=settings.BIFROST_COMMAND_TTL_S)
    pending = ControlCommand.objects.filter(state=ControlCommand.State.PENDING).exclude(
        command=ControlCommand.Command.START)  # start belongs to the supervisor path, not to a running daemon
    due: list[ControlCommand] = []
    for cmd in sorted(pending, key=lambda c: (c.command != ControlCommand.Command.STOP, c.created_at, c.pk)):
        if cmd.created_at < daemon_started_at:
            why = "created before this daemon started"
        elif now - cmd.created_at > ttl:
            why = f"older than {ttl.total_seconds():g} s"
        else:
            due.append(cmd)
            continue
        expired = ControlCommand.objects.filter(pk=cmd.pk, state=ControlCommand.State.PENDING).update(
            state=ControlCommand.State.EXPIRED, result=f"expired: {why}", done_at=now)
        if expired:
            operation_log(kind="command_expired", message=f"{cmd.command} #{cmd.pk} expired: {why}",
                          data={"command_id": cmd.pk})
    return due


def control_command_ack(*, command_id: int, now: datetime) -> bool:
    """Atomically move a command from pending to acked; False if someone else already took it."""
    return ControlCommand.objects.filter(pk=command_id, state=ControlCommand.State.PENDING).update(
        state=ControlCommand.State.ACKED, acked_at=now) == 1


def control_command_finish(*, command_id: int, state: str, result: str, now: datetime | None = None) -> None:
    ControlCommand.objects.filter(pk=command_id).exclude(
        state__in=[ControlCommand.State.DONE, ControlCommand.State.REJECTED, ControlCommand.State.EXPIRED]
    ).update(state=state, result=result, done_at=now or timezone.now())


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


def lease_acquire(*, mode: str, heartbeat_s: float, now: datetime) -> DaemonLease:
    """Take the single-instance lease, or raise LeaseHeldError naming the holder of a fresh one."""
    stale_before = now - timedelta(seconds=heartbeat_s * LEASE_STALE_INTERVALS)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    with transaction.atomic():
        lease = DaemonLease.objects.select_for_update().filter(name="daemon").first()
        if lease is not None and lease.released_at is None and lease.heartbeat_at >= stale_before:
            raise LeaseHeldError(lease.owner, lease.heartbeat_at.isoformat())
        taken_over = lease is not None and lease.released_at is None
        fields = dict(token=uuid.uuid4().hex[:8], owner=owner, host=socket.gethostname(), pid=os.getpid(),
                      mode=mode, started_at=now, heartbeat_at=now, released_at=None)
        if lease is None:
            lease = DaemonLease.objects.create(name="daemon", **fields)
        else:
            previous = lease.owner
            for k, v in fields.items():
                setattr(lease, k, v)
            lease.save()
            if taken_over:
                operation_log(kind="lease_takeover", message=f"stale lease of {previous} taken over by {owner}")
    operation_log(kind="daemon_start", message=f"daemon {owner} started in {mode} mode (lease {lease.token})")
    return lease


def lease_heartbeat(*, token: str, now: datetime) -> bool:
    return DaemonLease.objects.filter(name="daemon", token=token, released_at__isnull=True).update(
        heartbeat_at=now) == 1


def lease_release(*, token: str, now: datetime) -> None:
    DaemonLease.objects.filter(name="daemon", token=token).update(released_at=now, heartbeat_at=now)


# ---- the operations log --------------------------------------------------------------------------------


def operation_log(*, kind: str, message: str, actor: str = "system", ts: datetime | None = None,
                  **fields: Any) -> Operation:
    return Operation.objects.create(ts=ts or timezone.now(), kind=kind, message=message, actor=actor, **fields)


# ---- the daemon's records ------------------------------------------------------------------------------

_OPERATION_FIELDS = {"kind", "message", "actor", "order_ref", "side", "qty", "price", "reasons", "trading_state",
                     "params_hash", "data"}


def records_write(records: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Write a batch of daemon records in one transaction: all of it or none of it (then it is journaled)."""
    with transaction.atomic():
        for kind, data in records:
            _WRITERS[kind](data)


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
        intent_shares=data["intent_shares"], net_delta_shares=data["net_delta_shares"], spot=data.get("spot"),
        trading_state=data["trading_state"], classification=data.get("classification", ""),
        order_ref=data.get("order_ref", ""), params_hash=data.get("params_hash", ""),
    )


def _write_order(data: Mapping[str, Any]) -> None:
    ts = _ts(data["ts"])
    ref = data["order_ref"]
    if "side" in data:  # a new order
        Order.objects.update_or_create(order_ref=ref, defaults=dict(
            intent=data["intent"], symbol=data["symbol"], side=data["side"], qty=data["qty"],
            order_type=data["order_type"], limit_price=_dec(data.get("limit_price")), state=data["state"],
            spot_at_decision=data.get("spot_at_decision"), params_hash=data.get("params_hash", ""),
            created_at=ts, updated_at=ts,
        ))
        return
    updates: dict[str, Any] = {"state": data["state"], "updated_at": ts}
    if "filled_qty" in data:
        updates["filled_qty"] = data["filled_qty"]
    if data.get("message"):
        updates["message"] = data["message"]
    Order.objects.filter(order_ref=ref).update(**updates)


def _write_fill(data: Mapping[str, Any]) -> None:
    _, created = Fill.objects.get_or_create(exec_id=data["exec_id"], defaults=dict(
        order_ref=data["order_ref"], symbol=data["symbol"], side=data["side"], qty=data["qty"],
        price=_dec(data["price"]), commission=_dec(data["commission"]), ts=_ts(data["ts"]),
    ))
    if created:
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
    StatusCurrent.objects.update_or_create(id=1, defaults=fields)
    if data.get("history"):
        StatusHistory.objects.create(**fields)


def _write_control_state(data: Mapping[str, Any]) -> None:
    control_state_set(**data)


def _write_command_result(data: Mapping[str, Any]) -> None:
    control_command_finish(command_id=data["command_id"], state=data["state"], result=data["result"],
                           now=_ts(data["ts"]))


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
        cash=_dec(data.get("cash")), data=data.get("data", {}),
    )


def _write_lease(data: Mapping[str, Any]) -> None:
    lease_heartbeat(token=data["token"], now=_ts(data["ts"]))


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
    "lease": _write_lease,
}
