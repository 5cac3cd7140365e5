"""One rate limiter for the paths DRF's throttles do not cover (the admin, the CLI, the login page), counting in
the project's shared cache so every web process and every command agrees."""
from __future__ import annotations

import time

from django.core.cache import cache

_PERIOD_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """'60/min' → (60, 60): how many per how many seconds (DRF's notation)."""
    count, _, period = rate.partition("/")
    return int(count), _PERIOD_S[period.strip().lower()]


def allow(key: str, rate: str) -> bool:
    """Count one hit on `key`; False when it is over `rate` within the window (the hit is not counted then)."""
    limit, period_s = parse_rate(rate)
    now = time.time()
    history = [t for t in cache.get(f"rate:{key}", []) if t > now - period_s]
    if len(history) >= limit:
        return False
    cache.set(f"rate:{key}", [*history, now], period_s)
    return True
