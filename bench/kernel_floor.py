"""How much of the backtest kernel's time is the Black-Scholes pricing its decisions need, and how much the rest:
what stands between it and 10M ticks/s (100 ns a tick) with decisions identical to the engine's.

Run from the repository root:  .venv/bin/python bench/kernel_floor.py [--days 20]

A tick with an IV column is three engine events: the stock quote, then the call's and the put's option quotes.
Before it decides after each, the engine prices every leg whose inputs changed (`ManagedBook.compute_greeks`): the
stock quote moves the spot under both legs (still at their previous IV), each option quote brings its leg a new
IV. The decision after each event reads the delta those prices give, so the kernel must make the same
evaluations to make the same decisions: up to four Black-Scholes calls a tick (two when the IV holds still).

This script replays exactly those calls (the compiled `bs_scalar` the kernel runs, with the kernel's own
skip-when-unchanged rule) over the throughput bench's data, and times them next to the kernel itself, best of 5.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtests import fast, jit  # noqa: E402
from backtests.data import SyntheticSpec, generate  # noqa: E402
from backtests.replay import Execution, build_structure  # noqa: E402
from bench._system import best_of  # noqa: E402
from trading.core.greeks import bs_scalar, expiry_instant, years_to  # noqa: E402
from trading.core.params import StrategyParams  # noqa: E402
from trading.core.rules import mid_price  # noqa: E402

TARGET_KERNEL_TICKS_PER_S = 10_000_000


def pricing(ts: np.ndarray, bid: np.ndarray, ask: np.ndarray, iv: np.ndarray, strike: float, expiry_s: float,
            rate: float, div: float, fallback_vol: float) -> tuple[int, float]:
    """The Black-Scholes calls the engine's decisions need over these ticks: (how many, a checksum of them)."""
    last = np.full((2, 3), math.nan)  # per leg: the spot, time and vol it was last priced at
    leg_iv = np.full(2, math.nan)
    calls = 0
    checksum = 0.0
    for i in range(ts.shape[0]):
        t = years_to(expiry_s, ts[i] / 1e6)
        spot = mid_price(bid[i], ask[i])
        for event in range(3):  # the stock quote (both legs), then each leg's option quote
            if event > 0:
                leg_iv[event - 1] = iv[i]
            for k in range(2):
                vol = fallback_vol if math.isnan(leg_iv[k]) else leg_iv[k]
                if last[k, 0] == spot and last[k, 1] == t and last[k, 2] == vol:
                    continue
                price, delta, gamma, _, _ = bs_scalar(1.0 - 2.0 * k, spot, strike, t, rate, div, vol)
                last[k, 0], last[k, 1], last[k, 2] = spot, t, vol
                calls += 1
                checksum += price + delta + gamma
    return calls, checksum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=20)
    args = parser.parse_args()
    data = generate(SyntheticSpec(days=args.days, seed=1))
    params = StrategyParams()
    structure = build_structure(data, params, 10)
    n = len(data)
    ts, bid, ask, iv = (np.ascontiguousarray(a, dtype=d) for a, d in (
        (data.ts_us, np.int64), (data.bid, np.float64), (data.ask, np.float64), (data.iv, np.float64)))
    priced = jit.compiled(pricing)
    inputs = (ts, bid, ask, iv, structure.strike, expiry_instant(structure.expiry), params.risk_free_rate,
              params.dividend_yield, params.fallback_vol)
    priced(*(a[:100] if isinstance(a, np.ndarray) else a for a in inputs))  # compile (or load the cache) first
    fast.run_fast(data.slice(0, 2000), params, structure, Execution())
    pricing_s, (calls, _) = best_of(5, lambda: priced(*inputs))
    kernel_s, _ = best_of(5, lambda: fast.run_fast(data, params, structure, Execution()))
    kernel_ns, pricing_ns = kernel_s / n * 1e9, pricing_s / n * 1e9
    print(f"data: {n:,} ticks = {args.days} XNYS sessions of 1-s ticks with an IV column; default params; "
          f"10 straddles; one core")
    print(f"kernel            {kernel_ns:7.0f} ns/tick  = {n / kernel_s:>12,.0f} ticks/s")
    print(f"pricing alone     {pricing_ns:7.0f} ns/tick  = {n / pricing_s:>12,.0f} ticks/s  "
          f"({calls / n:.2f} Black-Scholes calls a tick, {pricing_s / calls * 1e9:.0f} ns each)")
    print(f"everything else   {kernel_ns - pricing_ns:7.0f} ns/tick  (three evaluations: marks, ledger, guards, "
          f"state machine, the trace row)")
    ceiling = n / pricing_s
    print(f"issue target      {1e9 / TARGET_KERNEL_TICKS_PER_S:7.0f} ns/tick  = {TARGET_KERNEL_TICKS_PER_S:>12,} "
          f"ticks/s: {'reachable' if ceiling >= TARGET_KERNEL_TICKS_PER_S else 'NOT REACHABLE'} with identical "
          f"decisions (the pricing alone caps the kernel at {ceiling:,.0f} ticks/s)")


if __name__ == "__main__":
    main()
