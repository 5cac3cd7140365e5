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
RECHECK_S = 2.0  # a logout or a lost role closes an open socket within this long


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
        checked = asyncio.get_running_loop().time()
        while True:
            if asyncio.get_running_loop().time() - checked >= RECHECK_S:
                checked = asyncio.get_running_loop().time()
                if not await database_sync_to_async(self._still_allowed)():
                    await self.close(code=4403)
                    return
            await self._push(await database_sync_to_async(status_payload_recent)())
            await asyncio.sleep(POLL_S)

    def _still_allowed(self) -> bool:
        """The session the socket was opened with still exists (no logout since) and its user still reads."""
        from django.contrib.auth import get_user_model
        from django.contrib.sessions.models import Session
        from django.utils import timezone

        session = self.scope.get("session")
        key = getattr(session, "session_key", None)
        if key is not None and not Session.objects.filter(session_key=key, expire_date__gt=timezone.now()).exists():
            return False
        user = get_user_model().objects.filter(pk=self.scope["user"].pk, is_active=True).first()
        return user is not None and is_viewer(user)

    async def _push(self, payload: dict[str, Any]) -> None:
        # heartbeat_age_s changes on every read; it alone is no change worth a message.
        fingerprint = json.dumps({**payload, "daemon": {**payload["daemon"], "heartbeat_age_s": None}},
                                 sort_keys=True, default=str)
        if fingerprint != self._last:
            self._last = fingerprint
            await self.send_json(payload)
