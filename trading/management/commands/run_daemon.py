"""`manage.py run_daemon`: the trading daemon, one process, one asyncio loop."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand

from trading.brokers.factory import broker_from_settings
from trading.daemon.runtime import Daemon
from trading.errors import ConfigError, LeaseHeldError

log = logging.getLogger("trading.daemon")
EXIT_LEASE_HELD = 3


class Command(BaseCommand):
    help = "Run the Bifrost trading daemon (stop with SIGTERM/SIGINT or a stop command)."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            broker = broker_from_settings()
        except ConfigError as exc:
            self.stderr.write(f"run_daemon: {exc}")
            sys.exit(2)
        # The start-up heap (Django, the broker library) lives as long as the process: keep it out of the
        # collector's full passes, which otherwise stall the trading path for milliseconds.
        gc.collect()
        gc.freeze()
        try:
            code = asyncio.run(Daemon(broker).run())
        except LeaseHeldError as exc:
            self.stderr.write(f"run_daemon: refusing to start: {exc}")
            sys.exit(EXIT_LEASE_HELD)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # A database call stuck in its worker thread must not hold the exit: everything owed is journaled.
        os._exit(code)
