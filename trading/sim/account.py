"""The simulated brokerage account both simulator faces trade against (SimBroker in process, the TWS-protocol server
over a socket): holdings and cash per account id, every client's orders and executions, fills from the market
model's fill model, average-cost booking, the seeded starting account, and a state file that survives restarts.

Persistence is a JSON snapshot plus an append-only journal beside it (`<state>.journal`): every change appends one
line of absolute state (the orders, executions, holdings and cash it touched), so a fill costs one short write and a
process killed at any moment loses nothing it reported. The snapshot is rewritten only every `COMPACT_EVERY_LINES`
changes, after pruning, so neither memory nor the file grows without bound."""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, time
from pathlib import Path
from typing import IO, Any

from trading.core.calendar import ET, trading_date
from trading.core.events import Contract, OrderType, Side
from trading.sim.market import (
    MarketModel,
    OptionQuoteData,
    StockQuote,
    average_cost_after,
    con_id_for,
    local_symbol_for,
    seed_account,
)

log = logging.getLogger(__name__)

STATE_FORMAT = 2
STARTING_CASH_USD = 1_000_000.0
# Stocks the model does not drive are quoted flat at these prices (one cent either side); unknown ones at the default.
FLAT_STOCK_PRICES = {"AAPL": 200.0}
DEFAULT_FLAT_PRICE_USD = 100.0
# Every account after the first holds shares of the model's underlying, so a position or fill booked into the wrong
# account shows up at once in a multi-account drill.
OTHER_ACCOUNT_SHARES = 300.0
# Finished orders and executions from before today's US/Eastern trading day are dropped beyond this many (today's are
# always kept, as IB reports a day's executions).
KEEP_RECENT = 2_000
COMPACT_EVERY_LINES = 500
STOCK_MARGIN_FRAC = 0.25  # maintenance margin on stock value, both long and short
BUYING_POWER_LEVERAGE = 4.0

WORKING = "working"
FILLED = "filled"
CANCELLED = "cancelled"
REJECTED = "rejected"


@dataclass
class SimHolding:
    contract: Contract
    qty: float
    avg_price: float  # per share / per unit of the option's quote (IB reports options x multiplier)


@dataclass
class SimOrder:
    """One order of any API client. `status` is working | filled | cancelled | rejected; each face names it its way."""

    perm_id: int
    client_id: int
    order_id: int
    account: str
    contract: Contract
    side: Side
    qty: float
    order_type: OrderType
    limit: float | None
    tif: str = "DAY"
    order_ref: str = ""
    status: str = WORKING
    filled: float = 0.0
    avg_fill_price: float = 0.0
    last_fill_price: float = 0.0
    commission: float = 0.0
    received_at: float = 0.0  # epoch seconds
    done_at: float | None = None  # epoch seconds it stopped working (filled, cancelled or rejected)
    fill_cap: float | None = None  # drill: fill at most this many shares in total, then rest (see `partial`)
    reason: str = ""  # why it was rejected

    @property
    def remaining(self) -> float:
        return max(self.qty - self.filled, 0.0)

    @property
    def is_open(self) -> bool:
        return self.status == WORKING


@dataclass
class SimExecution:
    """One execution. `exec_id` ends in .01; a correction of it carries the same prefix and .02, .03 ..."""

    exec_id: str
    perm_id: int
    order_id: int
    client_id: int
    account: str
    contract: Contract
    side: Side
    shares: float
    price: float
    ts: datetime
    cum_qty: float
    avg_price: float
    order_ref: str
    commission: float
    replaces: str = ""  # the exec id this one corrects

    @property
    def prefix(self) -> str:
        return self.exec_id.rpartition(".")[0]


@dataclass(frozen=True)
class AccountValues:
    """What an account is worth now, at the model's marks (USD)."""

    account: str
    cash_usd: float
    net_liquidation_usd: float
    gross_position_usd: float
    unrealized_pnl_usd: float
    maint_margin_usd: float

    @property
    def available_funds_usd(self) -> float:
        return self.net_liquidation_usd - self.maint_margin_usd

    @property
    def buying_power_usd(self) -> float:
        return max(self.available_funds_usd, 0.0) * BUYING_POWER_LEVERAGE


