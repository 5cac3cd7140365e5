"""The per-user queue budget (DRF scope "queue", BIFROST_QUEUE_RATE): DRF's ScopedRateThrottle on the API's create
endpoints, and the very same counter for the Backtests page and the admin, so one user has one budget everywhere."""
from __future__ import annotations

import math

from django.http import HttpRequest
from rest_framework.throttling import ScopedRateThrottle

QUEUE_SCOPE = "queue"


class _Queueing:
    """What ScopedRateThrottle reads from a view: its scope."""

    throttle_scope = QUEUE_SCOPE


def queue_rate() -> str:
    return str(ScopedRateThrottle.THROTTLE_RATES.get(QUEUE_SCOPE))


def queue_throttled_reason() -> str:
    return f"queue limit reached: at most {queue_rate()} backtests and sweeps per user (BIFROST_QUEUE_RATE)"


def queue_budget_spend(request: HttpRequest) -> float | None:
    """Count one queueing by the request's user against their budget: None when allowed, else the seconds until
    the next one is (nothing is counted then)."""
    throttle = ScopedRateThrottle()
    if throttle.allow_request(request, _Queueing()):  # reads request.user only, which an HttpRequest has too
        return None
    return float(throttle.wait() or 0.0)


def queue_refusal(wait_s: float) -> str:
    return f"{queue_throttled_reason()}; try again in {math.ceil(wait_s)} s"
