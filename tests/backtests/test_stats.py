"""Statistics from the history tables only, by US/Eastern trading date: hedges, fills, slippage vs mid at
decision, P&L and its distribution, win rate, realised vs implied vol, gamma vs theta, blocks by reason, order to
fill latency, hedge round trips and their win rate, risk halts; on the command line, the API and the page."""
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
from trading.models import Decision, Fill, Operation, Order, StatusHistory

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


# ---- latency, round trips, halts --------------------------------------------------------------------------------

TUE = MON + timedelta(days=1)


def placed(ref: str, ts: datetime, qty: float = 100, symbol: str = "AMD") -> None:
    Order.objects.create(order_ref=ref, intent="hedge", symbol=symbol, side="BUY", qty=qty, order_type="market",
                         state="working", spot_at_decision=10.0, created_at=ts, updated_at=ts)


def filled(ref: str, ts: datetime, side: str, qty: float, price: str, commission: str = "1.00",
           symbol: str = "NVDA") -> None:
    Fill.objects.create(exec_id=f"x-{ref}-{Fill.objects.count()}", order_ref=ref, symbol=symbol, side=side, qty=qty,
                        price=Decimal(price), commission=Decimal(commission), ts=ts)


def halted(ts: datetime, message: str, kind: str = Operation.Kind.HALT) -> None:
    Operation.objects.create(ts=ts, kind=kind, message=message, reasons=["risk_halt"])


@pytest.fixture
def latencies():
    """First fills 100, 200, 300 ms after Monday's orders and 400, 1000 ms after Tuesday's; C fills in two parts
    (the last 2.3 s after it was placed), E only half, F not at all. In AMD: NVDA's share ledger is another."""
    ms = timedelta(milliseconds=1)
    for ref, ts, parts in (("A", MON, [(100, 100)]), ("B", MON + timedelta(hours=1), [(200, 100)]),
                           ("C", MON + timedelta(hours=2), [(300, 40), (2300, 60)]),
                           ("D", TUE, [(400, 100)]), ("E", TUE + timedelta(hours=1), [(1000, 50)]),
                           ("F", TUE + timedelta(hours=2), [])):
        placed(ref, ts)
        for after_ms, qty in parts:
            filled(ref, ts + after_ms * ms, "BUY", qty, "10.00", symbol="AMD")


def test_order_to_fill_latency_is_p50_and_p95_in_ms_to_the_first_and_to_the_last_fill(latencies):
    report = stats_report(period="day", since=date(2026, 3, 9), until=date(2026, 3, 10))

    totals = report["totals"]
    assert totals["first_fill_latency_ms"] == {"p50": 300.0, "p95": 880.0, "orders": 5}  # F has no fill
    # complete: A 100, B 200, C 2300, D 400; E is not fully filled
    assert totals["complete_fill_latency_ms"] == {"p50": 300.0, "p95": 2015.0, "orders": 4}
    monday, tuesday = report["periods"]
    assert monday["first_fill_latency_ms"] == {"p50": 200.0, "p95": 290.0, "orders": 3}
    assert monday["complete_fill_latency_ms"] == {"p50": 200.0, "p95": 2090.0, "orders": 3}
    assert tuesday["first_fill_latency_ms"] == {"p50": 700.0, "p95": 970.0, "orders": 2}
    assert tuesday["complete_fill_latency_ms"] == {"p50": 400.0, "p95": 400.0, "orders": 1}


def test_latency_counts_orders_by_the_date_they_were_placed_even_when_filled_after_the_range(latencies):
    late = datetime(2026, 3, 11, 3, 59, 59, 900_000, tzinfo=UTC)  # 23:59:59.9 on Tuesday in New York
    placed("G", late)
    filled("G", late + timedelta(milliseconds=250), "BUY", 100, "10.00", symbol="AMD")  # Wednesday by then

    tuesday = stats_report(period="day", since=date(2026, 3, 10), until=date(2026, 3, 10))["periods"][0]

    assert tuesday["first_fill_latency_ms"] == {"p50": 400.0, "p95": 940.0, "orders": 3}
    assert tuesday["complete_fill_latency_ms"] == {"p50": 325.0, "p95": 392.5, "orders": 2}


@pytest.fixture
def trips():
    """Monday: long 100 from 10.00, out at 10.50 and 9.75 (+9.50 after three 1 USD commissions); short 100 at 10.00,
    bought back through zero with 200 at 10.25 (2 USD commission, half to each side): -27.00. Tuesday: the 100 long
    from 10.25 sold at 10.50: +23.00 (1 USD of commission on Monday's half). Then 30 bought at 10.00 stay open."""
    for ref, ts, side, qty, price, fee in (
            ("t1", MON, "BUY", 100, "10.00", "1.00"),
            ("t2", MON + timedelta(minutes=5), "SELL", 50, "10.50", "1.00"),
            ("t3", MON + timedelta(minutes=10), "SELL", 50, "9.75", "1.00"),
            ("t4", MON + timedelta(hours=1), "SELL", 100, "10.00", "1.00"),
            ("t5", MON + timedelta(hours=1, minutes=5), "BUY", 200, "10.25", "2.00"),
            ("t6", TUE, "SELL", 100, "10.50", "1.00"),
            ("t7", TUE + timedelta(hours=1), "BUY", 30, "10.00", "1.00")):
        filled(ref, ts, side, qty, price, fee)


