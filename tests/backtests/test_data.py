"""The tick CSV of DESIGN §7 (bad rows refused with their line, nothing imported), the synthetic generator and
recorded daemon history as data."""
from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from backtests import data as tickdata
from backtests.data import SyntheticSpec, generate, read_ticks_csv, write_ticks_csv
from backtests.models import MarketDataset
from backtests.services import dataset_from_history, dataset_import_csv, dataset_ticks
from trading.core.calendar import TradingCalendar
from trading.errors import ConfigError, DataFileError
from trading.models import StatusHistory


def read(text: str) -> tickdata.TickData:
    return read_ticks_csv(io.StringIO(text))


def refused_at(text: str) -> DataFileError:
    with pytest.raises(DataFileError) as info:
        read(text)
    return info.value


def test_reads_iso_and_epoch_timestamps_with_optional_columns():
    ticks = read("ts,bid,ask,last,iv\n"
                 "2026-03-10T14:30:00+00:00,179.9,180.1,180.0,0.35\n"
                 "2026-03-10T10:30:01-04:00,179.8,180.0,,\n"
                 "1773153002.5,179.7,179.9,179.8,0.36\n"
                 "2026-03-10T14:30:03Z,179.7,179.7,,0.37\n")

    assert len(ticks) == 4
    assert ticks.ts(0) == datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
    assert ticks.ts(1) == datetime(2026, 3, 10, 14, 30, 1, tzinfo=UTC)
    assert ticks.ts(2) == datetime(2026, 3, 10, 14, 30, 2, 500000, tzinfo=UTC)
    assert math.isnan(ticks.last[1]) and math.isnan(ticks.iv[1])
    assert ticks.iv[3] == 0.37 and ticks.has_iv


def test_header_only_needs_ts_bid_ask_in_any_order():
    ticks = read("ask,ts,bid\n180.1,1773153000,179.9\n")

    assert (ticks.bid[0], ticks.ask[0]) == (179.9, 180.1)
    assert not ticks.has_iv


@pytest.mark.parametrize(("text", "line", "words"), [
    ("ts,bid,ask\n1773153001,1,2\n1773153000,1,2\n", 3, "strictly increasing"),
    ("ts,bid,ask\n1773153001,1,2\n1773153001,1,2\n", 3, "strictly increasing"),
    ("ts,bid\n1773153000,1\n", 1, "missing column 'ask'"),
    ("ts,bid,ask\n1773153000,1,2\n1773153001,1\n", 3, "missing column"),
    ("ts,bid,ask\n1773153000,1,2\n1773153001,2.5,2.4\n", 3, "crossed quote"),
    ("ts,bid,ask\n1773153000,abc,2\n", 2, "bid is not a number"),
    ("ts,bid,ask\n1773153000,1,2\n1773153001,1,NaN\n", 3, "ask is NaN"),
    ("ts,bid,ask\n1773153000,0,2\n", 2, "bid must be > 0"),
    ("ts,bid,ask\n2026-03-10T14:30:00,1,2\n", 2, "no UTC offset"),
    ("ts,bid,ask\nyesterday,1,2\n", 2, "neither ISO 8601 nor epoch"),
    ("ts,bid,ask,iv\n1773153000,1,2,35\n", 2, "fraction"),
    ("ts,bid,ask,volume\n1773153000,1,2,7\n", 1, "unknown column"),
    ("ts,bid,ask\n", 2, "no data rows"),
    ("", 1, "empty file"),
])
def test_bad_rows_are_refused_with_their_line_number(text, line, words):
    error = refused_at(text)

    assert error.line == line
    assert words in error.reason


def test_line_numbers_count_the_header_and_blank_lines():
    error = refused_at("ts,bid,ask\n\n1773153000,1,2\n\n1773153001,x,2\n")

    assert error.line == 5


def test_csv_round_trip_keeps_every_value():
    ticks = generate(SyntheticSpec(days=1, seed=3, vol_of_vol=0.8))
    buffer = io.StringIO()

    write_ticks_csv(ticks, buffer)
    back = read(buffer.getvalue())

    assert np.array_equal(back.ts_us, ticks.ts_us)
    assert np.array_equal(back.bid, ticks.bid) and np.array_equal(back.ask, ticks.ask)
    assert np.array_equal(back.iv, ticks.iv)


