"""Statistics of what the daemon did (R-H2), read from the history tables only — orders, fills, decisions and
status snapshots — so they work with the daemon offline. No FSM, no broker.

Aggregation happens in the database, by US/Eastern trading date: each table is grouped per day with one query
(the day is computed in SQL from the UTC timestamp plus the New York offset of its stretch of daylight-saving
time, so no per-row timezone function runs in Python), and days are rolled up to weeks or months here.

Figures per period: hedges (hedge orders sent), fills, filled shares, commissions, slippage in bps against the mid
at decision (Order.spot_at_decision vs Fill.price, cost-positive, weighted by shares), daily P&L (the daemon's
`pnl.daily_usd` at the last snapshot of each day) with its distribution and win rate (share of days with P&L > 0),
realised vs implied vol (realised: squared returns of the snapshot spots over intervals up to 5 minutes, annualised
over the time they span, from at most RV_MAX_SAMPLES snapshots; implied: the first managed leg's IV at each day's last snapshot, averaged over the
days), gamma P&L vs theta paid (the day's
`pnl.gamma_usd` and `pnl.theta_usd` at its last snapshot), and blocked hedges by reason (Decision.reasons).

Also per period: order → fill latency (Order.created_at to its first fill, and to its last fill for orders whose
fills add up to their quantity; p50 and p95 in ms, numpy's linear percentiles, orders grouped by the date they were
created), hedge round trips (the share ledger booked at average cost with trading.core.pnl.Holding, as the daemon
books it, from flat back to flat or through zero; a trip belongs to the date it closed, its P&L is realised P&L
minus its fills' commissions, a fill that crosses zero split pro rata between the trip it closes and the one it
opens) with their win rate, and risk halts (Operation kind "halt"). Percentiles do not roll up from days, so those
figures are read per order, per trip and per halt into arrays and each period takes its slice.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import numpy as np
from django.db import connection

from trading.core.calendar import ET, trading_date
from trading.core.gates import GATE_REASONS
from trading.core.pnl import Holding
from trading.models import Decision, Fill, Operation, Order, StatusHistory

PERIODS = ("day", "week", "month")
SECONDS_PER_YEAR = 365.0 * 86_400.0
MAX_RETURN_GAP_S = 300.0  # longer gaps (the daemon was down) are not returns
RV_MAX_SAMPLES = 100_000
EPOCH_DATE = date(1970, 1, 1)
FLAT_SHARES = 1e-6  # a cumulative share position within this of zero is flat
HALTS_LISTED = 500  # the most recent halts of the range listed with their messages (the count is always exact)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), ET).astimezone(UTC)


# ---- SQL dialect -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sql:
    vendor: str

    def epoch(self, column: str) -> str:
        """Seconds since the epoch (float) of a datetime column."""
        if self.vendor == "sqlite":
            # julianday is a double of days: rounded to the millisecond, an instant on a day boundary stays on it.
            return f"ROUND((julianday({column}) - 2440587.5) * 86400.0, 3)"
        return f"CAST(EXTRACT(EPOCH FROM {column}) AS DOUBLE PRECISION)"

    def json_num(self, column: str, *path: str | int) -> str:
        if self.vendor == "sqlite":
            dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
            # ->> (SQLite >= 3.38) returns the same SQL value as json_extract for numbers, a little faster.
            return f"({column} ->> '${dotted}')" if _sqlite_arrow() else f"json_extract({column}, '${dotted}')"
        return f"CAST(({column} #>> '{{{','.join(str(p) for p in path)}}}') AS DOUBLE PRECISION)"

    def day(self, epoch_sql: str, offsets: list[tuple[float, float, int]], default_offset: int) -> str:
        """The US/Eastern date of an epoch, as whole days since 1970-01-01: UTC plus the stretch's offset."""
        cases = " ".join(f"WHEN {epoch_sql} >= {lo!r} AND {epoch_sql} < {hi!r} THEN {off}" for lo, hi, off in offsets)
        shifted = f"({epoch_sql} + (CASE {cases} ELSE {default_offset} END))"
        if self.vendor == "sqlite":
            return f"CAST(({shifted} / 86400.0) AS INTEGER)"
        return f"CAST(FLOOR({shifted} / 86400.0) AS BIGINT)"