def test_round_trips_run_flat_to_flat_at_average_cost_after_commissions(trips):
    report = stats_report(period="day", since=date(2026, 3, 9), until=date(2026, 3, 10))

    totals = report["totals"]
    assert (totals["round_trips"], totals["round_trip_wins"]) == (3, 2)
    assert totals["round_trip_win_rate"] == pytest.approx(2 / 3)
    assert totals["round_trip_pnl_usd"] == pytest.approx(9.5 - 27.0 + 23.0)
    assert totals["round_trip_mean_pnl_usd"] == pytest.approx((9.5 - 27.0 + 23.0) / 3)
    monday, tuesday = report["periods"]
    assert (monday["round_trips"], monday["round_trip_wins"], monday["round_trip_win_rate"]) == (2, 1, 0.5)
    assert monday["round_trip_pnl_usd"] == pytest.approx(9.5 - 27.0)
    assert (tuesday["round_trips"], tuesday["round_trip_wins"], tuesday["round_trip_pnl_usd"]) == (1, 1, 23.0)
    assert report["open_round_trips"] == [{"symbol": "NVDA", "shares": 30.0, "avg_cost_usd": 10.0,
                                           "opened_at": (TUE + timedelta(hours=1)).isoformat(),
                                           "realized_pnl_usd": -1.0}]


def test_a_round_trip_that_opened_before_the_range_keeps_its_cost_and_commissions(trips):
    tuesday = stats_report(period="day", since=date(2026, 3, 10), until=date(2026, 3, 10))["totals"]
    monday = stats_report(period="day", since=date(2026, 3, 9), until=date(2026, 3, 9))

    assert (tuesday["round_trips"], tuesday["round_trip_pnl_usd"]) == (1, 23.0)  # bought at 10.25 on Monday
    assert monday["totals"]["round_trips"] == 2
    assert monday["open_round_trips"][0]["shares"] == 100.0 and monday["open_round_trips"][0]["avg_cost_usd"] == 10.25


def test_a_trip_closing_at_exactly_nothing_is_not_a_win():
    filled("z1", MON, "BUY", 10, "10.00", "0.00")
    filled("z2", MON + timedelta(minutes=1), "SELL", 10, "10.00", "0.00")

    totals = stats_report(period="day")["totals"]

    assert (totals["round_trips"], totals["round_trip_wins"], totals["round_trip_win_rate"]) == (1, 0, 0.0)


@pytest.fixture
def halts_and_blocks():
    halted(MON + timedelta(hours=2), "daily loss -1,010.00 USD reached the limit of 1000 USD")
    halted(MON + timedelta(hours=3), "operator reset", kind=Operation.Kind.RESET_HALT)  # not a halt
    # 23:30 in New York on Tuesday is Wednesday in UTC: Tuesday's halt.
    halted(datetime(2026, 3, 11, 3, 30, tzinfo=UTC), "daily loss -1,200.00 USD reached the limit of 1000 USD")
    halted(TUE + timedelta(days=2), "after the range")
    decision(MON - timedelta(days=3), False, ["cooldown"])  # before the range
    decision(MON, False, ["cooldown", "spread_too_wide"])
    decision(MON, False, ["cooldown"])
    decision(MON, True, [])
    decision(TUE, False, ["max_daily_hedges"])


def test_risk_halts_and_blocked_decisions_are_counted_over_the_range_with_their_messages(halts_and_blocks):
    report = stats_report(period="week", since=date(2026, 3, 9), until=date(2026, 3, 10))

    totals = report["totals"]
    assert totals["risk_halts"] == 2 and report["periods"][0]["risk_halts"] == 2
    assert report["risk_halt_events"] == [
        {"ts": "2026-03-09T16:00:00+00:00", "trading_date": "2026-03-09",
         "message": "daily loss -1,010.00 USD reached the limit of 1000 USD"},
        {"ts": "2026-03-11T03:30:00+00:00", "trading_date": "2026-03-10",
         "message": "daily loss -1,200.00 USD reached the limit of 1000 USD"}]
    assert totals["decisions_blocked"] == 3 and totals["decisions_allowed"] == 1
    assert totals["blocks"] == {"cooldown": 2, "max_daily_hedges": 1, "spread_too_wide": 1}


def test_the_command_prints_latency_round_trips_and_halts(latencies, trips, halts_and_blocks):
    code, out, _ = call("stats", "--since", "2026-03-09", "--until", "2026-03-10")

    assert code == 0
    assert "first fill p50 300.0 ms  p95 880.0 ms over 5 orders" in out
    assert "complete fill (last fill of a fully filled order) p50 300.0 ms  p95 2,015.0 ms over 4 orders" in out
    assert "3 closed, 2 won (win rate 67 %), mean 1.83 USD per trip, total 5.50 USD" in out
    assert "open at the end: NVDA +30 shares at 10.0000 USD average cost" in out
    assert "risk halts: 2" in out and "daily loss -1,200.00 USD reached the limit of 1000 USD" in out
    assert "blocked hedges by reason (3 blocked decisions): cooldown 2" in out

    code, out, _ = call("stats", "--format", "json", "--since", "2026-03-09T00:00:00+00:00", "--until",
                        "2026-03-10T00:00:00+00:00")
    body = json.loads(out)
    assert code == 0 and body["totals"]["round_trips"] == 2  # an ISO instant is exact: Monday's trips only
    assert body["totals"]["first_fill_latency_ms"]["orders"] == 3 and body["totals"]["risk_halts"] == 1


