"""The events the engine consumes and the actions it returns: the whole vocabulary between core and edges."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

Side = Literal["BUY", "SELL"]
OrderType = Literal["market", "limit"]


@dataclass(frozen=True, slots=True)
class Contract:
    """A tradable instrument; `con_id` is the broker's identity for it."""

    con_id: int
    symbol: str
    sec_type: Literal["STK", "OPT"]
    right: Literal["C", "P"] | None = None
    strike: float | None = None
    expiry: date | None = None
    multiplier: int = 1
    local_symbol: str = ""


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    contract: Contract
    qty: float
    avg_cost: float | None = None
    account: str = ""


@dataclass(frozen=True, slots=True)
class LegGreeks:
    """Per-contract greeks as a broker's model computes them (theta per day, vega per vol point)."""

    iv: float
    delta: float
    gamma: float
    theta: float
    vega: float


# ---- events ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    bid: float
    ask: float
    last: float | None
    ts: datetime


@dataclass(frozen=True, slots=True)
class OptionQuote:
    con_id: int
    bid: float
    ask: float
    ts: datetime
    iv: float | None = None
    greeks: LegGreeks | None = None


@dataclass(frozen=True, slots=True)
class PositionsSynced:
    positions: tuple[BrokerPosition, ...]
    ts: datetime


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """The broker's word on an order. `status` is one of: submitted, working, filled, cancelled, rejected."""

    order_ref: str
    status: str
    filled: float
    avg_price: float | None
    ts: datetime
    message: str = ""


@dataclass(frozen=True, slots=True)
class Fill:
    """A confirmed execution; `qty` is positive, the side says the direction. The instrument and the account it
    was made in come with it, so a fill that is not ours (another account, another symbol) can be told apart."""

    order_ref: str
    exec_id: str
    side: Side
    qty: float
    price: float
    commission: float
    ts: datetime
    symbol: str = ""
    sec_type: str = "STK"
    con_id: int = 0
    account: str = ""


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    connected: bool
    ts: datetime
    message: str = ""


@dataclass(frozen=True, slots=True)
class BrokerOrder:
    """One of our orders as the broker reports it: `status` is working, partial, filled, cancelled or rejected."""

    order_ref: str
    side: Side
    qty: float
    filled: float
    status: str


@dataclass(frozen=True, slots=True)
class Reconciled:
    """The edge asked the broker about our orders, open and completed (their executions came before this, as Fill
    events). An order we track that the broker does not mention at all, and that was made before `asked_at`, never
    reached it or can no longer fill. `asked_at` None: everything tracked predates the question (a reconnect)."""

    orders: tuple[BrokerOrder, ...]
    ts: datetime
    asked_at: datetime | None = None
    # The executions of ours the broker reported, and from when its report covers (IB: today): a fill in our
    # ledger from that span that the broker does not attribute to us means the ledger cannot be trusted.
    exec_ids: frozenset[str] | None = None
    execs_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class EdgeStatus:
    """The daemon's own safety as the edge sees it: its lease confirmed within a heartbeat, its journal writable,
    its clock in step with the broker's. Any of them wrong blocks new orders."""

    lease_confirmed: bool = True
    journal_writable: bool = True
    clock_skewed: bool = False
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Timer:
    now: datetime


@dataclass(frozen=True, slots=True)
class Control:
    """An operator command the engine must obey: pause, resume, flatten, reset_halt, stop."""

    command: str
    actor: str = "operator"
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AdoptLegs:
    """Option legs Bifrost opened itself (a commander run's buys): adopted and hedged once the account holds them."""

    con_ids: frozenset[int]
    why: str


Event = (Quote | OptionQuote | PositionsSynced | OrderUpdate | Fill | BrokerStatus | Reconciled | EdgeStatus | Timer
         | Control | AdoptLegs)


# ---- actions --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    order_ref: str
    symbol: str
    side: Side
    qty: float
    type: OrderType
    limit: float | None
    intent: Literal["hedge", "flatten", "commander"] = "hedge"
    contract: Contract | None = None  # None: the underlying's shares (`symbol`); the commander's options carry theirs


@dataclass(frozen=True, slots=True)
class CancelOrder:
    order_ref: str


@dataclass(frozen=True, slots=True)
class Record:
    """Something to persist: `kind` is decision, operation, order, fill, managed_leg or snapshot."""

    kind: str
    data: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Halt:
    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    reason: str


Action = PlaceOrder | CancelOrder | Record | Halt | Stop