def _sqlite_arrow() -> bool:
    import sqlite3

    return sqlite3.sqlite_version_info >= (3, 38, 0)


def _offset_spans(lo: datetime, hi: datetime) -> tuple[list[tuple[float, float, int]], int]:
    """Stretches of constant New York UTC offset covering [lo, hi] (a day of margin each side), as epoch seconds."""
    start = lo - timedelta(days=2)
    end = hi + timedelta(days=2)

    def offset(t: datetime) -> int:
        delta = t.astimezone(ET).utcoffset()
        assert delta is not None
        return int(delta.total_seconds())

    spans: list[tuple[float, float, int]] = []
    cursor = start
    current = offset(cursor)
    span_start = start
    step = timedelta(hours=12)
    while cursor < end:
        nxt = min(cursor + step, end)
        if offset(nxt) != current:
            a, b = cursor, nxt  # the change lies in (a, b]: bisect to the second
            while (b - a) > timedelta(seconds=1):
                mid = a + (b - a) / 2
                if offset(mid) == current:
                    a = mid
                else:
                    b = mid
            change = b.replace(microsecond=0)
            spans.append((span_start.timestamp(), change.timestamp(), current))
            span_start, current = change, offset(nxt)
        cursor = nxt
    spans.append((span_start.timestamp(), end.timestamp(), current))
    return spans, spans[0][2]


# ---- range ------------------------------------------------------------------------------------------------------


def _bounds(since: date | datetime | None, until: date | datetime | None) -> tuple[datetime, datetime]:
    """[start, end) in UTC, within the trading dates that have history (so a range of centuries costs nothing).
    A date means that whole trading date (until inclusive); a datetime is exact."""
    first, last = _history_span()
    start, end = _midnight(trading_date(first)), _midnight(trading_date(last) + timedelta(days=1))
    if isinstance(since, datetime):
        start = max(start, since)
    elif since is not None:
        start = max(start, _midnight(since))
    if isinstance(until, datetime):
        end = min(end, until)
    elif until is not None and until < date.max:
        end = min(end, _midnight(until + timedelta(days=1)))
    return start, end


def _history_span() -> tuple[datetime, datetime]:
    from django.db.models import Max, Min

    firsts: list[datetime] = []
    lasts: list[datetime] = []
    halts = Operation.objects.filter(kind=Operation.Kind.HALT)  # kept after retention thins the snapshots
    for rows, column in ((Order.objects, "created_at"), (Fill.objects, "ts"), (Decision.objects, "ts"),
                         (StatusHistory.objects, "ts"), (halts, "ts")):
        # Two aggregates, two queries: SQLite answers MIN or MAX alone from the index, both at once by a scan.
        lo = rows.aggregate(lo=Min(column))["lo"]
        if lo is not None:
            firsts.append(lo)
            lasts.append(rows.aggregate(hi=Max(column))["hi"])
    now = datetime.now(UTC)
    return (min(firsts) if firsts else now), (max(lasts) if lasts else now)


# ---- per-day aggregates in the database ----------------------------------------------------------------------------


@dataclass
class _Day:
    hedges: int = 0
    fills: int = 0
    filled_shares: float = 0.0
    commissions_usd: float = 0.0
    slippage_weighted: float = 0.0  # Σ shares × bps
    slippage_shares: float = 0.0
    pnl_usd: float | None = None
    gamma_usd: float | None = None
    theta_usd: float | None = None
    return_sq: float = 0.0
    return_seconds: float = 0.0
    iv_sum: float = 0.0
    iv_count: int = 0
    decisions_blocked: int = 0
    decisions_allowed: int = 0
    blocks: dict[str, int] | None = None


