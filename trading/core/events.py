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
    """A confirmed execution; `qty` is positive, the side says the direction."""

    order_ref: str
    exec_id: str
    side: Side
    qty: float
    price: float
    commission: float
    ts: datetime


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    connected: bool
    ts: datetime
    message: str = ""


@dataclass(frozen=True, slots=True)
class Reconciled:
    """The edge has re-matched our orders with the broker's open orders and executions after a (re)connect.

    `unknown_refs` are our orders whose outcome the broker could not confirm: they block hedging until resolved."""

    open_refs: tuple[str, ...]
    unknown_refs: tuple[str, ...]
    ts: datetime


@dataclass(frozen=True, slots=True)
class Timer:
    now: datetime


@dataclass(frozen=True, slots=True)
class Control:
    """An operator command the engine must obey: pause, resume, flatten, reset_halt, stop."""

    command: str
    actor: str = "operator"
    reason: str = ""


Event = Quote | OptionQuote | PositionsSynced | OrderUpdate | Fill | BrokerStatus | Reconciled | Timer | Control


# ---- actions --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    order_ref: str
    symbol: str
    side: Side
    qty: float
    type: OrderType
    limit: float | None
    intent: Literal["hedge", "flatten"] = "hedge"


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