NEW_TOTALS = {"first_fill_latency_ms", "complete_fill_latency_ms", "round_trips", "round_trip_wins",
              "round_trip_win_rate", "round_trip_pnl_usd", "round_trip_mean_pnl_usd", "risk_halts"}
OLD_TOTALS = {"hedges", "fills", "filled_shares", "commissions_usd", "slippage_bps", "pnl_usd", "pnl_days",
              "winning_days", "win_rate", "pnl_distribution", "realized_vol", "implied_vol", "gamma_usd", "theta_usd",
              "decisions_allowed", "decisions_blocked", "blocks"}


def test_the_api_adds_the_new_figures_and_keeps_the_old_keys(viewer_api, latencies, trips, halts_and_blocks):
    response = viewer_api.get("/api/stats/", {"period": "day", "since": "2026-03-09", "until": "2026-03-10"})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"period", "since", "until", "timezone", "totals", "periods", "pnl_daily", "pnl_histogram",
                         "risk_halt_events", "open_round_trips"}
    assert set(body["totals"]) == OLD_TOTALS | NEW_TOTALS
    assert set(body["periods"][0]) == OLD_TOTALS | NEW_TOTALS | {"start", "end", "label"}
    assert body["totals"]["first_fill_latency_ms"] == {"p50": 300.0, "p95": 880.0, "orders": 5}
    assert (body["totals"]["round_trips"], body["totals"]["round_trip_wins"]) == (3, 2)
    assert [h["trading_date"] for h in body["risk_halt_events"]] == ["2026-03-09", "2026-03-10"]


@pytest.fixture
def stats_page(client, viewer):
    client.force_login(viewer)
    return client


def test_the_page_has_a_range_form_and_draws_the_daily_pnl_histogram(stats_page, latencies, trips, halts_and_blocks):
    snapshot(MON, 100.0, daily=120.0, gamma=0.0, theta=0.0)
    snapshot(TUE, 100.0, daily=-35.0, gamma=0.0, theta=0.0)

    response = stats_page.get("/stats/", {"since": "2026-03-09", "until": "2026-03-10", "period": "week"})

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="stats-form"' in page
    assert '<input type="date" name="since" value="2026-03-09"' in page
    assert '<input type="date" name="until" value="2026-03-10"' in page
    assert '<option value="week" selected>by week</option>' in page
    histogram = page[page.index('id="pnl-histogram"'):page.index('id="latency"')]
    assert "<svg" in histogram and histogram.count("<rect") == 20  # Monday +120 USD and Tuesday -35 USD, 20 bins
    assert "-35.00 to -27.25 USD, days: 1" in histogram and "112.25 to 120.00 USD, days: 1" in histogram
    assert 'fill="#ff4d4f"' in histogram and 'fill="#2ecc71"' in histogram  # a losing and a winning bin
    assert "300.0 ms" in page and "880.0 ms" in page and "2015.0 ms" in page
    assert "66.7 % of closed trips with P&amp;L &gt; 0" in page and "1.83 USD per trip" in page
    assert '<p id="halt-count">2 halt(s)</p>' in page and "2026-03-10 23:30:00 EDT" in page
    assert "daily loss -1,010.00 USD reached the limit of 1000 USD" in page
    assert "cooldown" in page and "3 blocked, 1 allowed decisions" in page


def test_the_page_refuses_a_backwards_range_on_its_field(stats_page):
    response = stats_page.get("/stats/", {"since": "2026-03-10", "until": "2026-03-09"})

    assert response.status_code == 400
    page = response.content.decode()
    assert "until: must not be before since" in page and 'data-field="until"' in page
    assert stats_page.get("/stats/", {"since": "soon"}).status_code == 400


def test_without_a_range_the_page_shows_the_whole_history_by_day(stats_page, history):
    response = stats_page.get("/stats/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "P&amp;L per day" in page and "2026-03-09" in page and "2026-03-10" in page


def test_a_histogram_of_one_value_draws_one_bar_a_unit_wide_and_a_bin_across_zero_grey():
    from backtests import charts

    single = str(charts.histogram([12.5, 12.5], [3], "USD", "days"))
    across = str(charts.histogram([-10.0, 10.0, 30.0], [2, 1], "USD", "days"))

    assert single.count("<rect") == 1 and "12.00 to 13.00 USD, days: 3" in single
    assert 'fill="#9aa4b2"' in across and 'fill="#2ecc71"' in across and 'fill="#ff4d4f"' not in across
    assert ">-10 USD</text>" in across and ">0 USD</text>" in across and ">30 USD</text>" in across
