"""The self-check: every check with its status, the verdict (the worst of them) and all block reasons."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from trading.core.gates import Counters, GateState, standing_reasons
from trading.core.params import StrategyParams

# `unknown` (a check of a daemon that no longer answers) is worse than ok, never mistaken for ok.
_RANK = {"ok": 0, "degraded": 1, "unknown": 1, "blocked": 2}
# A standing gate that is the operator's choice or the calendar's, not a fault: yellow, not red.
_EXPECTED_BLOCKS = frozenset({"paused", "outside_trading_hours", "earnings_blackout", "no_option_position",
                              "near_expiry"})
NEAR_LIMIT_FRAC = 0.8


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # ok | degraded | blocked (| unknown, set by the web for a daemon that no longer answers)
    reason: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "reason": self.reason, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class SelfCheck:
    verdict: str
    checks: tuple[Check, ...]
    block_reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HealthView:
    """What the self-check needs beyond the gate state: the daemon's and the book's own figures."""

    gate: GateState
    daemon_state: str
    daily_pnl_usd: float
    iv_fallback_legs: int
    oldest_working_order_s: float | None
    unknown_orders: int
    config_error: str = ""


def self_check(view: HealthView, params: StrategyParams, counters: Counters) -> SelfCheck:
    """Evaluate every check; none short-circuits another (the original reported only the first reason)."""
    gate = view.gate
    standing = standing_reasons(gate, params, counters)
    checks: list[Check] = []

    def add(name: str, status: str, reason: str = "", detail: str = "") -> None:
        checks.append(Check(name, status, reason, detail))

    running = view.daemon_state in ("running", "paused")
    add("daemon", "ok" if running else "blocked", "" if running else "daemon_not_running",
        f"daemon state {view.daemon_state}")
    for reason in standing:
        add(_CHECK_NAME.get(reason, reason), "degraded" if reason in _EXPECTED_BLOCKS else "blocked", reason,
            _detail(reason, view, params, counters))
    if "no_quote" not in standing and "data_stale" not in standing and gate.quote_age_ms is not None:
        lagging = gate.quote_age_ms >= params.max_data_lag_ms
        add("market_data", "degraded" if lagging else "ok", "data_lag" if lagging else "",
            f"last quote {gate.quote_age_ms:.0f} ms old (lag limit {params.max_data_lag_ms:.0f} ms)")
    if view.iv_fallback_legs:
        add("implied_vol", "degraded", "iv_fallback",
            f"{view.iv_fallback_legs} leg(s) priced with fallback vol {params.fallback_vol:.2f}")
    if -view.daily_pnl_usd >= NEAR_LIMIT_FRAC * params.max_daily_loss_usd and "risk_halt" not in standing:
        add("daily_loss", "degraded", "near_loss_limit",
            f"daily P&L {view.daily_pnl_usd:.2f} USD, limit -{params.max_daily_loss_usd:.2f} USD")
    if NEAR_LIMIT_FRAC * params.max_daily_hedges <= counters.daily_hedges < params.max_daily_hedges:
        add("daily_hedges", "degraded", "near_hedge_limit",
            f"{counters.daily_hedges} of {params.max_daily_hedges} hedges today")
    if (gate.spread_bps is not None and "spread_too_wide" not in standing
            and gate.spread_bps >= params.wide_spread_bps):
        add("spread", "degraded", "spread_wide",
            f"spread {gate.spread_bps:.1f} bps (wide at {params.wide_spread_bps:g} bps)")
    slow = view.oldest_working_order_s is not None and view.oldest_working_order_s >= params.working_timeout_s
    if view.unknown_orders or slow:
        # An unknown outcome blocks every new hedge until reconciliation settles it: red, as seed 000 defines it.
        add("orders", "blocked" if view.unknown_orders else "degraded", "order_stuck",
            f"{view.unknown_orders} order(s) with unknown outcome; oldest working {view.oldest_working_order_s or 0:.0f} s")
    if view.config_error:
        add("config", "blocked", "config_invalid", view.config_error)
    if not checks or all(c.status == "ok" for c in checks):
        add("hedging", "ok", "", "all gates open")
    verdict = verdict_of(c.status for c in checks)
    reasons = (tuple(standing) + (("order_stuck",) if view.unknown_orders else ())
               + (("config_invalid",) if view.config_error else ()))
    return SelfCheck(verdict, tuple(checks), reasons)


def verdict_of(statuses: Iterable[str]) -> str:
    """The worst status: blocked over degraded (and unknown) over ok; always ok, degraded or blocked."""
    worst = max(statuses, key=_RANK.__getitem__, default="ok")
    return "degraded" if worst == "unknown" else worst


_CHECK_NAME = {
    "paused": "paused",
    "stopping": "daemon",
    "risk_halt": "risk",
    "broker_disconnected": "broker",
    "no_quote": "market_data",
    "data_stale": "market_data",
    "greeks_invalid": "greeks",
    "not_reconciled": "reconciliation",
    "no_option_position": "options",
    "outside_trading_hours": "trading_hours",
    "earnings_blackout": "earnings",
    "max_daily_hedges": "daily_hedges",
    "spread_too_wide": "spread",
    "near_expiry": "expiry",
    "lease_unconfirmed": "lease",
    "journal_unwritable": "journal",
    "clock_skew": "clock",
}


def _detail(reason: str, view: HealthView, params: StrategyParams, counters: Counters) -> str:
    gate = view.gate
    if reason == "data_stale" and gate.quote_age_ms is not None:
        return f"last quote {gate.quote_age_ms / 1000:.1f} s old (stale at {params.stale_quote_ms / 1000:.1f} s)"
    if reason == "spread_too_wide" and gate.spread_bps is not None:
        return f"spread {gate.spread_bps:.1f} bps (blocks at {params.extreme_spread_bps:g} bps)"
    if reason == "max_daily_hedges":
        return f"{counters.daily_hedges} of {params.max_daily_hedges} hedges today"
    return _DETAILS.get(reason, "")


_DETAILS = {
    "paused": "hedging paused by the operator",
    "stopping": "the daemon is stopping",
    "risk_halt": "risk halt: hedging stays off until an operator resets it",
    "broker_disconnected": "no connection to the broker",
    "no_quote": "no quote for the underlying yet",
    "greeks_invalid": "greeks could not be computed",
    "not_reconciled": "orders and positions not yet reconciled with the broker",
    "no_option_position": "no managed option position",
    "outside_trading_hours": "the exchange is closed",
    "earnings_blackout": "inside the earnings blackout window",
    "near_expiry": "the structure is about to expire: no hedging in its last minutes",
    "lease_unconfirmed": "the daemon could not confirm its lease within one heartbeat: no order leaves until it does",
    "journal_unwritable": "the local journal cannot be written (disk full or failing): no order leaves",
    "clock_skew": "the host clock disagrees with the broker's by more than the allowed skew",
}
