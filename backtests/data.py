"""Market data for backtests: the tick CSV of DESIGN §7, the seeded synthetic generator, recorded daemon history,
and the compact .npz form datasets are stored in."""
from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from trading.errors import ConfigError, DataFileError

if TYPE_CHECKING:
    from trading.sim.market import MarketConfig

# Reading a tick file needs numpy only: the calendars (exchange_calendars, pandas) and the simulated market
# (scipy) are imported by the functions that use them.

Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Progress = Callable[[int], None]  # called with the number of rows (or lines) done since the last call

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_S = 1_000_000
REQUIRED_COLUMNS = ("ts", "bid", "ask")
OPTIONAL_COLUMNS = ("last", "iv")
_EPOCH_RE = re.compile(r"\d+(\.\d*)?")
_MAX_IV = 5.0  # 500 % annual vol: above it a column is in percent, not a fraction


@dataclass(frozen=True)
class TickData:
    """One underlying's quotes, one row per tick: `ts_us` is int64 microseconds since the epoch (UTC), strictly
    increasing; `last` and `iv` are NaN where the source had none (`iv` is an annual fraction, 0.35 = 35 %)."""

    ts_us: Int64Array
    bid: FloatArray
    ask: FloatArray
    last: FloatArray
    iv: FloatArray

    def __post_init__(self) -> None:
        n = len(self.ts_us)
        if any(len(a) != n for a in (self.bid, self.ask, self.last, self.iv)):
            raise ValueError("tick arrays must have the same length")

    def __len__(self) -> int:
        return len(self.ts_us)

    @property
    def has_iv(self) -> bool:
        return bool(np.isfinite(self.iv).any())

    @property
    def mid(self) -> FloatArray:
        return np.asarray((self.bid + self.ask) / 2.0, dtype=np.float64)

    def ts(self, i: int) -> datetime:
        return datetime_from_us(int(self.ts_us[i]))

    def slice(self, start: int, stop: int) -> TickData:
        return TickData(self.ts_us[start:stop], self.bid[start:stop], self.ask[start:stop], self.last[start:stop],
                        self.iv[start:stop])

    def with_changes(self, **arrays: npt.ArrayLike) -> TickData:
        """A copy with some columns replaced (scenario tests widen spreads or move prices this way)."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        current.update({k: np.asarray(v, dtype=current[k].dtype) for k, v in arrays.items()})
        return TickData(**current)


def datetime_from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def us_from_datetime(ts: datetime) -> int:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    return (ts - EPOCH) // timedelta(microseconds=1)


# ---- the tick CSV (DESIGN §7) and its Parquet twin -------------------------------------------------------------
#
# The CSV is read by pyarrow and its rules checked vectorised; the row-by-row reader (`_read_csv_rows`) stays the
# definition of the format and the one that names a bad line. Parquet holds the same columns.

_PARQUET_BATCH_ROWS = 1 << 16


class TickFileError(DataFileError):
    """A Parquet tick file refused at data row `row` (1-based; `line` holds the same number for DataFileError's
    callers), or as a whole when `row` is 0 (unreadable, a missing column or one of the wrong type)."""

    def __init__(self, row: int, reason: str) -> None:
        super().__init__(row, reason)
        self.row = row
        self.args = (f"row {row}: {reason}" if row else reason,)


def _parse_ts(text: str) -> int:
    """ISO 8601 with a UTC offset, or epoch seconds (decimals allowed): microseconds since the epoch."""
    if _EPOCH_RE.fullmatch(text):
        seconds, _, fraction = text.partition(".")
        micros = (fraction + "000000")[:6]
        if len(fraction) > 6 and fraction[6] >= "5":  # round to the nearest microsecond
            return int(seconds) * US_PER_S + int(micros) + 1
        return int(seconds) * US_PER_S + int(micros)
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"ts {text!r} is neither ISO 8601 nor epoch seconds") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"ts {text!r} has no UTC offset (write e.g. 2026-03-10T14:30:00+00:00 or ...Z)")
    return (ts - EPOCH) // timedelta(microseconds=1)


def _parse_price(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} is not a number: {text!r}") from None
    if math.isnan(value):
        raise ValueError(f"{name} is NaN")
    if not math.isfinite(value):
        raise ValueError(f"{name} is not finite: {text!r}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {text!r}")
    return value


def _parse_iv(text: str) -> float:
    value = _parse_price("iv", text)
    if value > _MAX_IV:
        raise ValueError(f"iv must be an annual fraction <= {_MAX_IV:g} (0.35 means 35 %), got {text!r}")
    return value


def _parse_optional(name: str, text: str) -> float:
    """A `last` or `iv` cell: empty (or blank) is NaN, anything else must be a valid value."""
    if not text.strip():
        return math.nan
    return _parse_iv(text) if name == "iv" else _parse_price(name, text)


@cache
def _supported_us() -> tuple[int, int, date, date]:
    """The ts range a backtest's calendars cover: (first µs, last µs, first day, last day)."""
    from trading.core.calendar import FIRST_DAY, LAST_DAY

    def at(day: date) -> int:
        return (datetime.combine(day, datetime.min.time(), UTC) - EPOCH) // timedelta(microseconds=1)

    return at(FIRST_DAY) + 2 * 86_400 * US_PER_S, at(LAST_DAY) - 60 * 86_400 * US_PER_S, FIRST_DAY, LAST_DAY


