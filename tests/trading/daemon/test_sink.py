"""The daemon's sink against a real database: bad records are set aside, not blocking the rest; torn journal lines
are skipped; a replay applies nothing twice; an order intent that cannot be journaled is refused loudly."""
from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone

from trading.daemon.journal import DEAD_LETTER_NAME, Journal, JournalBusy, encode, journal_name, orphan_journals
from trading.daemon.sink import Sink
from trading.models import Operation, Order, SinkProgress
from trading.services import order_intents_write, records_write

pytestmark = pytest.mark.django_db(transaction=True)


def _sink(var: Path, token: str = "t0000001") -> Sink:
    return Sink(records_write, order_intents_write, Journal(var / journal_name(token)),
                dead_letter_path=var / DEAD_LETTER_NAME, retry_s=0.05)


def _operation(message: str) -> dict:
    return {"ts": timezone.now().isoformat(), "kind": "note", "message": message}


def _order(ref: str, **changes: object) -> dict:
    return {"order_ref": ref, "intent": "hedge", "symbol": "NVDA", "side": "BUY", "qty": 10.0, "order_type": "market",
            "limit_price": None, "state": "sent", "ts": timezone.now().isoformat(), **changes}


async def _drain(sink: Sink) -> None:
    task = asyncio.get_running_loop().create_task(sink.run())
    try:
        for _ in range(200):
            await asyncio.sleep(0.02)
            if sink.queue.empty() and not sink._inflight and not sink.journal.size():
                return
        raise AssertionError("the sink did not drain")
    finally:
        task.cancel()


def test_a_record_the_database_refuses_is_set_aside_and_the_rest_are_written(tmp_path):
    sink = _sink(tmp_path)
    sink.put("operation", _operation("before"))
    sink.put("fill", {"exec_id": "e1", "order_ref": "bifrost:x:1"})  # no side, qty, price: can never be written
    sink.put("operation", _operation("after"))

    async_to_sync(_drain)(sink)

    assert set(Operation.objects.filter(kind="note").values_list("message", flat=True)) == {"before", "after"}
    rejected = [json.loads(line) for line in (tmp_path / DEAD_LETTER_NAME).read_text().splitlines()]
    assert [(r["kind"], r["data"]["exec_id"]) for r in rejected] == [("fill", "e1")]
    assert "KeyError" in rejected[0]["error"]
    op = Operation.objects.get(kind="record_rejected")
    assert DEAD_LETTER_NAME in op.message and sink.rejected == 1


def test_a_torn_journal_line_is_skipped_and_the_rest_replayed(tmp_path):
    dead = Journal(tmp_path / journal_name("deadbeef"))
    dead.append([encode(1, "operation", _operation("one")), b'[2, "operation", {"ts": "2026-'])  # cut mid-write
    dead.append([b"\n", encode(3, "operation", _operation("three"))])
    dead.close(remove_if_empty=False)
    sink = _sink(tmp_path)

    replayed = async_to_sync(sink.replay_orphans)()

    assert replayed == 2
    assert set(Operation.objects.filter(kind="note").values_list("message", flat=True)) == {"one", "three"}
    queued = [sink.queue.get_nowait() for _ in range(sink.queue.qsize())]
    assert [(kind, data["kind"], data["data"]["skipped"]) for _, kind, data in queued] == [
        ("operation", "journal_torn", 1)]
    assert not (tmp_path / journal_name("deadbeef")).exists()


def test_a_journal_replayed_after_its_batch_committed_applies_nothing_twice(tmp_path):
    records_write(source="deadbeef", records=[(1, "operation", _operation("once")), (2, "order", _order("r:1"))])
    dead = Journal(tmp_path / journal_name("deadbeef"))  # the same batch, journaled when its write timed out
    dead.append([encode(1, "operation", _operation("once")), encode(2, "order", _order("r:1"))])
    dead.close(remove_if_empty=False)

    async_to_sync(_sink(tmp_path).replay_orphans)()

    assert Operation.objects.filter(kind="note").count() == 1
    assert SinkProgress.objects.get(source="deadbeef").last_seq == 2


def test_an_order_intent_in_a_dead_daemons_journal_becomes_an_order_row_of_unknown_outcome(tmp_path):
    dead = Journal(tmp_path / journal_name("deadbeef"))
    dead.append([encode(0, "order_intent", _order("bifrost:deadbeef:7", side="SELL", qty=120.0))], sync=True)
    dead.close(remove_if_empty=False)

    async_to_sync(_sink(tmp_path).replay_orphans)()

    order = Order.objects.get(order_ref="bifrost:deadbeef:7")
    assert (order.side, order.qty, order.state) == ("SELL", 120.0, "sent")
    assert "outcome unknown" in order.message


def test_a_live_daemons_journal_is_locked_and_never_replayed_by_another(tmp_path):
    live = Journal(tmp_path / journal_name("a1a1a1a1"))
    live.append([encode(1, "operation", _operation("mine"))])

    with pytest.raises(JournalBusy):
        Journal(tmp_path / journal_name("a1a1a1a1"))
    orphans = orphan_journals(tmp_path, None)

    assert orphans == []
    live.close()


def test_an_intent_that_cannot_be_written_raises_so_the_order_is_not_sent(tmp_path):
    sink = _sink(tmp_path)
    own_fd, sink.journal.fd = sink.journal.fd, os.open("/dev/full", os.O_WRONLY)  # a disk that is full, for real

    try:
        with pytest.raises(OSError) as full:
            sink.journal.append_intent(_order("bifrost:t0000001:1"))
    finally:
        os.close(sink.journal.fd)
        sink.journal.fd = own_fd

    assert full.value.errno == errno.ENOSPC


def test_the_admin_shows_the_records_set_aside(tmp_path, settings, admin_client):
    settings.BIFROST_JOURNAL_DIR = tmp_path
    sink = _sink(tmp_path)
    sink.put("fill", {"exec_id": "e-refused", "order_ref": "bifrost:x:1"})

    async_to_sync(_drain)(sink)
    page = admin_client.get("/admin/trading/sinkprogress/").content.decode()

    assert "e-refused" in page and "KeyError" in page and DEAD_LETTER_NAME in page


def test_positions_of_any_instrument_ib_reports_are_written(tmp_path):
    sink = _sink(tmp_path)
    crypto = {"con_id": 479624278, "symbol": "ETH", "local_symbol": "ETH.USD-PAXOS-CRYPTO-LONG-NAME", "sec_type": "CRYPTO",
              "right": None, "strike": None, "expiry": None, "multiplier": 1, "qty": 0.5, "avg_cost": 3100.0,
              "market_price": 3150.0, "managed": False, "data": {}}
    sink.put("positions", {"ts": timezone.now().isoformat(), "account": "DU1234567", "positions": [crypto]})
    sink.put("operation", _operation("after the positions"))

    async_to_sync(_drain)(sink)

    from trading.models import Position
    assert Position.objects.get(symbol="ETH").sec_type == "CRYPTO"
    assert Operation.objects.filter(kind="note").exists() and sink.rejected == 0
