"""Reads of the trading tables: what the daemon restores at start and what the control room shows."""
from __future__ import annotations

from datetime import date, datetime, timedelta

from django.db.models import DurationField, ExpressionWrapper, F, Sum
from django.db.models.functions import Now

from trading.core.calendar import ET
from trading.core.engine import EXEC_MEMORY_DAYS, BookedFill, EngineSeed
from trading.core.events import Contract, Side
from trading.core.pnl import Holding
from trading.models import CommanderRun, ControlState, DaemonLease, Fill, ManagedLeg, Order, StatusCurrent

OPEN_ORDER_STATES = ("plan", "sent", "working", "partial", "unknown")
# A lease is stale after this many of its holder's intervals without a renewal (by the database's clock).
LEASE_STALE_INTERVALS = 3


def lease_age() -> ExpressionWrapper:
    """How long ago the lease was renewed, measured by the database's clock."""
    return ExpressionWrapper(Now() - F("heartbeat_at"), output_field=DurationField())


def lease_get() -> DaemonLease | None:
    """The lease row with its age by the database's clock (`.age`)."""
    return DaemonLease.objects.annotate(age=lease_age()).filter(name="daemon").first()


def lease_is_fresh(lease: DaemonLease | None) -> bool:
    """Held and renewed within LEASE_STALE_INTERVALS of its holder's own interval; `lease` must carry the `age`
    annotation (`lease_age`), i.e. come from a query that measured it by the database's clock."""
    return (lease is not None and lease.released_at is None
            and lease.age < lease.heartbeat_interval * LEASE_STALE_INTERVALS)


def engine_seed_load(*, today: date) -> EngineSeed:
    """Everything the engine must remember across restarts, rebuilt from the tables (the ledger of own fills)."""
    control = ControlState.load()
    managed = tuple(
        (Contract(con_id=leg.con_id, symbol=leg.symbol, sec_type="OPT", right=leg.right,  # type: ignore[arg-type]
                  strike=leg.strike, expiry=leg.expiry, multiplier=leg.multiplier, local_symbol=leg.local_symbol),
         leg.adopted_qty)
        for leg in ManagedLeg.objects.filter(active=True)
    )
    hedge = Holding()
    commissions = 0.0
    last_price: float | None = None
    for fill in Fill.objects.order_by("ts", "id"):
        hedge.trade(fill.qty if fill.side == "BUY" else -fill.qty, float(fill.price))
        commissions += float(fill.commission)
        last_price = float(fill.price)
    open_orders = tuple(
        (o.order_ref, _side(o.side), o.qty, o.filled_qty, o.intent)
        for o in Order.objects.filter(state__in=OPEN_ORDER_STATES)
    )
    day_start = datetime(today.year, today.month, today.day, tzinfo=ET)
    todays = Order.objects.filter(intent="hedge", created_at__gte=day_start)
    last_order = Order.objects.filter(intent="hedge").order_by("-created_at").first()
    refs = Order.objects.values_list("order_ref", flat=True)
    last = StatusCurrent.objects.filter(id=1).first()
    last_pnl = last.payload.get("pnl", {}) if last else {}
    return EngineSeed(
        paused=control.paused,
        halt_reason=control.halt_reason if control.halted else "",
        managed=managed,
        hedge_shares=hedge.qty,
        hedge_avg_cost=hedge.avg_cost,
        hedge_realized_usd=hedge.realized_usd,
        commissions_usd=commissions,
        open_orders=open_orders,
        recent_fills=tuple(
            BookedFill(f.exec_id, f.qty if f.side == "BUY" else -f.qty, float(f.price), f.ts)
            for f in Fill.objects.filter(ts__gte=day_start - timedelta(days=EXEC_MEMORY_DAYS)).order_by("ts", "id")),
        next_seq=1 + max((int(r.rsplit(":", 1)[1]) for r in refs if r.rsplit(":", 1)[1].isdigit()), default=0),
        daily_hedges=todays.count(),
        last_hedge_at=last_order.created_at if last_order else None,
        last_hedge_price=last_price,
        daily_pnl_usd=float(last_pnl.get("daily_usd") or 0.0),
        daily_pnl_date=date.fromisoformat(last_pnl["trading_date"]) if last_pnl.get("trading_date") else None,
        to_adopt=commander_buys_unadopted(since=day_start),
    )


def commander_buys_unadopted(*, since: datetime) -> tuple[tuple[int, str], ...]:
    """The options live commander runs since `since` bought, or may have (planned, sent, working or filled), that
    are not managed legs yet: a daemon restarted before their fill still adopts them. Their orders are DAY orders,
    so today's runs are the only ones whose buys can still fill."""
    managed = set(ManagedLeg.objects.filter(active=True).values_list("con_id", flat=True))
    out: dict[int, str] = {}
    for run in CommanderRun.objects.filter(dry_run=False, executed_at__gte=since).order_by("executed_at", "id"):
        for order in run.orders:
            con_id = int(order["contract"]["con_id"])
            if (order["action"] == "BUY" and con_id not in managed
                    and not order["outcome"].startswith(("not sent", "rejected"))):
                out.setdefault(con_id, f"commander run #{run.pk}")
    return tuple(out.items())


def _side(value: str) -> Side:
    return "BUY" if value == "BUY" else "SELL"


def hedge_shares_total() -> float:
    buys = Fill.objects.filter(side="BUY").aggregate(s=Sum("qty"))["s"] or 0.0
    sells = Fill.objects.filter(side="SELL").aggregate(s=Sum("qty"))["s"] or 0.0
    return float(buys - sells)


def status_current_get() -> StatusCurrent | None:
    return StatusCurrent.objects.filter(id=1).first()
