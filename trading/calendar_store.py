"""Exchange session tables kept on disk between processes (`trading.core.calendar.SessionStore`).

A table is a pure function of the exchange, the calendar's fixed date range, the code that builds it and what that
code reads: exchange_calendars, pandas and the time zone rules. All of them are its file's key: an upgrade or a fix
builds a new table, never reads an old one.
"""
from __future__ import annotations

import hashlib
import logging
import marshal
import os
import tempfile
import zipfile
import zoneinfo
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from trading.core import calendar
from trading.core.calendar import FIRST_DAY, LAST_DAY, SessionTable

log = logging.getLogger(__name__)


def _tz_rules() -> str:
    """Which time zone rules the build read: the tzdata package where Python uses it, and the system's
    database (the first line of its tzdata.zi names its release)."""
    try:
        package = version("tzdata")
    except PackageNotFoundError:
        package = "-"
    for root in zoneinfo.TZPATH:
        try:
            with open(Path(root) / "tzdata.zi") as zi:
                return f"{package} {zi.readline().strip()}"
        except OSError:
            continue
    return package


class FileSessionStore:
    """One `.npz` file per exchange under `root`, written atomically; a file that cannot be read is rebuilt."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, exchange: str) -> Path:
        key = repr((exchange, FIRST_DAY, LAST_DAY, version("exchange_calendars"), version("pandas"), _tz_rules(),
                    marshal.dumps(calendar._build.__code__), SessionTable.__slots__))
        return self.root / f"{exchange}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"

    def load(self, exchange: str) -> SessionTable | None:
        try:
            with np.load(self.path(exchange)) as saved:
                days = saved["days"].tolist()
                day_opens = saved["day_opens"].tolist()
                day_closes = saved["day_closes"].tolist()
                lo, hi = saved["range"].tolist()
                return SessionTable(
                    opens=saved["opens"].tolist(), closes=saved["closes"].tolist(),
                    by_day={date.fromordinal(d): (o, c) for d, o, c in zip(days, day_opens, day_closes, strict=True)},
                    lo=lo, hi=hi)
        except FileNotFoundError:
            return None
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # torn, empty: build it again
            log.warning("session table for %s unreadable (%s); rebuilding it", exchange, exc)
            return None

    def save(self, exchange: str, table: SessionTable) -> None:
        path = self.path(exchange)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as tmp:
                np.savez(
                    tmp, opens=np.asarray(table.opens, dtype=np.float64),
                    closes=np.asarray(table.closes, dtype=np.float64),
                    days=np.asarray([d.toordinal() for d in table.by_day], dtype=np.int64),
                    day_opens=np.asarray([b[0] for b in table.by_day.values()], dtype=np.float64),
                    day_closes=np.asarray([b[1] for b in table.by_day.values()], dtype=np.float64),
                    range=np.asarray([table.lo, table.hi], dtype=np.float64))
                tmp.flush()
                os.fsync(tmp.fileno())  # on disk before it has the name: a crash leaves no empty table behind
            os.chmod(tmp.name, 0o644)  # the web and the daemon may run as other users than the builder
            os.replace(tmp.name, path)  # readers see the whole file or none
        except OSError as exc:  # a read-only or full var/ costs speed, never correctness
            log.warning("session table for %s not kept (%s)", exchange, exc)
            if "tmp" in locals():
                Path(tmp.name).unlink(missing_ok=True)
