"""`manage.py run_web`: daphne (HTTP + websockets) on BIFROST_BIND, 127.0.0.1:8000 unless set.

BIFROST_WEB_PROCESSES daphne processes each get a listening socket opened here on the same address with
SO_REUSEPORT (daphne --fd): the kernel spreads new connections evenly over them. (One shared socket let whichever
process woke first take most keep-alive connections, halving throughput at random.) A slow request in one process
never stalls the lamp."""
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
        listeners = [socket.create_server((host or "127.0.0.1", int(port)), backlog=1024, reuse_port=True)
                     for _ in range(settings.BIFROST_WEB_PROCESSES)]
        children = [subprocess.Popen([sys.executable, "-m", "daphne", "--fd", str(s.fileno()), "bifrost.asgi:application"],
                                     pass_fds=[s.fileno()]) for s in listeners]
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