def _days_of(epoch_s: np.ndarray, spans: list[tuple[float, float, int]], default: int) -> np.ndarray:
    """The US/Eastern day number (days since 1970-01-01) of each epoch, as the SQL `day` expression computes it."""
    offsets = np.full(len(epoch_s), float(default))
    for lo, hi, off in spans:
        offsets[(epoch_s >= lo) & (epoch_s < hi)] = off
    return np.floor((epoch_s + offsets) / 86400.0).astype(np.int64)


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _daily(start: datetime, end: datetime) -> dict[int, _Day]:
    sql = _Sql(connection.vendor)
    spans, default = _offset_spans(start, end)
    days: dict[int, _Day] = defaultdict(_Day)
    order_t, fill_t, decision_t, history_t = _table(Order), _table(Fill), _table(Decision), _table(StatusHistory)
    bounds = [connection.ops.adapt_datetimefield_value(start), connection.ops.adapt_datetimefield_value(end)]
    with connection.cursor() as cur:
        day = sql.day(sql.epoch("created_at"), spans, default)
        cur.execute(f"SELECT {day} AS d, COUNT(*) FROM {order_t} WHERE intent = 'hedge' AND created_at >= %s "
                    f"AND created_at < %s GROUP BY d", bounds)
        for d, n in cur.fetchall():
            days[int(d)].hedges = int(n)

        day = sql.day(sql.epoch("f.ts"), spans, default)
        price = "CAST(f.price AS DOUBLE PRECISION)"
        spot = "o.spot_at_decision"
        sign = "(CASE WHEN f.side = 'BUY' THEN 1.0 ELSE -1.0 END)"
        cur.execute(
            f"SELECT {day} AS d, COUNT(*), SUM(f.qty), SUM(CAST(f.commission AS DOUBLE PRECISION)), "
            f"SUM(CASE WHEN {spot} > 0 THEN f.qty * {sign} * ({price} - {spot}) / {spot} * 10000.0 END), "
            f"SUM(CASE WHEN {spot} > 0 THEN f.qty END) "
            f"FROM {fill_t} f LEFT JOIN {order_t} o ON o.order_ref = f.order_ref "
            f"WHERE f.ts >= %s AND f.ts < %s GROUP BY d", bounds)
        for d, n, shares, commission, slip, slip_shares in cur.fetchall():
            row = days[int(d)]
            row.fills, row.filled_shares, row.commissions_usd = int(n), float(shares or 0), float(commission or 0)
            row.slippage_weighted, row.slippage_shares = float(slip or 0), float(slip_shares or 0)

        day = sql.day(sql.epoch("ts"), spans, default)
        cur.execute(f"SELECT {day} AS d, allowed, reasons, COUNT(*) FROM {decision_t} WHERE ts >= %s AND ts < %s "
                    f"GROUP BY d, allowed, reasons", bounds)
        for d, allowed, reasons, n in cur.fetchall():
            row = days[int(d)]
            if allowed:
                row.decisions_allowed += int(n)
                continue
            row.decisions_blocked += int(n)
            row.blocks = row.blocks or {}
            for reason in json.loads(reasons) if isinstance(reasons, str) else reasons or []:
                row.blocks[reason] = row.blocks.get(reason, 0) + int(n)

        # Realised variance from the snapshots' spots, in time order: consecutive returns within
        # MAX_RETURN_GAP_S of each other, summed per day in numpy. Every snapshot carries the whole status payload
        # (kilobytes of JSON), so beyond RV_MAX_SAMPLES snapshots in the range only every k-th one is read (by id):
        # the estimate then uses returns over k snapshot intervals instead of one.
        cur.execute(f"SELECT COUNT(*) FROM {history_t} WHERE ts >= %s AND ts < %s", bounds)
        count = int(cur.fetchone()[0])
        step = max(1, math.ceil(count / RV_MAX_SAMPLES))
        sampled = f" AND id %% {step} = 0" if step > 1 else ""  # %% is the modulo operator once the driver formats
        cur.execute(f"SELECT {sql.epoch('ts')}, {sql.json_num('payload', 'market', 'spot')} FROM {history_t} "
                    f"WHERE ts >= %s AND ts < %s{sampled} ORDER BY ts, id", bounds)
        parts = []
        while rows := cur.fetchmany(100_000):
            parts.append(np.array(rows, dtype=np.float64))
        if parts:
            table = np.concatenate(parts)
            ep, spot = table[:, 0], table[:, 1]
            day_idx = _days_of(ep, spans, default)
            with np.errstate(invalid="ignore", divide="ignore"):
                dt = np.diff(ep)
                ret = spot[1:] / spot[:-1] - 1.0
                ok = (spot[:-1] > 0) & (spot[1:] > 0) & (dt > 0) & (dt <= MAX_RETURN_GAP_S * step)
            first_day = int(day_idx.min())
            bins = day_idx[1:] - first_day
            r2 = np.bincount(bins[ok], weights=ret[ok] ** 2, minlength=int(day_idx.max()) - first_day + 1)
            seconds = np.bincount(bins[ok], weights=dt[ok], minlength=len(r2))
            for k in np.flatnonzero(seconds):
                row = days[first_day + int(k)]
                row.return_sq, row.return_seconds = float(r2[k]), float(seconds[k])
        # The last snapshot of each day carries the day's P&L, its gamma/theta attribution and the legs' IV: one
        # indexed lookup per day of the range.
        fields = ", ".join(sql.json_num("payload", *path) for path in (
            ("pnl", "daily_usd"), ("pnl", "gamma_usd"), ("pnl", "theta_usd"), ("book", "legs", 0, "iv")))
        day = trading_date(start)
        while _midnight(day) < end:
            lo, hi = max(start, _midnight(day)), min(end, _midnight(day + timedelta(days=1)))
            cur.execute(f"SELECT {fields} FROM {history_t} WHERE ts >= %s AND ts < %s ORDER BY ts DESC, id DESC "
                        f"LIMIT 1", [connection.ops.adapt_datetimefield_value(lo),
                                     connection.ops.adapt_datetimefield_value(hi)])
            found = cur.fetchone()
            if found is not None:
                pnl, gamma, theta, iv = found
                row = days[(day - EPOCH_DATE).days]
                row.pnl_usd = None if pnl is None else float(pnl)
                row.gamma_usd = None if gamma is None else float(gamma)
                row.theta_usd = None if theta is None else float(theta)
                if iv is not None:
                    row.iv_sum, row.iv_count = float(iv), 1
            day += timedelta(days=1)
    return days


