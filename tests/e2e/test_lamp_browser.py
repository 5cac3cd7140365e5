"""The lamp page in a real browser (Debian chromium) against the whole system under supervisord:
green with the sim daemon, Pause → yellow "paused" with no new orders, Resume, a killed daemon → red with the
reason, Start → green again. Screenshots go to var/screenshots/."""
from __future__ import annotations

import os
import signal
import time

import pytest
from django.utils import timezone

from tests.e2e.conftest import BROWSER_MISSING, login, shot, wait_until
from trading.models import CommanderRun, Order

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(BROWSER_MISSING, reason="SKIPPED LOUDLY: Debian chromium and chromium-driver are not installed"),
]


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


def test_operator_pauses_resumes_sees_a_dead_daemon_and_starts_it_again(system, browser):
    login(browser, system["url"], "olga", "operator")

    try:
        wait_until(lambda: _lamp(browser) == "green", 45, "a green lamp with the daemon running")
    finally:
        shot(browser, "lamp-first")
    legs = wait_until(lambda: [r.text for r in browser.find_elements("css selector", "#legs tr") if "NVDA" in r.text],
                      15, "the managed legs with their quotes and greeks")
    assert len(legs) == 2 and all(("ATM" in r or "ITM" in r or "OTM" in r) and "%" in r for r in legs)
    assert "USD" in browser.find_element("id", "account").text  # net liquidation, available funds, buying power
    assert browser.find_element("id", "account-stale").get_attribute("hidden") is not None
    shot(browser, "lamp-green")

    CommanderRun.objects.create(executed_at=timezone.now(), state="completed", summary="dry-run: 0 order(s) planned",
                                decision={"skipped": {"stale": {"keeper": "updated yesterday"}, "missing": {},
                                                      "errored": {}}})
    commander = wait_until(lambda: "skipped stale: keeper" in (t := browser.find_element("id", "commander").text)
                           and t, 15, "the last commander run with its stale strategy")
    assert "completed" in commander and "dry-run" in commander

    _press(browser, "pause")
    started = time.monotonic()
    wait_until(lambda: _lamp(browser) == "yellow" and "paused" in browser.find_element("id", "summary").text,
               2.0, "paused and yellow within 2 s")
    paused_after_s = time.monotonic() - started
    orders = Order.objects.count()
    time.sleep(2.0)
    assert Order.objects.count() == orders
    shot(browser, "lamp-paused")

    _press(browser, "resume")
    wait_until(lambda: _lamp(browser) == "green", 10, "green after resume")

    pid = system["supervisor"].supervisor.getProcessInfo("daemon")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _lamp(browser) == "red" and "heartbeat_stale" in browser.find_element("id", "reasons").text,
               10, "red with heartbeat_stale")
    wait_until(lambda: browser.find_element("id", "as-of").is_displayed(), 5, "the figures marked as of their time")
    statuses = [c.text for c in browser.find_elements("css selector", "#checks td:nth-child(2)")]
    assert "ok" not in statuses and "unknown" in statuses  # a dead daemon's last "ok" is not shown as ok
    assert "not responding" in browser.find_element("id", "as-of").text
    shot(browser, "lamp-dead-daemon")

    _press(browser, "start")
    wait_until(lambda: _lamp(browser) == "green", 45, "green after Start")
    shot(browser, "lamp-restarted")
    assert paused_after_s < 2.0
