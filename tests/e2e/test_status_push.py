"""Across processes: the daemon (its own process, PostgreSQL) writes a status change and the websocket consumer
pushes it; with Redis the daemon's `status.changed` message reaches the consumer through the channel layer."""
from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connection

from monitor.consumers import StatusConsumer
from tests.e2e.test_daemon_sim import _command, _wait_command

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.django_db(transaction=True)]
REDIS = "redis://127.0.0.1:6379/7"


def test_a_daemon_status_change_is_pushed_to_the_websocket(daemon_factory, settings):
    from django.contrib.auth.models import Group, User

    viewer = User.objects.create_user("vic")
    viewer.groups.add(Group.objects.get_or_create(name="viewer")[0])
    if connection.vendor != "postgresql":
        pytest.skip("SKIPPED LOUDLY: the cross-process push test runs on PostgreSQL (make test-postgres)")
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                                           "CONFIG": {"hosts": [REDIS]}}}
    daemon_factory(REDIS_URL=REDIS)

    async def scenario() -> float:
        from channels.layers import channel_layers

        channel_layers.backends.clear()  # pick up the Redis layer configured above
        communicator = WebsocketCommunicator(StatusConsumer.as_asgi(), "/ws/status/")
        communicator.scope["user"] = viewer
        assert (await communicator.connect(timeout=10))[0]  # a loaded CI machine can take more than 1 s
        assert get_channel_layer().__class__.__name__ == "RedisChannelLayer"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait for the running daemon
            message = await communicator.receive_json_from(timeout=30)
            if message["daemon"]["state"] == "running":
                break
        await sync_to_async(lambda: _wait_command(_command("pause")))()
        started = time.monotonic()
        while True:
            message = await communicator.receive_json_from(timeout=5)
            if message["trading"]["paused"]:
                await communicator.disconnect()
                return time.monotonic() - started

    latency_s = async_to_sync(scenario)()

    assert latency_s < 1.5