def _header(row: list[str]) -> dict[str, int]:
    names = [c.strip().lower() for c in row]
    if names and names[0].startswith("\ufeff"):
        names[0] = names[0][1:]
    for name in REQUIRED_COLUMNS:
        if name not in names:
            raise DataFileError(1, f"missing column {name!r}: the header must name ts,bid,ask (optional last,iv)")
    unknown = [n for n in names if n not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise DataFileError(1, f"unknown column(s) {unknown}: allowed are ts,bid,ask,last,iv")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataFileError(1, f"column(s) {repeated} appear more than once")
    return {name: i for i, name in enumerate(names)}


class _Columns:
    """The five output arrays, allocated once for the rows expected and grown in place when a stream holds more,
    so a read never keeps two copies of them."""

    def __init__(self, capacity: int) -> None:
        capacity = max(capacity, 16)
        self.n = 0
        self.arrays: list[npt.NDArray[Any]] = [np.empty(capacity, np.int64)]
        self.arrays += [np.empty(capacity, np.float64) for _ in range(4)]

    def extend(self, *columns: npt.ArrayLike) -> None:
        count = len(columns[0])  # type: ignore[arg-type]
        need = self.n + count
        if need > len(self.arrays[0]):
            size = max(need, len(self.arrays[0]) * 3 // 2)
            for array in self.arrays:
                array.resize(size, refcheck=False)
        for array, column in zip(self.arrays, columns, strict=True):
            array[self.n:need] = column
        self.n = need

    def ticks(self) -> TickData:
        for array in self.arrays:
            array.resize(self.n, refcheck=False)
        return TickData(*self.arrays)


def read_ticks_csv(source: str | Path | IO[str], *, progress: Progress | None = None) -> TickData:
    """Parse and validate a tick CSV in full. Any bad row raises DataFileError naming its line (1-based, the header
    is line 1) and nothing is returned: an import is all or nothing.

    Refused: a missing or unknown column, a row with too few or too many fields, a ts that is not ISO 8601 with
    an offset or epoch seconds, a ts not strictly after the previous row's, a bid/ask/last/iv that is not a
    number, NaN, infinite or <= 0, a crossed quote (bid > ask), an iv above 5 (percent instead of a fraction).
    Blank lines are skipped; `last` and `iv` cells may be empty. `progress` is called with rows read.

    A file on disk goes through pyarrow's columnar reader and the rules above, vectorised. Whatever that fast path
    does not take on trust (a bad row, an unusual cell) sends the file to the row-by-row reader, which is the
    definition of the format and names the line."""
    if isinstance(source, str | Path):
        ticks = _read_csv_columnar(source, progress)
        if ticks is not None:
            return ticks
        with open(source, newline="", encoding="utf-8") as f:
            return _read_csv_rows(f, capacity=count_lines(source), progress=None)
    return _read_csv_rows(source, capacity=1 << 16, progress=progress)


# The strict forms the columnar path parses itself; any other ts cell goes row by row (`_parse_ts` decides).
_ISO_TS = r"^\d{4}-\d{2}-\d{2}[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
_EPOCH_TS = r"^\d{1,12}(\.\d{1,6})?$"
# pyarrow's streaming reader keeps dozens of blocks in flight, so its memory is a multiple of this (40 x 4 MB was
# more than the arrays it fills); 256 KB blocks read as fast.
_CSV_BLOCK_BYTES = 1 << 18


def _read_csv_columnar(path: str | Path, progress: Progress | None) -> TickData | None:
    """The CSV's rows by pyarrow, or None when the row-by-row reader must decide."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
    except (csv.Error, UnicodeDecodeError):
        return None
    if not header:
        return None
    cols = _header(header)
    names = sorted(cols, key=cols.__getitem__)
    types = {name: pa.string() if name == "ts" else pa.float64() for name in names}
    out = _Columns(count_lines(path))
    previous_us = -1
    try:
        reader = pa_csv.open_csv(
            path, read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1, block_size=_CSV_BLOCK_BYTES),
            convert_options=pa_csv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=False,
                                                  quoted_strings_can_be_null=False))
        for batch in reader:
            columns = _arrow_columns(batch)
            if columns is None or _bad_rows(*columns, previous_us=previous_us).any():
                return None
            if batch.num_rows:
                out.extend(*columns)
                previous_us = int(columns[0][-1])
            if progress is not None:
                progress(batch.num_rows)
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    return out.ticks() if out.n else None


def _arrow_columns(batch: Any) -> list[npt.NDArray[Any]] | None:
    """A batch as (ts µs, bid, ask, last, iv); None when a ts is not of a strict form or a number cell said NaN."""
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.compute as pc

    n = batch.num_rows
    text = batch.column("ts")
    if pc.all(pc.match_substring_regex(text, _ISO_TS)).as_py() is not False:
        ts = pc.cast(text, pa.timestamp("us", tz="UTC"))
    elif pc.all(pc.match_substring_regex(text, _EPOCH_TS)).as_py():
        seconds = pc.cast(text, pa.decimal128(20, 6))  # exact, as `_parse_ts` does with integers
        ts = pc.multiply(seconds, pa.scalar(Decimal(US_PER_S), pa.decimal128(7, 0)))
    else:
        return None
    columns: list[npt.NDArray[Any]] = [_values(pc.cast(ts, pa.int64()), np.int64)]
    for name in ("bid", "ask", "last", "iv"):
        if name not in batch.schema.names:
            columns.append(np.full(n, math.nan))
            continue
        column = batch.column(name)
        values = np.where(_nulls(column), math.nan, _values(column, np.float64))
        if np.count_nonzero(np.isnan(values)) != column.null_count:  # a cell that said "nan"
            return None
        columns.append(values)
    return columns


def _values(array: Any, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """A primitive arrow array's values as numpy, without a copy; what a null's slot holds is undefined. (Not
    `Array.to_numpy`: it imports pandas, a quarter of a second of every backtest's start-up.)"""
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array),
                         offset=array.offset * np.dtype(dtype).itemsize)


def _nulls(array: Any) -> BoolArray:
    """Where an arrow array is null, from its validity bitmap."""
    if not array.null_count:
        return np.zeros(len(array), bool)
    bits = np.unpackbits(np.frombuffer(array.buffers()[0], np.uint8), count=array.offset + len(array),
                         bitorder="little")
    return bits[array.offset:] == 0


def _read_csv_rows(text: IO[str], *, capacity: int, progress: Progress | None) -> TickData:
    """The tick CSV one row at a time with the csv module: the definition of the format."""
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise DataFileError(1, "empty file: expected a header ts,bid,ask[,last][,iv]") from None
    except csv.Error as exc:
        raise DataFileError(1, f"not a CSV file: {exc}") from None
    cols = _header(header)
    width = len(header)
    i_ts, i_bid, i_ask = cols["ts"], cols["bid"], cols["ask"]
    i_last, i_iv = cols.get("last"), cols.get("iv")
    nan = math.nan
    out = _Columns(capacity)
    rows: list[tuple[int, float, float, float, float]] = []
    previous = -1
    previous_line = 0
    line = 1
    pending = 0
    lo, hi, first_day, last_day = _supported_us()
    try:
        for row in reader:
            line = reader.line_num
            if progress is not None:
                pending += 1
                if pending == 10_000:
                    progress(pending)
                    pending = 0
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                missing = [n for n, i in cols.items() if i >= len(row)]
                what = f"missing column(s) {missing}" if missing else "more fields than the header"
                raise DataFileError(line, f"{what}: the row has {len(row)} fields, the header {width}")
            try:
                ts = _parse_ts(row[i_ts].strip())
                bid = _parse_price("bid", row[i_bid])
                ask = _parse_price("ask", row[i_ask])
                last = nan if i_last is None else _parse_optional("last", row[i_last])
                iv = nan if i_iv is None else _parse_optional("iv", row[i_iv])
            except ValueError as exc:
                raise DataFileError(line, str(exc)) from None
            if bid > ask:
                raise DataFileError(line, f"crossed quote: bid {row[i_bid].strip()} > ask {row[i_ask].strip()}")
            if ts <= previous:
                raise DataFileError(line, f"ts {row[i_ts].strip()} is not after the previous row's (line "
                                          f"{previous_line}): rows must be strictly increasing in time")
            if not lo <= ts <= hi:
                raise DataFileError(line, f"ts {row[i_ts].strip()} is outside the supported range "
                                          f"{first_day}..{last_day}")
            previous, previous_line = ts, line
            rows.append((ts, bid, ask, last, iv))
            if len(rows) == 1 << 16:
                _extend_rows(out, rows)
    except csv.Error as exc:
        raise DataFileError(reader.line_num or line, f"malformed CSV: {exc}") from None
    _extend_rows(out, rows)
    if progress is not None and pending:
        progress(pending)
    if out.n == 0:
        raise DataFileError(line + 1, "no data rows after the header")
    return out.ticks()


def _extend_rows(out: _Columns, rows: list[tuple[int, float, float, float, float]]) -> None:
    if rows:
        count = len(rows)
        out.extend(np.fromiter((r[0] for r in rows), np.int64, count),
                   *(np.fromiter((r[k] for r in rows), np.float64, count) for k in range(1, 5)))
        rows.clear()



def _bad_rows(ts: Int64Array, bid: FloatArray, ask: FloatArray, last: FloatArray, iv: FloatArray, *,
              previous_us: int) -> BoolArray:
    """The rows the row-by-row rules refuse, vectorised (a NaN `last` or `iv` is an empty cell)."""
    lo, hi, _, _ = _supported_us()
    before = np.empty_like(ts)
    before[:1] = previous_us
    before[1:] = ts[:-1]
    with np.errstate(invalid="ignore"):
        bad = ~(bid > 0) | ~(ask > 0) | np.isinf(bid) | np.isinf(ask) | (bid > ask)
        bad |= (last <= 0) | np.isinf(last) | (iv <= 0) | (iv > _MAX_IV)
    bad |= (ts <= before) | (ts < lo) | (ts > hi)
    return np.asarray(bad, dtype=bool)


def count_lines(path: str | Path) -> int:
    """Lines in a file (for a progress bar's total), counted in binary blocks."""
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


# ---- Parquet ---------------------------------------------------------------------------------------------------


def is_parquet(path: str | Path) -> bool:
    """A Parquet file starts with the magic bytes PAR1."""
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def read_ticks(path: str | Path, *, progress: Progress | None = None) -> TickData:
    """A tick file by its content: Parquet (`read_ticks_parquet`) or the tick CSV (`read_ticks_csv`)."""
    if is_parquet(path):
        return read_ticks_parquet(path, progress=progress)
    return read_ticks_csv(path, progress=progress)


def count_rows(path: str | Path) -> int:
    """A progress bar's total for `read_ticks`: the lines of a CSV, the rows of a Parquet file (0 if unknown)."""
    if not is_parquet(path):
        return count_lines(path)
    try:
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(str(path)).metadata.num_rows)
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError
        return 0


