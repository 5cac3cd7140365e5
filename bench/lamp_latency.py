"""Status change → websocket message: the daemon builds a snapshot, writes it, the web pushes it to the lamp.

Measured as receive time − the snapshot's own `ts` (same machine clock) over N messages; DESIGN §9 target:
<= 1.5 s. Run: .venv/bin/python bench/lamp_latency.py"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._system import percentile, running_system  # noqa: E402

MESSAGES = 40


def main() -> int:
    import requests
    import websocket

    with running_system() as system:
        session = requests.Session()
        session.get(f"{system.url}/login/")
        session.post(f"{system.url}/login/", data={"username": "admin", "password": "bench-password",
                                                   "csrfmiddlewaretoken": session.cookies["csrftoken"]},
                     headers={"Referer": f"{system.url}/login/"})
        cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
        ws = websocket.create_connection(system.url.replace("http", "ws") + "/ws/status/",
                                         header=[f"Cookie: {cookies}"], origin=system.url, timeout=10)
        latencies = []
        while len(latencies) < MESSAGES:
            payload = json.loads(ws.recv())
            received = time.time()
            if payload.get("ts") and payload["daemon"]["state"] == "running":
                latencies.append(received - datetime.fromisoformat(payload["ts"]).timestamp())
        ws.close()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    ok = p99 <= 1.5
    print(f"status snapshot built by the daemon → message in a websocket client, {len(latencies)} messages:")
    print(f"  p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms, max {max(latencies) * 1e3:.0f} ms "
          f"(target p99 <= 1500 ms)  {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
