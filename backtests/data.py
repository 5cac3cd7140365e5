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
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from backtests.calendars import open_intervals
from trading.core.calendar import ET, FIRST_DAY, LAST_DAY, TradingCalendar
from trading.errors import ConfigError, DataFileError
from trading.sim.market import MarketConfig, generate_ticks

Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Progress = Callable[[int], None]  # called with the number of rows (or bytes) done since the last call

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US_PER_S = 1_000_000
REQUIRED_COLUMNS = ("ts", "bid", "ask")
OPTIONAL_COLUMNS = ("last", "iv")
_EPOCH_RE = re.compile(r"\d+(\.\d*)?")
_MAX_IV = 5.0  # 500 % annual vol: above it a column is in percent, not a fraction
_MIN_US = int((datetime.combine(FIRST_DAY, datetime.min.time(), UTC) - EPOCH) / timedelta(microseconds=1)) + 2 * 86_400 * US_PER_S
_MAX_US = int((datetime.combine(LAST_DAY, datetime.min.time(), UTC) - EPOCH) / timedelta(microseconds=1)) - 60 * 86_400 * US_PER_S


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


# ---- the tick CSV (DESIGN §7) --------------------------------------------------------------------------------


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


def read_ticks_csv(source: str | Path | IO[str], *, progress: Progress | None = None) -> TickData:
    """Parse and validate a tick CSV in full. Any bad row raises DataFileError naming its line (1-based, the header
    is line 1) and nothing is returned: an import is all or nothing.

    Refused: a missing or unknown column, a row with too few or too many fields, a ts that is not ISO 8601 with
    an offset or epoch seconds, a ts not strictly after the previous row's, a bid/ask/last/iv that is not a
    number, NaN, infinite or <= 0, a crossed quote (bid > ask), an iv above 5 (percent instead of a fraction).
    Blank lines are skipped; `last` and `iv` cells may be empty."""
    if isinstance(source, str | Path):
        with open(source, newline="", encoding="utf-8") as f:
            return read_ticks_csv(f, progress=progress)
    reader = csv.reader(source)
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
    ts_list: list[int] = []
    bid_list: list[float] = []
    ask_list: list[float] = []
    last_list: list[float] = []
    iv_list: list[float] = []
    nan = math.nan
    previous = -1
    previous_line = 0
    line = 1
    pending = 0
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
                last = nan if i_last is None or not row[i_last].strip() else _parse_price("last", row[i_last])
                iv = nan if i_iv is None or not row[i_iv].strip() else _parse_iv(row[i_iv])
            except ValueError as exc:
                raise DataFileError(line, str(exc)) from None
            if bid > ask:
                raise DataFileError(line, f"crossed quote: bid {row[i_bid].strip()} > ask {row[i_ask].strip()}")
            if ts <= previous:
                raise DataFileError(line, f"ts {row[i_ts].strip()} is not after the previous row's (line "
                                          f"{previous_line}): rows must be strictly increasing in time")
            if not _MIN_US <= ts <= _MAX_US:
                raise DataFileError(line, f"ts {row[i_ts].strip()} is outside the supported range "
                                          f"{FIRST_DAY}..{LAST_DAY}")
            previous, previous_line = ts, line
            ts_list.append(ts)
            bid_list.append(bid)
            ask_list.append(ask)
            last_list.append(last)
            iv_list.append(iv)
    except csv.Error as exc:
        raise DataFileError(reader.line_num or line, f"malformed CSV: {exc}") from None
    if progress is not None and pending:
        progress(pending)
    if not ts_list:
        raise DataFileError(line + 1, "no data rows after the header")
    return TickData(np.array(ts_list, dtype=np.int64), np.array(bid_list), np.array(ask_list),
                    np.array(last_list), np.array(iv_list))


def count_lines(path: str | Path) -> int:
    """Lines in a file (for a progress bar's total), counted in binary blocks."""
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


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
        trading_seconds_per_year = 252 * 6.5 * 3600 if self.sessions_only else 365 * 86_400
        return MarketConfig(
            spot0=self.spot0, realized_vol=self.realized_vol, drift=self.drift,
            jump_intensity_per_day=self.jump_intensity_per_day * (86_400 / (6.5 * 3600) if self.sessions_only else 1),
            jump_mean_frac=self.jump_mean_frac, jump_std_frac=self.jump_std_frac, spread_bps=self.spread_bps,
            implied_vol=self.implied_vol, seconds_per_year=trading_seconds_per_year, tick_size=self.tick_size,
        )


def _session_times_us(spec: SyntheticSpec) -> Int64Array:
    """Tick times: every `tick_s` inside each of `days` sessions from `start` (or round the clock)."""
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
