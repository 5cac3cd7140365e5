"""P&L of the managed book: realized (average cost), unrealized (marks), commissions, by US/Eastern trading date,
and the day's attribution into gamma, theta, vega and hedge cost."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date

from trading.core.rules import book_trade, unrealized_usd


@dataclass(slots=True)
class Holding:
    """One instrument's position at average cost; `multiplier` turns price into dollars per unit of qty."""

    qty: float = 0.0
    avg_cost: float = 0.0
    multiplier: float = 1.0
    realized_usd: float = 0.0
    mark: float | None = None

    def trade(self, signed_qty: float, price: float) -> float:
        """Book a trade at average cost; returns the realized P&L it produced."""
        self.qty, self.avg_cost, realized = book_trade(self.qty, self.avg_cost, signed_qty, price, self.multiplier)
        self.realized_usd += realized
        if self.mark is None:
            self.mark = price
        return realized

    @property
    def unrealized_usd(self) -> float:
        return unrealized_usd(self.qty, math.nan if self.mark is None else self.mark, self.avg_cost, self.multiplier)


@dataclass(slots=True)
class Attribution:
    gamma_usd: float = 0.0
    theta_usd: float = 0.0
    vega_usd: float = 0.0
    hedge_cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class PnlSnapshot:
    trading_date: date
    daily_usd: float
    realized_usd: float
    unrealized_usd: float
    commissions_usd: float
    options_usd: float
    hedge_usd: float
    gamma_usd: float
    theta_usd: float
    vega_usd: float
    hedge_cost_usd: float


@dataclass
class PnlLedger:
    """All Bifrost P&L in one place. Daily P&L = total now − total at the start of the trading date."""

    trading_date: date
    holdings: dict[str, Holding] = field(default_factory=dict)
    commissions_usd: float = 0.0
    day_start_total_usd: float = 0.0
    day: Attribution = field(default_factory=Attribution)
    _last_spot: float | None = None
    _last_iv: float | None = None

    def holding(self, key: str, multiplier: float = 1.0) -> Holding:
        h = self.holdings.get(key)
        if h is None:
            h = self.holdings[key] = Holding(multiplier=multiplier)
        return h

    def open_position(self, key: str, qty: float, cost: float, multiplier: float) -> None:
        """Adopt an existing position at its cost basis (options taken over from the account)."""
        h = self.holding(key, multiplier)
        h.qty, h.avg_cost, h.mark = qty, cost, cost

    def on_fill(self, key: str, signed_qty: float, price: float, commission_usd: float, mid: float | None) -> None:
        self.holding(key).trade(signed_qty, price)
        self.commissions_usd += commission_usd
        slippage = abs(price - mid) * abs(signed_qty) if mid is not None else 0.0
        self.day.hedge_cost_usd += slippage + commission_usd

    def mark(self, key: str, price: float) -> None:
        h = self.holdings.get(key)
        if h is not None and math.isfinite(price):
            h.mark = price

    def remark(self, key: str, price: float) -> None:
        """Mark at a price from another source (model price <-> market mid): that jump is not the day's P&L, so
        the day's baseline moves with it."""
        h = self.holdings.get(key)
        if h is not None and math.isfinite(price):
            before = h.unrealized_usd
            h.mark = price
            self.day_start_total_usd += h.unrealized_usd - before

    def on_market_move(self, spot: float, iv: float | None, gamma_shares: float, theta_usd_per_day: float,
                       vega_usd_per_point: float, elapsed_days: float) -> None:
        """Attribute the book's move since the last tick: ½Γ·dS², θ·dt, vega·dσ (in vol points)."""
        if self._last_spot is not None:
            d_spot = spot - self._last_spot
            self.day.gamma_usd += 0.5 * gamma_shares * d_spot * d_spot
            self.day.theta_usd += theta_usd_per_day * elapsed_days
            if iv is not None and self._last_iv is not None:
                self.day.vega_usd += vega_usd_per_point * (iv - self._last_iv) * 100.0
        self._last_spot = spot
        self._last_iv = iv

    @property
    def realized_usd(self) -> float:
        return sum(h.realized_usd for h in self.holdings.values())

    @property
    def unrealized_usd(self) -> float:
        return sum(h.unrealized_usd for h in self.holdings.values())

    @property
    def total_usd(self) -> float:
        return self.realized_usd + self.unrealized_usd - self.commissions_usd

    def roll_if_new_day(self, trading_date: date) -> bool:
        """At the trading-date change the day's figures start again from the current total."""
        if trading_date == self.trading_date:
            return False
        self.trading_date = trading_date
        self.day_start_total_usd = self.total_usd
        self.day = Attribution()
        return True

    def snapshot(self, hedge_key: str) -> PnlSnapshot:
        hedge = self.holdings.get(hedge_key, Holding())
        hedge_usd = hedge.realized_usd + hedge.unrealized_usd
        options_usd = sum(h.realized_usd + h.unrealized_usd for k, h in self.holdings.items() if k != hedge_key)
        return PnlSnapshot(
            trading_date=self.trading_date,
            daily_usd=self.total_usd - self.day_start_total_usd,
            realized_usd=self.realized_usd,
            unrealized_usd=self.unrealized_usd,
            commissions_usd=self.commissions_usd,
            options_usd=options_usd,
            hedge_usd=hedge_usd,
            gamma_usd=self.day.gamma_usd,
            theta_usd=self.day.theta_usd,
            vega_usd=self.day.vega_usd,
            hedge_cost_usd=self.day.hedge_cost_usd,
        )
