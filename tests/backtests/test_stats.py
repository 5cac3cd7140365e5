"""Statistics from the history tables only, by US/Eastern trading date: hedges, fills, slippage vs mid at
decision, P&L and its distribution, win rate, realised vs implied vol, gamma vs theta, blocks by reason."""
from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from backtests.models import DailyStats
from backtests.services import history_retention, stats_rollup
from backtests.stats import render_text, stats_report
from tests.backtests.test_commands import call
from trading.models import Decision, Fill, Order, StatusHistory

pytestmark = pytest.mark.django_db
MON = datetime(2026, 3, 9, 14, 0, tzinfo=UTC)  # 10:00 in New York (EDT since 2026-03-08)


def order(ref: str, ts: datetime, side: str, qty: float, spot: float, fill_price: float) -> None:
    Order.objects.create(order_ref=ref, intent="hedge", symbol="NVDA", side=side, qty=qty, order_type="market",
                         state="filled", filled_qty=qty, spot_at_decision=spot, created_at=ts, updated_at=ts)
    Fill.objects.create(exec_id=f"x-{ref}", order_ref=ref, symbol="NVDA", side=side, qty=qty,
                        price=Decimal(str(fill_price)), commission=Decimal("1.00"), ts=ts + timedelta(seconds=1))


def snapshot(ts: datetime, spot: float, daily: float, gamma: float, theta: float, iv: float = 0.3) -> None:
    StatusHistory.objects.create(ts=ts, daemon_state="running", trading_state="monitor", verdict="ok", payload={
        "market": {"spot": spot, "bid": spot - 0.01, "ask": spot + 0.01},
        "book": {"legs": [{"iv": iv}, {"iv": iv}]},
        "pnl": {"daily_usd": daily, "gamma_usd": gamma, "theta_usd": theta},
    })


def decision(ts: datetime, allowed: bool, reasons: list[str]) -> None:
    Decision.objects.create(ts=ts, allowed=allowed, reasons=reasons, intent_shares=30, net_delta_shares=-30,
                            trading_state="monitor")


@pytest.fixture
def history():
    order("a", MON, "BUY", 100, 100.0, 100.05)  # paid 5 bps over the mid at decision
    order("b", MON + timedelta(hours=1), "SELL", 50, 100.0, 99.99)  # 1 bp under it
    order("c", MON + timedelta(days=1), "BUY", 10, 200.0, 200.0)  # Tuesday, no slippage
    spots = [100.0, 100.5, 99.8, 100.2]
    for i, spot in enumerate(spots):
        snapshot(MON + timedelta(seconds=10 * i), spot, daily=40.0 * i, gamma=50.0 * i, theta=-20.0 * i)
    snapshot(MON + timedelta(days=1), 101.0, daily=-30.0, gamma=10.0, theta=-25.0, iv=0.5)
    # 23:30 in New York on Tuesday is Wednesday in UTC: it belongs to Tuesday's trading date.
    snapshot(datetime(2026, 3, 11, 3, 30, tzinfo=UTC), 101.0, daily=-35.0, gamma=12.0, theta=-27.0, iv=0.5)
    decision(MON, False, ["cooldown"])
    decision(MON, False, ["cooldown", "min_price_move"])
    decision(MON, True, [])
    decision(MON + timedelta(days=1), False, ["spread_too_wide"])
    return spots


def test_daily_figures_come_from_the_history_tables(history):
    report = stats_report(period="day", since=date(2026, 3, 9), until=date(2026, 3, 10))

    monday, tuesday = report["periods"]
    assert (monday["start"], tuesday["start"]) == ("2026-03-09", "2026-03-10")
    assert (monday["hedges"], monday["fills"], monday["filled_shares"]) == (2, 2, 150)
    assert monday["commissions_usd"] == pytest.approx(2.0)
    assert monday["slippage_bps"] == pytest.approx((100 * 5 + 50 * 1) / 150, rel=1e-9)
    assert monday["pnl_usd"] == 120.0 and monday["gamma_usd"] == 150.0 and monday["theta_usd"] == -60.0
    assert monday["blocks"] == {"cooldown": 2, "min_price_move": 1}
    assert (monday["decisions_allowed"], monday["decisions_blocked"]) == (1, 2)
    assert tuesday["pnl_usd"] == -35.0  # the last snapshot of the New York day, even after UTC midnight
    assert tuesday["slippage_bps"] == 0.0


