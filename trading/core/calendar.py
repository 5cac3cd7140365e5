"""When the exchange is open, which US/Eastern trading date an instant belongs to, and earnings blackouts."""
from __future__ import annotations

import math
import warnings
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from trading.errors import ConfigError

ET = ZoneInfo("America/New_York")

# A fixed range keeps the calendar a pure function of its inputs: the library's default range moves with
# the wall clock. Dates outside it raise ValueError instead of reading as "closed".
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2040, 12, 31)


def trading_date(now: datetime) -> date:
    """The US/Eastern calendar date of the aware instant `now` (daily counters and P&L roll over on it)."""
    if now.tzinfo is None:
        raise ValueError("trading_date needs a timezone-aware datetime")
    return now.astimezone(ET).date()


def in_earnings_blackout(day: date, earnings_dates: Iterable[date], days_before: int, days_after: int) -> bool:
    """True when `day` lies within `days_before` .. `days_after` CALENDAR days of any earnings date.

    Calendar days, not trading days, so an operator can check it on a wall calendar; both ends are inclusive
    and the earnings date itself is always in the blackout (with 3 before and 1 after, an earnings date on
    Wednesday the 10th blacks out Sunday the 7th through Thursday the 11th).
    """
    if days_before < 0 or days_after < 0:
        raise ValueError("blackout day counts must be >= 0")
    if isinstance(day, datetime):
        raise TypeError("in_earnings_blackout takes a date, not a datetime (use trading_date(now))")
    ordinal = day.toordinal()
    return any(e.toordinal() - days_before <= ordinal <= e.toordinal() + days_after for e in earnings_dates)


class MarketCalendar(Protocol):
    """What the engine needs from a calendar; `TradingCalendar` and `AlwaysOpenCalendar` provide it."""

    @property
    def exchange(self) -> str: ...

    def is_open(self, now: datetime) -> bool: ...

    def session_bounds(self, day: date) -> tuple[datetime, datetime] | None: ...

    def next_open(self, now: datetime) -> datetime: ...


@dataclass(frozen=True, slots=True)
class SessionTable:
    """One exchange's sessions over [FIRST_DAY, LAST_DAY] as plain floats (POSIX seconds), built once."""

    # Open intervals [opens[i], closes[i]), sorted and disjoint; a session with a lunch break is two.
    opens: list[float]
    closes: list[float]
    # Session label (the exchange's local date) -> (open, close) of the whole session.
    by_day: dict[date, tuple[float, float]]
    lo: float  # start of FIRST_DAY in the exchange's zone
    hi: float  # end of LAST_DAY in the exchange's zone

    def window(self, ts: float) -> tuple[float, float, bool]:
        """The longest stretch [lo, hi) around `ts` over which the open/closed answer does not change."""
        if not self.lo <= ts < self.hi:
            raise ValueError(f"instant outside the calendar range {FIRST_DAY} .. {LAST_DAY}")
        i = bisect_right(self.opens, ts) - 1
        if i >= 0 and ts < self.closes[i]:
            return self.opens[i], self.closes[i], True
        lo = self.closes[i] if i >= 0 else self.lo
        hi = self.opens[i + 1] if i + 1 < len(self.opens) else self.hi
        return lo, hi, False


class SessionStore(Protocol):
    """Keeps built session tables between processes: building one imports exchange_calendars and pandas and
    costs 0.3-0.8 s, which every backtest, CLI call and daemon start would pay again (`trading.calendar_store`)."""

    def load(self, exchange: str) -> SessionTable | None: ...

    def save(self, exchange: str, table: SessionTable) -> None: ...


# Exchange name -> its sessions, or the reason it cannot be used.
_SESSIONS: dict[str, SessionTable | str] = {}
_store: SessionStore | None = None


def use_session_store(store: SessionStore | None) -> None:
    """Where session tables are kept between processes (None: built in every process)."""
    global _store
    _store = store


_NAT_NS = -(2**63)  # how pandas spells NaT (no lunch break) in int64 nanoseconds


def _seconds(nanoseconds: list[int]) -> list[float]:
    return [math.nan if ns == _NAT_NS else ns / 1e9 for ns in nanoseconds]


def _build(exchange: str) -> SessionTable:
    import exchange_calendars as xcals  # with pandas, 0.2-0.4 s of import: only when no store has the table

    with warnings.catch_warnings():
        # exchange_calendars trips pandas' own deprecation warnings; nothing an operator can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        cal = xcals.get_calendar(exchange, start=FIRST_DAY.isoformat(), end=LAST_DAY.isoformat())
        schedule = cal.schedule
        labels: list[date] = [ts.date() for ts in schedule.index]
        columns = [
            _seconds(schedule[c].to_numpy(dtype="int64").tolist()) for c in ("open", "break_start", "break_end", "close")
        ]
    opens: list[float] = []
    closes: list[float] = []
    by_day: dict[date, tuple[float, float]] = {}
    for label, open_s, break_start_s, break_end_s, close_s in zip(labels, *columns, strict=True):
        by_day[label] = (open_s, close_s)
        if math.isnan(break_start_s) or math.isnan(break_end_s):
            opens.append(open_s)
            closes.append(close_s)
        else:
            opens += [open_s, break_end_s]
            closes += [break_start_s, close_s]
    zone = ZoneInfo(str(cal.tz))
    lo = datetime.combine(FIRST_DAY, time(), zone).timestamp()
    hi = datetime.combine(LAST_DAY + timedelta(days=1), time(), zone).timestamp()
    return SessionTable(opens=opens, closes=closes, by_day=by_day, lo=lo, hi=hi)


