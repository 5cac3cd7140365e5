"""`ws /ws/status/` over a real websocket protocol (channels' communicator): pushes on change, refuses strangers."""
from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from monitor.consumers import StatusConsumer
from trading.models import DaemonLease, StatusCurrent

pytestmark = pytest.mark.django_db(transaction=True)


def _write_status(lamp: str, verdict: str, trading_state: str) -> None:
    now = timezone.now()
    DaemonLease.objects.update_or_create(name="daemon", defaults=dict(
        token="t", owner="test", host="h", pid=1, started_at=now, heartbeat_at=now))
    payload = {"lamp": lamp, "verdict": verdict, "block_reasons": [], "checks": [{"name": "daemon", "status": verdict,
               "reason": "", "detail": ""}], "daemon": {"state": "running", "heartbeat_at": now.isoformat()},
               "trading": {"state": trading_state}, "ts": now.isoformat()}
    StatusCurrent.objects.update_or_create(id=1, defaults=dict(ts=now, daemon_state="running",
                                                               trading_state=trading_state, verdict=verdict,
                                                               payload=payload))


async def _connect(user) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(StatusConsumer.as_asgi(), "/ws/status/")
    communicator.scope["user"] = user
    return communicator


def test_status_change_is_pushed_without_asking(viewer):
    async_to_sync(_status_change_is_pushed)(viewer)


def test_anonymous_websocket_is_refused():
    async_to_sync(_anonymous_is_refused)()


async def _status_change_is_pushed(viewer):
    await sync_to_async(_write_status)("green", "ok", "monitor")
    communicator = await _connect(viewer)
    connected, _ = await communicator.connect()
    first = await communicator.receive_json_from(timeout=3)

    await sync_to_async(_write_status)("yellow", "degraded", "no_trade")
    second = await communicator.receive_json_from(timeout=3)

    assert connected
    assert first["trading"]["state"] == "monitor"
    assert second["trading"]["state"] == "no_trade" and second["lamp"] == "yellow"
    await communicator.disconnect()


async def _anonymous_is_refused():
    communicator = await _connect(AnonymousUser())

    connected, code = await communicator.connect()

    assert not connected and code == 4401
