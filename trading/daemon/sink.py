"""The daemon's one database writer: records queue up without waiting, are written in batches on a database lane of
their own, and go to this daemon's journal while the database is unreachable or too slow, to be replayed in order
when it answers again. Nothing is lost and nothing is applied twice (every record is numbered; the database keeps
the number of the last one applied in the same transaction).

A record the database refuses for what it is (bad data: too long, not null, not a number) is not an outage: it is
set aside in the dead-letter file with the error, and everything else is written."""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from django.db import DataError, IntegrityError
from django.utils import timezone

from trading.daemon.dblane import DbLane
from trading.daemon.journal import Journal, JournalRead, RecordTuple, encode, orphan_journals

log = logging.getLogger(__name__)
Writer = Callable[..., int]
BATCH_MAX = 500
JOURNAL_REPLAY_CHUNK = 1000
WRITE_DEADLINE_S = 3.0  # a write slower than this is an outage: journal and carry on
# Errors that say "this record can never be written": retrying would only block everything behind it.
BAD_RECORD_ERRORS = (DataError, IntegrityError, ValueError, KeyError, TypeError, ArithmeticError)


def is_bad_record(exc: BaseException) -> bool:
    return isinstance(exc, BAD_RECORD_ERRORS)


class Sink:
    def __init__(self, write: Writer, write_intents: Callable[[list[dict[str, Any]]], int], journal: Journal, *,
                 dead_letter_path: Path, retry_s: float = 2.0, deadline_s: float = WRITE_DEADLINE_S,
                 on_written: Callable[[set[str]], Awaitable[None]] | None = None) -> None:
        self._records_write = write
        self._intents_write = write_intents
        self._lane = DbLane("sink")
        self._on_written = on_written
        self.journal = journal
        self.dead_letter_path = dead_letter_path
        self.retry_s = retry_s
        self.deadline_s = deadline_s
        self.queue: asyncio.Queue[RecordTuple] = asyncio.Queue()
        self._seq = itertools.count(1)
        self._inflight: list[RecordTuple] = []
        self.degraded = False
        self.last_error = ""
        self.written = 0
        self.journaled = 0
        self.rejected = 0

    @property
    def journal_path(self) -> Path:
        return self.journal.path

    @property
    def backlog(self) -> int:
        """Records made but not yet confirmed in the database (queued, being written or journaled)."""
        return self.queue.qsize() + len(self._inflight) + self.journaled

    def put(self, kind: str, data: dict[str, Any]) -> None:
        """Queue a record. Never waits: the trading path must not depend on the database."""
        self.queue.put_nowait((next(self._seq), kind, data))

    # ---- the writer task ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                first = await asyncio.wait_for(self.queue.get(), timeout=self.retry_s)
            except TimeoutError:
                if self.journal.size():
                    await self._replay_own()
                continue
            batch = [first]
            while len(batch) < BATCH_MAX and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self._inflight = batch
            await self._store(batch)
            self._inflight = []

    async def _store(self, batch: list[RecordTuple]) -> None:
        if self.journal.size() and not await self._replay_own():
            self._journal(batch)  # keep the order: nothing may overtake what is already journaled
            return
        try:
            await self._write(batch)
        except Exception as exc:  # noqa: BLE001 - sorted below: bad data is set aside, anything else is an outage
            if not is_bad_record(exc):
                self._fail(exc)
                self._journal(batch)
                return
            await self._write_one_by_one(batch)
        else:
            self._written(batch)
        if self._on_written is not None:
            await self._on_written({kind for _, kind, _ in batch})

    async def _write(self, records: Sequence[RecordTuple]) -> int:
        write = self._lane(self._records_write)
        applied: int = await asyncio.wait_for(write(source=self.journal.source, records=records), self.deadline_s)
        return applied

    async def _write_one_by_one(self, batch: list[RecordTuple]) -> None:
        """The batch held a record the database refuses: find it, set it aside, write the others."""
        for i, record in enumerate(batch):
            try:
                await self._write([record])
            except Exception as exc:  # noqa: BLE001 - same sorting as the batch
                if not is_bad_record(exc):
                    self._fail(exc)
                    self._journal(batch[i:])
                    return
                self._dead_letter(record, exc)
                continue
            self._written([record])

    def _written(self, batch: Sequence[RecordTuple]) -> None:
        self.written += len(batch)
        if self.degraded:
            log.warning("database is back; sink no longer degraded")
        self.degraded = False


    async def flush(self, timeout_s: float) -> None:
        """At shutdown: write what is queued (and the batch in flight) within `timeout_s`, journal what cannot be."""
        batch = list(self._inflight)
        self._inflight = []
        while not self.queue.empty():
            batch.append(self.queue.get_nowait())
        if not batch:
            return
        try:
            await asyncio.wait_for(self._store(batch), timeout=timeout_s)
        except TimeoutError:
            self._fail(TimeoutError(f"database did not answer within {timeout_s:g} s"))
            self._journal(batch)  # numbered: should the write still land, the replay skips it

    # ---- the journal -----------------------------------------------------------------------------------------

    def _journal(self, batch: Sequence[RecordTuple]) -> None:
        try:
            self.journal.append([encode(seq, kind, data) for seq, kind, data in batch], sync=True)
        except OSError as exc:
            # Neither the database nor the disk: these records are lost. Say so loudly; order flow stops
            # separately (an order intent that cannot be journaled is never sent).
            log.critical("could not journal %d records to %s: %s", len(batch), self.journal.path, exc)
            return
        self.journaled += len(batch)

    async def _replay_own(self) -> bool:
        """Write this daemon's journal into the database; True when it is empty afterwards."""
        end = self.journal.size()
        read: JournalRead = await self._lane(self.journal.read)(end)
        if not await self._replay(read, self.journal.source):
            return False
        try:
            self.journal.consume(read.end)
        except OSError as exc:  # applied all the same: numbered, so the next replay skips what is in already
            log.error("could not trim the journal %s after replaying it: %s", self.journal.path, exc)
            return False
        self.journaled = 0
        if read.records:
            log.warning("replayed %d journaled records into the database", len(read.records))
        return True

    async def _replay(self, read: JournalRead, source: str) -> bool:
        try:
            for i in range(0, len(read.records), JOURNAL_REPLAY_CHUNK):
                chunk = read.records[i:i + JOURNAL_REPLAY_CHUNK]
                try:
                    await self._write_in(source, chunk)
                except Exception as exc:  # noqa: BLE001 - bad data is set aside record by record
                    if not is_bad_record(exc):
                        raise
                    for record in chunk:
                        try:
                            await self._write_in(source, [record])
                        except Exception as one:  # noqa: BLE001
                            if not is_bad_record(one):
                                raise
                            self._dead_letter(record, one, source)
            if read.intents:
                await asyncio.wait_for(self._lane(self._intents_write)(read.intents), self.deadline_s)
        except Exception as exc:  # noqa: BLE001 - anything but bad data is an outage: try again later
            self._fail(exc)
            return False
        if read.torn:
            self.put("operation", {"ts": timezone.now().isoformat(), "kind": "journal_torn",
                                   "message": f"{read.torn} unparsable line(s) skipped in journal {source}",
                                   "data": {"source": source, "skipped": read.torn}})
        self.degraded = False
        return True

    async def _write_in(self, source: str, records: Sequence[RecordTuple]) -> None:
        await asyncio.wait_for(self._lane(self._records_write)(source=source, records=records), self.deadline_s)

    async def replay_orphans(self) -> int:
        """Journals of daemons that are gone, into the database. Only the lease holder calls this, after it holds
        the lease; a journal still locked by a live daemon is left to it."""
        replayed = 0
        for orphan in await self._lane(orphan_journals)(self.journal.path.parent, self.journal.path):
            try:
                read = await self._lane(orphan.read)(None)
                if await self._replay(read, orphan.source):
                    orphan.consume(read.end)
                    replayed += len(read.records) + len(read.intents)
                    if read:
                        log.warning("replayed %d records and %d order intents from %s", len(read.records),
                                    len(read.intents), orphan.path.name)
            finally:
                orphan.close()
        return replayed

    def _dead_letter(self, record: RecordTuple, exc: BaseException, source: str | None = None) -> None:
        seq, kind, data = record
        source = source or self.journal.source
        error = f"{type(exc).__name__}: {exc}"
        entry = {"ts": timezone.now().isoformat(), "source": source, "seq": seq, "kind": kind, "data": data,
                 "error": error}
        try:
            with self.dead_letter_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(entry, default=str) + "\n")
        except OSError as write_exc:
            log.critical("could not set aside a refused %s record (%s): %s", kind, error, write_exc)
        self.rejected += 1
        log.error("%s record %s:%d refused by the database (%s): set aside in %s", kind, source, seq, error,
                  self.dead_letter_path)
        if kind != "operation" or data.get("kind") != "record_rejected":
            self.put("operation", {"ts": timezone.now().isoformat(), "kind": "record_rejected",
                                   "message": f"a {kind} record was refused by the database ({error}); set aside "
                                              f"in {self.dead_letter_path}",
                                   "data": {"file": str(self.dead_letter_path), "source": source, "seq": seq,
                                            "record_kind": kind, "error": error[:500]}})

    def _fail(self, exc: BaseException) -> None:
        if not self.degraded:
            log.error("database unavailable, journaling to %s: %r", self.journal.path, exc)
        self.degraded = True
        self.last_error = str(exc) or type(exc).__name__
