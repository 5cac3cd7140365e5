"""The simulated account both simulator faces share: fills and average-cost booking, several accounts, execution
corrections, the partial-fill drill, and a state file that survives a killed process without growing for ever."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trading.sim.account import (
    OTHER_ACCOUNT_SHARES,
    STARTING_CASH_USD,
    SimAccount,
    SimOrder,
    stock_contract,
)
from trading.sim.market import MarketConfig, MarketModel, con_id_for, seed_account

NOW = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)  # a Tuesday, 11:00 in New York
NVDA = stock_contract("NVDA")


class FakeClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def _account(state: Path | None = None, clock: FakeClock | None = None, accounts: tuple[str, ...] = ("DU1",),
             **kwargs: int) -> SimAccount:
    return SimAccount(MarketModel(MarketConfig(), seed=7), accounts=accounts, clock=clock or FakeClock(),
                      state_path=state, **kwargs)


def _buy(book: SimAccount, qty: float = 10, *, account: str = "DU1", ref: str = "", client_id: int = 1,
         limit: float | None = None, fill_cap: float | None = None) -> SimOrder:
    return book.new_order(client_id=client_id, order_id=book.take_order_id(), account=account, contract=NVDA,
                          side="BUY", qty=qty, order_type="limit" if limit else "market", limit=limit, order_ref=ref,
                          fill_cap=fill_cap)


def test_a_market_order_fills_at_the_ask_and_books_average_cost_cash_and_commission():
    book = _account()
    before_qty = book.holding("DU1", NVDA.con_id).qty
    cash_before = book.cash["DU1"]
    ask = book.model.stock_quote().ask

    order = _buy(book, 30, ref="bifrost:t:1")
    executions = book.try_fill(order)

    assert order.status == "filled" and order.filled == 30 and order.done_at is not None
    assert [(e.shares, e.price, e.side, e.account, e.order_ref) for e in executions] == [
        (30.0, ask, "BUY", "DU1", "bifrost:t:1")]
    assert executions[0].exec_id.endswith(".01") and executions[0].commission == 1.0
    holding = book.holding("DU1", NVDA.con_id)
    assert holding.qty == before_qty + 30
    assert holding.avg_price == pytest.approx((before_qty * 180.0 + 30 * ask) / (before_qty + 30))
    assert book.cash["DU1"] == pytest.approx(cash_before - 30 * ask - 1.0)


def test_a_limit_order_below_the_ask_rests_and_the_sweep_leaves_it_working():
    book = _account()

    order = _buy(book, 10, limit=1.0)

    assert book.try_fill(order) == []
    assert order.is_open and book.due_orders(latency_s=0.15) == [order]


def test_a_capped_order_fills_only_its_cap_and_then_rests_open():
    book = _account()

    order = _buy(book, 50, fill_cap=20)
    first = book.try_fill(order)
    again = book.try_fill(order)

    assert [e.shares for e in first] == [20.0] and again == []
    assert order.is_open and order.filled == 20 and order.remaining == 30
    assert book.cancel(order) and order.status == "cancelled" and order.filled == 20


def test_the_first_account_holds_the_seeded_book_and_the_others_cash_and_shares():
    clock = FakeClock()
    book = _account(clock=clock, accounts=("DU1", "DU2"), straddles=3, manual_shares=40)

    first = {h.contract.con_id: h.qty for _, h in book.positions("DU1")}
    second = {h.contract.con_id: h.qty for _, h in book.positions("DU2")}

    seeds = seed_account(MarketConfig(), clock(), straddles=3, manual_shares=40)
    assert first == {s.con_id: s.qty for s in seeds}
    assert second == {con_id_for("NVDA", "STK"): OTHER_ACCOUNT_SHARES}
    assert book.cash["DU2"] == STARTING_CASH_USD - OTHER_ACCOUNT_SHARES * 180.0


def test_an_order_books_into_its_own_account_only():
    book = _account(accounts=("DU1", "DU2"))
    first_before = book.holding("DU1", NVDA.con_id).qty

    book.try_fill(_buy(book, 25, account="DU2"))

    assert book.holding("DU2", NVDA.con_id).qty == OTHER_ACCOUNT_SHARES + 25
    assert book.holding("DU1", NVDA.con_id).qty == first_before


def test_a_correction_is_a_new_execution_with_the_next_suffix_and_books_only_the_difference():
    book = _account()
    order = _buy(book, 10)
    original = book.try_fill(order)[0]
    qty_after_fill = book.holding("DU1", NVDA.con_id).qty

    same = book.correct_execution(original.exec_id)
    fewer = book.correct_execution(original.exec_id, shares=8)

    assert same.exec_id == original.prefix + ".02" and same.replaces == original.exec_id
    assert (same.shares, same.price, same.perm_id, same.order_ref) == (10.0, original.price, order.perm_id, "")
    assert fewer.exec_id == original.prefix + ".03" and fewer.replaces == same.exec_id
    assert book.holding("DU1", NVDA.con_id).qty == qty_after_fill - 2
    assert order.filled == 8
    assert [e.exec_id for e in book.executions] == [original.exec_id, same.exec_id, fewer.exec_id]


def test_every_fill_survives_a_process_that_never_saved(tmp_path):
    state = tmp_path / "sim.json"
    book = _account(state)
    order = _buy(book, 30, ref="bifrost:t:kill")
    book.try_fill(order)
    resting = _buy(book, 5, limit=1.0, ref="bifrost:t:rest")
    # no save(), no close(): as if the process had been SIGKILLed here

    again = _account(state)

    assert [e.exec_id for e in again.executions] == [e.exec_id for e in book.executions]
    assert again.order_by_ref("bifrost:t:kill").status == "filled"
    assert again.order_by_ref("bifrost:t:rest").is_open and again.order(1, resting.order_id) is not None
    assert again.holding("DU1", NVDA.con_id).qty == book.holding("DU1", NVDA.con_id).qty
    assert again.cash == pytest.approx(book.cash)
    assert again.next_order_id == book.next_order_id and again.next_perm_id == book.next_perm_id


def test_a_fill_appends_one_journal_line_and_leaves_the_snapshot_alone(tmp_path):
    state = tmp_path / "sim.json"
    book = _account(state)
    snapshot = state.read_text()

    book.try_fill(_buy(book, 10))

    assert state.read_text() == snapshot
    lines = (tmp_path / "sim.json.journal").read_text().splitlines()
    assert len(lines) == 2  # the new order, then its fill
    assert len(json.loads(lines[-1])["executions"]) == 1


def test_the_snapshot_is_rewritten_every_n_changes_and_the_journal_emptied(tmp_path):
    state = tmp_path / "sim.json"
    book = _account(state, compact_every_lines=4)

    for _ in range(2):
        book.try_fill(_buy(book, 10))

    assert (tmp_path / "sim.json.journal").read_text() == ""
    assert len(json.loads(state.read_text())["executions"]) == 2


def test_a_torn_last_journal_line_is_ignored(tmp_path):
    state = tmp_path / "sim.json"
    book = _account(state)
    book.try_fill(_buy(book, 10))
    with (tmp_path / "sim.json.journal").open("a") as journal:
        journal.write('{"spot": 181.0, "counters": {"next_order_id"')  # killed mid-write

    again = _account(state)

    assert len(again.executions) == 1


def test_old_days_finished_orders_and_executions_are_pruned_beyond_the_window_and_today_is_kept(tmp_path):
    clock = FakeClock(NOW - timedelta(days=1))
    book = _account(tmp_path / "sim.json", clock, keep_recent=3)
    old_orders = [_buy(book, 1) for _ in range(5)]
    for order in old_orders:
        book.try_fill(order)
    old_resting = _buy(book, 1, limit=1.0)
    clock.now = NOW
    today = [_buy(book, 1) for _ in range(4)]
    for order in today:
        book.try_fill(order)

    book.save()
    again = _account(tmp_path / "sim.json", clock, keep_recent=3)

    kept = [o.perm_id for o in again.orders.values()]
    assert old_resting.perm_id in kept  # open orders are never dropped
    assert all(o.perm_id in kept for o in today)  # nor today's, however many
    assert not any(o.perm_id in kept for o in old_orders)
    assert [e.perm_id for e in again.executions] == [o.perm_id for o in today]


def test_old_days_entries_within_the_window_are_kept():
    clock = FakeClock(NOW - timedelta(days=1))
    book = _account(None, clock, keep_recent=10)
    for _ in range(3):
        book.try_fill(_buy(book, 1))
    clock.now = NOW

    book.prune()

    assert len(book.finished_orders()) == 3 and len(book.executions) == 3


def test_a_state_file_in_an_older_format_is_moved_aside_and_a_fresh_account_seeded(tmp_path):
    state = tmp_path / "sim.json"
    state.write_text(json.dumps({"cash": 1.0, "spot": 100.0, "holdings": [], "orders": [], "executions": []}))

    book = _account(state)

    assert (tmp_path / "sim.json.v1.bak").exists()
    assert book.cash["DU1"] < STARTING_CASH_USD and book.positions("DU1")
    assert json.loads(state.read_text())["format"] == 2


def test_an_account_added_to_an_existing_state_is_seeded_and_the_others_kept(tmp_path):
    state = tmp_path / "sim.json"
    book = _account(state)
    book.try_fill(_buy(book, 10))
    qty = book.holding("DU1", NVDA.con_id).qty

    again = _account(state, accounts=("DU1", "DU2"))

    assert again.holding("DU1", NVDA.con_id).qty == qty
    assert again.holding("DU2", NVDA.con_id).qty == OTHER_ACCOUNT_SHARES