def _pyarrow() -> Any:
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401  (pa.parquet)

    return pa


def read_ticks_parquet(path: str | Path, *, progress: Progress | None = None) -> TickData:
    """Parse and validate a Parquet tick file in full, as `read_ticks_csv` does a CSV: columns ts, bid, ask and
    optional last, iv; `ts` a timestamp with a time zone, or epoch seconds (int or float); prices numbers. A null
    `last` or `iv` is missing (NaN); a NaN is refused, as in the CSV. A bad row raises TickFileError naming its
    row (1-based, no header) and nothing is returned. `progress` is called with rows read."""
    pa = _pyarrow()
    try:
        parquet = pa.parquet.ParquetFile(str(path))
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise TickFileError(0, f"not a readable Parquet file: {exc}") from None
    try:
        cols = _header(list(schema.names))
    except DataFileError as exc:
        raise TickFileError(0, exc.reason.replace("the header must name", "a tick file has")) from None
    names = {name: schema.names[i] for name, i in cols.items()}
    kinds = {name: _parquet_kind(pa, name, schema.field(names[name]).type) for name in names}
    out = _Columns(int(parquet.metadata.num_rows))
    previous_us, done = -1, 0
    try:
        batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=list(names.values()))
        for batch in batches:
            n = batch.num_rows
            arrays = {name: batch.column(batch.schema.get_field_index(names[name])) for name in names}
            columns, nulls, nans = _parquet_columns(pa, arrays, kinds, n)
            bad = _bad_rows(*columns, previous_us=previous_us)
            for name in ("ts", "bid", "ask"):
                bad |= nulls[name]
            for name in ("ts", "last", "iv"):
                bad |= nans[name]
            if bad.any():
                i = int(np.argmax(bad))
                before = (previous_us, done) if i == 0 else (int(columns[0][i - 1]), done + i)
                raise TickFileError(done + i + 1, _parquet_reason(i, columns, nulls, nans, kinds, before))
            out.extend(*columns)
            previous_us, done = int(columns[0][-1]) if n else previous_us, done + n
            if progress is not None:
                progress(n)
    except (pa.ArrowException, OSError) as exc:
        raise TickFileError(0, f"not a readable Parquet file: {exc}") from None
    if out.n == 0:
        raise TickFileError(0, "no data rows")
    return out.ticks()