def test_realised_vol_is_annualised_from_snapshot_returns_and_compared_with_implied(history):
    spots = history
    r2 = sum((b / a - 1.0) ** 2 for a, b in zip(spots, spots[1:], strict=False))

    monday = stats_report(period="day", since=date(2026, 3, 9), until=date(2026, 3, 9))["periods"][0]

    assert monday["realized_vol"] == pytest.approx(math.sqrt(r2 / 30.0 * 365 * 86400), rel=1e-6)
    assert monday["implied_vol"] == pytest.approx(0.3)


def test_weeks_and_months_roll_the_days_up(history):
    week = stats_report(period="week")["periods"]
    month = stats_report(period="month")["periods"]

    assert len(week) == 1 and week[0]["label"] == "2026-W11" and week[0]["start"] == "2026-03-09"
    assert len(month) == 1 and month[0]["label"] == "2026-03"
    for row in (week[0], month[0]):
        assert row["hedges"] == 3 and row["pnl_usd"] == 120.0 - 35.0
        assert row["win_rate"] == 0.5 and row["pnl_distribution"]["days"] == 2
        assert row["blocks"] == {"cooldown": 2, "min_price_move": 1, "spread_too_wide": 1}


def test_an_empty_range_reports_nothing_rather_than_failing(history):
    report = stats_report(period="day", since=date(2025, 1, 1), until=date(2025, 1, 31))

    assert report["periods"] == [] and report["totals"]["hedges"] == 0
    assert "no history" in render_text(report)


def test_a_range_of_centuries_reads_only_the_days_with_history(history, django_assert_max_num_queries):
    with django_assert_max_num_queries(20):  # not one query per empty day of the range
        report = stats_report(period="month", since=date(1, 1, 1), until=date.max)

    assert [p["label"] for p in report["periods"]] == ["2026-03"] and report["totals"]["pnl_usd"] == 120.0 - 35.0


def test_stats_command_prints_text_and_json(history):
    code, out, _ = call("stats", "--period", "day", "--since", "2026-03-09", "--until", "2026-03-10")

    assert code == 0
    assert "2026-03-09" in out and "cooldown 2" in out and "win rate" in out

    code, out, _ = call("stats", "--format", "json", "--period", "month")
    assert code == 0 and json.loads(out)["totals"]["hedges"] == 3

    code, _, err = call("stats", "--since", "last tuesday")
    assert code == 1 and "--since" in err


def test_the_daily_rollup_keeps_each_day_and_retention_keeps_the_audit_trail(history):
    written = stats_rollup(days=30, now=datetime(2026, 3, 12, tzinfo=UTC))

    assert written == 2
    assert DailyStats.objects.get(trading_date=date(2026, 3, 9)).stats["hedges"] == 2
    stats_rollup(days=30, now=datetime(2026, 3, 12, tzinfo=UTC))  # idempotent
    assert DailyStats.objects.count() == 2

    deleted = history_retention(now=datetime(2026, 3, 10, 12, 0, tzinfo=UTC), days=0.5)

    assert deleted == {"status_history": 4, "decisions": 2}
    assert Order.objects.count() == 3 and Fill.objects.count() == 3
    assert Decision.objects.filter(allowed=True).count() == 1


def test_beyond_the_sample_cap_realised_vol_reads_every_kth_snapshot(monkeypatch):
    import backtests.stats as stats

    for i in range(40):  # a steady 1 % move every 10 s
        snapshot(MON + timedelta(seconds=10 * i), 100.0 * 1.01 ** i, daily=0.0, gamma=0.0, theta=0.0)
    full = stats_report(period="day", since=date(2026, 3, 9), until=date(2026, 3, 9))["periods"][0]["realized_vol"]

    monkeypatch.setattr(stats, "RV_MAX_SAMPLES", 10)
    sampled = stats_report(period="day", since=date(2026, 3, 9), until=date(2026, 3, 9))["periods"][0]["realized_vol"]

    assert full == pytest.approx(math.sqrt(0.01**2 / 10 * 365 * 86400), rel=1e-6)
    # every 4th snapshot: returns of 1.01^4 - 1 over 40 s
    assert sampled == pytest.approx(math.sqrt((1.01**4 - 1) ** 2 / 40 * 365 * 86400), rel=1e-6)
