"""The daemon in process on the simulated market, for faults that need a hand inside it: a journal the kernel
refuses to write (ENOSPC from /dev/full) stops order flow until it can be written again."""
from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import pytest

from trading.brokers.sim import SimBroker
from trading.daemon.runtime import Daemon
from trading.services import strategy_config_create
from trading.sim.market import MarketConfig

pytestmark = pytest.mark.django_db(transaction=True)


async def _until(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def test_a_journal_that_cannot_be_written_stops_order_flow_until_it_can(tmp_path, settings):
    settings.BIFROST_JOURNAL_DIR = tmp_path
    strategy_config_create(name="fast", params={"cooldown_s": 0, "min_price_move_bps": 0}, user="t", activate=True)
    broker = SimBroker(config=MarketConfig(realized_vol=0.8), seed=7, state_path=tmp_path / "sim.json",
                       tick_s=0.05, speed=3000.0)
    daemon = Daemon(broker, heartbeat_s=0.2, history_s=1.0)
    seen: dict[str, object] = {}

    async def scenario() -> None:
        run = asyncio.get_running_loop().create_task(daemon.run())
        await _until(lambda: daemon.engine is not None and daemon.engine.seq > 2, 30, "hedges")
        journal = daemon.sink.journal
        own_fd, journal.fd = journal.fd, os.open("/dev/full", os.O_WRONLY)
        placed_at_fault = daemon.engine.seq
        await _until(lambda: not daemon.engine.edge.journal_writable, 30, "journal_unwritable")
        seen["sent_while_full"] = [ref for ref in broker.sent_refs() if int(ref.rsplit(":", 1)[1]) >= placed_at_fault]
        seen["reasons"] = daemon.engine.self_check("running").block_reasons
        await asyncio.sleep(1.0)  # a second of a fast market with the disk full
        seen["sent_while_full"] = [ref for ref in broker.sent_refs() if int(ref.rsplit(":", 1)[1]) >= placed_at_fault]
        os.close(journal.fd)
        journal.fd = own_fd
        resumed_from = daemon.engine.seq
        await _until(lambda: any(int(r.rsplit(":", 1)[1]) >= resumed_from for r in broker.sent_refs()), 30,
                     "an order once the journal is writable again")
        daemon.request_stop("test done")
        seen["exit"] = await run

    asyncio.run(scenario())

    assert seen["sent_while_full"] == []
    assert "journal_unwritable" in seen["reasons"]
    assert seen["exit"] == 0
