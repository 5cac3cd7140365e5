"""The anchor of the end-to-end backtest benchmark (DESIGN §9): a bare Python script that only parses a tick CSV
with the `csv` module and applies a delta-threshold hedge rule to a fixed ATM straddle.

Run:  python bench/bare_threshold.py TICKS.csv --strike 180 --expiry-s 1774641600 [--straddles 10] [--rate 0.05]

Per row it parses ts (ISO 8601 with an offset, or epoch seconds), bid, ask and iv (an empty iv carries the last one,
`--fallback-vol` before the first), computes the straddle's Black-Scholes delta with `math.erfc`, and hedges the
net delta to zero when |net| >= 25 shares, at most every 60 s, only after a 20 bps move since the last hedge, at
most 500 shares an order and 50 hedges a day, filling at the touch at once. No validation, no P&L, no
calendar: the least a backtest has to do. It imports nothing from Bifrost, so it measures plain Python. Prints one
JSON line: rows, hedges, hedged shares and the seconds it took (process start-up excluded: `bench/backtest_e2e.py`
times the whole process from outside).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import time
from datetime import datetime

THRESHOLD_SHARES = 25.0
COOLDOWN_S = 60.0
MIN_MOVE_BPS = 20.0
MAX_ORDER_SHARES = 500.0
MAX_DAILY_HEDGES = 50
SECONDS_PER_YEAR = 365.0 * 86_400.0
SQRT2 = math.sqrt(2.0)


def straddle_delta(spot: float, now_s: float, vol: float, strike: float, expiry_s: float, rate: float,
                   straddles: float) -> float:
    """Shares of delta of `straddles` long calls and puts (100 shares each)."""
    t = (expiry_s - now_s) / SECONDS_PER_YEAR
    if t <= 0.0 or vol <= 0.0:
        return 0.0
    d1 = (math.log(spot / strike) + (rate + 0.5 * vol * vol) * t) / (vol * math.sqrt(t))
    n1 = 0.5 * math.erfc(-d1 / SQRT2)
    return straddles * 100.0 * (2.0 * n1 - 1.0)  # call delta n1 plus put delta n1 - 1


def seconds(text: str) -> float:
    if "-" in text[1:] and ("T" in text or " " in text):
        return datetime.fromisoformat(text).timestamp()
    return float(text)


def run(path: str, strike: float, expiry_s: float, rate: float, straddles: float, fallback_vol: float) -> dict:
    hedge = 0.0
    hedged = 0.0
    hedges = 0
    last_at = -math.inf
    last_px = math.nan
    day = -1
    today = 0
    vol = fallback_vol
    rows = 0
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [c.strip().lower() for c in next(reader)]
        i_ts, i_bid, i_ask = header.index("ts"), header.index("bid"), header.index("ask")
        i_iv = header.index("iv") if "iv" in header else None
        for row in reader:
            if not row:
                continue
            rows += 1
            now_s = seconds(row[i_ts])
            mid = (float(row[i_bid]) + float(row[i_ask])) / 2.0
            if i_iv is not None and row[i_iv]:
                vol = float(row[i_iv])
            session = int((now_s - 4 * 3600) // 86_400)
            if session != day:
                day, today = session, 0
            net = hedge + straddle_delta(mid, now_s, vol, strike, expiry_s, rate, straddles)
            if abs(net) < THRESHOLD_SHARES or today >= MAX_DAILY_HEDGES or now_s - last_at < COOLDOWN_S:
                continue
            if last_px == last_px and abs(mid / last_px - 1.0) * 1e4 < MIN_MOVE_BPS:
                continue
            qty = max(-MAX_ORDER_SHARES, min(MAX_ORDER_SHARES, -float(round(net))))
            hedge += qty
            hedged += abs(qty)
            hedges += 1
            today += 1
            last_at, last_px = now_s, mid
    return {"rows": rows, "hedges": hedges, "hedged_shares": hedged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv")
    parser.add_argument("--strike", type=float, required=True)
    parser.add_argument("--expiry-s", type=float, required=True, help="expiry instant, POSIX seconds")
    parser.add_argument("--rate", type=float, default=0.05)
    parser.add_argument("--straddles", type=float, default=10.0)
    parser.add_argument("--fallback-vol", type=float, default=0.35)
    args = parser.parse_args()
    start = time.perf_counter()
    out = run(args.csv, args.strike, args.expiry_s, args.rate, args.straddles, args.fallback_vol)
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out))


if __name__ == "__main__":
    main()