# ---- per-order, per-trip and per-halt figures -----------------------------------------------------------------------


@dataclass
class _Events:
    """Arrays over the range, each row with its US/Eastern day number, so a period's figures are a slice."""

    order_day: np.ndarray  # orders with at least one fill, by the date they were created
    first_fill_ms: np.ndarray
    complete_fill_ms: np.ndarray  # NaN where the order's fills do not add up to its quantity
    trip_day: np.ndarray  # closed round trips, by the date they closed
    trip_pnl_usd: np.ndarray
    halt_day: np.ndarray
    halts: list[dict[str, str]]  # the most recent HALTS_LISTED, oldest first
    open_trips: list[dict[str, Any]]  # a trip per symbol still open at the end of the range

    @classmethod
    def empty(cls) -> _Events:
        none = np.empty(0, dtype=np.float64)
        return cls(order_day=none.astype(np.int64), first_fill_ms=none, complete_fill_ms=none,
                   trip_day=none.astype(np.int64), trip_pnl_usd=none, halt_day=none.astype(np.int64), halts=[],
                   open_trips=[])

    def days(self) -> set[int]:
        return {int(d) for d in np.concatenate([self.order_day, self.trip_day, self.halt_day])}


def _events(start: datetime, end: datetime) -> _Events:
    sql = _Sql(connection.vendor)
    spans, default = _offset_spans(start, end)
    order_t, fill_t, operation_t = _table(Order), _table(Fill), _table(Operation)
    bounds = [connection.ops.adapt_datetimefield_value(start), connection.ops.adapt_datetimefield_value(end)]
    with connection.cursor() as cur:
        # Latency: one row per order created in the range that has fills (its fills may come after the range).
        cur.execute(f"SELECT {sql.epoch('o.created_at')}, MIN({sql.epoch('f.ts')}), MAX({sql.epoch('f.ts')}), "
                    f"SUM(f.qty), o.qty FROM {order_t} o JOIN {fill_t} f ON f.order_ref = o.order_ref "
                    f"WHERE o.created_at >= %s AND o.created_at < %s GROUP BY o.id, o.created_at, o.qty", bounds)
        orders = np.array(cur.fetchall(), dtype=np.float64).reshape(-1, 5)
        # Round trips: the share ledger up to the end of the range, from the first fill on record (a trip that
        # closes in the range may have opened before it).
        cur.execute(f"SELECT symbol, {sql.epoch('ts')}, CASE WHEN side = 'BUY' THEN qty ELSE -qty END, "
                    f"CAST(price AS DOUBLE PRECISION), CAST(commission AS DOUBLE PRECISION) FROM {fill_t} "
                    f"WHERE ts < %s ORDER BY symbol, ts, id", bounds[1:])
        fills = cur.fetchall()
        cur.execute(f"SELECT {sql.epoch('ts')}, message FROM {operation_t} WHERE kind = %s AND ts >= %s AND ts < %s "
                    f"ORDER BY ts, id", [str(Operation.Kind.HALT), *bounds])
        halt_rows = cur.fetchall()

    created, first, last, filled, qty = orders.T
    complete = filled >= qty - FLAT_SHARES
    # Epochs are exact to the millisecond on SQLite and the microsecond on PostgreSQL: round off the float noise.
    first_ms = np.round((first - created) * 1000.0, 3)
    complete_ms = np.where(complete, np.round((last - created) * 1000.0, 3), np.nan)

    trip_epoch, trip_pnl, open_trips = _round_trips(fills, start.timestamp())
    halt_epoch = np.array([row[0] for row in halt_rows], dtype=np.float64)
    halts = [{"ts": datetime.fromtimestamp(float(ep), UTC).isoformat(),
              "trading_date": trading_date(datetime.fromtimestamp(float(ep), UTC)).isoformat(), "message": message}
             for ep, message in halt_rows[-HALTS_LISTED:]]
    return _Events(order_day=_days_of(created, spans, default), first_fill_ms=first_ms, complete_fill_ms=complete_ms,
                   trip_day=_days_of(trip_epoch, spans, default), trip_pnl_usd=trip_pnl,
                   halt_day=_days_of(halt_epoch, spans, default), halts=halts, open_trips=open_trips)