def _parquet_kind(pa: Any, name: str, dtype: Any) -> str:
    """How a column is read: ts as "timestamp_<unit>", "int" or "float" epoch seconds; prices as "number"."""
    types = pa.types
    if name == "ts":
        if types.is_timestamp(dtype):
            if dtype.tz is None:
                raise TickFileError(0, f"ts is a timestamp without a time zone ({dtype}): store it with one (UTC) "
                                       "or as epoch seconds")
            return f"timestamp_{dtype.unit}"
        if types.is_integer(dtype):
            return "int"
        if types.is_floating(dtype):
            return "float"
        raise TickFileError(0, f"ts must be a timestamp with a time zone or epoch seconds (int or float), got {dtype}")
    if types.is_integer(dtype) or types.is_floating(dtype) or types.is_decimal(dtype):
        return "number"
    raise TickFileError(0, f"{name} must hold numbers, got {dtype}")


_TS_SCALE = {"timestamp_s": 1_000_000, "timestamp_ms": 1_000, "timestamp_us": 1, "int": 1_000_000}


def _parquet_columns(pa: Any, arrays: dict[str, Any], kinds: dict[str, str],
                     n: int) -> tuple[list[npt.NDArray[Any]], dict[str, BoolArray], dict[str, BoolArray]]:
    """A batch's columns as the CSV reader's arrays (ts µs, bid, ask, last, iv), with where values were null and
    where they were NaN."""
    nothing = np.zeros(n, bool)
    nulls, nans = {}, {}
    columns: list[npt.NDArray[Any]] = []
    for name in ("ts", "bid", "ask", "last", "iv"):
        array = arrays.get(name)
        if array is None:
            columns.append(np.full(n, math.nan))
            nulls[name] = nans[name] = nothing
            continue
        null = _nulls(array)
        kind = kinds[name]
        if name != "ts" or kind == "float":
            values: npt.NDArray[Any] = np.where(null, math.nan, _values(array.cast(pa.float64()), np.float64))
            nan = np.isnan(values) & ~null
        else:
            values = np.where(null, 0, _values(array.cast(pa.int64()), np.int64))
            nan = nothing
        if name == "ts":
            values = _parquet_ts_us(values, kind)
        nulls[name], nans[name] = null, nan
        columns.append(values)
    return columns, nulls, nans


