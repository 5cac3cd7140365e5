"""Reads for the control room. The status payload adds the one check a dead daemon cannot make: heartbeat age."""
from __future__ import annotations

import copy
import time
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from trading.core.selfcheck import verdict_of
from trading.models import DaemonLease, StatusCurrent
from trading.selectors import LEASE_STALE_INTERVALS, lease_get, lease_is_fresh

LAMP = {"ok": "green", "degraded": "yellow", "blocked": "red"}
# How long one judged payload serves every reader of a web process. The daemon writes it once per heartbeat (1 s)
# and the heartbeat turns stale after 3: 0.2 s more age changes no verdict, and it spares the database two
# queries per API call and per lamp poll (bench/api_load.py: ~630 -> ~1000 req/s).
STATUS_REUSE_S = 0.2
_recent: tuple[float, dict[str, Any]] = (-float("inf"), {})


def _empty_payload() -> dict[str, Any]:
    return {
        "lamp": "red", "verdict": "blocked", "block_reasons": [], "checks": [],
        "daemon": {"state": "stopped", "mode": settings.BIFROST_BROKER if settings.BIFROST_BROKER == "sim"
                   else settings.BIFROST_MODE, "pid": None, "host": None, "started_at": None,
                   "heartbeat_at": None, "heartbeat_age_s": None, "broker_connected": False},
        "trading": {"state": "boot", "paused": False, "halted": False},
        "market": {"symbol": None, "bid": None, "ask": None, "spot": None, "data_lag_ms": None},
        "book": {"net_delta_shares": None, "option_delta_shares": None, "hedge_shares": None, "gamma": None,
                 "theta": None, "vega": None, "legs": []},
        "pnl": {"daily_usd": None, "realized_usd": None, "unrealized_usd": None},
        "counters": {"daily_hedges": 0},
        "config": {"name": None, "params_hash": None},
        "account": {},
        "ts": None,
    }


def status_payload_recent() -> dict[str, Any]:
    """status_payload_get() built at most STATUS_REUSE_S ago in this process; shared between readers: read only."""
    global _recent
    built_at, payload = _recent
    if time.monotonic() - built_at >= STATUS_REUSE_S:
        payload = status_payload_get()
        _recent = (time.monotonic(), payload)
    return payload


def status_payload_get() -> dict[str, Any]:
    """The /api/status/ payload: the daemon's last snapshot, judged by its lease exactly as the lease itself is —
    by the database's clock against the holder's own interval — so the lamp and the lease never disagree. A daemon
    that no longer answers has its checks shown as `unknown` and its figures as of their time, never as "ok"."""
    current = StatusCurrent.objects.filter(id=1).first()
    payload = copy.deepcopy(current.payload) if current is not None else _empty_payload()
    lease = lease_get()
    daemon = payload["daemon"]
    age_s = lease.age.total_seconds() if lease is not None else None
    daemon["heartbeat_age_s"] = None if age_s is None else round(age_s, 3)
    checks = [c for c in payload["checks"] if c["name"] != "heartbeat"]
    reasons = [r for r in payload["block_reasons"] if r not in ("daemon_not_running", "heartbeat_stale")]
    if current is None or lease is None or lease.released_at is not None or daemon["state"] == "stopped":
        daemon["state"] = "stopped"
        heartbeat = {"name": "heartbeat", "status": "blocked", "reason": "daemon_not_running",
                     "detail": "the daemon is not running"}
    elif not lease_is_fresh(lease):
        limit_s = lease.heartbeat_interval.total_seconds() * LEASE_STALE_INTERVALS
        heartbeat = {"name": "heartbeat", "status": "blocked", "reason": "heartbeat_stale",
                     "detail": f"last heartbeat {age_s:.1f} s ago (stale after {limit_s:g} s)"}
    else:
        heartbeat = {"name": "heartbeat", "status": "ok", "reason": "", "detail": f"last heartbeat {age_s:.1f} s ago"}
        lag_s = _snapshot_lag_s(lease, payload)
        if lag_s is not None and lag_s >= lease.heartbeat_interval.total_seconds() * LEASE_STALE_INTERVALS:
            checks = [c for c in checks if c["name"] != "database"]
            checks.append({"name": "database", "status": "degraded", "reason": "db_unavailable",
                           "detail": f"the daemon is alive but its last snapshot is {lag_s:.1f} s old: "
                                     "its database writes are behind (journaling)"})
    daemon["responding"] = heartbeat["status"] == "ok"
    if not daemon["responding"]:
        checks = [{**c, "status": "unknown"} for c in checks]
        reasons = []
        lag_s = (_snapshot_lag_s(lease, payload) or 0.0) if lease is not None else 0.0
        daemon["snapshot_age_s"] = None if age_s is None or current is None else round(age_s + max(lag_s, 0.0), 1)
    payload["checks"] = [*checks, heartbeat]
    payload["block_reasons"] = reasons + ([heartbeat["reason"]] if heartbeat["status"] == "blocked" else [])
    payload["verdict"] = verdict_of(c["status"] for c in payload["checks"])
    payload["lamp"] = LAMP[payload["verdict"]]
    return payload


