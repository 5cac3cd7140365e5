"""Calendar facts as arrays for the vectorised replay: exchange open intervals and US/Eastern trading dates."""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from trading.core import calendar as core_calendar
from trading.core.calendar import ET
from trading.errors import ConfigError

US_PER_S = 1_000_000


@lru_cache(maxsize=8)
def open_intervals(exchange: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The exchange's open intervals [open, close) in POSIX seconds, exactly those `TradingCalendar.is_open` uses.

    They come from the core calendar's own session table (built once per exchange), so the fast path answers
    "is the market open" with the very same floats as the engine."""
    sessions = core_calendar._sessions(exchange)  # the one source of session bounds (private by design)
    if isinstance(sessions, str):
        raise ConfigError("exchange", sessions)
    return np.asarray(sessions.opens, dtype=np.float64), np.asarray(sessions.closes, dtype=np.float64)


def et_days(first_us: int, last_us: int) -> tuple[date, npt.NDArray[np.int64]]:
    """US/Eastern midnights (as UTC microseconds) covering [first_us, last_us] with a day of margin each side.

    Returns (the date of bound 0, bounds): the trading date of an instant t is `day0 + (k)` days where k is the
    index of the last bound <= t."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    first = (epoch + timedelta(microseconds=first_us)).astimezone(ET).date() - timedelta(days=1)
    last = (epoch + timedelta(microseconds=last_us)).astimezone(ET).date() + timedelta(days=2)
    bounds = []
    day = first
    while day <= last:
        midnight = datetime.combine(day, time(), ET)
        bounds.append((midnight - epoch) // timedelta(microseconds=1))
        day += timedelta(days=1)
    return first, np.asarray(bounds, dtype=np.int64)
