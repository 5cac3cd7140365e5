"""The lamp page in a real browser (Debian chromium) against the whole system under supervisord:
green with the sim daemon, Pause → yellow "paused" with no new orders, Resume, a killed daemon → red with the
reason, Start → green again. Screenshots go to var/screenshots/."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import pytest
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import Group, User

from tests.e2e.conftest import REPO, database_url, wait_until
from trading.models import Order

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOTS = REPO / "var" / "screenshots"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                       reason="SKIPPED LOUDLY: Debian chromium and chromium-driver are not installed"),
]

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
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def system(transactional_db, tmp_path, settings):
    port = _free_port()
    settings.BIFROST_HEARTBEAT_S = 0.5
    (tmp_path / "supervisord.conf").write_text(SUPERVISORD_CONF.format(var=tmp_path, repo=REPO,
                                                                       python=sys.executable))
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bifrost.settings", "BIFROST_ALLOW_DEV_SECRET": "1",
           "DATABASE_URL": database_url(), "BIFROST_VAR_DIR": str(tmp_path), "BIFROST_HEARTBEAT_S": "0.5",
           "BIFROST_HISTORY_S": "2", "BIFROST_BIND": f"127.0.0.1:{port}", "BIFROST_LOG_LEVEL": "WARNING"}
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


def _lamp(driver) -> str:
    from selenium.common.exceptions import NoSuchElementException

    try:
        return driver.find_element("id", "lamp").get_attribute("data-lamp") or ""
    except NoSuchElementException:  # still on the login page
        return ""


def _press(driver, command: str) -> None:
    driver.find_element("css selector", f'#controls [data-command="{command}"]').click()
    wait_until(lambda: driver.find_element("id", "confirm").is_displayed(), 5, "the confirmation")
    assert driver.find_element("id", "confirm-text").text  # it says what will happen
    driver.find_element("id", "confirm-ok").click()


def _shot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def test_operator_pauses_resumes_sees_a_dead_daemon_and_starts_it_again(system, browser):
    user = User.objects.create_user("olga")
    user.password = make_password("lamp-test-pw", hasher="pbkdf2_sha256")  # the web process's own hasher
    user.save()
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    browser.get(f"{system['url']}/login/?next=/")
    browser.find_element("id", "id_username").send_keys("olga")
    browser.find_element("id", "id_password").send_keys("lamp-test-pw\n")

    try:
        wait_until(lambda: _lamp(browser) == "green", 45, "a green lamp with the daemon running")
    finally:
        _shot(browser, "lamp-first")
    _shot(browser, "lamp-green")

    _press(browser, "pause")
    started = time.monotonic()
    wait_until(lambda: _lamp(browser) == "yellow" and "paused" in browser.find_element("id", "summary").text,
               2.0, "paused and yellow within 2 s")
    paused_after_s = time.monotonic() - started
    orders = Order.objects.count()
    time.sleep(2.0)
    assert Order.objects.count() == orders
    _shot(browser, "lamp-paused")

    _press(browser, "resume")
    wait_until(lambda: _lamp(browser) == "green", 10, "green after resume")

    pid = system["supervisor"].supervisor.getProcessInfo("daemon")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _lamp(browser) == "red" and "heartbeat_stale" in browser.find_element("id", "reasons").text,
               10, "red with heartbeat_stale")
    _shot(browser, "lamp-dead-daemon")

    _press(browser, "start")
    wait_until(lambda: _lamp(browser) == "green", 45, "green after Start")
    _shot(browser, "lamp-restarted")
    assert paused_after_s < 2.0