def _round_trips(fills: list[tuple[str, float, float, float, float]],
                 start_epoch: float) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """The round trips of each symbol's share ledger that close at or after `start_epoch`: (close epochs, P&L after
    commissions, the trips still open at the end). `fills` are (symbol, epoch, signed qty, price, commission),
    ordered by symbol and time.

    Booked with trading.core.pnl.Holding, fill by fill: average cost is a running state. Only the fills since the
    ledger was last flat before `start_epoch` are booked (found from the cumulative position in numpy): a trip
    never reaches back past a flat point."""
    closes: list[float] = []
    pnls: list[float] = []
    open_trips: list[dict[str, Any]] = []
    if not fills:
        return np.empty(0), np.empty(0), open_trips
    symbols = np.array([row[0] for row in fills])
    table = np.array([row[1:] for row in fills], dtype=np.float64)
    bounds = np.flatnonzero(symbols[1:] != symbols[:-1]) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(fills)], strict=True):
        epoch, signed, price, commission = table[lo:hi].T
        moving = signed != 0.0
        epoch, signed, price, commission = epoch[moving], signed[moving], price[moving], commission[moving]
        flat_before = np.flatnonzero((np.abs(np.cumsum(signed)) < FLAT_SHARES) & (epoch < start_epoch))
        first = int(flat_before[-1]) + 1 if flat_before.size else 0
        holding = Holding()
        trip_pnl, opened = 0.0, 0.0
        for ep, qty, px, fee in zip(epoch[first:].tolist(), signed[first:].tolist(), price[first:].tolist(),
                                    commission[first:].tolist(), strict=True):
            before = holding.qty
            realised = holding.trade(qty, px)
            after = holding.qty
            if before == 0.0:
                trip_pnl, opened = -fee, ep
            elif after != 0.0 and (after > 0.0) == (before > 0.0):
                trip_pnl += realised - fee
            else:  # flat again, or through zero: the closing part of the fill pays its share of the commission
                closing = min(1.0, abs(before) / abs(qty))
                trip_pnl += realised - fee * closing
                if ep >= start_epoch:
                    closes.append(ep)
                    pnls.append(trip_pnl)
                if after != 0.0:
                    trip_pnl, opened = -fee * (1.0 - closing), ep
        if holding.qty != 0.0:
            open_trips.append({"symbol": str(symbols[lo]), "shares": holding.qty, "avg_cost_usd": holding.avg_cost,
                               "opened_at": datetime.fromtimestamp(opened, UTC).isoformat(),
                               "realized_pnl_usd": trip_pnl})
    return np.array(closes, dtype=np.float64), np.array(pnls, dtype=np.float64), open_trips


