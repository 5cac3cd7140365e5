"""Backtests from the web in a real browser: a researcher queues one from the Backtests page (a bad params field is
refused first, on its field), a real django-q2 worker under supervisord runs it, and the page shows it done with
its charts. Screenshots go to var/screenshots/."""
from __future__ import annotations

import pytest

from backtests.models import BacktestRun, RunState
from tests.e2e.conftest import BROWSER_MISSING, login, shot, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(BROWSER_MISSING, reason="SKIPPED LOUDLY: Debian chromium and chromium-driver are not installed"),
]


def _text(driver, element_id: str) -> str:
    """The element's text, or "" while the page reloads (it refreshes itself until the run has finished)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(driver.find_element("id", element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def _set(driver, element_id: str, text: str) -> None:
    field = driver.find_element("id", element_id)
    field.clear()
    field.send_keys(text)


def test_a_researcher_queues_a_backtest_from_the_page_and_reads_its_charts(system, browser):
    login(browser, system["url"], "rita", "researcher", next_path="/backtests/")
    wait_until(lambda: browser.find_elements("id", "backtest-form"), 15, "the Backtests page")

    _set(browser, "id_run-params_text", '{"cooldown_s": -5}')
    browser.find_element("css selector", '#backtest-form button[name="queue_run"]').click()
    wait_until(lambda: browser.find_elements("css selector", '[data-field="params_text"]'), 10, "the refusal")
    assert "cooldown_s" in browser.find_element("css selector", '[data-field="params_text"]').text
    assert BacktestRun.objects.count() == 0

    _set(browser, "id_run-params_text", '{"cooldown_s": 30, "trading_hours_only": false}')
    browser.find_element("css selector", '#backtest-form button[name="queue_run"]').click()
    wait_until(lambda: _text(browser, "run-state"), 10, "the run's page")
    run = BacktestRun.objects.get()
    assert run.state == RunState.QUEUED and run.params["cooldown_s"] == 30 and run.created_by == "rita"

    system["supervisor"].supervisor.startProcess("worker")
    try:
        wait_until(lambda: "done" in _text(browser, "run-state"), 90, "the worker to finish it")
    finally:
        shot(browser, "backtest-detail")
    assert len(browser.find_elements("css selector", "svg.chart")) >= 2
    run.refresh_from_db()
    assert run.progress == 100 and run.result["ticks"] == 23_400

    browser.get(f"{system['url']}/backtests/")
    assert str(run.pk) in browser.find_element("id", "runs").text
    shot(browser, "backtests-list")
