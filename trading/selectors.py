"""Reads of the trading tables: what the daemon restores at start and what the control room shows."""
from __future__ import annotations

from datetime import date, datetime

from django.db.models import Sum

from trading.core.calendar import ET
from trading.core.engine import EngineSeed
from trading.core.events import Contract, Side
from trading.core.pnl import Holding
from trading.models import ControlState, Fill, ManagedLeg, Order, StatusCurrent

OPEN_ORDER_STATES = ("plan", "sent", "working", "partial", "unknown")


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
        seen_exec_ids=frozenset(Fill.objects.values_list("exec_id", flat=True)),
        next_seq=1 + max((int(r.rsplit(":", 1)[1]) for r in refs if r.rsplit(":", 1)[1].isdigit()), default=0),
        daily_hedges=todays.count(),
        last_hedge_at=last_order.created_at if last_order else None,
        last_hedge_price=last_price,
        daily_pnl_usd=float(last_pnl.get("daily_usd") or 0.0) if last_pnl.get("trading_date") == today.isoformat()
        else 0.0,
    )


def _side(value: str) -> Side:
    return "BUY" if value == "BUY" else "SELL"


def hedge_shares_total() -> float:
    buys = Fill.objects.filter(side="BUY").aggregate(s=Sum("qty"))["s"] or 0.0
    sells = Fill.objects.filter(side="SELL").aggregate(s=Sum("qty"))["s"] or 0.0
    return float(buys - sells)


def status_current_get() -> StatusCurrent | None:
    return StatusCurrent.objects.filter(id=1).first()
