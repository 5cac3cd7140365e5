"""`manage.py alert_test [--channel telegram|webhook|email]`: a test message through each configured channel.

Exit 0 when every one delivered, 1 naming the channel that failed, 2 when none is configured."""
from __future__ import annotations

import socket
import sys
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from monitor.notify import CHANNELS, ChannelError, configured_channels, send


class Command(BaseCommand):
    help = "Send a test alert through each configured channel (or one): exit 0 delivered, 1 failed, 2 none set up."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--channel", choices=CHANNELS)

    def handle(self, *args: Any, **options: Any) -> None:
        channels = configured_channels()
        if options["channel"]:
            channels = [c for c in channels if c == options["channel"]]
        if not channels:
            self.stderr.write("alert_test: no alert channel is configured"
                              + (f" as {options['channel']}" if options["channel"] else "")
                              + " (README: Alerts)")
            sys.exit(2)
        mode = settings.BIFROST_BROKER if settings.BIFROST_BROKER == "sim" else settings.BIFROST_MODE
        payload = {"key": "alert_test", "kind": "alert_test", "severity": "info", "state": "firing", "count": 1,
                   "message": "test alert from manage.py alert_test: this channel works", "reasons": [],
                   "at": datetime.now(UTC).isoformat(), "host": socket.gethostname(), "mode": mode}
        failed = []
        for channel in channels:
            try:
                send(channel, payload)
            except ChannelError as exc:
                failed.append(channel)
                self.stderr.write(f"alert_test: {channel} failed: {exc}")
            else:
                self.stdout.write(f"{channel}: delivered")
        sys.exit(1 if failed else 0)
