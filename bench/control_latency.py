"""POST /api/control/ → the daemon acks it: SQLite (heartbeat poll) vs PostgreSQL (LISTEN/NOTIFY).

DESIGN §9 targets: <= 1 s polling, <= 150 ms with NOTIFY. Pause/resume alternate (the same claim path as stop),
then one stop. Run: .venv/bin/python bench/control_latency.py"""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._system import percentile, running_system  # noqa: E402

COMMANDS = 20
PG_URL = "postgres://postgres@127.0.0.1:5432/bifrost_bench"


def measure(database_url: str | None) -> list[float]:
    import requests

    with running_system(database_url) as system:
        api = requests.Session()
        api.headers["Authorization"] = f"Token {system.token}"
        deadline = time.monotonic() + 30
        while api.get(f"{system.url}/api/status/").json()["daemon"]["state"] != "running":
            assert time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.2)
        latencies = []
        for i in range(COMMANDS + 1):
            command = "stop" if i == COMMANDS else ("pause", "resume")[i % 2]
            created = api.post(f"{system.url}/api/control/", json={"command": command}).json()
            while True:
                state = api.get(f"{system.url}/api/control/{created['id']}/").json()
                if state["acked_at"]:
                    break
                time.sleep(0.005)
            latencies.append((datetime.fromisoformat(state["acked_at"])
                              - datetime.fromisoformat(state["created_at"])).total_seconds())
            time.sleep(0.3)
    return latencies


def main() -> int:
    results = {"SQLite, poll every heartbeat (1 s)": (measure(None), 1.0)}
    pg = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", "DROP DATABASE IF EXISTS bifrost_bench",
                         "-c", "CREATE DATABASE bifrost_bench"], capture_output=True, text=True)
    if pg.returncode == 0:
        results["PostgreSQL, LISTEN/NOTIFY"] = (measure(PG_URL), 0.15)
    else:
        print(f"PostgreSQL not available, skipped: {pg.stderr.strip()}")
    ok = True
    for name, (latencies, target) in results.items():
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        passed = p99 <= target
        ok &= passed
        print(f"{name}: control posted → acked over {len(latencies)} commands: p50 {p50 * 1e3:.0f} ms, "
              f"p99 {p99 * 1e3:.0f} ms (target <= {target * 1e3:.0f} ms)  {'PASS' if passed else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