def _percentiles_ms(values: np.ndarray) -> dict[str, float | int | None]:
    values = values[~np.isnan(values)]
    if not values.size:
        return {"p50": None, "p95": None, "orders": 0}
    p50, p95 = np.percentile(values, [50.0, 95.0])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "orders": int(values.size)}


def _event_summary(events: _Events, lo_day: int | None = None, hi_day: int | None = None) -> dict[str, Any]:
    """Latency, round trips and halts of the days [lo_day, hi_day) (all of the range without bounds)."""

    def within(days: np.ndarray) -> np.ndarray:
        if lo_day is None or hi_day is None:
            return np.ones(len(days), dtype=bool)
        return (days >= lo_day) & (days < hi_day)

    orders = within(events.order_day)
    trips = events.trip_pnl_usd[within(events.trip_day)]
    wins = int(np.count_nonzero(trips > 0.0))
    return {
        "first_fill_latency_ms": _percentiles_ms(events.first_fill_ms[orders]),
        "complete_fill_latency_ms": _percentiles_ms(events.complete_fill_ms[orders]),
        "round_trips": int(trips.size),
        "round_trip_wins": wins,
        "round_trip_win_rate": wins / trips.size if trips.size else None,
        "round_trip_pnl_usd": float(trips.sum()) if trips.size else None,
        "round_trip_mean_pnl_usd": float(trips.mean()) if trips.size else None,
        "risk_halts": int(np.count_nonzero(within(events.halt_day))),
    }


# ---- rolling days up into periods ---------------------------------------------------------------------------------


def _period_start(day: date, period: str) -> date:
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def _period_end(start: date, period: str) -> date:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def _distribution(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"days": 0, "min": None, "p25": None, "median": None, "p75": None, "max": None, "mean": None,
                "std": None}
    ordered = sorted(values)

    def quantile(q: float) -> float:
        pos = q * (len(ordered) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)

    mean = sum(ordered) / len(ordered)
    std = math.sqrt(sum((v - mean) ** 2 for v in ordered) / (len(ordered) - 1)) if len(ordered) > 1 else 0.0
    return {"days": len(ordered), "min": ordered[0], "p25": quantile(0.25), "median": quantile(0.5),
            "p75": quantile(0.75), "max": ordered[-1], "mean": mean, "std": std}


def _histogram(values: list[float], bins: int = 20) -> dict[str, list[float] | list[int]]:
    if not values:
        return {"edges": [], "counts": []}
    lo, hi = min(values), max(values)
    if hi == lo:
        return {"edges": [lo, hi], "counts": [len(values)]}
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    return {"edges": [lo + i * width for i in range(bins + 1)], "counts": counts}


