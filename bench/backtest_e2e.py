"""End to end backtest (DESIGN §9): `manage.py backtest --data` on a 60-session 1-s tick CSV with an `iv` column
(~1.4M rows), the whole process from outside, against a bare Python script that does the least a backtest can
(`bench/bare_threshold.py`: the csv module, a Black-Scholes delta per row with math.erfc, a threshold/cooldown
rule). Both run in this process's run, side by side, best of --runs; peak memory is the child's max RSS, and per row
it is the growth over the same command on one session (the interpreter and libraries are not per row).

Run from the repository root:  .venv/bin/python bench/backtest_e2e.py [--sessions 60] [--runs 3]
Target: Bifrost >= 2x faster than the bare script, peak memory <= 64 bytes per row.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backtests.data import SyntheticSpec, generate, write_ticks_csv  # noqa: E402
from backtests.replay import build_structure  # noqa: E402
from trading.core.params import StrategyParams  # noqa: E402

TARGET_SPEEDUP = 2.0
TARGET_BYTES_PER_ROW = 64


# As deployed: bytecode is cached (a shell with PYTHONDONTWRITEBYTECODE would compile Bifrost's modules from source
# in every run, ~0.08 s, and the one-file bare script nearly nothing).
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "BIFROST_ALLOW_DEV_SECRET": "1"}


def timed(argv: list[str]) -> float:
    """Wall seconds of one child process run to completion."""
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - start


def peak_rss(argv: list[str]) -> int:
    """A child's own peak RSS in bytes: it runs the script under a launcher that reports its VmHWM. (Not
    ru_maxrss: Linux carries it over exec from the forking process, so a child of this bench, which holds the
    generated ticks, would report this process's peak whenever its own is lower.)"""
    launcher = ("import runpy, sys\nsys.argv = sys.argv[1:]\n"
                "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit:\n    pass\n"
                "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
                "sys.stderr.write('PEAK %d\\n' % (int(hwm.split()[1]) * 1024))")
    out = subprocess.run([sys.executable, "-c", launcher, *argv[1:]], cwd=ROOT, check=True, capture_output=True,
                         text=True, env=ENV)
    return int(out.stderr.rsplit("PEAK ", 1)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=60)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    params = StrategyParams()
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, days in (("full", args.sessions), ("one", 1)):
            ticks = generate(SyntheticSpec(days=days, seed=11))
            files[name] = (Path(tmp) / f"{name}.csv", len(ticks))
            write_ticks_csv(ticks, files[name][0])
            if name == "full":
                structure = build_structure(ticks, params, 10)
        path, rows = files["full"]
        bifrost = [sys.executable, "manage.py", "backtest", "--data", str(path), "--start-position", "straddle:10",
                   "--out", str(Path(tmp) / "result.json")]
        bare = [sys.executable, "bench/bare_threshold.py", str(path), "--strike", str(structure.strike),
                "--expiry-s", str(structure.expiry_us / 1e6), "--straddles", "10"]
        # Build (or find) the native kernel and the session table first.
        subprocess.run(bifrost, cwd=ROOT, check=True, capture_output=True, env=ENV)
        best: dict[str, float] = {}
        for _ in range(args.runs):  # alternate, so both see the same machine
            for label, argv in (("bifrost", bifrost), ("bare", bare)):
                seconds = timed(argv)
                best[label] = min(best.get(label, seconds), seconds)
        one = [*bifrost[:4], str(files["one"][0]), *bifrost[5:]]
        peak_full, peak_one = peak_rss(bifrost), peak_rss(one)
        per_row = (peak_full - peak_one) / (rows - files["one"][1])
        result = json.loads((Path(tmp) / "result.json").read_text())
    speedup = best["bare"] / best["bifrost"]
    print(json.dumps({
        "rows": rows, "sessions": args.sessions,
        "bifrost_s": round(best["bifrost"], 3), "bare_python_s": round(best["bare"], 3),
        "speedup": round(speedup, 2), "target_speedup": TARGET_SPEEDUP, "speedup_met": speedup >= TARGET_SPEEDUP,
        "peak_rss_mb": round(peak_full / 2**20, 1), "peak_rss_one_session_mb": round(peak_one / 2**20, 1),
        "bytes_per_row": round(per_row, 1), "target_bytes_per_row": TARGET_BYTES_PER_ROW,
        "memory_met": per_row <= TARGET_BYTES_PER_ROW,
        "bifrost_hedges": result["hedges"],
    }, indent=2))


if __name__ == "__main__":
    main()