def _snapshot_lag_s(lease: DaemonLease, payload: dict[str, Any]) -> float | None:
    """How far the written snapshot trails the daemon's last renewal, both stamped by the daemon's own clock."""
    snapshot_at = parse_datetime(payload["ts"]) if payload.get("ts") else None
    if lease.daemon_clock_at is None or snapshot_at is None or payload["daemon"].get("lease") != lease.token:
        return None
    return (lease.daemon_clock_at - snapshot_at).total_seconds()


def positions_list(*, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every account position with its mark, P&L, moneyness and greeks, and whether Bifrost manages it."""
    from trading.core.greeks import bs_greeks, implied_vol, year_fraction
    from trading.core.params import StrategyParams
    from trading.models import Position, StrategyConfig

    now = now or timezone.now()
    current = StatusCurrent.objects.filter(id=1).first()
    market = current.payload.get("market", {}) if current else {}
    legs = {leg["con_id"]: leg for leg in (current.payload.get("book", {}).get("legs", []) if current else [])}
    config = StrategyConfig.objects.filter(active=True).first()
    params = StrategyParams.from_dict(config.params) if config else StrategyParams()
    rows = []
    for p in Position.objects.all():
        mark = p.market_price
        spot = market.get("spot") if p.symbol == market.get("symbol") else None
        pnl = (mark - p.avg_cost) * p.qty * p.multiplier if mark is not None and p.avg_cost is not None else None
        greeks: dict[str, float | None] | None = None
        moneyness = None
        if p.sec_type == "STK":
            greeks = {"iv": None, "delta": 1.0, "gamma": 0.0, "theta": 0.0, "vega": 0.0}
        elif p.con_id in legs:
            leg = legs[p.con_id]
            greeks = {k: leg.get(k) for k in ("iv", "delta", "gamma", "theta", "vega")}
        elif spot and p.strike and p.expiry and p.right in ("C", "P"):
            t_years = year_fraction(p.expiry, now)
            iv = (implied_vol(p.right, mark, spot, p.strike, t_years, params.risk_free_rate, params.dividend_yield)
                  if mark else None) or params.fallback_vol
            g = bs_greeks(p.right, spot, p.strike, t_years, params.risk_free_rate, params.dividend_yield, iv)
            greeks = {"iv": iv, "delta": g.delta, "gamma": g.gamma, "theta": g.theta, "vega": g.vega}
        if spot and p.strike:
            moneyness = spot / p.strike
        rows.append({
            "con_id": p.con_id, "account": p.account, "symbol": p.symbol, "local_symbol": p.local_symbol,
            "sec_type": p.sec_type, "right": p.right or None, "strike": p.strike,
            "expiry": p.expiry.isoformat() if p.expiry else None, "multiplier": p.multiplier, "qty": p.qty,
            "avg_cost": p.avg_cost, "market_price": mark, "pnl_usd": pnl, "moneyness": moneyness,
            "greeks": greeks, "managed": p.managed, "hedge_shares": p.data.get("hedge_shares"),
            "manual_shares": p.data.get("manual_shares"), "updated_at": p.updated_at.isoformat(),
        })
    return rows


def account_get() -> dict[str, Any] | None:
    from trading.models import AccountSnapshot

    snap = AccountSnapshot.objects.first()
    if snap is None:
        return None
    return {
        "account": snap.account,
        "net_liquidation": _num(snap.net_liquidation),
        "available_funds": snap.data.get("available_funds"),
        "buying_power": _num(snap.buying_power),
        "maintenance_margin": _num(snap.maintenance_margin),
        "cash": _num(snap.cash),
        "fetched_at": snap.ts.isoformat(),
    }


def _num(value: Any) -> float | None:
    return None if value is None else float(value)