def _parquet_ts_us(values: npt.NDArray[Any], kind: str) -> Int64Array:
    """Microseconds since the epoch; a value no backtest could hold (past the year 33000) becomes one that the range
    check refuses, instead of overflowing."""
    out_of_range = _supported_us()[1] + 1
    if kind == "float":
        finite = np.isfinite(values) & (np.abs(values) < 1e12)
        return np.where(finite, np.round(np.where(finite, values, 0.0) * US_PER_S), out_of_range).astype(np.int64)
    if kind == "timestamp_ns":
        return (values + 500) // 1000  # to the nearest µs, as epoch seconds with more than 6 decimals
    scale = _TS_SCALE[kind]
    fits = np.abs(values) < 10**12 * US_PER_S // scale
    return np.where(fits, values * scale, out_of_range)


def _parquet_reason(i: int, columns: list[npt.NDArray[Any]], nulls: dict[str, BoolArray],
                    nans: dict[str, BoolArray], kinds: dict[str, str], before: tuple[int, int]) -> str:
    """Why row i of a batch is refused, checked in the CSV's order: ts, bid, ask, last, iv, crossed, order, range."""
    ts = int(columns[0][i])
    if nulls["ts"][i]:
        return "ts is empty (null)"
    if nans["ts"][i]:
        return "ts is NaN"
    values = dict(zip(("bid", "ask", "last", "iv"), (float(c[i]) for c in columns[1:]), strict=True))
    for name, value in values.items():
        if name in kinds and nulls[name][i]:
            if name in ("bid", "ask"):
                return f"{name} is empty (null)"
            continue
        if name not in kinds:
            continue
        try:
            _parse_iv(repr(value)) if name == "iv" else _parse_price(name, repr(value))
        except ValueError as exc:
            return str(exc)
    if values["bid"] > values["ask"]:
        return f"crossed quote: bid {values['bid']!r} > ask {values['ask']!r}"
    previous_us, previous_row = before
    if ts <= previous_us:
        return (f"ts {_shown_ts(ts)} is not after the previous row's (row {previous_row}): rows must be strictly "
                "increasing in time")
    _, _, first_day, last_day = _supported_us()
    return f"ts {_shown_ts(ts)} is outside the supported range {first_day}..{last_day}"


