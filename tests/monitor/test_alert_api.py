"""Alerts over the API, /healthz for an uptime monitor, /metrics for Prometheus, and `manage.py alert_test`."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from monitor.models import Alert, AlertSilence
from tests.monitor.receivers import HttpReceiver
from trading.models import DaemonLease, StatusCurrent

pytestmark = pytest.mark.django_db


def _alert(key: str = "lamp_red:heartbeat_stale", state: str = "firing", **fields) -> Alert:
    now = timezone.now()
    return Alert.objects.create(key=key, kind=key.split(":")[0], severity="critical", state=state, message=key,
                                first_seen=now, last_seen=now, **fields)  # kind: the key's first part


def test_viewers_list_alerts_filtered_by_state_and_kind(viewer_api):
    _alert()
    _alert("order_rejected:201")
    _alert("risk_halt", state="resolved")

    firing = viewer_api.get("/api/alerts/", {"state": "firing"}).json()["results"]
    rejects = viewer_api.get("/api/alerts/", {"kind": "order_rejected"}).json()["results"]
    bad = viewer_api.get("/api/alerts/", {"state": "burning"})

    assert {a["key"] for a in firing} == {"lamp_red:heartbeat_stale", "order_rejected:201"}
    assert [a["key"] for a in rejects] == ["order_rejected:201"]
    assert bad.status_code == 400 and "state" in bad.json()["errors"]


def test_an_operator_acks_an_alert_once_and_a_viewer_cannot(operator_api, viewer_api):
    alert = _alert()

    refused = viewer_api.post(f"/api/alerts/{alert.pk}/ack/")
    first = operator_api.post(f"/api/alerts/{alert.pk}/ack/")
    again = operator_api.post(f"/api/alerts/{alert.pk}/ack/")
    missing = operator_api.post("/api/alerts/999999/ack/")

    assert refused.status_code == 403
    assert first.status_code == again.status_code == 200
    assert first.json()["acked_by"] == "otto" and again.json()["acked_at"] == first.json()["acked_at"]
    assert missing.status_code == 404 and set(missing.json()) == {"detail", "errors"}


def test_operators_silence_known_kinds_until_a_time_and_unknown_kinds_are_refused(operator_api):
    until = (timezone.now() + timedelta(hours=2)).isoformat()

    made = operator_api.post("/api/alerts/silence/", {"kinds": ["lamp_yellow", "data_stale"], "until": until},
                             format="json")
    refused = operator_api.post("/api/alerts/silence/", {"kinds": ["everything"], "until": until}, format="json")

    assert made.status_code == 201 and made.json()["kinds"] == ["lamp_yellow", "data_stale"]
    assert refused.status_code == 400 and "kinds" in refused.json()["errors"]
    assert AlertSilence.objects.count() == 1


def _status(lamp: str, fresh: bool = True) -> None:
    from trading.services import lease_acquire

    lease = lease_acquire(mode="sim", heartbeat_s=60.0)
    if not fresh:
        DaemonLease.objects.update(heartbeat_at=timezone.now() - timedelta(hours=1))
    verdict = {"green": "ok", "yellow": "degraded", "red": "blocked"}[lamp]
    payload = {"lamp": lamp, "verdict": verdict, "block_reasons": [], "checks": [
        {"name": "x", "status": verdict, "reason": "", "detail": ""}],
        "daemon": {"state": "running", "lease": lease.token, "heartbeat_at": timezone.now().isoformat()},
        "trading": {"state": "monitor"}, "book": {"net_delta_shares": 3.0, "hedge_shares": -120.0},
        "pnl": {"daily_usd": 42.5}, "counters": {"daily_hedges": 7}, "ts": timezone.now().isoformat()}
    StatusCurrent.objects.update_or_create(id=1, defaults=dict(ts=timezone.now(), daemon_state="running",
                                                               trading_state="monitor", verdict=verdict,
                                                               payload=payload))


@pytest.mark.parametrize("lamp, fresh, word, code", [
    ("green", True, "ok", 200), ("yellow", True, "degraded", 200), ("red", True, "down", 503),
    ("green", False, "down", 503),  # a dead daemon's last green snapshot is still down
])
def test_healthz_answers_anyone_with_only_a_word(lamp, fresh, word, code):
    _status(lamp, fresh)

    got = Client().get("/healthz")
    head = Client().head("/healthz")

    assert got.status_code == head.status_code == code
    assert got.json() == {"status": word}


def test_healthz_without_any_daemon_is_down():
    assert Client().get("/healthz").status_code == 503


def test_metrics_need_a_viewer_unless_opened(viewer_api, settings):
    _status("green")
    _alert()

    anonymous = Client().get("/metrics")
    scraped = viewer_api.get("/metrics")
    settings.BIFROST_METRICS_OPEN = True
    opened = Client().get("/metrics")

    assert anonymous.status_code == 401
    text = scraped.content.decode()
    assert scraped.status_code == 200 and opened.status_code == 200
    for line in ('bifrost_lamp{colour="green"} 1.0', 'bifrost_lamp{colour="red"} 0.0', "bifrost_hedge_shares -120.0",
                 "bifrost_net_delta_shares 3.0", "bifrost_daily_pnl_usd 42.5", "bifrost_hedges_today 7.0",
                 'bifrost_alerts_open{severity="critical"} 1.0', "bifrost_heartbeat_age_seconds"):
        assert line in text, line


def test_alert_test_exits_0_delivered_1_failed_2_unconfigured(settings, capsys):
    with pytest.raises(SystemExit) as none:
        call_command("alert_test")
    receiver = HttpReceiver()
    settings.BIFROST_ALERT_WEBHOOK_URL = receiver.url
    try:
        with pytest.raises(SystemExit) as delivered:
            call_command("alert_test")
        receiver.mode = "fail"
        with pytest.raises(SystemExit) as failed:
            call_command("alert_test", "--channel", "webhook")
    finally:
        receiver.close()

    assert (none.value.code, delivered.value.code, failed.value.code) == (2, 0, 1)
    assert "webhook failed" in capsys.readouterr().err
    assert receiver.posts[0][1]["kind"] == "alert_test"
