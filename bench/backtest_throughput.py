"""Backtest throughput (DESIGN §9: >= 1M ticks/s on one core for 20 days of 1-s ticks, 10 straddles, default params,
with decisions identical tick by tick to driving the Engine one event at a time).

Run from the repository root:  .venv/bin/python bench/backtest_throughput.py [--days 20] [--per-event-ticks N]
                               [--no-anchors] [--fresh-venv]

Data: the seeded synthetic market (`backtests.data.generate`), 20 XNYS sessions of 1-s ticks (468,000) with an IV
column (so each tick is a quote plus two option quotes for the engine). Both replay paths run on the same data:
- fast path: best of 3 warm runs of `run_backtest(path="fast")`, the whole call (kernel + result.json), and the
  same without an IV column (one engine event per tick);
- per-event path: `Engine.on_event` for every event (all ticks unless --per-event-ticks), then both traces are
  compared tick by tick over the ticks it ran.
Anchors, measured side by side in this run: the same delta-hedge rule (hedge a 10x ATM straddle's Black-Scholes
delta when |net| >= 25 shares, cooldown 60 s, min price move 20 bps, <= 500 shares per order, <= 50 hedges per
day, market orders) in backtrader and in nautilus_trader, each installed by this script into a throw-away venv
(var/bench-anchors-venv; --fresh-venv rebuilds it). Their engine run is timed, not the data loading. A package that
will not install here is reported as such.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtests import fast  # noqa: E402
from backtests.data import SyntheticSpec, TickData, generate  # noqa: E402
from backtests.replay import Execution, build_structure, run_backtest, run_per_event  # noqa: E402
from bench._system import best_of  # noqa: E402
from trading.core.params import StrategyParams  # noqa: E402

TARGET_TICKS_PER_S = 1_000_000
TARGET_KERNEL_TICKS_PER_S = 10_000_000
ANCHOR_PACKAGES = {"backtrader": "backtrader==1.9.78.123", "nautilus_trader": "nautilus_trader==1.221.0"}


def bench_fast(data: TickData, params: StrategyParams) -> tuple[float, dict]:
    run_backtest(data.slice(0, 2000), params, path="fast")  # build (or load) the native kernel first
    seconds, outcome = best_of(3, lambda: run_backtest(data, params, path="fast"))
    return len(data) / seconds, outcome


def bench_kernel(data: TickData, params: StrategyParams) -> float:
    """Ticks/s of `fast.run_fast` alone: the compiled event loop and its state arrays, no result.json."""
    structure = build_structure(data, params, 10)
    seconds, _ = best_of(5, lambda: fast.run_fast(data, params, structure, Execution()))
    return len(data) / seconds


def bench_per_event(data: TickData, params: StrategyParams, ticks: int) -> tuple[float, str | None]:
    part = data.slice(0, ticks)
    structure = build_structure(part, params, 10)
    start = time.perf_counter()
    slow = run_per_event(part, params, structure, Execution())
    seconds = time.perf_counter() - start
    quick = fast.run_fast(part, params, structure, Execution())
    return ticks / seconds, quick.mismatch(slow)


# ---- anchors ---------------------------------------------------------------------------------------------------

_COMMON = r'''
import math, sys, time
THRESHOLD, COOLDOWN_S, MIN_MOVE_BPS, MAX_ORDER, MAX_DAILY = 25, 60.0, 20.0, 500, 50
def straddle_delta(spot, now_s, vol):
    t = (T_EXPIRY - now_s) / (365.0 * 86400.0)
    if t <= 0 or vol <= 0:
        return 0.0
    d1 = (math.log(spot / STRIKE) + (RATE - DIV + 0.5 * vol * vol) * t) / (vol * math.sqrt(t))
    n1 = 0.5 * math.erfc(-d1 / math.sqrt(2.0))
    return QTY * 100.0 * (n1 + (n1 - 1.0))  # call delta + put delta
class Rule:
    """The delta-hedge rule: returns the signed shares to trade now, or 0."""
    def __init__(self):
        self.hedge = 0.0; self.last_at = None; self.last_px = None; self.day = None; self.count = 0; self.orders = 0
    def decide(self, now_s, bid, ask, vol):
        mid = (bid + ask) / 2.0
        day = int((now_s - 4 * 3600) // 86400)
        if day != self.day:
            self.day, self.count = day, 0
        net = self.hedge + straddle_delta(mid, now_s, vol)
        if abs(net) < THRESHOLD or self.count >= MAX_DAILY:
            return 0
        if self.last_at is not None and now_s - self.last_at < COOLDOWN_S:
            return 0
        if self.last_px is not None and abs(mid / self.last_px - 1.0) * 1e4 < MIN_MOVE_BPS:
            return 0
        qty = -round(net)
        qty = max(-MAX_ORDER, min(MAX_ORDER, qty))
        self.count += 1; self.orders += 1; self.last_at = now_s; self.last_px = mid
        return qty
def load(path):
    ts, bid, ask, iv = [], [], [], []
    with open(path) as f:
        for line in f:
            a, b, c, d = line.split(",")
            ts.append(float(a)); bid.append(float(b)); ask.append(float(c)); iv.append(float(d))
    return ts, bid, ask, iv
'''

_BACKTRADER = _COMMON + r'''
import backtrader as bt
from datetime import datetime, timezone
ts, bid, ask, iv = load(sys.argv[1])
class Feed(bt.feeds.DataBase):
    lines = ("bid", "ask", "iv")
    def start(self):
        super().start(); self.i = 0
    def _load(self):
        if self.i >= len(ts):
            return False
        i = self.i; self.i += 1
        self.lines.datetime[0] = bt.date2num(datetime.fromtimestamp(ts[i], timezone.utc).replace(tzinfo=None))
        mid = (bid[i] + ask[i]) / 2.0
        self.lines.open[0] = self.lines.high[0] = self.lines.low[0] = self.lines.close[0] = mid
        self.lines.volume[0] = 1e9
        self.lines.bid[0] = bid[i]; self.lines.ask[0] = ask[i]; self.lines.iv[0] = iv[i]
        return True
class Hedger(bt.Strategy):
    def __init__(self):
        self.rule = Rule(); self.i = 0
    def notify_order(self, order):
        if order.status == order.Completed:
            self.rule.hedge += order.executed.size
    def next(self):
        d = self.datas[0]
        now_s = ts[self.i]; self.i += 1
        qty = self.rule.decide(now_s, d.bid[0], d.ask[0], d.iv[0])
        if qty > 0:
            self.buy(size=qty)
        elif qty < 0:
            self.sell(size=-qty)
cerebro = bt.Cerebro(stdstats=False)
cerebro.adddata(Feed())
cerebro.addstrategy(Hedger)
cerebro.broker.setcash(1e9)
cerebro.broker.setcommission(commission=0.005, commtype=bt.CommInfoBase.COMM_FIXED, stocklike=True)
start = time.perf_counter()
strategy = cerebro.run()[0]
elapsed = time.perf_counter() - start
print('{"ticks": %d, "seconds": %r, "hedges": %d}' % (len(ts), elapsed, strategy.rule.orders))
'''

_NAUTILUS = _COMMON + r'''
from decimal import Decimal
import pandas as pd
from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
from nautilus_trader.config import LoggingConfig, StrategyConfig
from nautilus_trader.model.currencies import USD
from nautilus_trader.model.data import QuoteTick
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
from nautilus_trader.model.identifiers import InstrumentId, TraderId, Venue
from nautilus_trader.model.objects import Money, Price, Quantity
from nautilus_trader.persistence.wranglers import QuoteTickDataWrangler
from nautilus_trader.test_kit.providers import TestInstrumentProvider
from nautilus_trader.trading.strategy import Strategy
ts, bid, ask, iv = load(sys.argv[1])
IV = dict(zip((int(round(t * 1e9)) for t in ts), iv))
instrument = TestInstrumentProvider.equity(symbol="NVDA", venue="XNAS")
frame = pd.DataFrame({"bid_price": bid, "ask_price": ask, "bid_size": [1e6] * len(ts), "ask_size": [1e6] * len(ts)},
                     index=pd.to_datetime([int(round(t * 1e9)) for t in ts], utc=True))
ticks = QuoteTickDataWrangler(instrument).process(frame)
class HedgerConfig(StrategyConfig, frozen=True):
    instrument_id: InstrumentId
class Hedger(Strategy):
    def __init__(self, config):
        super().__init__(config); self.rule = Rule()
    def on_start(self):
        self.subscribe_quote_ticks(self.config.instrument_id)
    def on_order_filled(self, event):
        q = float(event.last_qty)
        self.rule.hedge += q if event.order_side == OrderSide.BUY else -q
    def on_quote_tick(self, tick):
        now_s = tick.ts_event / 1e9
        qty = self.rule.decide(now_s, float(tick.bid_price), float(tick.ask_price), IV.get(tick.ts_event, 0.35))
        if qty:
            order = self.order_factory.market(self.config.instrument_id, OrderSide.BUY if qty > 0 else OrderSide.SELL,
                                              Quantity.from_int(abs(qty)))
            self.submit_order(order)
engine = BacktestEngine(BacktestEngineConfig(trader_id=TraderId("BENCH-001"),
                                             logging=LoggingConfig(log_level="ERROR", bypass_logging=True)))
engine.add_venue(Venue("XNAS"), oms_type=OmsType.NETTING, account_type=AccountType.MARGIN, base_currency=USD,
                 starting_balances=[Money(1_000_000_000, USD)])
engine.add_instrument(instrument)
engine.add_data(ticks)
strategy = Hedger(HedgerConfig(instrument_id=instrument.id))
engine.add_strategy(strategy)
start = time.perf_counter()
engine.run()
elapsed = time.perf_counter() - start
print('{"ticks": %d, "seconds": %r, "hedges": %d}' % (len(ts), elapsed, strategy.rule.orders))
'''


def anchors_venv(fresh: bool) -> tuple[Path | None, dict[str, str]]:
    """A throw-away venv with the anchor packages; returns (python, {package: problem}) for those that failed."""
    venv = ROOT / "var" / "bench-anchors-venv"
    python = venv / "bin" / "python"
    problems: dict[str, str] = {}
    if fresh and venv.exists():
        subprocess.run(["rm", "-rf", str(venv)], check=True)
    if not python.exists():
        print(f"creating the throw-away anchor venv {venv} ...", flush=True)
        done = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
        if done.returncode:
            return None, {name: f"venv creation failed: {done.stderr.strip()[-300:]}" for name in ANCHOR_PACKAGES}
    for name, requirement in ANCHOR_PACKAGES.items():
        check = subprocess.run([str(python), "-c", f"import {name}"], capture_output=True, text=True)
        if check.returncode == 0:
            continue
        print(f"installing {requirement} into the anchor venv ...", flush=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], capture_output=True, text=True,
                              timeout=1800)
        if done.returncode:
            problems[name] = f"pip install {requirement} failed: {(done.stderr or done.stdout).strip()[-400:]}"
    return python, problems


def run_anchor(python: Path, name: str, source: str, csv_path: Path, structure: dict) -> dict | str:
    header = "".join(f"{name} = {value!r}\n" for name, value in structure.items())
    script = "import json, math, sys, time\nDIV = 0.0\n" + header + source
    with tempfile.NamedTemporaryFile("w", suffix=f"_{name}.py", delete=False) as f:
        f.write(script)
    try:
        done = subprocess.run([str(python), f.name, str(csv_path)], capture_output=True, text=True, timeout=3600)
    finally:
        os.unlink(f.name)
    if done.returncode:
        return f"run failed: {(done.stderr or done.stdout).strip()[-600:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--per-event-ticks", type=int, default=None, help="limit the per-event run (default: all)")
    parser.add_argument("--no-anchors", action="store_true")
    parser.add_argument("--fresh-venv", action="store_true")
    args = parser.parse_args()

    data = generate(SyntheticSpec(days=args.days, seed=1))
    params = StrategyParams()
    print(f"data: {len(data):,} ticks = {args.days} XNYS sessions of 1-s ticks with an IV column; default params; "
          f"10 straddles; one core")
    fast_rate, outcome = bench_fast(data, params)
    no_iv = dataclasses.replace(data, iv=np.full(len(data), np.nan))
    fast_rate_no_iv, _ = bench_fast(no_iv, params)
    verdict = "MET" if fast_rate >= TARGET_TICKS_PER_S else "NOT MET"
    print(f"fast path        {fast_rate:>12,.0f} ticks/s  (whole run_backtest incl. result.json; target "
          f">= {TARGET_TICKS_PER_S:,}: {verdict}); {outcome.result['hedges']} hedges, "
          f"P&L {outcome.result['pnl_total_usd']:,.2f} USD")
    print(f"fast path, no IV {fast_rate_no_iv:>12,.0f} ticks/s  (one engine event per tick: fallback_vol)")
    kernel_rate = bench_kernel(data, params)
    print(f"kernel           {kernel_rate:>12,.0f} ticks/s  (fast.run_fast alone, IV column; issue target "
          f">= {TARGET_KERNEL_TICKS_PER_S:,}: {'MET' if kernel_rate >= TARGET_KERNEL_TICKS_PER_S else 'NOT MET'})")
    ticks = min(args.per_event_ticks or len(data), len(data))
    slow_rate, mismatch = bench_per_event(data, params, ticks)
    print(f"per-event path   {slow_rate:>12,.0f} ticks/s  over {ticks:,} ticks (Engine.on_event per event); "
          f"fast/per-event = {fast_rate / slow_rate:,.0f}x; traces {'IDENTICAL' if mismatch is None else 'DIFFER: ' + mismatch}")
    if args.no_anchors:
        return
    python, problems = anchors_venv(args.fresh_venv)
    structure_ = outcome.structure
    from trading.core.greeks import expiry_instant

    info = {"RATE": params.risk_free_rate, "STRIKE": structure_.strike, "T_EXPIRY": expiry_instant(structure_.expiry),
            "QTY": float(structure_.straddles)}
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "ticks.csv"
        iv = np.where(np.isfinite(data.iv), data.iv, params.fallback_vol)
        np.savetxt(csv_path, np.column_stack([data.ts_us / 1e6, data.bid, data.ask, iv]), delimiter=",",
                   fmt=["%.6f", "%.10g", "%.10g", "%.10g"])
        for name, source in (("backtrader", _BACKTRADER), ("nautilus_trader", _NAUTILUS)):
            if python is None or name in problems:
                print(f"{name:<16} NOT MEASURED: {problems.get(name, 'no venv')}")
                continue
            out = run_anchor(python, name, source, csv_path, info)
            if isinstance(out, str):
                print(f"{name:<16} NOT MEASURED: {out}")
                continue
            rate = out["ticks"] / out["seconds"]
            print(f"{name:<16} {rate:>12,.0f} ticks/s  ({out['hedges']} hedges; engine run only); "
                  f"Bifrost fast path = {fast_rate / rate:,.1f}x, per-event path = {slow_rate / rate:,.2f}x")


if __name__ == "__main__":
    main()
