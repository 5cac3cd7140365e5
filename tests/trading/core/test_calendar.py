"""The trading calendar: real XNYS sessions (holidays, half-days, DST), ET trading dates and earnings blackouts."""
from __future__ import annotations

import warnings
from datetime import UTC, date, datetime, time, timedelta

import exchange_calendars as xcals
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading.core.calendar import (
    ET,
    AlwaysOpenCalendar,
    MarketCalendar,
    TradingCalendar,
    exchange_problem,
    in_earnings_blackout,
    trading_date,
)
from trading.errors import ConfigError


def _et(day: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm, ss), ET)


REGULAR_DAY = date(2025, 6, 3)  # a Tuesday


@pytest.mark.parametrize(
    ("hh", "mm", "ss", "expected"),
    [(9, 29, 59, False), (9, 29, 0, False), (9, 30, 0, True), (12, 0, 0, True), (15, 59, 0, True),
     (15, 59, 59, True), (16, 0, 0, False), (16, 1, 0, False)],
)
def test_regular_session_is_open_from_0930_inclusive_to_1600_exclusive(hh, mm, ss, expected):
    calendar = TradingCalendar("XNYS")

    is_open = calendar.is_open(_et(REGULAR_DAY, hh, mm, ss))

    assert is_open is expected


def test_the_same_instant_gives_the_same_answer_in_any_timezone():
    calendar = TradingCalendar()
    instant = _et(REGULAR_DAY, 9, 30)

    answers = {calendar.is_open(instant), calendar.is_open(instant.astimezone(UTC))}

    assert answers == {True}


def test_weekend_is_closed():
    calendar = TradingCalendar()
    saturday = date(2025, 6, 7)

    assert not calendar.is_open(_et(saturday, 12))
    assert calendar.session_bounds(saturday) is None


@pytest.mark.parametrize("holiday", [date(2025, 12, 25), date(2026, 7, 3), date(2025, 11, 27), date(2026, 1, 19)])
def test_full_holiday_is_closed_all_day(holiday):
    calendar = TradingCalendar()

    assert not any(calendar.is_open(_et(holiday, h, m)) for h in range(24) for m in (0, 30))
    assert calendar.session_bounds(holiday) is None


@pytest.mark.parametrize("half_day", [date(2025, 11, 28), date(2026, 11, 27), date(2025, 12, 24), date(2025, 7, 3)])
def test_half_day_closes_at_1300_et(half_day):
    calendar = TradingCalendar()

    assert calendar.is_open(_et(half_day, 12, 59))
    assert not calendar.is_open(_et(half_day, 13, 0))
    assert not calendar.is_open(_et(half_day, 15, 0))
    assert calendar.session_bounds(half_day) == (_et(half_day, 9, 30), _et(half_day, 13, 0))


def test_session_bounds_are_utc_and_follow_daylight_saving():
    calendar = TradingCalendar()

    winter = calendar.session_bounds(date(2025, 3, 7))  # Friday before clocks go forward on 9 March
    summer = calendar.session_bounds(date(2025, 3, 10))  # Monday after

    assert winter == (datetime(2025, 3, 7, 14, 30, tzinfo=UTC), datetime(2025, 3, 7, 21, 0, tzinfo=UTC))
    assert summer == (datetime(2025, 3, 10, 13, 30, tzinfo=UTC), datetime(2025, 3, 10, 20, 0, tzinfo=UTC))
    assert winter is not None and winter[0].tzinfo is UTC


@pytest.mark.parametrize(
    ("utc_instant", "expected"),
    [
        (datetime(2025, 3, 7, 13, 45, tzinfo=UTC), False),  # 08:45 EST, before the open
        (datetime(2025, 3, 10, 13, 45, tzinfo=UTC), True),  # 09:45 EDT
        (datetime(2025, 10, 31, 20, 30, tzinfo=UTC), False),  # 16:30 EDT, after the close
        (datetime(2025, 11, 3, 20, 30, tzinfo=UTC), True),  # 15:30 EST, clocks went back on 2 November
        (datetime(2025, 11, 3, 14, 0, tzinfo=UTC), False),  # 09:00 EST
    ],
)
def test_daylight_saving_transitions_move_the_session_in_utc(utc_instant, expected):
    calendar = TradingCalendar()

    assert calendar.is_open(utc_instant) is expected


def test_next_open_skips_weekends_holidays_and_is_strictly_after_now():
    calendar = TradingCalendar()

    after_thanksgiving_half_day = calendar.next_open(_et(date(2025, 11, 28), 14))
    at_an_open = calendar.next_open(_et(date(2025, 12, 1), 9, 30))
    before_christmas = calendar.next_open(_et(date(2025, 12, 24), 13, 30))

    assert after_thanksgiving_half_day == _et(date(2025, 12, 1), 9, 30)
    assert at_an_open == _et(date(2025, 12, 2), 9, 30)
    assert before_christmas == _et(date(2025, 12, 26), 9, 30)
    assert before_christmas.tzinfo is UTC


def test_answers_stay_right_when_time_jumps_back_and_forth():
    calendar = TradingCalendar()
    instants = [_et(REGULAR_DAY, 10), _et(date(2025, 12, 25), 10), _et(REGULAR_DAY, 9), _et(REGULAR_DAY, 10),
                _et(date(2025, 11, 28), 14), _et(REGULAR_DAY, 15, 59)]

    answers = [calendar.is_open(now) for now in instants]

    assert answers == [True, False, False, True, False, True]


def test_naive_datetimes_are_refused():
    calendar = TradingCalendar()

    with pytest.raises(ValueError):
        calendar.is_open(datetime(2025, 6, 3, 10, 0))
    with pytest.raises(ValueError):
        AlwaysOpenCalendar().is_open(datetime(2025, 6, 3, 10, 0))
    with pytest.raises(ValueError):
        trading_date(datetime(2025, 6, 3, 10, 0))