def _summary(rows: Iterable[tuple[date, _Day]]) -> dict[str, Any]:
    rows = list(rows)
    pnl_days = [d.pnl_usd for _, d in rows if d.pnl_usd is not None]
    blocks: dict[str, int] = {}
    for _, d in rows:
        for reason, n in (d.blocks or {}).items():
            blocks[reason] = blocks.get(reason, 0) + n
    order = {r: i for i, r in enumerate(GATE_REASONS)}
    slip_shares = sum(d.slippage_shares for _, d in rows)
    seconds = sum(d.return_seconds for _, d in rows)
    iv_count = sum(d.iv_count for _, d in rows)
    gammas = [d.gamma_usd for _, d in rows if d.gamma_usd is not None]
    thetas = [d.theta_usd for _, d in rows if d.theta_usd is not None]
    return {
        "hedges": sum(d.hedges for _, d in rows),
        "fills": sum(d.fills for _, d in rows),
        "filled_shares": sum(d.filled_shares for _, d in rows),
        "commissions_usd": sum(d.commissions_usd for _, d in rows),
        "slippage_bps": (sum(d.slippage_weighted for _, d in rows) / slip_shares) if slip_shares else None,
        "pnl_usd": sum(pnl_days) if pnl_days else None,
        "pnl_days": len(pnl_days),
        "winning_days": sum(1 for v in pnl_days if v > 0),
        "win_rate": (sum(1 for v in pnl_days if v > 0) / len(pnl_days)) if pnl_days else None,
        "pnl_distribution": _distribution(pnl_days),
        "realized_vol": math.sqrt(sum(d.return_sq for _, d in rows) / seconds * SECONDS_PER_YEAR) if seconds else None,
        "implied_vol": (sum(d.iv_sum for _, d in rows) / iv_count) if iv_count else None,
        "gamma_usd": sum(gammas) if gammas else None,
        "theta_usd": sum(thetas) if thetas else None,
        "decisions_allowed": sum(d.decisions_allowed for _, d in rows),
        "decisions_blocked": sum(d.decisions_blocked for _, d in rows),
        "blocks": dict(sorted(blocks.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))),
    }


def stats_report(*, period: str = "day", since: date | datetime | None = None,
                 until: date | datetime | None = None) -> dict[str, Any]:
    """The statistics payload (the same for `manage.py stats --format json`, the API and the daily rollup).

    `since` / `until`: a date is a whole US/Eastern trading date (both inclusive), a datetime an exact instant
    (until exclusive); omitted, the whole history. Periods with no activity at all are left out."""
    if period not in PERIODS:
        from trading.errors import ConfigError

        raise ConfigError("period", f"expected one of {', '.join(PERIODS)}, got {period!r}")
    start, end = _bounds(since, until)
    days = _daily(start, end) if start < end else {}
    events = _events(start, end) if start < end else _Events.empty()
    for k in events.days():  # a day with only a flatten order, a trip's closing fill or a halt
        days.setdefault(k, _Day())
    dated = sorted((EPOCH_DATE + timedelta(days=k), d) for k, d in days.items())
    grouped: dict[date, list[tuple[date, _Day]]] = defaultdict(list)
    for day, d in dated:
        grouped[_period_start(day, period)].append((day, d))
    periods = []
    for first, rows in sorted(grouped.items()):
        last = _period_end(first, period)
        periods.append({"start": first.isoformat(), "end": last.isoformat(),
                        "label": first.isoformat() if period == "day" else
                        (f"{first.isocalendar()[0]}-W{first.isocalendar()[1]:02d}" if period == "week"
                         else first.strftime("%Y-%m")),
                        **_summary(rows),
                        **_event_summary(events, (first - EPOCH_DATE).days, (last - EPOCH_DATE).days)})
    pnl_daily = [{"date": day.isoformat(), "pnl_usd": d.pnl_usd} for day, d in dated if d.pnl_usd is not None]
    return {
        "period": period,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "timezone": "America/New_York",
        "totals": {**_summary(dated), **_event_summary(events)},
        "periods": periods,
        "pnl_daily": pnl_daily,
        "pnl_histogram": _histogram([row["pnl_usd"] for row in pnl_daily]),
        "risk_halt_events": events.halts,
        "open_round_trips": events.open_trips,
    }


# ---- text rendering -------------------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ",.2f", scale: float = 1.0) -> str:
    if value is None:
        return "-"
    return format(value * scale, spec)


