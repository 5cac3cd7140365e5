"""End-to-end harness: the daemon as a real process (`manage.py run_daemon`) on the test database."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.ports import free_port

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

    def freeze(self) -> None:
        """SIGSTOP, between two of its database writes. On SQLite a process frozen inside a write transaction holds
        the database's one write lock, and nobody (a successor included) can write until it resumes: that is
        SQLite's nature, not the lease's, so the drill freezes it outside one (PostgreSQL has no such lock)."""
        import sqlite3

        assert self.proc is not None
        for _ in range(200):
            self.proc.send_signal(signal.SIGSTOP)
            self._until_stopped()
            if connection.vendor != "sqlite":
                return
            probe = sqlite3.connect(connection.settings_dict["NAME"], timeout=0)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.rollback()
                return
            except sqlite3.OperationalError:
                self.proc.send_signal(signal.SIGCONT)
                time.sleep(0.01)
            finally:
                probe.close()
        raise AssertionError("could not freeze the daemon between two database writes")

    def _until_stopped(self) -> None:
        """kill() returns before the kernel has stopped every thread of a process running on another core: wait
        until /proc says it is stopped, or what it does in that moment would count as done while frozen."""
        assert self.proc is not None
        tasks = Path(f"/proc/{self.proc.pid}/task")
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            states = [(t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()]
            if all(state in "tT" for state in states):
                return
            time.sleep(0.001)
        raise AssertionError(f"daemon {self.proc.pid} did not stop")

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


# ---- the whole system under supervisord, and a real browser (Debian chromium) ----------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOTS = REPO / "var" / "screenshots"
BROWSER_MISSING = not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists())

SUPERVISORD_CONF = """
[unix_http_server]
file={var}/supervisor.sock
[supervisord]
logfile={var}/supervisord.log
pidfile={var}/supervisord.pid
childlogdir={var}
directory={repo}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[program:web]
command={python} manage.py run_web
directory={repo}
redirect_stderr=true
stdout_logfile={var}/web.log
[program:daemon]
command={python} manage.py run_daemon
directory={repo}
autorestart=false
startsecs=1
redirect_stderr=true
stdout_logfile={var}/daemon.log
[program:worker]
command={python} manage.py qcluster
directory={repo}
autostart=false
stopasgroup=true
redirect_stderr=true
stdout_logfile={var}/worker.log
"""


@pytest.fixture
def system(transactional_db, tmp_path, settings):
    """web + daemon (sim) under a real supervisord on this test's database; `worker` (qcluster) on request."""
    port = free_port()
    settings.BIFROST_HEARTBEAT_S = 0.5
    (tmp_path / "supervisord.conf").write_text(SUPERVISORD_CONF.format(var=tmp_path, repo=REPO,
                                                                       python=sys.executable))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bifrost.settings", "BIFROST_ALLOW_DEV_SECRET": "1",
           "DATABASE_URL": database_url(), "BIFROST_VAR_DIR": str(tmp_path), "BIFROST_HEARTBEAT_S": "0.5",
           "BIFROST_HISTORY_S": "2", "BIFROST_BIND": f"127.0.0.1:{port}", "BIFROST_LOG_LEVEL": "WARNING",
           "BIFROST_Q_WORKERS": "1"}
    supervisord = subprocess.Popen([str(Path(sys.executable).parent / "supervisord"), "-n", "-c",
                                    str(tmp_path / "supervisord.conf")], env=env, cwd=REPO)
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=_transport(tmp_path))
    wait_until(lambda: _answers(port), 30, "the web to answer")
    yield {"url": f"http://127.0.0.1:{port}", "supervisor": proxy, "var": tmp_path}
    supervisord.send_signal(signal.SIGTERM)
    supervisord.wait(20)


def _transport(var: Path):
    from supervisor.xmlrpc import SupervisorTransport

    return SupervisorTransport(None, None, serverurl=f"unix://{var / 'supervisor.sock'}")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1280,1400"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def login(driver, url: str, username: str, group: str, *, next_path: str = "/") -> None:
    """A user in `group` logs in through the login page (the web process checks the password itself)."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user(username)
    user.password = make_password("browser-test-pw", hasher="pbkdf2_sha256")  # the web process's own hasher
    user.save()
    user.groups.add(Group.objects.get_or_create(name=group)[0])
    driver.get(f"{url}/login/?next={next_path}")
    driver.find_element("id", "id_username").send_keys(username)
    driver.find_element("id", "id_password").send_keys("browser-test-pw\n")
