"""End-to-end harness: the daemon as a real process (`manage.py run_daemon`) on the test database."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT_S = 0.2


def database_url() -> str:
    """The URL of the database this test runs on, for the daemon process to use the very same one."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    return f"postgres://{user}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def wait_until(predicate: Callable[[], Any], timeout_s: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


class DaemonProcess:
    def __init__(self, var_dir: Path, env: dict[str, str]) -> None:
        self.var_dir = var_dir
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.log_path = var_dir / f"daemon-{time.monotonic_ns()}.log"

    def start(self) -> DaemonProcess:
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "manage.py", "run_daemon"], cwd=REPO, env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True)
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 10.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    @property
    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def daemon_factory(transactional_db: None, tmp_path: Path, settings: Any) -> Iterator[Callable[..., DaemonProcess]]:
    settings.BIFROST_HEARTBEAT_S = HEARTBEAT_S
    started: list[DaemonProcess] = []
    base_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bifrost.settings",
        "BIFROST_ALLOW_DEV_SECRET": "1",
        "DATABASE_URL": database_url(),
        "BIFROST_VAR_DIR": str(tmp_path),
        "BIFROST_HEARTBEAT_S": str(HEARTBEAT_S),
        "BIFROST_HISTORY_S": "1",
        "BIFROST_SIM_TICK_S": "0.1",
        "BIFROST_LOG_LEVEL": "WARNING",
    }

    def make(**env: str) -> DaemonProcess:
        process = DaemonProcess(tmp_path, {**base_env, **env}).start()
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()
