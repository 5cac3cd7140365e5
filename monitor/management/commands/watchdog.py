"""`manage.py watchdog`: the dead-man and the alert sender, a process of its own beside web, daemon and worker.

Under supervisord it is an event listener (deploy/supervisord.conf): it hears the daemon program exit or go FATAL
the moment it happens, and between events it looks at the status, the lease and the operations log every
BIFROST_WATCHDOG_S. Run by hand it only looks. Its stdout belongs to supervisord's protocol: it logs to stderr."""
from __future__ import annotations

import logging
import os
import re
import select
import sys
import xmlrpc.client
from datetime import UTC, datetime
from typing import IO, Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import DatabaseError, close_old_connections

from monitor.alerts import AlertBook, Observation, occurrences, standing, supervisor_event
from monitor.selectors import status_payload_get
from trading.models import Operation

log = logging.getLogger("monitor.watchdog")
_EXITED = re.compile(r"exited: daemon \(([^)]*)\)")


def utc_now() -> datetime:
    return datetime.now(UTC)


class SupervisorEvents:
    """supervisord's event listener protocol: READY on stdout, a header line and a payload on stdin, RESULT back."""

    def __init__(self, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.stdin, self.stdout = stdin, stdout
        self._send(b"READY\n")

    def poll(self, timeout_s: float) -> list[tuple[dict[str, str], dict[str, str]]]:
        events = []
        while select.select([self.stdin], [], [], timeout_s)[0]:
            line = self.stdin.readline()
            if not line:
                raise EOFError("supervisord closed the event channel")
            headers = dict(token.split(":", 1) for token in line.decode().split())
            body = self.stdin.read(int(headers["len"])).decode()
            first, _, _ = body.partition("\n")
            events.append((headers, dict(token.split(":", 1) for token in first.split() if ":" in token)))
            self._send(b"RESULT 2\nOK")
            self._send(b"READY\n")
            timeout_s = 0.0
        return events

    def _send(self, data: bytes) -> None:
        self.stdout.write(data)
        self.stdout.flush()


def _why_the_daemon_exited() -> str:
    """supervisord's own words ("terminated by SIGKILL", "exit status 70") from its log."""
    from trading.supervisor import supervisor_proxy

    try:
        text = supervisor_proxy().supervisor.readLog(-8000, 0)
    except (OSError, xmlrpc.client.Fault, xmlrpc.client.ProtocolError):
        return "unexpected exit"
    found = _EXITED.findall(text)
    return found[-1].replace("; not expected", "") if found else "unexpected exit"


class Command(BaseCommand):
    help = "Watch the daemon from outside and send alerts (Telegram, webhook, e-mail); see README 'Alerts'."

    def handle(self, *args: Any, **options: Any) -> None:
        under_supervisor = "SUPERVISOR_SERVER_URL" in os.environ and not sys.stdin.isatty()
        events = SupervisorEvents(sys.stdin.buffer, sys.stdout.buffer) if under_supervisor else None
        book = AlertBook(utc_now)
        cursor = 0
        try:
            book.load()
            cursor = Operation.objects.order_by("-id").values_list("id", flat=True).first() or 0
        except DatabaseError as exc:
            log.error("database unreachable at start (judging from memory until it answers): %s", exc)
        log.warning("watchdog running (%s)", "supervisord event listener" if events else "standalone")
        mode = settings.BIFROST_BROKER if settings.BIFROST_BROKER == "sim" else settings.BIFROST_MODE
        while True:
            heard: list[Observation] = []
            if events is not None:
                for headers, payload in events.poll(settings.BIFROST_WATCHDOG_S):
                    if headers.get("eventname") == "PROCESS_STATE_EXITED" and payload.get("processname") == "daemon":
                        payload["why"] = _why_the_daemon_exited()
                    if (o := supervisor_event(headers, payload)) is not None:
                        heard.append(o)
            else:
                select.select([], [], [], settings.BIFROST_WATCHDOG_S)
            now_standing, happened, cursor = self._look(cursor)
            book.observe(now_standing, heard + happened, mode)
            book.deliver()
            try:
                book.write()
            except DatabaseError as exc:
                log.error("could not record alerts (kept in memory): %s", exc)
                close_old_connections()

    @staticmethod
    def _look(cursor: int) -> tuple[list[Observation], list[Observation], int]:
        """The standing conditions, the occurrences since `cursor` (an operation id), and the new cursor; or the
        database's own absence as a condition."""
        try:
            payload = status_payload_get()
            ops = list(Operation.objects.filter(id__gt=cursor).order_by("id")[:5000])
        except DatabaseError as exc:
            close_old_connections()
            return [Observation("db_outage:watchdog", "db_outage", "critical",
                                f"the watchdog cannot reach the database: {exc}", ("db_unavailable",))], [], cursor
        return standing(payload, utc_now()), occurrences(ops), (ops[-1].id if ops else cursor)
