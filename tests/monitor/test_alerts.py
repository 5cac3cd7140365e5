"""Alerts from the watchdog's book against a real database and real local servers (a Telegram Bot API stand-in, a
webhook receiver, an SMTP server): deduplicated, repeated sparingly, resolved once, retried when a channel fails."""
from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from monitor.alerts import AlertBook, occurrences, standing
from monitor.models import Alert, AlertDelivery, AlertSilence
from tests.monitor.receivers import HttpReceiver, SmtpReceiver
from trading.models import Operation

pytestmark = pytest.mark.django_db(transaction=True)
T0 = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def telegram(settings) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    settings.BIFROST_TELEGRAM_API_URL = receiver.url
    settings.BIFROST_TELEGRAM_BOT_TOKEN = "123:abc"
    settings.BIFROST_TELEGRAM_CHAT_ID = "42"
    yield receiver
    receiver.close()


@pytest.fixture
def webhook(settings) -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    settings.BIFROST_ALERT_WEBHOOK_URL = f"{receiver.url}/hook"
    yield receiver
    receiver.close()


def _red(*reasons: str) -> dict:
    return {"lamp": "red", "checks": [{"name": r, "status": "blocked", "reason": r, "detail": f"{r} detail"}
                                      for r in reasons]}


GREEN = {"lamp": "green", "checks": [{"name": "hedging", "status": "ok", "reason": "", "detail": ""}]}


