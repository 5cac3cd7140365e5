"""`ws /ws/status/`: pushes the /api/status/ payload whenever it changes.

The daemon is another process, and the lamp must also turn red when it simply stops writing, so each
connection re-reads the status on a short cadence; with Redis the daemon's `status.changed` message makes it
re-read at once."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from monitor.permissions import is_viewer
from monitor.selectors import status_payload_get, status_payload_recent

STATUS_GROUP = "status"
POLL_S = 0.5


class StatusConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not await database_sync_to_async(is_viewer)(user):
            await self.close(code=4401)
            return
        await self.accept()
        self._last = ""
        if self.channel_layer is not None:
            await self.channel_layer.group_add(STATUS_GROUP, self.channel_name)
        self._poller = asyncio.create_task(self._poll())

    async def disconnect(self, code: int) -> None:
        poller = getattr(self, "_poller", None)
        if poller is not None:
            poller.cancel()
        if self.channel_layer is not None:
            await self.channel_layer.group_discard(STATUS_GROUP, self.channel_name)

    async def status_changed(self, event: dict[str, Any]) -> None:
        await self._push(await database_sync_to_async(status_payload_get)())  # the change itself: read it fresh

    async def _poll(self) -> None:
        while True:
            await self._push(await database_sync_to_async(status_payload_recent)())
            await asyncio.sleep(POLL_S)

    async def _push(self, payload: dict[str, Any]) -> None:
        # heartbeat_age_s changes on every read; it alone is no change worth a message.
        fingerprint = json.dumps({**payload, "daemon": {**payload["daemon"], "heartbeat_age_s": None}},
                                 sort_keys=True, default=str)
        if fingerprint != self._last:
            self._last = fingerprint
            await self.send_json(payload)
