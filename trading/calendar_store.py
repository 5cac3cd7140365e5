"""Exchange session tables kept on disk between processes (`trading.core.calendar.SessionStore`).

A table is a pure function of the exchange, the calendar's fixed date range and the versions of exchange_calendars
and pandas that built it, so those are its file's key: an upgrade builds a new table, never reads an old one.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from datetime import date
from importlib.metadata import version
from pathlib import Path

import numpy as np

from trading.core.calendar import FIRST_DAY, LAST_DAY, SessionTable

log = logging.getLogger(__name__)


class FileSessionStore:
    """One `.npz` file per exchange under `root`, written atomically; a file that cannot be read is rebuilt."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, exchange: str) -> Path:
        key = repr((exchange, FIRST_DAY, LAST_DAY, version("exchange_calendars"), version("pandas")))
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
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # torn or foreign: build it again
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
            os.replace(tmp.name, path)  # readers see the whole file or none
        except OSError as exc:  # a read-only or full var/ costs speed, never correctness
            log.warning("session table for %s not kept (%s)", exchange, exc)
            if "tmp" in locals():
                Path(tmp.name).unlink(missing_ok=True)
