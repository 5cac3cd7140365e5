"""`manage.py run_web`: daphne (HTTP + websockets) on BIFROST_BIND, 127.0.0.1:8000 unless set.

One listening socket is opened here and shared by BIFROST_WEB_PROCESSES daphne processes (daphne --fd), the
multi-process layout daphne documents for supervisord: a slow request in one process never stalls the lamp."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Serve the control room with daphne on BIFROST_BIND."

    def handle(self, *args: Any, **options: Any) -> None:
        host, _, port = settings.BIFROST_BIND.rpartition(":")
        listener = socket.create_server((host or "127.0.0.1", int(port)), backlog=1024)
        fd = listener.fileno()
        children = [subprocess.Popen([sys.executable, "-m", "daphne", "--fd", str(fd), "bifrost.asgi:application"],
                                     pass_fds=[fd]) for _ in range(settings.BIFROST_WEB_PROCESSES)]
        self.stdout.write(f"daphne x{len(children)} on http://{settings.BIFROST_BIND}/")

        def stop(signum: int, frame: FrameType | None) -> None:
            for child in children:
                child.terminate()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        # If any process dies, take the others down too: supervisord restarts the program as a whole.
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        stop(signal.SIGTERM, None)
        codes = [child.wait(10) for child in children]
        sys.exit(max(abs(c) for c in codes) if any(codes) else 0)