def _settle(book: AlertBook, receivers: list[HttpReceiver], count: int, timeout_s: float = 10.0) -> None:
    """Let the book's sending threads finish until each receiver got `count` posts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        book.deliver()
        book.write()
        if all(len(r.posts) >= count for r in receivers) and not book.sending:
            return
        time.sleep(0.02)
    raise AssertionError(f"receivers got {[len(r.posts) for r in receivers]} posts, expected {count}")


def test_red_past_red_s_is_one_message_on_each_channel_and_green_again_one_resolved(settings, telegram, webhook):
    settings.BIFROST_ALERT_RED_S = 30.0
    clock = Clock()
    book = AlertBook(clock)

    book.observe(standing(_red("heartbeat_stale"), clock()), [], "sim")
    clock.advance(29.0)
    book.observe(standing(_red("heartbeat_stale"), clock()), [], "sim")
    before = len(telegram.posts) + len(webhook.posts)
    clock.advance(1.0)
    for _ in range(5):
        book.observe(standing(_red("heartbeat_stale"), clock()), [], "sim")
        clock.advance(1.0)
    _settle(book, [telegram, webhook], 1)
    book.observe(standing(GREEN, clock()), [], "sim")
    _settle(book, [telegram, webhook], 2)

    assert before == 0
    firing, resolved = webhook.bodies()
    assert firing["key"] == "lamp_red:heartbeat_stale" and firing["state"] == "firing"
    assert firing["severity"] == "critical" and firing["reasons"] == ["heartbeat_stale"]
    assert set(firing) == {"key", "kind", "severity", "state", "count", "message", "reasons", "at", "host", "mode"}
    assert resolved["state"] == "resolved"
    assert telegram.posts[0][0] == "/bot123:abc/sendMessage" and telegram.posts[0][1]["chat_id"] == "42"
    assert "heartbeat_stale" in telegram.posts[0][1]["text"]
    alert = Alert.objects.get()
    assert alert.state == "resolved" and alert.deliveries.filter(state="delivered").count() == 4


def test_a_hundred_identical_rejects_are_one_alert_with_a_count(webhook, settings):
    clock = Clock()
    book = AlertBook(clock)
    rejects = [Operation.objects.create(ts=T0, kind="order_rejected",
                                        message=f"bifrost:x:{i} sent → rejected: 201: no margin") for i in range(100)]

    book.observe([], occurrences(rejects[:1]), "paper")
    _settle(book, [webhook], 1)
    for reject in rejects[1:]:  # one every 18 s: the alert keeps firing, its repeat waits for REPEAT_S
        clock.advance(settings.BIFROST_ALERT_REPEAT_S / 100)
        book.observe([], occurrences([reject]), "paper")
        book.deliver()
    clock.advance(settings.BIFROST_ALERT_REPEAT_S / 100)
    book.observe([], [], "paper")
    _settle(book, [webhook], 2)

    alert = Alert.objects.get()
    assert alert.key == "order_rejected:201" and alert.count == 100
    first, repeat = webhook.bodies()
    assert first["count"] == 1 and repeat["count"] == 100 and "99 more since the last message" in repeat["message"]


def test_a_channel_answering_500_is_retried_with_backoff_until_it_takes_the_alert(webhook):
    clock = Clock()
    book = AlertBook(clock)
    webhook.mode = "fail"

    book.observe(standing(_red("risk_halt"), clock()), [], "paper")
    _settle(book, [webhook], 1)
    undelivered = AlertDelivery.objects.get()
    book.deliver()
    before_backoff = len(webhook.posts)
    clock.advance(6.0)
    _settle(book, [webhook], 2)
    webhook.mode = "ok"
    clock.advance(20.0)
    _settle(book, [webhook], 3)

    assert undelivered.state == "pending" and "answered 500" in undelivered.last_error
    assert before_backoff == 1  # nothing resent before its backoff
    delivered = AlertDelivery.objects.get()
    assert delivered.state == "delivered" and delivered.attempts == 3


def test_a_hanging_channel_never_holds_the_watchdog_and_is_recorded_undelivered(telegram):
    clock = Clock()
    book = AlertBook(clock)
    telegram.mode = "hang"

    book.observe(standing(_red("risk_halt"), clock()), [], "paper")
    started = time.monotonic()
    book.deliver()
    handed_over_s = time.monotonic() - started
    deadline = time.monotonic() + 15
    while book.sending and time.monotonic() < deadline:
        time.sleep(0.05)
    book.deliver()
    book.write()

    assert handed_over_s < 0.1  # the send runs in its own thread with its own timeout
    hung = AlertDelivery.objects.get()
    assert hung.state == "pending" and hung.attempts == 1 and "timed out" in hung.last_error


def test_an_alert_email_arrives_at_the_smtp_server(settings):
    smtp = SmtpReceiver()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
    settings.BIFROST_ALERT_EMAILS = ["ops@example.com"]
    try:
        clock = Clock()
        book = AlertBook(clock)

        book.observe(standing(_red("risk_halt"), clock()), [], "live")
        deadline = time.monotonic() + 10
        while not smtp.messages and time.monotonic() < deadline:
            book.deliver()
            time.sleep(0.05)
        book.deliver()
        book.write()
    finally:
        smtp.close()

    [message] = smtp.messages
    assert message["To"] == "ops@example.com" and "[Bifrost critical]" in message["Subject"]
    assert "risk halt" in message.get_payload()
    assert AlertDelivery.objects.get(channel="email").state == "delivered"


def test_silenced_kinds_are_recorded_but_not_sent(webhook):
    AlertSilence.objects.create(kinds=["lamp_red"], until=T0 + timedelta(hours=1), created_by="op")
    clock = Clock()
    book = AlertBook(clock)

    book.observe(standing(_red("not_reconciled"), clock()), [], "paper")
    clock.advance(60)
    book.observe(standing(_red("not_reconciled"), clock()), [], "paper")
    book.deliver()
    book.write()

    assert Alert.objects.get().key == "lamp_red:not_reconciled"
    assert AlertDelivery.objects.get().state == "silenced"
    assert webhook.posts == []


def test_disconnects_inside_the_ib_restart_window_are_not_alerts(settings):
    settings.BIFROST_IB_RESTART_WINDOW = "23:45-00:45"
    in_window = datetime(2026, 3, 11, 4, 15, tzinfo=UTC)  # 00:15 in New York
    outside = datetime(2026, 3, 11, 5, 0, tzinfo=UTC)  # 01:00

    assert standing(_red("broker_disconnected"), in_window) == []
    assert [o.key for o in standing(_red("broker_disconnected"), outside)] == ["broker_disconnected"]


def test_acknowledging_stops_repeats_but_not_the_resolved_message(webhook, settings):
    clock = Clock()
    book = AlertBook(clock)
    book.observe(standing(_red("risk_halt"), clock()), [], "paper")
    _settle(book, [webhook], 1)
    Alert.objects.update(acked_by="otto", acked_at=clock())
    book.write()

    clock.advance(settings.BIFROST_ALERT_REPEAT_S * 3)
    book.observe(standing(_red("risk_halt"), clock()), [], "paper")
    book.deliver()
    book.write()
    book.observe(standing(GREEN, clock()), [], "paper")
    _settle(book, [webhook], 2)

    assert [b["state"] for b in webhook.bodies()] == ["firing", "resolved"]


def test_a_commander_run_that_skips_a_stale_strategy_raises_a_warning(webhook):
    from trading.commander import commander_decide, snapshot_create
    from trading.core.commander import Rules
    from trading.models import CommanderRun, Strategy

    strategy = Strategy.objects.create(slug="keeper", name="keeper", kind="straddle_keeper")
    run = CommanderRun.objects.create(executed_at=T0)
    commander_decide(run=run, snapshot=snapshot_create(account={"net_liquidation": 1e6}, positions=[], now=T0),
                     strategies=[strategy], underlying="NVDA", rules=Rules(), now=T0)
    book = AlertBook(Clock())

    book.observe([], occurrences(Operation.objects.filter(kind="strategy_skipped")), "paper")
    _settle(book, [webhook], 1)

    body = webhook.bodies()[0]
    assert (body["kind"], body["severity"]) == ("strategy_skipped", "warning")
    assert f"commander run #{run.pk} skipped missing: keeper" in body["message"]
