"""The daemon's one database writer: records queue up without waiting, are written in batches, and go to a local
append-only journal while the database is unreachable, to be replayed when it returns. Nothing is lost."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError, close_old_connections, connection

log = logging.getLogger(__name__)
RecordTuple = tuple[str, dict[str, Any]]
Writer = Callable[[Sequence[RecordTuple]], None]
BATCH_MAX = 500
JOURNAL_REPLAY_CHUNK = 1000


def _write_in_db_thread(write: Writer, batch: Sequence[RecordTuple]) -> None:
    try:
        write(batch)
    except DatabaseError:
        connection.close()  # the next attempt opens a fresh connection
        raise


class Sink:
    def __init__(self, write: Writer, journal_path: Path, retry_s: float = 2.0,
                 on_written: Callable[[set[str]], Awaitable[None]] | None = None) -> None:
        self._write = sync_to_async(lambda batch: _write_in_db_thread(write, batch))
        self._on_written = on_written
        self.journal_path = journal_path
        self.retry_s = retry_s
        self.queue: asyncio.Queue[RecordTuple] = asyncio.Queue()
        self.degraded = False
        self.last_error = ""
        self.written = 0
        self.journaled = 0

    def put(self, kind: str, data: dict[str, Any]) -> None:
        """Queue a record. Never waits: the trading path must not depend on the database."""
        self.queue.put_nowait((kind, data))

    async def run(self) -> None:
        while True:
            try:
                first = await asyncio.wait_for(self.queue.get(), timeout=self.retry_s)
            except TimeoutError:
                if self.degraded or self._journal_has_records():
                    await self._replay_journal()
                continue
            batch = [first]
            while len(batch) < BATCH_MAX and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            await self._store(batch)

    async def _store(self, batch: list[RecordTuple]) -> None:
        if self._journal_has_records() and not await self._replay_journal():
            self._journal(batch)  # keep the order: nothing may overtake what is already journaled
            return
        try:
            await self._write(batch)
            self.written += len(batch)
            if self._on_written is not None:
                await self._on_written({kind for kind, _ in batch})
            if self.degraded:
                log.warning("database is back; sink no longer degraded")
            self.degraded = False
        except DatabaseError as exc:
            self._fail(exc)
            self._journal(batch)

    async def flush(self, timeout_s: float) -> None:
        """Write what is queued within `timeout_s`; whatever cannot be written in time is journaled."""
        batch: list[RecordTuple] = []
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        if not batch:
            return
        try:
            await asyncio.wait_for(self._store(batch), timeout=timeout_s)
        except TimeoutError:
            self._fail(TimeoutError(f"database did not answer within {timeout_s:g} s"))
            self._journal(batch)

    def replay_journal_sync(self, write: Writer) -> int:
        """At start-up, before the engine is seeded: bring the tables up to date from the journal."""
        records = self._read_journal()
        for i in range(0, len(records), JOURNAL_REPLAY_CHUNK):
            write(records[i:i + JOURNAL_REPLAY_CHUNK])
        self._truncate_journal()
        return len(records)

    async def _replay_journal(self) -> bool:
        records = self._read_journal()
        if not records:
            return True
        try:
            for i in range(0, len(records), JOURNAL_REPLAY_CHUNK):
                await self._write(records[i:i + JOURNAL_REPLAY_CHUNK])
        except DatabaseError as exc:
            self._fail(exc)
            return False
        # Writes are idempotent for orders, fills and legs; a replay cut short repeats at most log lines.
        self._truncate_journal()
        log.warning("replayed %d journaled records into the database", len(records))
        self.degraded = False
        return True

    def _fail(self, exc: BaseException) -> None:
        if not self.degraded:
            log.error("database unavailable, journaling to %s: %s", self.journal_path, exc)
        self.degraded = True
        self.last_error = str(exc)
        close_old_connections()

    def _journal(self, batch: Sequence[RecordTuple]) -> None:
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        with self.journal_path.open("a", encoding="utf-8") as f:
            for kind, data in batch:
                f.write(json.dumps([kind, data], default=str) + "\n")
        self.journaled += len(batch)

    def _journal_has_records(self) -> bool:
        return self.journal_path.exists() and self.journal_path.stat().st_size > 0

    def _read_journal(self) -> list[RecordTuple]:
        if not self._journal_has_records():
            return []
        records: list[RecordTuple] = []
        with self.journal_path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    kind, data = json.loads(line)
                    records.append((kind, data))
        return records

    def _truncate_journal(self) -> None:
        if self.journal_path.exists():
            self.journal_path.unlink()