@dataclass(frozen=True)
class FlatQuote:
    """A stock the model does not drive: a fixed price one cent either side."""

    bid: float
    ask: float


def stock_contract(symbol: str) -> Contract:
    return Contract(con_id_for(symbol, "STK"), symbol, "STK", local_symbol=local_symbol_for(symbol, "STK"))


@dataclass
class _Change:
    """What one operation touched, written to the journal as one line."""

    orders: dict[int, SimOrder] = field(default_factory=dict)
    executions: list[SimExecution] = field(default_factory=list)
    holdings: dict[tuple[str, int], SimHolding] = field(default_factory=dict)
    cash: set[str] = field(default_factory=set)


class SimAccount:
    """Accounts, orders and executions over one market model. Not thread-safe: one event loop owns it."""

    def __init__(self, model: MarketModel, *, accounts: Sequence[str], clock: Callable[[], datetime],
                 state_path: Path | None = None, seed: int = 7, straddles: int = 10, manual_shares: int = 100,
                 keep_recent: int = KEEP_RECENT, compact_every_lines: int = COMPACT_EVERY_LINES) -> None:
        if not accounts or any(not a or "," in a for a in accounts) or len(set(accounts)) != len(accounts):
            raise ValueError(f"accounts must be distinct non-empty ids without commas, got {list(accounts)!r}")
        self.model = model
        self.accounts = list(accounts)
        self.clock = clock
        self.state_path = state_path
        self.seed = seed
        self.straddles = straddles
        self.manual_shares = manual_shares
        self.keep_recent = keep_recent
        self.compact_every_lines = compact_every_lines
        self.exec_prefix = f"0000f{seed:03x}"
        self.cash: dict[str, float] = {}
        self.holdings: dict[str, dict[int, SimHolding]] = {}
        self.orders: dict[int, SimOrder] = {}  # by permId, oldest first
        self.executions: list[SimExecution] = []  # oldest first
        self.next_order_id = 1
        self.next_perm_id = 1_000_001
        self.exec_seq = 0
        self._open: dict[int, SimOrder] = {}  # the working subset of `orders`: the market sweeps it every tick
        self._by_client_order: dict[tuple[int, int], int] = {}
        self._by_ref: dict[str, int] = {}
        self._exec_ids: set[str] = set()
        self._journal: IO[str] | None = None
        self._journal_lines = 0
        self._load_or_seed()

    @property
    def first_account(self) -> str:
        return self.accounts[0]

    # ---- prices ---------------------------------------------------------------------------------------------

    def quote(self, contract: Contract) -> StockQuote | OptionQuoteData | FlatQuote:
        """The two-sided quote an order on `contract` would meet now."""
        if contract.symbol == self.model.config.symbol:
            if contract.sec_type == "STK":
                return self.model.stock_quote()
            now = self.clock()
            return self.model.option_quote(contract.right or "C", contract.strike or 0.0,
                                           contract.expiry or now.date(), now)
        flat = FLAT_STOCK_PRICES.get(contract.symbol, DEFAULT_FLAT_PRICE_USD)
        return FlatQuote(flat - 0.01, flat + 0.01)

    def mark(self, contract: Contract) -> float:
        """Mid price per share / per unit of the option's quote; options on symbols the model does not drive: 0."""
        if contract.sec_type == "OPT" and contract.symbol != self.model.config.symbol:
            return 0.0
        q = self.quote(contract)
        return float((q.bid + q.ask) / 2.0)

    # ---- holdings and values --------------------------------------------------------------------------------

    def positions(self, account: str | None = None) -> list[tuple[str, SimHolding]]:
        """(account, holding) for one account or all, in account order; closed positions stay listed at 0."""
        return [(a, h) for a in ([account] if account else self.accounts) for h in self.holdings.get(a, {}).values()]

    def holding(self, account: str, con_id: int) -> SimHolding | None:
        return self.holdings.get(account, {}).get(con_id)

    def values(self, account: str) -> AccountValues:
        rows = [(h, self.mark(h.contract)) for h in self.holdings.get(account, {}).values()]
        value = sum(h.qty * h.contract.multiplier * mark for h, mark in rows)
        gross = sum(abs(h.qty) * h.contract.multiplier * mark for h, mark in rows)
        unrealized = sum(h.qty * h.contract.multiplier * (mark - h.avg_price) for h, mark in rows)
        margin = sum(abs(h.qty) * mark * STOCK_MARGIN_FRAC for h, mark in rows if h.contract.sec_type == "STK")
        cash = self.cash.get(account, 0.0)
        return AccountValues(account, cash, cash + value, gross, unrealized, margin)

    # ---- orders ---------------------------------------------------------------------------------------------

    def take_order_id(self) -> int:
        order_id = self.next_order_id
        self.next_order_id += 1
        return order_id

    def see_order_id(self, order_id: int) -> None:
        """A client used this id: the next valid id handed out is above it."""
        self.next_order_id = max(self.next_order_id, order_id + 1)

    def new_order(self, *, client_id: int, order_id: int, account: str, contract: Contract, side: Side, qty: float,
                  order_type: OrderType, limit: float | None, tif: str = "DAY", order_ref: str = "",
                  fill_cap: float | None = None) -> SimOrder:
        self.see_order_id(order_id)
        order = SimOrder(self.next_perm_id, client_id, order_id, account, contract, side, float(qty), order_type,
                         limit, tif or "DAY", order_ref, received_at=self.clock().timestamp(), fill_cap=fill_cap)
        self.next_perm_id += 1
        self._index(order)
        self._commit(_Change(orders={order.perm_id: order}))
        return order

    def order(self, client_id: int, order_id: int) -> SimOrder | None:
        perm_id = self._by_client_order.get((client_id, order_id))
        return self.orders.get(perm_id) if perm_id is not None else None

    def order_by_ref(self, order_ref: str) -> SimOrder | None:
        """The latest order with this orderRef (refs are unique per client in practice, not by rule)."""
        perm_id = self._by_ref.get(order_ref)
        return self.orders.get(perm_id) if perm_id is not None else None

    def open_orders(self) -> list[SimOrder]:
        return list(self._open.values())

    def finished_orders(self) -> list[SimOrder]:
        return [o for o in self.orders.values() if not o.is_open]

    def due_orders(self, latency_s: float) -> list[SimOrder]:
        """Open orders the market sweep should try: limits always, market orders once their latency has passed (one
        that was due while nobody swept, e.g. across a restart, fills on the next sweep)."""
        now = self.clock().timestamp()
        return [o for o in self._open.values() if o.order_type == "limit" or o.received_at + latency_s <= now]

    def reject(self, order: SimOrder, reason: str) -> None:
        self._finish(order, REJECTED, reason)

    def cancel(self, order: SimOrder) -> bool:
        """Cancel a working order (its fills stay); False if it had finished already."""
        if not order.is_open:
            return False
        self._finish(order, CANCELLED)
        return True

    def modify(self, order: SimOrder, qty: float, limit: float | None) -> None:
        order.qty = max(qty, order.filled)
        if limit is not None:
            order.limit = limit
        self._commit(_Change(orders={order.perm_id: order}))

    def _finish(self, order: SimOrder, status: str, reason: str = "") -> None:
        order.status = status
        order.reason = reason
        order.done_at = self.clock().timestamp()
        self._open.pop(order.perm_id, None)
        self._commit(_Change(orders={order.perm_id: order}))

    # ---- fills ----------------------------------------------------------------------------------------------

    def try_fill(self, order: SimOrder) -> list[SimExecution]:
        """Fill what the fill model allows now: all of it (maybe in pieces) when marketable, nothing when a limit
        rests. An order with a `fill_cap` fills up to the cap and then rests open."""
        if not order.is_open:
            return []
        qty = order.remaining if order.fill_cap is None else min(order.remaining, order.fill_cap - order.filled)
        if qty <= 0:
            return []
        price = self.model.fills.fill_price(order.side, qty, order.order_type, order.limit, self.quote(order.contract))
        if price is None:
            return []
        now = self.clock()
        pieces: list[float] = list(self.model.fills.split_fills(qty)) if qty == int(qty) else [qty]
        change = _Change(orders={order.perm_id: order})
        for piece in pieces:
            self.exec_seq += 1
            commission = self.model.fills.commission_usd(piece, price)
            order.avg_fill_price = (order.avg_fill_price * order.filled + price * piece) / (order.filled + piece)
            order.filled += piece
            order.last_fill_price = price
            order.commission += commission
            execution = SimExecution(
                exec_id=f"{self.exec_prefix}.{int(now.timestamp()):08x}.{self.exec_seq:04d}.01",
                perm_id=order.perm_id, order_id=order.order_id, client_id=order.client_id, account=order.account,
                contract=order.contract, side=order.side, shares=float(piece), price=price, ts=now,
                cum_qty=order.filled, avg_price=order.avg_fill_price, order_ref=order.order_ref, commission=commission)
            self._add_execution(execution)
            change.executions.append(execution)
            self._book(order.account, order.contract, order.side, float(piece), price, commission, change)
        if order.remaining <= 0:
            order.status = FILLED
            order.done_at = now.timestamp()
            self._open.pop(order.perm_id, None)
        self._commit(change)
        return change.executions

    def correct_execution(self, exec_id: str, shares: float | None = None,
                          price: float | None = None) -> SimExecution:
        """An execution correction as IB sends it: a new execution with the same prefix and the next suffix (.02)
        that replaces the latest version of `exec_id`; same order, shares and price unless given. A changed quantity
        or price is booked as the difference (the average cost moves as if the difference had traded)."""
        prefix = exec_id.rpartition(".")[0]
        versions = [e for e in self.executions if e.prefix == prefix] if prefix else []
        if not versions:
            raise KeyError(f"no execution {exec_id!r}")
        latest = max(versions, key=lambda e: int(e.exec_id.rpartition(".")[2] or 0))
        suffix = int(latest.exec_id.rpartition(".")[2] or 0) + 1
        new_shares = latest.shares if shares is None else float(shares)
        new_price = latest.price if price is None else float(price)
        if new_shares <= 0 or not (math.isfinite(new_price) and new_price > 0):
            raise ValueError(f"a corrected execution needs shares > 0 and a price > 0, got {new_shares} @ {new_price}")
        change = _Change()
        order = self.orders.get(latest.perm_id)
        commission = self.model.fills.commission_usd(new_shares, new_price)
        if order is not None:
            order.filled += new_shares - latest.shares
            order.commission += commission - latest.commission
            if order.filled > 0:
                order.avg_fill_price = ((order.avg_fill_price * (order.filled - new_shares + latest.shares)
                                         - latest.price * latest.shares + new_price * new_shares) / order.filled)
            change.orders[order.perm_id] = order
        correction = replace(latest, exec_id=f"{prefix}.{suffix:02d}", shares=new_shares, price=new_price,
                             ts=self.clock(), commission=commission, replaces=latest.exec_id,
                             cum_qty=order.filled if order is not None else latest.cum_qty,
                             avg_price=order.avg_fill_price if order is not None else new_price)
        self._add_execution(correction)
        change.executions.append(correction)
        self._rebook(latest, correction, change)
        self._commit(change)
        return correction

    def execution(self, exec_id: str) -> SimExecution | None:
        return next((e for e in reversed(self.executions) if e.exec_id == exec_id), None)

    def _add_execution(self, execution: SimExecution) -> None:
        self.executions.append(execution)
        self._exec_ids.add(execution.exec_id)

    def _book(self, account: str, contract: Contract, side: Side, qty: float, price: float, commission: float,
              change: _Change) -> None:
        holdings = self.holdings.setdefault(account, {})
        holding = holdings.get(contract.con_id)
        if holding is None:
            holding = holdings[contract.con_id] = SimHolding(contract, 0.0, price)
        signed = qty if side == "BUY" else -qty
        holding.qty, holding.avg_price = average_cost_after(holding.qty, holding.avg_price, signed, price)
        self.cash[account] = self.cash.get(account, 0.0) - signed * price * contract.multiplier - commission
        change.holdings[(account, contract.con_id)] = holding
        change.cash.add(account)

    def _rebook(self, old: SimExecution, new: SimExecution, change: _Change) -> None:
        sign = 1.0 if old.side == "BUY" else -1.0
        holding = self.holding(old.account, old.contract.con_id)
        if holding is not None and (new.shares != old.shares or new.price != old.price):
            delta = new.shares - old.shares
            if delta:
                holding.qty, holding.avg_price = average_cost_after(holding.qty, holding.avg_price, sign * delta,
                                                                    new.price)
            change.holdings[(old.account, old.contract.con_id)] = holding
        notional_delta = sign * (new.shares * new.price - old.shares * old.price) * old.contract.multiplier
        self.cash[old.account] = (self.cash.get(old.account, 0.0) - notional_delta
                                  - (new.commission - old.commission))
        change.cash.add(old.account)

    # ---- persistence ----------------------------------------------------------------------------------------

    def _index(self, order: SimOrder) -> None:
        self.orders[order.perm_id] = order
        if order.is_open:
            self._open[order.perm_id] = order
        else:
            self._open.pop(order.perm_id, None)
        self._by_client_order[(order.client_id, order.order_id)] = order.perm_id
        if order.order_ref:
            self._by_ref[order.order_ref] = order.perm_id

    def prune(self) -> None:
        """Drop finished orders and executions from before today's US/Eastern trading day, oldest first, while more
        than `keep_recent` of each are held. Open orders are never dropped."""
        now = self.clock()
        cutoff = datetime.combine(trading_date(now), time(), ET).timestamp()
        finished = [o for o in self.orders.values() if not o.is_open]
        excess = len(finished) - self.keep_recent
        for order in finished:
            if excess <= 0 or (order.done_at or order.received_at) >= cutoff:
                break
            del self.orders[order.perm_id]
            if self._by_client_order.get((order.client_id, order.order_id)) == order.perm_id:
                del self._by_client_order[(order.client_id, order.order_id)]
            if self._by_ref.get(order.order_ref) == order.perm_id:
                del self._by_ref[order.order_ref]
            excess -= 1
        drop = 0
        while (drop < len(self.executions) - self.keep_recent
               and self.executions[drop].ts.timestamp() < cutoff):
            drop += 1
        if drop:
            for e in self.executions[:drop]:
                self._exec_ids.discard(e.exec_id)
            del self.executions[:drop]

    def save(self) -> None:
        """Prune, write the whole state as the snapshot, then empty the journal it now contains."""
        self.prune()
        if self.state_path is None:
            return
        state = {
            "format": STATE_FORMAT, "spot": self.model.spot, "counters": self._counters(),
            "accounts": {a: {"cash": self.cash.get(a, 0.0),
                             "holdings": [_holding_json(a, h) for h in self.holdings.get(a, {}).values()]}
                         for a in dict.fromkeys([*self.accounts, *self.holdings])},
            "orders": [_order_json(o) for o in self.orders.values()],
            "executions": [_execution_json(e) for e in self.executions],
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.state_path)
        # The snapshot holds everything the journal said: a crash between these two lines only replays absolute
        # states the snapshot already ends in.
        self._close_journal()
        self._journal_path().write_text("")
        self._journal_lines = 0

    def close(self) -> None:
        self._close_journal()

    def _journal_path(self) -> Path:
        assert self.state_path is not None
        return self.state_path.with_name(self.state_path.name + ".journal")

    def _close_journal(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _counters(self) -> dict[str, int]:
        return {"next_order_id": self.next_order_id, "next_perm_id": self.next_perm_id, "exec_seq": self.exec_seq}

    def _commit(self, change: _Change) -> None:
        if self.state_path is None:
            return
        line = {
            "spot": self.model.spot, "counters": self._counters(),
            "cash": {a: self.cash.get(a, 0.0) for a in sorted(change.cash)},
            "holdings": [_holding_json(a, h) for (a, _), h in change.holdings.items()],
            "orders": [_order_json(o) for o in change.orders.values()],
            "executions": [_execution_json(e) for e in change.executions],
        }
        if self._journal is None:
            self._journal = self._journal_path().open("a", encoding="utf-8")
        self._journal.write(json.dumps(line) + "\n")
        # Flushed to the OS at once: a SIGKILLed process keeps what it reported; the page cache outlives it.
        self._journal.flush()
        self._journal_lines += 1
        if self._journal_lines >= self.compact_every_lines:
            self.save()

    def _load_or_seed(self) -> None:
        path = self.state_path
        if path is not None and path.exists():
            state = json.loads(path.read_text())
            if state.get("format") == STATE_FORMAT:
                self._apply(state, snapshot=True)
                self._replay_journal()
                for account in self.accounts:
                    if account not in self.cash:
                        self._seed(account)
                self.save()
                return
            backup = path.with_name(path.name + ".v1.bak")
            log.warning("simulated account %s is in an older format: moved to %s, starting a fresh account", path,
                        backup)
            path.replace(backup)
        for account in self.accounts:
            self._seed(account)
        if path is not None:
            if self._journal_path().exists():
                self._journal_path().unlink()  # a journal without its snapshot belongs to no account we know
            self.save()

    def _replay_journal(self) -> None:
        journal = self._journal_path()
        if not journal.exists():
            return
        lines = journal.read_text(encoding="utf-8").splitlines()
        for number, text in enumerate(lines, 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                # Only the last line can be torn (killed mid-write); anything else is a damaged file.
                if number == len(lines):
                    log.warning("%s: ignoring a torn last line", journal)
                    continue
                raise
            self._apply(line, snapshot=False)

    def _apply(self, state: dict[str, Any], *, snapshot: bool) -> None:
        """Absolute states: applying a record twice, or an older one before a newer, ends in the newer state."""
        self.model.set_spot(state["spot"])
        counters = state["counters"]
        self.next_order_id = max(self.next_order_id, counters["next_order_id"])
        self.next_perm_id = max(self.next_perm_id, counters["next_perm_id"])
        self.exec_seq = max(self.exec_seq, counters["exec_seq"])
        if snapshot:
            for account, data in state["accounts"].items():
                self.cash[account] = data["cash"]
                self.holdings.setdefault(account, {})
                for h in data["holdings"]:
                    self._set_holding(h)
        else:
            self.cash.update(state["cash"])
            for h in state["holdings"]:
                self._set_holding(h)
        for o in state["orders"]:
            self._index(_order_from_json(o))
        for e in state["executions"]:
            execution = _execution_from_json(e)
            if execution.exec_id not in self._exec_ids:
                self._add_execution(execution)

    def _set_holding(self, h: dict[str, Any]) -> None:
        contract = _contract_from_json(h["contract"])
        self.holdings.setdefault(h["account"], {})[contract.con_id] = SimHolding(contract, h["qty"], h["avg_price"])

    def _seed(self, account: str) -> None:
        """The first account gets the demo straddle and the manual positions; the others cash and some shares."""
        self.cash[account] = STARTING_CASH_USD
        holdings = self.holdings.setdefault(account, {})
        if account == self.first_account:
            for p in seed_account(self.model.config, self.clock(), straddles=self.straddles,
                                  manual_shares=self.manual_shares):
                holdings[p.con_id] = SimHolding(p.contract(), p.qty, p.avg_cost)
                self.cash[account] -= p.qty * p.multiplier * p.avg_cost
        else:
            contract = stock_contract(self.model.config.symbol)
            holdings[contract.con_id] = SimHolding(contract, OTHER_ACCOUNT_SHARES, self.model.config.spot0)
            self.cash[account] -= OTHER_ACCOUNT_SHARES * self.model.config.spot0


# ---- JSON shapes ----------------------------------------------------------------------------------------------


def _contract_json(c: Contract) -> dict[str, Any]:
    d = asdict(c)
    d["expiry"] = c.expiry.isoformat() if c.expiry else None
    return d


def _contract_from_json(d: dict[str, Any]) -> Contract:
    return Contract(**{**d, "expiry": date.fromisoformat(d["expiry"]) if d.get("expiry") else None})


def _holding_json(account: str, h: SimHolding) -> dict[str, Any]:
    return {"account": account, "contract": _contract_json(h.contract), "qty": h.qty, "avg_price": h.avg_price}


def _order_json(o: SimOrder) -> dict[str, Any]:
    return {**asdict(o), "contract": _contract_json(o.contract)}


def _order_from_json(d: dict[str, Any]) -> SimOrder:
    return SimOrder(**{**d, "contract": _contract_from_json(d["contract"])})


def _execution_json(e: SimExecution) -> dict[str, Any]:
    return {**asdict(e), "contract": _contract_json(e.contract), "ts": e.ts.isoformat()}


def _execution_from_json(d: dict[str, Any]) -> SimExecution:
    return SimExecution(**{**d, "contract": _contract_from_json(d["contract"]), "ts": datetime.fromisoformat(d["ts"])})

