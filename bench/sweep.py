"""Sweep throughput through django-q2 (DESIGN §9: 100 parameter sets over 20 days of 1-s ticks <= 60 s on this
2-core machine).

Run from the repository root:  .venv/bin/python bench/sweep.py [--days 20] [--workers 2] [--sets 100]

In a throw-away var dir (SQLite, ORM broker, exactly as `make demo` runs the worker): migrate, store the 20-day
synthetic dataset (468,000 ticks with an IV column), start a real `manage.py qcluster` with `--workers` workers,
warm each worker up with a tiny run (process start and loading the compiled replay are the cluster's start-up,
not the sweep's), then queue one sweep of `--sets` parameter sets (a cooldown_s x min_price_move_bps grid) through
`sweep_enqueue` and time it from the enqueue until the ranked results are stored.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sets", type=int, default=100)
    args = parser.parse_args()

    var = Path(tempfile.mkdtemp(prefix="bifrost-bench-sweep-"))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bifrost.settings", "BIFROST_ALLOW_DEV_SECRET": "1",
           "BIFROST_VAR_DIR": str(var), "BIFROST_Q_WORKERS": str(args.workers), "BIFROST_LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    os.environ.update(env)
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)

    import django

    django.setup()
    from django.core.management import call_command

    from backtests import services
    from backtests.data import SyntheticSpec, generate
    from backtests.models import BacktestRun, RunState, Sweep

    call_command("migrate", verbosity=0)
    ticks = generate(SyntheticSpec(days=args.days, seed=1))
    dataset = services.dataset_create(name=f"bench {args.days} days", ticks=ticks, source="synthetic", user="bench")
    print(f"dataset #{dataset.pk}: {dataset.ticks:,} ticks; cluster: {args.workers} workers, ORM broker on SQLite "
          f"({var})")

    log = (var / "qcluster.log").open("w")
    cluster = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    try:
        warm = [services.backtest_run_enqueue(synthetic={"days": 1, "tick_s": 60.0}, params={}, user="bench")
                for _ in range(args.workers * 2)]
        deadline = time.monotonic() + 120
        while BacktestRun.objects.filter(pk__in=[r.pk for r in warm], state__in=("queued", "running")).exists():
            if time.monotonic() > deadline:
                raise SystemExit("the cluster did not start within 120 s; see " + str(var / "qcluster.log"))
            time.sleep(0.1)

        side = max(1, round(math.sqrt(args.sets)))
        cooldowns = [float(x) for x in range(0, side * 15, 15)][:side]
        moves = [float(x) for x in range(0, side * 5, 5)][: math.ceil(args.sets / side)]
        start = time.perf_counter()
        sweep = services.sweep_enqueue(dataset=dataset, grid={"cooldown_s": cooldowns, "min_price_move_bps": moves},
                                       objective="pnl", user="bench")
        while True:
            state = Sweep.objects.filter(pk=sweep.pk).values_list("state", flat=True).get()
            if state not in (RunState.QUEUED, RunState.RUNNING):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        sweep.refresh_from_db()
        runs = sweep.runs.all()
        per_run = sorted(r.elapsed_s for r in runs if r.elapsed_s is not None)
        verdict = "MET" if elapsed <= TARGET_S and sweep.state == RunState.DONE else "NOT MET"
        print(f"sweep #{sweep.pk}: {sweep.runs_total} sets x {dataset.ticks:,} ticks = "
              f"{sweep.runs_total * dataset.ticks:,} ticks in {elapsed:.1f} s ({sweep.state}); target <= "
              f"{TARGET_S:g} s: {verdict}")
        print(f"per run (in the worker): median {per_run[len(per_run) // 2]:.2f} s, max {per_run[-1]:.2f} s; "
              f"{sweep.runs_total / elapsed:.1f} runs/s over {args.workers} workers")
        for row in sweep.results[:3]:
            print(f"  rank {row['rank']}: {row['params']} -> P&L {row['pnl_total_usd']:,.2f} USD, {row['hedges']} "
                  f"hedges, blocks {row['blocks']}")
    finally:
        cluster.send_signal(signal.SIGTERM)
        try:
            cluster.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cluster.kill()
        log.close()
        shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    main()
