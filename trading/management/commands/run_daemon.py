"""`manage.py run_daemon`: the trading daemon, one process, one asyncio loop.

Exit codes (a Contract): 0 after an operator stop, 2 bad configuration, 3 the lease is held by another daemon,
4 the lease was lost while running, 70 internal error. supervisord restarts every one but 0 and gives up (FATAL)
only on configuration errors: any other failure exits no sooner than MIN_RUN_S after the start, later than
supervisord's `startsecs`, so it never counts as a failed start (a daemon that finds the lease held keeps
retrying: a standby that takes over when the holder dies)."""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, connections

from trading.brokers.factory import broker_from_settings
from trading.daemon.runtime import EXIT_CONFIG, EXIT_INTERNAL, EXIT_LEASE_HELD, EXIT_STOPPED, Daemon
from trading.errors import ConfigError, LeaseHeldError

log = logging.getLogger("trading.daemon")
MIN_RUN_S = 8.0  # above deploy/supervisord.conf's startsecs (5 s): a slow start-up is not a failed start


class Command(BaseCommand):
    help = "Run the Bifrost trading daemon (stop with SIGTERM/SIGINT or a stop command)."

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        try:
            broker = broker_from_settings()
        except ConfigError as exc:
            self.stderr.write(f"run_daemon: {exc}")
            sys.exit(EXIT_CONFIG)
        _daemon_database_timeouts()
        # The start-up heap (Django, the broker library) lives as long as the process: keep it out of the
        # collector's full passes, which otherwise stall the trading path for milliseconds.
        gc.collect()
        gc.freeze()
        offset = timedelta(seconds=settings.BIFROST_CLOCK_OFFSET_S)
        try:
            code = asyncio.run(Daemon(broker, clock=lambda: datetime.now(UTC) + offset).run())
        except LeaseHeldError as exc:
            self.stderr.write(f"run_daemon: refusing to start: {exc}")
            code = EXIT_LEASE_HELD
        except ConfigError as exc:
            self.stderr.write(f"run_daemon: {exc}")
            code = EXIT_CONFIG
        except (DatabaseError, OSError) as exc:
            log.critical("run_daemon: cannot run: %r", exc)
            code = EXIT_INTERNAL
        except Exception:  # noqa: BLE001 - whatever it was, supervisord must see a failure and restart us
            log.critical("run_daemon: internal error", exc_info=True)
            code = EXIT_INTERNAL
        if code not in (EXIT_STOPPED, EXIT_CONFIG):
            linger_s = MIN_RUN_S - (time.monotonic() - started)
            if linger_s > 0:
                log.warning("exiting with code %d in %.1f s (supervisord restarts the daemon)", code, linger_s)
                time.sleep(linger_s)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # A database call stuck in its worker thread must not hold the exit: everything owed is journaled.
        os._exit(code)


def _daemon_database_timeouts() -> None:
    """The daemon's PostgreSQL connections give up instead of hanging (connect, statement and lock timeouts)."""
    for alias in connections:
        db = connections[alias].settings_dict
        if db["ENGINE"].endswith("postgresql"):
            options = db.setdefault("OPTIONS", {})
            for key, value in settings.BIFROST_DAEMON_DB_OPTIONS.items():
                options[key] = f"{options[key]} {value}" if key == "options" and options.get(key) else value