@pytest.mark.django_db
def test_an_import_refused_at_a_bad_line_stores_nothing(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("ts,bid,ask\n" + "".join(f"{1773153000 + i},1,2\n" for i in range(100)) + "1773153200,3,2\n")

    with pytest.raises(DataFileError) as info:
        dataset_import_csv(name="bad", file=path, user="test")

    assert info.value.line == 102
    assert MarketDataset.objects.count() == 0


@pytest.mark.django_db
def test_an_imported_dataset_loads_back_identically(tmp_path):
    ticks = generate(SyntheticSpec(days=1, seed=4))
    path = tmp_path / "good.csv"
    write_ticks_csv(ticks, path)

    dataset = dataset_import_csv(name="good", file=path, user="test")

    assert (dataset.ticks, dataset.source, dataset.has_iv) == (len(ticks), "import", True)
    assert dataset.meta["sha256"] and dataset.first_ts == ticks.ts(0)
    assert np.array_equal(dataset_ticks(dataset).bid, ticks.bid)


def test_synthetic_market_is_seeded_and_stays_inside_sessions():
    spec = SyntheticSpec(days=3, seed=9, start="2026-04-02", vol_of_vol=0.5)  # Good Friday 2026-04-03 is a holiday

    a, b = generate(spec), generate(spec)
    other = generate(SyntheticSpec(days=3, seed=10, start="2026-04-02"))

    assert np.array_equal(a.bid, b.bid) and np.array_equal(a.iv, b.iv)
    assert not np.array_equal(a.bid, other.bid)
    calendar = TradingCalendar("XNYS")
    assert all(calendar.is_open(a.ts(i)) for i in range(0, len(a), 997))
    days = {a.ts(i).date() for i in range(0, len(a), 3600)}
    assert datetime(2026, 4, 3).date() not in days and len(a) == 3 * 23_400
    assert np.all(a.bid < a.ask) and len(np.unique(a.iv)) > 1


def test_synthetic_realised_vol_matches_its_spec():
    ticks = generate(SyntheticSpec(days=5, seed=1, realized_vol=0.8, spread_bps=0))
    mid = ticks.mid
    returns = np.diff(np.log(mid))
    gaps = np.diff(ticks.ts_us) == 1_000_000  # within sessions only

    realised = math.sqrt(np.sum(returns[gaps] ** 2) / gaps.sum() * 252 * 23_400)

    assert realised == pytest.approx(0.8, rel=0.05)


def test_a_bad_synthetic_setting_is_refused_by_name():
    with pytest.raises(ConfigError) as info:
        SyntheticSpec.from_dict({"days": 0})
    assert info.value.field == "synthetic.days"
    with pytest.raises(ConfigError) as info:
        SyntheticSpec.from_dict({"realised_vol": 0.5})
    assert info.value.field == "synthetic.realised_vol"


@pytest.mark.django_db
def test_recorded_history_becomes_a_dataset_at_its_snapshot_cadence():
    t0 = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    for i in range(6):
        ts = t0 + timedelta(seconds=10 * i)
        market = {"bid": 180.0 + i / 10, "ask": 180.02 + i / 10, "quote_ts": (ts - timedelta(seconds=1)).isoformat()}
        if i == 3:
            market = {"bid": None, "ask": None}  # the daemon had no quote then: skipped
        StatusHistory.objects.create(ts=ts, daemon_state="running", trading_state="monitor", verdict="ok",
                                     payload={"market": market, "book": {"legs": [{"iv": 0.3}, {"iv": 0.32}]}})

    dataset = dataset_from_history(name="rec", since=t0, until=t0 + timedelta(minutes=5), user="test")
    ticks = dataset_ticks(dataset)

    assert dataset.source == "recorded" and dataset.ticks == 5
    assert ticks.ts(0) == t0 - timedelta(seconds=1)
    assert ticks.iv[0] == pytest.approx(0.31)
    assert "StatusHistory" in dataset.meta["cadence_note"]
