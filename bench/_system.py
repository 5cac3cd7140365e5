"""Bench helper: a throw-away Bifrost (fresh database, daemon on the sim, daphne) in a temporary var dir."""
from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tests.ports import free_port  # never a port an outgoing connection may take first

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
T = TypeVar("T")


def best_of(runs: int, fn: Callable[[], T]) -> tuple[float, T]:
    """(the fastest of `runs` calls in seconds, what the last call returned)."""
    best = math.inf
    out = None
    for _ in range(runs):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out  # type: ignore[return-value]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@dataclass
class System:
    url: str
    token: str
    env: dict[str, str]
    var: Path


def _wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def running_system(database_url: str | None = None, heartbeat_s: float = 1.0) -> Iterator[System]:
    var = Path(tempfile.mkdtemp(prefix="bifrost-bench-"))
    port = free_port()
    env = {**os.environ, "BIFROST_ALLOW_DEV_SECRET": "1", "BIFROST_VAR_DIR": str(var),
           "BIFROST_BIND": f"127.0.0.1:{port}", "BIFROST_HEARTBEAT_S": str(heartbeat_s),
           "BIFROST_ADMIN_PASSWORD": "bench-password", "BIFROST_LOG_LEVEL": "WARNING",
           "BIFROST_CONTROL_RATE": "100000/min", "DJANGO_SETTINGS_MODULE": "bifrost.settings",
           "BIFROST_INSECURE_COOKIES": "1"}  # the bench clients talk plain HTTP
    if database_url:
        env["DATABASE_URL"] = database_url
    setup = subprocess.run([PYTHON, "manage.py", "demo_setup"], cwd=REPO, env=env, check=True,
                           capture_output=True, text=True).stdout
    match = re.search(r"API token for admin: (\w+)", setup)
    assert match, setup
    procs = [subprocess.Popen([PYTHON, "manage.py", name], cwd=REPO, env=env, stdout=(var / f"{name}.log").open("w"),
                              stderr=subprocess.STDOUT) for name in ("run_daemon", "run_web")]
    try:
        _wait_port(port)
        yield System(f"http://127.0.0.1:{port}", match.group(1), env, var)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
