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


@pytest.fixture(params=["file", "stream"])
def read(request, tmp_path):
    """The tick CSV read from a file (pyarrow, with the row-by-row reader behind it) and from a stream (row by
    row): every rule must hold on both."""
    def read(text: str) -> tickdata.TickData:
        if request.param == "stream":
            return read_ticks_csv(io.StringIO(text))
        path = tmp_path / "ticks.csv"
        path.write_text(text, newline="")
        return read_ticks_csv(path)
    return read


def refused_at(read, text: str) -> DataFileError:
    with pytest.raises(DataFileError) as info:
        read(text)
    return info.value


def test_reads_iso_and_epoch_timestamps_with_optional_columns(read):
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


def test_header_only_needs_ts_bid_ask_in_any_order(read):
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
    ("ts,bid,ask,last\n1773153000,1,2,nan\n", 2, "last is NaN"),
    ("ts,bid,ask\n1773153000,1,inf\n", 2, "ask is not finite"),
    ("ts,bid,ask\n1773153000,,2\n", 2, "bid is not a number"),
    ("ts,bid,ask\n2026-02-30T14:30:00Z,1,2\n", 2, "neither ISO 8601 nor epoch"),
    ("ts,bid,ask\n1773153000,1,2\n2026-03-10T14:29:59.5+00:00,1,2\n", 3, "strictly increasing"),
    ("ts,bid,ask\n1773153000,1,2\n1773153001,1,2,3\n", 3, "more fields"),
    ("ts,bid,ask\n1773153000,1,2\n\"1773153001,1,2\n", 3, "missing column"),
    ("ts,bid,ask\n", 2, "no data rows"),
    ("", 1, "empty file"),
])
def test_bad_rows_are_refused_with_their_line_number(read, text, line, words):
    error = refused_at(read, text)

    assert error.line == line
    assert words in error.reason


def test_line_numbers_count_the_header_and_blank_lines(read):
    error = refused_at(read, "ts,bid,ask\n\n1773153000,1,2\n\n1773153001,x,2\n")

    assert error.line == 5


def test_csv_round_trip_keeps_every_value(read):
    ticks = generate(SyntheticSpec(days=1, seed=3, vol_of_vol=0.8))
    buffer = io.StringIO()

    write_ticks_csv(ticks, buffer)
    back = read(buffer.getvalue())

    assert np.array_equal(back.ts_us, ticks.ts_us)
    assert np.array_equal(back.bid, ticks.bid) and np.array_equal(back.ask, ticks.ask)
    assert np.array_equal(back.iv, ticks.iv)


def test_the_columnar_reader_reads_what_the_row_reader_reads_bit_for_bit(tmp_path):
    ticks = generate(SyntheticSpec(days=2, seed=5, vol_of_vol=0.8))
    path = tmp_path / "ticks.csv"
    write_ticks_csv(ticks, path)
    lines = path.read_text().splitlines(keepends=True)
    # Epoch seconds with up to six decimals in a file of their own (a batch holds one form or goes row by row).
    epoch = tmp_path / "epoch.csv"
    epoch.write_text(lines[0] + "".join(f"{us // 1_000_000}.{us % 1_000_000:06d}{line[line.index(','):]}"
                                        for us, line in zip(ticks.ts_us, lines[1:], strict=True)))

    for source in (path, epoch):
        fast = read_ticks_csv(source)
        with open(source, newline="") as f:
            exact = tickdata._read_csv_rows(f, capacity=len(ticks), progress=None)
        for name in ("ts_us", "bid", "ask", "last", "iv"):
            assert np.array_equal(getattr(fast, name), getattr(exact, name), equal_nan=True), (source, name)
    assert np.array_equal(fast.ts_us, ticks.ts_us)


def test_a_bad_row_deep_in_a_large_file_is_named_by_the_columnar_path(tmp_path):
    rows = [f"{1773153000 + i},1,2\n" for i in range(300_000)]
    rows[250_000] = "1773403000,2,1\n"
    path = tmp_path / "big.csv"
    path.write_text("ts,bid,ask\n" + "".join(rows))

    with pytest.raises(DataFileError) as info:
        read_ticks_csv(path)

    assert (info.value.line, info.value.reason) == (250_002, "crossed quote: bid 2 > ask 1")


def test_parquet_holds_the_same_ticks_and_names_a_bad_row(tmp_path):
    ticks = generate(SyntheticSpec(days=4, seed=6))
    path = tmp_path / "ticks.parquet"
    tickdata.write_ticks_parquet(ticks, path)

    back = tickdata.read_ticks(path)

    for name in ("ts_us", "bid", "ask", "last", "iv"):
        assert np.array_equal(getattr(back, name), getattr(ticks, name), equal_nan=True), name
    assert tickdata.count_rows(path) == len(ticks)

    crossed = tickdata.TickData(ticks.ts_us.copy(), ticks.bid.copy(), ticks.ask.copy(), ticks.last, ticks.iv)
    crossed.bid[70_000] = crossed.ask[70_000] + 1  # in the second batch
    tickdata.write_ticks_parquet(crossed, path)
    with pytest.raises(DataFileError) as info:
        tickdata.read_ticks(path)
    assert info.value.line == 70_001 and "crossed quote" in info.value.reason
    assert str(info.value).startswith("row 70001:")


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
