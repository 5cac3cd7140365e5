"""`manage.py run_web`: daphne (HTTP + websockets) on BIFROST_BIND, 127.0.0.1:8000 unless set."""
from __future__ import annotations

from typing import Any

from daphne.cli import CommandLineInterface
from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the control room with daphne on BIFROST_BIND."

    def handle(self, *args: Any, **options: Any) -> None:
        host, _, port = settings.BIFROST_BIND.rpartition(":")
        CommandLineInterface().run(["-b", host or "127.0.0.1", "-p", port, "bifrost.asgi:application"])