def render_text(report: dict[str, Any]) -> str:
    """A terminal table: one line per period, then totals, the P&L distribution, latency, round trips, halts and
    blocks by reason."""
    header = (f"{'period':<12}{'hedges':>7}{'fills':>7}{'shares':>10}{'comm USD':>10}{'slip bps':>9}"
              f"{'P&L USD':>12}{'day win %':>10}{'gamma USD':>11}{'theta USD':>11}{'RV %':>7}{'IV %':>7}"
              f"{'1st fill p50/p95 ms':>20}{'trips':>6}{'trip win %':>11}{'halts':>6}  blocked")
    lines = [f"Bifrost statistics by {report['period']} (US/Eastern trading dates), "
             f"{report['since']} .. {report['until']}", header]

    def line(label: str, row: dict[str, Any]) -> str:
        blocks = ", ".join(f"{r} {n}" for r, n in row["blocks"].items()) or "-"
        latency = row["first_fill_latency_ms"]
        return (f"{label:<12}{row['hedges']:>7}{row['fills']:>7}{_fmt(row['filled_shares'], ',.0f'):>10}"
                f"{_fmt(row['commissions_usd']):>10}{_fmt(row['slippage_bps'], '.2f'):>9}"
                f"{_fmt(row['pnl_usd']):>12}{_fmt(row['win_rate'], '.0f', 100):>10}{_fmt(row['gamma_usd']):>11}"
                f"{_fmt(row['theta_usd']):>11}{_fmt(row['realized_vol'], '.1f', 100):>7}"
                f"{_fmt(row['implied_vol'], '.1f', 100):>7}"
                f"{_fmt(latency['p50'], ',.0f') + '/' + _fmt(latency['p95'], ',.0f'):>20}{row['round_trips']:>6}"
                f"{_fmt(row['round_trip_win_rate'], '.0f', 100):>11}{row['risk_halts']:>6}  {blocks}")

    for row in report["periods"]:
        lines.append(line(row["label"], row))
    if not report["periods"]:
        lines.append("(no history in this range)")
    totals = report["totals"]
    lines.append(line("total", totals))
    dist = totals["pnl_distribution"]
    lines.append("")
    lines.append(f"daily P&L over {dist['days']} days (USD): min {_fmt(dist['min'])}  p25 {_fmt(dist['p25'])}  "
                 f"median {_fmt(dist['median'])}  p75 {_fmt(dist['p75'])}  max {_fmt(dist['max'])}  "
                 f"mean {_fmt(dist['mean'])}  std {_fmt(dist['std'])}; win rate {_fmt(totals['win_rate'], '.0f', 100)} %"
                 f" of days")
    lines.append(f"realised vol {_fmt(totals['realized_vol'], '.1f', 100)} % vs implied "
                 f"{_fmt(totals['implied_vol'], '.1f', 100)} %; gamma P&L {_fmt(totals['gamma_usd'])} USD vs theta "
                 f"{_fmt(totals['theta_usd'])} USD; slippage {_fmt(totals['slippage_bps'], '.2f')} bps vs mid at decision")
    first, complete = totals["first_fill_latency_ms"], totals["complete_fill_latency_ms"]
    lines.append(f"order -> fill latency (orders created in the range): first fill p50 {_fmt(first['p50'], ',.1f')} ms"
                 f"  p95 {_fmt(first['p95'], ',.1f')} ms over {first['orders']} orders; complete fill (last fill of a "
                 f"fully filled order) p50 {_fmt(complete['p50'], ',.1f')} ms  p95 {_fmt(complete['p95'], ',.1f')} ms "
                 f"over {complete['orders']} orders")
    lines.append(f"hedge round trips (flat to flat, average cost, after commissions): {totals['round_trips']} closed, "
                 f"{totals['round_trip_wins']} won (win rate {_fmt(totals['round_trip_win_rate'], '.0f', 100)} %), "
                 f"mean {_fmt(totals['round_trip_mean_pnl_usd'])} USD per trip, total "
                 f"{_fmt(totals['round_trip_pnl_usd'])} USD")
    for trip in report["open_round_trips"]:
        lines.append(f"  open at the end: {trip['symbol']} {trip['shares']:+,g} shares at {trip['avg_cost_usd']:,.4f} "
                     f"USD average cost since {trip['opened_at']}")
    lines.append(f"risk halts: {totals['risk_halts']}")
    for halt in report["risk_halt_events"]:
        lines.append(f"  {halt['ts']} (trading date {halt['trading_date']}): {halt['message']}")
    blocks = totals["blocks"]
    lines.append(f"blocked hedges by reason ({totals['decisions_blocked']} blocked decisions): "
                 + (", ".join(f"{r} {n}" for r, n in blocks.items()) or "none"))
    return "\n".join(lines)