def _sessions(exchange: str) -> SessionTable | str:
    cached = _SESSIONS.get(exchange)
    if cached is None and _store is not None:
        cached = _store.load(exchange)
    if cached is None:
        import exchange_calendars as xcals

        try:
            cached = _build(exchange)
        except xcals.errors.InvalidCalendarName:
            cached = "unknown exchange (not an exchange_calendars name such as 'XNYS')"
        except (xcals.errors.CalendarError, ValueError, NotImplementedError) as exc:
            # Some registered calendars cannot span FIRST_DAY..LAST_DAY (holidays only recorded a few years
            # ahead) or do not build with this pandas; refuse them up front rather than at the first tick.
            cached = f"exchange_calendars cannot build {exchange} for {FIRST_DAY}..{LAST_DAY}: {exc}"
        else:
            if _store is not None:
                _store.save(exchange, cached)
        _SESSIONS[exchange] = cached
    return cached


def exchange_problem(exchange: str) -> str | None:
    """Why `exchange` cannot be used (unknown name, calendar fails to build), or None when it can."""
    found = _sessions(exchange)
    return found if isinstance(found, str) else None


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("calendar needs a timezone-aware datetime")


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class TradingCalendar:
    """An exchange's real sessions (holidays, early closes, DST) from exchange_calendars, fast to query per tick.

    Sessions are the half-open intervals [open, close). Days are session labels, the exchange's local date
    (US/Eastern for XNYS). Instants or days outside 2000-01-01 .. 2040-12-31 raise ValueError.
    """

    __slots__ = ("_exchange", "_sessions", "_window")

    def __init__(self, exchange: str = "XNYS") -> None:
        found = _sessions(exchange)
        if isinstance(found, str):
            raise ConfigError("exchange", found)
        self._exchange = exchange
        self._sessions = found
        # (lo, hi, answer): is_open(now) is `answer` for every now in [lo, hi). Replaced as one tuple so a
        # reader never sees a half-updated window.
        self._window: tuple[float, float, bool] = (0.0, 0.0, False)

    @property
    def exchange(self) -> str:
        return self._exchange

    def is_open(self, now: datetime) -> bool:
        """True between a session's open (inclusive) and close (exclusive); ~0.2 µs when the cached window hits."""
        if now.tzinfo is None:
            raise ValueError("calendar needs a timezone-aware datetime")
        ts = now.timestamp()
        lo, hi, answer = self._window
        if lo <= ts < hi:
            return answer
        window = self._sessions.window(ts)
        self._window = window
        return window[2]

    def session_bounds(self, day: date) -> tuple[datetime, datetime] | None:
        """UTC open and close of the session labelled `day`, or None when `day` is not a session."""
        if isinstance(day, datetime):
            raise TypeError("session_bounds takes a date, not a datetime (use trading_date(now))")
        if not FIRST_DAY <= day <= LAST_DAY:
            raise ValueError(f"{day} outside the calendar range {FIRST_DAY} .. {LAST_DAY}")
        bounds = self._sessions.by_day.get(day)
        return None if bounds is None else (_utc(bounds[0]), _utc(bounds[1]))

    def next_open(self, now: datetime) -> datetime:
        """The first instant strictly after `now` at which the market opens (UTC; a lunch break's end counts)."""
        _require_aware(now)
        ts = now.timestamp()
        sessions = self._sessions
        if not sessions.lo <= ts < sessions.hi:
            raise ValueError(f"instant outside the calendar range {FIRST_DAY} .. {LAST_DAY}")
        i = bisect_right(sessions.opens, ts)
        if i >= len(sessions.opens):
            raise ValueError(f"no session opens after {now.isoformat()} before {LAST_DAY}")
        return _utc(sessions.opens[i])


class AlwaysOpenCalendar:
    """The simulated market: open at every instant; each US/Eastern calendar day is one session."""

    __slots__ = ()

    @property
    def exchange(self) -> str:
        return "always_open"

    def is_open(self, now: datetime) -> bool:
        """Always True (naive datetimes are still refused, as by `TradingCalendar`)."""
        if now.tzinfo is None:
            raise ValueError("calendar needs a timezone-aware datetime")
        return True

    def session_bounds(self, day: date) -> tuple[datetime, datetime] | None:
        """UTC bounds of US/Eastern midnight to the next midnight on `day`."""
        if isinstance(day, datetime):
            raise TypeError("session_bounds takes a date, not a datetime (use trading_date(now))")
        start = datetime.combine(day, time(), ET)
        end = datetime.combine(day + timedelta(days=1), time(), ET)
        return start.astimezone(UTC), end.astimezone(UTC)

    def next_open(self, now: datetime) -> datetime:
        """The next US/Eastern midnight strictly after `now` (the start of the next one-day session), in UTC."""
        _require_aware(now)
        return datetime.combine(trading_date(now) + timedelta(days=1), time(), ET).astimezone(UTC)