def _shown_ts(us: int) -> str:
    try:
        return iso(us)
    except (OverflowError, ValueError):
        return f"{us / US_PER_S:.6f} (epoch seconds)"


def write_ticks_parquet(data: TickData, target: str | Path) -> None:
    """Ticks as a Parquet file `read_ticks_parquet` reads back identically: ts a UTC timestamp in µs, `last` and
    `iv` only when they hold values (their NaN stored as null)."""
    pa = _pyarrow()
    columns: dict[str, Any] = {"ts": pa.array(data.ts_us, type=pa.timestamp("us", tz="UTC")),
                               "bid": pa.array(data.bid), "ask": pa.array(data.ask)}
    for name in ("last", "iv"):
        values = getattr(data, name)
        if np.isfinite(values).any():
            columns[name] = pa.array(values, mask=np.isnan(values))
    pa.parquet.write_table(pa.table(columns), str(target))


def iso(us: int) -> str:
    """ISO 8601 in UTC with an explicit offset, microseconds only when present."""
    ts = datetime_from_us(us)
    return ts.isoformat(timespec="microseconds" if ts.microsecond else "seconds")


def write_ticks_csv(data: TickData, target: str | Path | IO[str]) -> None:
    """The inverse of `read_ticks_csv`: ts as ISO 8601 UTC, `last` and `iv` columns only when they hold values."""
    if isinstance(target, str | Path):
        with open(target, "w", newline="", encoding="utf-8") as f:
            write_ticks_csv(data, f)
        return
    with_last = bool(np.isfinite(data.last).any())
    with_iv = data.has_iv
    writer = csv.writer(target, lineterminator="\n")
    writer.writerow(["ts", "bid", "ask"] + (["last"] if with_last else []) + (["iv"] if with_iv else []))
    for i in range(len(data)):
        row = [iso(int(data.ts_us[i])), repr(float(data.bid[i])), repr(float(data.ask[i]))]
        if with_last:
            row.append("" if math.isnan(data.last[i]) else repr(float(data.last[i])))
        if with_iv:
            row.append("" if math.isnan(data.iv[i]) else repr(float(data.iv[i])))
        writer.writerow(row)


# ---- compact storage --------------------------------------------------------------------------------------


def save_npz(data: TickData, target: str | Path | IO[bytes]) -> None:
    """Store the arrays uncompressed: a 20-day 1-s dataset loads in milliseconds (sweeps load it per run)."""
    np.savez(target, ts_us=data.ts_us, bid=data.bid, ask=data.ask, last=data.last, iv=data.iv)


def load_npz(source: str | Path | IO[bytes]) -> TickData:
    with np.load(source) as z:
        return TickData(z["ts_us"].astype(np.int64), z["bid"], z["ask"], z["last"], z["iv"])


def npz_bytes(data: TickData) -> bytes:
    buffer = io.BytesIO()
    save_npz(data, buffer)
    return buffer.getvalue()


