"""The Broker protocol every adapter implements, and the account summary it reports."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from trading.core.events import BrokerPosition, Contract, Event, Fill, PlaceOrder, Side

EventHandler = Callable[[Event], None]


@dataclass(frozen=True, slots=True)
class AccountSummary:
    account: str
    net_liquidation: float | None
    buying_power: float | None
    maintenance_margin: float | None
    cash: float | None
    ts: datetime
    extra: dict[str, float | str] = field(default_factory=dict)
    available_funds: float | None = None


@dataclass(frozen=True, slots=True)
class OpenOrder:
    """An order working at the broker, whoever placed it (every client's orders come back)."""

    order_ref: str
    side: Side
    qty: float
    filled: float
    status: str  # working | partial
    account: str = ""
    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    perm_id: int = 0


@dataclass(frozen=True, slots=True)
class CompletedOrder:
    """An order the broker has finished with (filled, cancelled or rejected), as it reports it afterwards."""

    order_ref: str
    side: Side
    qty: float
    filled: float
    status: str  # filled | cancelled | rejected
    account: str = ""
    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    perm_id: int = 0


@dataclass(frozen=True, slots=True)
class ChainQuote:
    """One option of a chain with its quote (NaN bid or ask when the broker gave none)."""

    contract: Contract
    bid: float
    ask: float

    @property
    def mid(self) -> float:
        return (self.bid + self.ask) / 2.0 if self.bid > 0 and self.ask >= self.bid else float("nan")


@dataclass(frozen=True, slots=True)
class PositionMark:
    """A position with the broker's latest price for it (R-M6)."""

    position: BrokerPosition
    market_price: float | None


class Broker(Protocol):
    """Async broker adapter. Events (quotes, order updates, fills, connection state) go to the handler.

    `BrokerPosition.avg_cost` follows IB: per contract for options (price x multiplier), per share for stock."""

    name: str
    mode: str  # sim | paper | live
    account: str  # the one account this broker trades ("" until connected)

    def set_event_handler(self, handler: EventHandler) -> None: ...

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def positions(self) -> list[PositionMark]: ...

    async def account_summary(self) -> AccountSummary: ...

    async def subscribe(self, symbol: str, legs: Sequence[Contract]) -> None: ...

    async def place_order(self, order: PlaceOrder) -> None: ...

    async def cancel_order(self, order_ref: str) -> None: ...

    async def open_orders(self) -> list[OpenOrder]: ...

    async def completed_orders(self) -> list[CompletedOrder]: ...

    async def executions(self) -> list[Fill]: ...

    async def current_time(self) -> datetime: ...

    async def option_chain(self, symbol: str, *, spot: float, max_dte: int,
                           strikes_each_side: int) -> list[ChainQuote]:
        """The options on `symbol` expiring within `max_dte` days, at the `strikes_each_side` strikes nearest
        `spot` on each side, quoted once (the commander's strategies read it; off the hot path)."""
        ...