def test_instants_outside_the_calendar_range_raise_instead_of_reading_closed():
    calendar = TradingCalendar()

    with pytest.raises(ValueError):
        calendar.is_open(datetime(1999, 6, 1, 15, 0, tzinfo=UTC))
    with pytest.raises(ValueError):
        calendar.session_bounds(date(2041, 1, 2))


def test_unknown_exchange_is_a_config_error_naming_exchange():
    with pytest.raises(ConfigError) as caught:
        TradingCalendar("NOPE")

    assert caught.value.field == "exchange"
    assert exchange_problem("NOPE") is not None
    assert exchange_problem("XNYS") is None


def test_other_exchanges_use_their_own_sessions():
    london = TradingCalendar("XLON")

    assert london.is_open(datetime(2025, 6, 3, 8, 0, tzinfo=UTC))  # 09:00 BST
    assert not london.is_open(datetime(2025, 6, 3, 15, 30, tzinfo=UTC))  # 16:30 BST


@pytest.mark.parametrize(
    ("utc_instant", "expected"),
    [
        (datetime(2025, 7, 1, 3, 59, tzinfo=UTC), date(2025, 6, 30)),  # 23:59 EDT
        (datetime(2025, 7, 1, 4, 0, tzinfo=UTC), date(2025, 7, 1)),  # 00:00 EDT
        (datetime(2025, 1, 15, 4, 59, tzinfo=UTC), date(2025, 1, 14)),  # 23:59 EST
        (datetime(2025, 1, 15, 5, 0, tzinfo=UTC), date(2025, 1, 15)),  # 00:00 EST
        (datetime(2025, 3, 9, 7, 0, tzinfo=UTC), date(2025, 3, 9)),  # 03:00 EDT, just after clocks went forward
    ],
)
def test_trading_date_is_the_eastern_calendar_date_not_the_utc_one(utc_instant, expected):
    assert trading_date(utc_instant) == expected


def test_always_open_calendar_is_open_every_instant_with_one_session_per_eastern_day():
    calendar: MarketCalendar = AlwaysOpenCalendar()
    christmas_night = _et(date(2025, 12, 25), 23, 59)

    assert calendar.is_open(christmas_night)
    assert calendar.session_bounds(date(2025, 12, 25)) == (_et(date(2025, 12, 25), 0), _et(date(2025, 12, 26), 0))
    assert calendar.next_open(christmas_night) == _et(date(2025, 12, 26), 0)


def test_trading_calendar_satisfies_the_market_calendar_protocol():
    calendar: MarketCalendar = TradingCalendar()

    assert calendar.exchange == "XNYS"


EARNINGS = [date(2026, 2, 25)]  # a Wednesday


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (date(2026, 2, 21), False),  # 4 calendar days before
        (date(2026, 2, 22), True),  # 3 before: first blacked-out day, a Sunday (calendar days, not trading days)
        (date(2026, 2, 25), True),  # the earnings date itself
        (date(2026, 2, 26), True),  # 1 after: last blacked-out day
        (date(2026, 2, 27), False),
    ],
)
def test_earnings_blackout_counts_calendar_days_inclusive_of_both_ends(day, expected):
    assert in_earnings_blackout(day, EARNINGS, days_before=3, days_after=1) is expected


def test_earnings_blackout_with_zero_days_covers_only_the_earnings_date():
    assert in_earnings_blackout(date(2026, 2, 25), EARNINGS, 0, 0)
    assert not in_earnings_blackout(date(2026, 2, 24), EARNINGS, 0, 0)
    assert not in_earnings_blackout(date(2026, 2, 26), EARNINGS, 0, 0)


def test_no_earnings_dates_means_no_blackout():
    assert not in_earnings_blackout(date(2026, 2, 25), [], 3, 1)


def test_any_of_several_earnings_dates_blacks_out():
    dates = [date(2025, 11, 19), date(2026, 2, 25)]

    assert in_earnings_blackout(date(2025, 11, 20), dates, 3, 1)
    assert in_earnings_blackout(date(2026, 2, 24), dates, 3, 1)
    assert not in_earnings_blackout(date(2026, 1, 5), dates, 3, 1)


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # pandas deprecations inside exchange_calendars
    _REFERENCE = xcals.get_calendar("XNYS", start="2000-01-01", end="2040-12-31")


def _reference_is_open(now: datetime) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return bool(_REFERENCE.is_open_on_minute(pd.Timestamp(now)))


_FIRST = datetime(2000, 1, 4, tzinfo=UTC)
_MINUTES = (date(2040, 12, 28) - _FIRST.date()).days * 1440


@settings(max_examples=300, deadline=None)
@given(minute=st.integers(min_value=0, max_value=_MINUTES))
def test_is_open_agrees_with_exchange_calendars_on_every_minute(minute):
    now = _FIRST + timedelta(minutes=minute)

    expected = _reference_is_open(now)

    assert TradingCalendar().is_open(now) is expected


@settings(max_examples=100, deadline=None)
@given(session=st.integers(min_value=1, max_value=10_000), offset_min=st.sampled_from([-1, 0, 1]))
def test_is_open_agrees_with_exchange_calendars_around_opens_and_closes(session, offset_min):
    label = _REFERENCE.sessions[session]
    calendar = TradingCalendar()

    for edge in (_REFERENCE.session_open(label), _REFERENCE.session_close(label)):
        now = edge.to_pydatetime() + timedelta(minutes=offset_min)
        assert calendar.is_open(now) is _reference_is_open(now)
