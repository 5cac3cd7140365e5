"""Statistics over 1M history rows (DESIGN §9: <= 2 s), as `manage.py stats` computes them.

Run from the repository root:  .venv/bin/python bench/stats.py [--days 120] [--postgres]

Fills a throw-away database (SQLite in a temp var dir; with --postgres a scratch database `bifrost_bench_stats` on
127.0.0.1, dropped afterwards) with `--days` days of daemon history at its default cadence: a status snapshot
every 10 s (8,640 a day: 1,036,800 for 120 days) carrying a payload shaped and sized like the daemon's (~4 KB of
JSON), 300 decisions, 60 hedge orders and their fills per day (every third order in two fills, 50 ms to 1.5 s after
it was placed; buying at the ask and selling at the bid at random times, its round trips mostly lose), and a risk
halt every tenth day. Then times `stats_report` (latency percentiles, round trips and
halts included) for each period over the whole history (best of 3), and once over the last 30 days.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_S = 2.0
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
PG_NAME = "bifrost_bench_stats"


def _pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def status_payload(ts: datetime, spot: float, daily: float, k: int) -> dict:
    """A snapshot shaped and sized like the daemon's (the /api/status/ payload: checks, legs, account ...)."""
    leg = {"con_id": 1234567, "symbol": "NVDA", "local_symbol": "NVDA  260417C00180000", "right": "C", "strike": 180.0,
           "expiry": "2026-04-17", "qty": 10.0, "multiplier": 100, "bid": 7.1, "ask": 7.3, "mid": 7.2, "iv": 0.35,
           "iv_source": "broker", "model_price": 7.21, "delta": 0.52, "gamma": 0.021, "theta": -0.11, "vega": 0.2,
           "moneyness": spot / 180.0}
    checks = [{"name": name, "status": "ok", "reason": "", "detail": f"{name} fine at {ts.isoformat()}"}
              for name in ("daemon", "heartbeat", "broker", "data", "greeks", "reconciled", "options", "hours",
                           "earnings", "loss", "hedges", "spread", "orders", "config")]
    positions = [{"con_id": 1000 + i, "symbol": sym, "local_symbol": sym, "sec_type": "STK", "qty": 100.0,
                  "avg_cost": 170.0, "market_price": spot, "managed": False, "unrealized_usd": 12.5 * i}
                 for i, sym in enumerate(("NVDA", "AAPL", "MSFT"))]
    return {
        "lamp": "green", "verdict": "ok", "block_reasons": [], "checks": checks,
        "daemon": {"state": "running", "mode": "paper", "pid": 4242, "host": "bifrost-host",
                   "started_at": "2026-01-01T00:00:00+00:00", "heartbeat_at": ts.isoformat(), "heartbeat_age_s": 0.0,
                   "broker_connected": True, "lease": "ab12cd34", "engine_version": "1.0", "db_degraded": False},
        "trading": {"state": "monitor", "paused": False, "halted": False, "halt_reason": "", "flattening": False,
                    "classification": "O1/D0/L0/E0/S0"},
        "market": {"symbol": "NVDA", "bid": round(spot - 0.01, 2), "ask": round(spot + 0.01, 2), "spot": round(spot, 4),
                   "spread_bps": 1.1, "data_lag_ms": 12.0, "quote_ts": ts.isoformat()},
        "book": {"net_delta_shares": 3.0, "option_delta_shares": 40.0, "hedge_shares": -37.0, "gamma": 42.0,
                 "theta": -220.0, "vega": 400.0, "legs": [leg, {**leg, "right": "P", "delta": -0.48}]},
        "pnl": {"trading_date": ts.date().isoformat(), "daily_usd": round(daily, 2), "realized_usd": 10.0,
                "unrealized_usd": 20.0, "commissions_usd": 3.0, "options_usd": 15.0, "hedge_usd": 12.0,
                "gamma_usd": abs(daily), "theta_usd": -k * 0.01, "vega_usd": 1.0, "hedge_cost_usd": 2.0},
        "counters": {"daily_hedges": k // 200, "trading_date": ts.date().isoformat()},
        "config": {"name": "default", "params_hash": "f" * 64},
        "account": {"account": "DU123456", "net_liquidation": 1_000_000.0, "buying_power": 4_000_000.0,
                    "positions": positions},
        "ts": ts.isoformat(),
    }


def fill(days: int) -> int:
    from django.db import connection, transaction

    from trading.models import Decision, Fill, Operation, Order, StatusHistory

    rng = random.Random(7)
    start = datetime.combine(date.today() - timedelta(days=days), datetime.min.time(), UTC)
    adapt = connection.ops.adapt_datetimefield_value
    rows = 0
    spot = 180.0
    history = StatusHistory._meta.db_table
    with transaction.atomic(), connection.cursor() as cur:
        for day in range(days):
            day0 = start + timedelta(days=day)
            batch = []
            daily = 0.0
            for k in range(8640):
                spot *= 1.0 + rng.gauss(0.0, 0.0004)
                daily += rng.gauss(0.0, 3.0)
                ts = day0 + timedelta(seconds=10 * k)
                batch.append((adapt(ts), "running", "monitor", "ok", json.dumps(status_payload(ts, spot, daily, k))))
            _insert(cur, history, ("ts", "daemon_state", "trading_state", "verdict", "payload"), batch)
            rows += len(batch)
            decisions = [(adapt(day0 + timedelta(seconds=rng.randrange(86_400))), k % 5 == 0,
                          json.dumps([] if k % 5 == 0 else rng.choice([["cooldown"], ["min_price_move", "cooldown"],
                                                                       ["max_daily_hedges"], ["spread_too_wide"]])),
                          30.0, -30.0, "monitor", "", "", "") for k in range(300)]
            _insert(cur, Decision._meta.db_table, ("ts", "allowed", "reasons", "intent_shares", "net_delta_shares",
                                                   "trading_state", "classification", "order_ref", "params_hash"),
                    decisions)
            orders, fills = [], []
            for k in range(60):
                ts = day0 + timedelta(seconds=rng.randrange(86_400))
                ref = f"bifrost:bench:{day}:{k}"
                side = "BUY" if k % 2 else "SELL"
                orders.append((ref, "hedge", "DU123456", "paper", "NVDA", side, 50.0, "market", "filled", 50.0, "",
                               "", "", spot, "", adapt(ts), adapt(ts)))
                price = f"{spot + (0.02 if k % 2 else -0.02):.6f}"
                parts = (20.0, 30.0) if k % 3 == 0 else (50.0,)
                after_ms = sorted(rng.uniform(50.0, 1500.0) for _ in parts)
                for n, (qty, delay) in enumerate(zip(parts, after_ms, strict=True)):
                    fills.append((f"x:{ref}:{n}", ref, "DU123456", "NVDA", side, qty, price, "0.500000",
                                  adapt(ts + timedelta(milliseconds=delay))))
            _insert(cur, Order._meta.db_table, ("order_ref", "intent", "account", "mode", "symbol", "side", "qty",
                                                "order_type", "state", "filled_qty", "broker_order_id", "message",
                                                "reason", "spot_at_decision", "params_hash", "created_at",
                                                "updated_at"), orders)
            _insert(cur, Fill._meta.db_table, ("exec_id", "order_ref", "account", "symbol", "side", "qty", "price",
                                               "commission", "ts"), fills)
            halts = []
            if day % 10 == 9:
                halts.append((adapt(day0 + timedelta(hours=19)), "halt", "daemon",
                              "daily loss -1,010.00 USD reached the limit of 1000 USD", "", "", json.dumps(["risk_halt"]),
                              "halted", "", "{}"))
                _insert(cur, Operation._meta.db_table, ("ts", "kind", "actor", "message", "order_ref", "side",
                                                        "reasons", "trading_state", "params_hash", "data"), halts)
            rows += len(decisions) + len(orders) + len(fills) + len(halts)
    return rows


def _insert(cur, table: str, columns: tuple[str, ...], values: list[tuple]) -> None:  # type: ignore[no-untyped-def]
    from django.db import connection

    if connection.vendor == "postgresql":
        with cur.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in values:
                copy.write_row(row)
        return
    marks = ", ".join(["%s"] * len(columns))
    cur.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="bifrost-bench-stats-"))
    os.environ.update({"DJANGO_SETTINGS_MODULE": "bifrost.settings", "BIFROST_ALLOW_DEV_SECRET": "1",
                       "BIFROST_VAR_DIR": str(var), "BIFROST_LOG_LEVEL": "WARNING"})
    if args.postgres:
        _pg(f"DROP DATABASE IF EXISTS {PG_NAME}")
        _pg(f"CREATE DATABASE {PG_NAME}")
        os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{PG_NAME}"
    else:
        os.environ.pop("DATABASE_URL", None)
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        from backtests.stats import stats_report

        call_command("migrate", verbosity=0)
        started = time.perf_counter()
        rows = fill(args.days)
        if connection.vendor == "postgresql":
            with connection.cursor() as cur:
                cur.execute("ANALYZE")
        print(f"{connection.vendor}: {rows:,} history rows over {args.days} days inserted in "
              f"{time.perf_counter() - started:.0f} s")
        for period in ("day", "week", "month"):
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                report = stats_report(period=period)
                best = min(best, time.perf_counter() - t0)
            verdict = "MET" if best <= TARGET_S else "NOT MET"
            totals = report["totals"]
            print(f"stats --period {period:<5} whole history: {best:.2f} s ({len(report['periods'])} periods, "
                  f"{totals['hedges']:,} hedges, win rate {totals['win_rate']:.2f} of days, "
                  f"{totals['round_trips']:,} round trips won {totals['round_trip_win_rate']:.2f}, first fill p50/p95 "
                  f"{totals['first_fill_latency_ms']['p50']:.0f}/{totals['first_fill_latency_ms']['p95']:.0f} ms, "
                  f"{totals['risk_halts']} halts); target <= {TARGET_S:g} s: {verdict}")
        t0 = time.perf_counter()
        stats_report(period="day", since=date.today() - timedelta(days=30))
        print(f"stats --period day  last 30 days:  {time.perf_counter() - t0:.2f} s")
    finally:
        from django.db import connections

        connections.close_all()
        if args.postgres:
            _pg(f"DROP DATABASE IF EXISTS {PG_NAME}")
        shutil.rmtree(var, ignore_errors=True)  # a million 4 KB snapshots: gigabytes


if __name__ == "__main__":
    main()