# ---- the synthetic generator -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticSpec:
    """A seeded synthetic market: GBM mid with realised vol and optional jumps, quotes with a spread, and an
    implied-vol path. The same spec always gives the same ticks.

    With `sessions_only` the ticks fall only inside the exchange's sessions (`days` sessions from `start`), and
    `realized_vol` is annualised over trading time (252 sessions of 6.5 h), the convention for equity vol: the
    variance per year then matches the options' calendar-time implied vol, so realised vs implied compare fairly.
    Otherwise ticks run round the clock for `days` calendar days (vol annualised over 365 days).
    The IV path is log-normal with `vol_of_vol` (annual), updated every `iv_update_s`; 0 keeps it flat."""

    seed: int = 1
    days: int = 20
    tick_s: float = 1.0
    start: str = "2026-03-02"
    sessions_only: bool = True
    exchange: str = "XNYS"
    spot0: float = 180.0
    realized_vol: float = 0.60
    drift: float = 0.0
    jump_intensity_per_day: float = 0.0
    jump_mean_frac: float = 0.0
    jump_std_frac: float = 0.02
    spread_bps: float = 4.0
    implied_vol: float = 0.35
    vol_of_vol: float = 0.0
    iv_update_s: float = 60.0
    tick_size: float = 0.01

    def __post_init__(self) -> None:
        def bad(name: str, reason: str) -> ConfigError:
            return ConfigError(f"synthetic.{name}", reason)

        for f in fields(self):
            value = getattr(self, f.name)
            kind = {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise bad(f.name, f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
            if kind is float and not math.isfinite(value):
                raise bad(f.name, f"must be finite, got {value!r}")
        if not 1 <= self.days <= 3650:
            raise bad("days", f"must be within 1..3650, got {self.days}")
        if not 0.001 <= self.tick_s <= 86_400:
            raise bad("tick_s", f"must be within 0.001..86400 seconds, got {self.tick_s}")
        if self.iv_update_s <= 0:
            raise bad("iv_update_s", f"must be > 0, got {self.iv_update_s}")
        if not 0 < self.implied_vol <= _MAX_IV:
            raise bad("implied_vol", f"must be within (0, {_MAX_IV:g}], got {self.implied_vol}")
        if self.vol_of_vol < 0:
            raise bad("vol_of_vol", f"must be >= 0, got {self.vol_of_vol}")
        from trading.core.calendar import FIRST_DAY, LAST_DAY, TradingCalendar

        try:
            first = date.fromisoformat(self.start)
        except ValueError:
            raise bad("start", f"expected an ISO date 'YYYY-MM-DD', got {self.start!r}") from None
        if not FIRST_DAY < first < LAST_DAY - timedelta(days=self.days * 2 + 60):
            raise bad("start", f"must lie within {FIRST_DAY}..{LAST_DAY} with room for {self.days} days")
        if self.sessions_only:
            try:
                TradingCalendar(self.exchange)
            except ConfigError as exc:
                raise bad("exchange", exc.reason) from None
        if self.ticks_estimate() > 50_000_000:
            raise bad("days", f"{self.ticks_estimate()} ticks is more than the 50M a backtest takes")
        try:
            self.market_config()
        except ConfigError as exc:
            raise bad(exc.field, exc.reason) from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SyntheticSpec:
        if not isinstance(data, Mapping):
            raise ConfigError("synthetic", f"expected a mapping of generator settings, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"synthetic.{unknown[0]}", f"unknown setting; known: {', '.join(sorted(known))}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def canonical_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def ticks_estimate(self) -> int:
        per_day = (6.5 * 3600 if self.sessions_only else 86_400) / self.tick_s
        return int(per_day * self.days)

    def market_config(self) -> MarketConfig:
        from trading.sim.market import MarketConfig

        trading_seconds_per_year = 252 * 6.5 * 3600 if self.sessions_only else 365 * 86_400
        return MarketConfig(
            spot0=self.spot0, realized_vol=self.realized_vol, drift=self.drift,
            jump_intensity_per_day=self.jump_intensity_per_day * (86_400 / (6.5 * 3600) if self.sessions_only else 1),
            jump_mean_frac=self.jump_mean_frac, jump_std_frac=self.jump_std_frac, spread_bps=self.spread_bps,
            implied_vol=self.implied_vol, seconds_per_year=trading_seconds_per_year, tick_size=self.tick_size,
        )


def _session_times_us(spec: SyntheticSpec) -> Int64Array:
    """Tick times: every `tick_s` inside each of `days` sessions from `start` (or round the clock)."""
    from backtests.calendars import open_intervals
    from trading.core.calendar import ET, TradingCalendar

    step_us = round(spec.tick_s * US_PER_S)
    first = date.fromisoformat(spec.start)
    if not spec.sessions_only:
        start_us = us_from_datetime(datetime.combine(first, datetime.min.time(), ET))
        count = int(spec.days * 86_400 * US_PER_S // step_us)
        return start_us + step_us * np.arange(count, dtype=np.int64)
    calendar = TradingCalendar(spec.exchange)
    opens_s, closes_s = open_intervals(spec.exchange)
    parts: list[Int64Array] = []
    day = first
    sessions = 0
    while sessions < spec.days:
        bounds = calendar.session_bounds(day)
        day += timedelta(days=1)
        if bounds is None:
            continue
        sessions += 1
        lo, hi = bounds[0].timestamp(), bounds[1].timestamp()
        # A session with a lunch break is two open intervals: ticks only inside them.
        for k in np.flatnonzero((opens_s >= lo) & (closes_s <= hi)):
            parts.append(np.arange(round(opens_s[k] * US_PER_S), round(closes_s[k] * US_PER_S), step_us,
                                   dtype=np.int64))
    return np.concatenate(parts)


def generate(spec: SyntheticSpec) -> TickData:
    """The ticks of `spec`, via the simulated market's own vectorised generator (`generate_ticks`)."""
    from trading.sim.market import generate_ticks

    ts_us = _session_times_us(spec)
    n = len(ts_us)
    config = spec.market_config()
    start = datetime_from_us(int(ts_us[0]))
    # The price path runs on trading time: tick i is i steps after tick 0 whatever the calendar gap between them.
    arrays = generate_ticks(config, spec.seed, start, n, spec.tick_s)
    iv = np.full(n, spec.implied_vol)
    if spec.vol_of_vol > 0:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([spec.seed, 0x1F])))
        steps_per_update = max(1, round(spec.iv_update_s / spec.tick_s))
        updates = (n + steps_per_update - 1) // steps_per_update
        dt_y = spec.iv_update_s / config.seconds_per_year
        shocks = spec.vol_of_vol * math.sqrt(dt_y) * rng.standard_normal(updates) - 0.5 * spec.vol_of_vol**2 * dt_y
        shocks[0] = 0.0
        path = spec.implied_vol * np.exp(np.cumsum(shocks))
        iv = np.minimum(np.repeat(path, steps_per_update)[:n], _MAX_IV)
    return TickData(ts_us, arrays.bid, arrays.ask, arrays.last, np.round(iv, 10))


# ---- recorded daemon history ---------------------------------------------------------------------------------


def from_status_history(payloads: Iterable[tuple[datetime, Mapping[str, Any]]]) -> TickData:
    """Ticks from the daemon's StatusHistory snapshots (oldest first): `market.bid/ask`, the snapshot's quote time
    (`market.quote_ts`, else the row's ts) and the mean IV of the managed legs.

    Cadence limitation: the daemon writes history every BIFROST_HISTORY_S (10 s by default) and at order events,
    not at every quote, so a replay of it sees a coarse path: fewer hedges than the daemon made and less gamma
    P&L; intervals between snapshots are not filled in. Snapshots without a valid two-sided quote, and repeats of
    an already-seen quote time, are skipped."""
    ts_list: list[int] = []
    bid_list: list[float] = []
    ask_list: list[float] = []
    iv_list: list[float] = []
    previous = -1
    for row_ts, payload in payloads:
        market = payload.get("market") or {}
        bid, ask = market.get("bid"), market.get("ask")
        if not isinstance(bid, int | float) or not isinstance(ask, int | float):
            continue
        if not (math.isfinite(bid) and math.isfinite(ask) and 0 < bid <= ask):
            continue
        quote_ts = market.get("quote_ts")
        try:
            ts = _parse_ts(quote_ts) if isinstance(quote_ts, str) else us_from_datetime(row_ts)
        except ValueError:
            ts = us_from_datetime(row_ts)
        if ts <= previous:
            continue
        ivs = [leg.get("iv") for leg in (payload.get("book") or {}).get("legs") or []]
        ivs = [v for v in ivs if isinstance(v, int | float) and 0 < v <= _MAX_IV]
        previous = ts
        ts_list.append(ts)
        bid_list.append(float(bid))
        ask_list.append(float(ask))
        iv_list.append(sum(ivs) / len(ivs) if ivs else math.nan)
    if not ts_list:
        raise DataFileError(0, "no usable quotes in the status history of that period")
    n = len(ts_list)
    return TickData(np.array(ts_list, dtype=np.int64), np.array(bid_list), np.array(ask_list), np.full(n, math.nan),
                    np.array(iv_list))


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, size):
        yield start, min(start + size, n)
