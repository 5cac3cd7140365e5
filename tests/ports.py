"""Ports for the servers tests start as child processes."""
from __future__ import annotations

import random
import socket
from pathlib import Path

_given: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range. Not port 0's answer: that comes from the
    ephemeral range, where any outgoing connection (a database session, a client) may take it between this check
    and the child's bind ("address already in use", seen in CI)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(20_000, low)  # noqa: S311  (a port, not a secret)
        if port in _given:  # handed out already: its server may not have bound it yet
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port in 20000..{low}")
