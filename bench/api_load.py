"""GET /api/status/ with 32 concurrent keep-alive clients against daphne: req/s, p50/p99 latency, errors.

Target (DESIGN §9): >= 300 req/s, p99 <= 100 ms, zero errors. Run: .venv/bin/python bench/api_load.py"""
from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._system import percentile, running_system  # noqa: E402

CLIENTS = 32
DURATION_S = 10.0


async def client(host: str, port: int, token: str, until: float, latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    request = (f"GET /api/status/ HTTP/1.1\r\nHost: {host}\r\nAuthorization: Token {token}\r\n"
               "Connection: keep-alive\r\n\r\n").encode()
    while time.monotonic() < until:
        started = time.perf_counter()
        writer.write(request)
        status_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if b" 200 " not in status_line:
            errors.append(status_line.decode().strip())
    writer.close()


async def load(url: str, token: str) -> tuple[list[float], list[str], float]:
    host, port = url.removeprefix("http://").split(":")
    latencies: list[float] = []
    errors: list[str] = []
    started = time.monotonic()
    await asyncio.gather(*(client(host, int(port), token, started + DURATION_S, latencies, errors)
                           for _ in range(CLIENTS)))
    return latencies, errors, time.monotonic() - started


def main() -> int:
    with running_system() as system:
        time.sleep(3)  # let the daemon write its first snapshots
        latencies, errors, elapsed = asyncio.run(load(system.url, system.token))
    rate = len(latencies) / elapsed
    p50, p99 = percentile(latencies, 50) * 1e3, percentile(latencies, 99) * 1e3
    ok = rate >= 300 and p99 <= 100 and not errors
    print(f"GET /api/status/, {CLIENTS} clients, {DURATION_S:g} s against daphne (SQLite):")
    print(f"  {rate:.0f} req/s (target >= 300), p50 {p50:.1f} ms, p99 {p99:.1f} ms (target <= 100), "
          f"errors {len(errors)} (target 0)  {'PASS' if ok else 'MISS'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
