"""The daemon's journal: one append-only file per daemon, named by its lease and flocked while it lives.

It holds two kinds of lines. Records the database has not confirmed, `[seq, kind, data]` in the order they were
made (written while the database is away, replayed in order when it returns). And order intents,
`[0, "order_intent", data]`, written before an order leaves so that a crash between `placeOrder` and the database
write can never leave an order at the broker that Bifrost has no row for. A torn or unparsable line (a crash
mid-write, a damaged disk) is skipped with a warning; it never stops the rest from being replayed."""
from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
RecordTuple = tuple[int, str, dict[str, Any]]
INTENT = "order_intent"
DEAD_LETTER_NAME = "journal-rejected.jsonl"
LEGACY_NAME = "journal.jsonl"  # the single shared journal of earlier versions


def journal_name(token: str) -> str:
    return f"journal-{token}.jsonl"


def encode(seq: int, kind: str, data: dict[str, Any]) -> bytes:
    return json.dumps([seq, kind, data], default=str, separators=(",", ":")).encode() + b"\n"


@dataclass
class JournalRead:
    records: list[RecordTuple] = field(default_factory=list)  # numbered records, in journal order
    intents: list[dict[str, Any]] = field(default_factory=list)
    end: int = 0  # the byte offset read up to
    torn: int = 0  # lines skipped as unparsable

    def __bool__(self) -> bool:
        return bool(self.records or self.intents)


class JournalBusy(OSError):
    """Another live process holds this journal's lock."""


class Journal:
    """An open, locked journal file. Appends come from the event loop only, so no two writers ever interleave."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self.fd)
            raise JournalBusy(f"{path} is locked by a live process") from exc
        self.source = path.name.removeprefix("journal-").removesuffix(".jsonl")
        if path.name == LEGACY_NAME:
            self.source = f"legacy-{int(path.stat().st_mtime)}"

    def append(self, lines: list[bytes], *, sync: bool = False) -> None:
        """Append whole lines; `sync` waits until they are on the disk. Raises OSError (disk full, EIO)."""
        data = b"".join(lines)
        written = os.write(self.fd, data)
        if written != len(data):
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        if sync:
            os.fdatasync(self.fd)

    def append_intent(self, order: dict[str, Any]) -> None:
        """Make an order durable before it leaves: one appended line. Raises OSError (disk full, EIO).

        Once written it outlives the process whatever kills it; `sync()` (run off the trading path, while the
        order travels) then puts it on the disk against a host crash too."""
        self.append([encode(0, INTENT, order)])

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read(self, end: int | None = None) -> JournalRead:
        """Parse the journal up to byte `end` (everything when None). Safe in another thread while the loop appends:
        appends only ever add bytes after `end`."""
        end = self.size() if end is None else end
        out = JournalRead(end=end)
        raw = os.pread(self.fd, end, 0) if end else b""
        legacy_seq = 0
        for number, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip() or line.startswith(b"#"):
                continue
            try:
                item = json.loads(line)
                if len(item) == 2:  # a legacy [kind, data] line: numbered by its position
                    legacy_seq += 1
                    item = [legacy_seq, *item]
                seq, kind, data = item
                if not isinstance(kind, str) or not isinstance(data, dict) or not isinstance(seq, int):
                    raise ValueError("not [seq, kind, data]")
            except (ValueError, TypeError) as exc:
                out.torn += 1
                log.warning("%s line %d skipped: unparsable (%s): %.80r", self.path.name, number, exc, line)
                continue
            if kind == INTENT:
                out.intents.append(data)
            else:
                out.records.append((seq, kind, data))
        return out

    def consume(self, end: int) -> None:
        """Drop the first `end` bytes (they are in the database now); what was appended since stays."""
        size = self.size()
        if size <= end:
            os.ftruncate(self.fd, 0)
            return
        tail = os.pread(self.fd, size - end, end)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, tail)
        os.fdatasync(self.fd)

    def close(self, *, remove_if_empty: bool = True) -> None:
        if self.fd < 0:
            return
        if remove_if_empty and self.size() == 0:
            self.path.unlink(missing_ok=True)  # still under our lock: nobody else can have opened it meanwhile
        os.close(self.fd)
        self.fd = -1


def orphan_journals(directory: Path, own: Path | None) -> list[Journal]:
    """The journals of daemons that are gone (their lock is free), locked for us; live daemons' ones are left."""
    found = []
    paths = sorted(directory.glob("journal-*.jsonl")) + [directory / LEGACY_NAME]
    for path in paths:
        if path == own or path.name == DEAD_LETTER_NAME or not path.exists():
            continue
        try:
            found.append(Journal(path))
        except JournalBusy:
            log.info("%s belongs to a live daemon: left alone", path.name)
        except FileNotFoundError:
            continue
    return found


def rejected_records(path: Path, limit: int = 200) -> list[dict[str, Any]]:
    """The newest entries of the dead-letter file, newest first (for the admin)."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[-limit:]:
        try:
            entries.append(json.loads(line))
        except ValueError:
            entries.append({"error": "unparsable line", "data": line[:200]})
    return entries[::-1]
