"""Reads for the control room. The status payload adds the one check a dead daemon cannot make: heartbeat age."""
from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from trading.core.selfcheck import verdict_of
from trading.models import DaemonLease, StatusCurrent

LAMP = {"ok": "green", "degraded": "yellow", "blocked": "red"}
HEARTBEAT_STALE_INTERVALS = 3


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


def status_payload_get(*, now: datetime | None = None) -> dict[str, Any]:
    """The /api/status/ payload: the daemon's last snapshot, judged by the age of its heartbeat."""
    now = now or timezone.now()
    current = StatusCurrent.objects.filter(id=1).first()
    payload = copy.deepcopy(current.payload) if current is not None else _empty_payload()
    lease = DaemonLease.objects.filter(name="daemon").first()
    daemon = payload["daemon"]
    heartbeat_at = parse_datetime(daemon["heartbeat_at"]) if daemon.get("heartbeat_at") else None
    age_s = (now - heartbeat_at).total_seconds() if heartbeat_at else None
    daemon["heartbeat_age_s"] = None if age_s is None else round(age_s, 3)
    limit_s = settings.BIFROST_HEARTBEAT_S * HEARTBEAT_STALE_INTERVALS
    checks = [c for c in payload["checks"] if c["name"] != "heartbeat"]
    if current is None or lease is None or lease.released_at is not None or daemon["state"] == "stopped":
        daemon["state"] = "stopped"
        checks.append({"name": "heartbeat", "status": "blocked", "reason": "daemon_not_running",
                       "detail": "the daemon is not running"})
    elif age_s is None or age_s >= limit_s:
        checks.append({"name": "heartbeat", "status": "blocked", "reason": "heartbeat_stale",
                       "detail": f"last heartbeat {age_s:.1f} s ago (stale after {limit_s:g} s)"
                       if age_s is not None else "no heartbeat yet"})
    else:
        checks.append({"name": "heartbeat", "status": "ok", "reason": "",
                       "detail": f"last heartbeat {age_s:.1f} s ago"})
    payload["checks"] = checks
    reasons = [r for r in payload["block_reasons"] if r not in ("daemon_not_running", "heartbeat_stale")]
    reasons += [c["reason"] for c in checks if c["name"] == "heartbeat" and c["status"] == "blocked"]
    payload["block_reasons"] = reasons
    payload["verdict"] = verdict_of(c["status"] for c in checks)
    payload["lamp"] = LAMP[payload["verdict"]]
    return payload

