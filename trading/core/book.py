"""The managed book: the option legs Bifrost manages plus its own hedge shares, and their greeks."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime

from trading.core.events import BrokerPosition, Contract, LegGreeks
from trading.core.greeks import bs_scalar, expiry_instant, implied_vol, year_fraction
from trading.core.params import StrategyParams
from trading.core.rules import intrinsic_value, mid_price

SECONDS_PER_YEAR = 365.0 * 86400.0


@dataclass(slots=True)
class Leg:
    """A managed option leg; `qty` is what the account holds of it now (it may drop to 0, it never leaves)."""

    contract: Contract
    qty: float
    avg_cost: float | None = None
    bid: float | None = None
    ask: float | None = None
    broker_iv: float | None = None
    iv: float | None = None
    iv_source: str = "fallback"
    greeks: tuple[float, float, float, float, float] = (math.nan, math.nan, math.nan, math.nan, math.nan)
    market_marked: bool = False  # marked at its market mid (else at its model price)
    settled: float | None = None  # past its expiry: worth its intrinsic value at the first spot after it

    @property
    def mid(self) -> float | None:
        if self.bid is None or self.ask is None or self.bid <= 0 or self.ask < self.bid:
            return None
        return mid_price(self.bid, self.ask)


@dataclass(frozen=True, slots=True)
class BookGreeks:
    """Greeks of the managed options in book units: shares of delta, shares per $1 of gamma, $ per day, $ per vol pt."""

    option_delta_shares: float
    gamma_shares: float
    theta_usd: float
    vega_usd: float
    valid: bool
    iv_fallback_legs: int


def is_adoptable(position: BrokerPosition, params: StrategyParams, spot: float, today: date) -> bool:
    """The leg filter: a long option on the underlying, DTE in [min_dte, max_dte], strike near the money."""
    c = position.contract
    if c.sec_type != "OPT" or c.symbol != params.underlying or c.expiry is None or c.strike is None:
        return False
    dte = (c.expiry - today).days
    return (
        position.qty > 0
        and params.min_dte <= dte <= params.max_dte
        and abs(c.strike / spot - 1.0) <= params.atm_band_frac
    )


def structures(positions: tuple[BrokerPosition, ...], params: StrategyParams, spot: float,
               today: date) -> tuple[list[BrokerPosition], list[tuple[BrokerPosition, str]]]:
    """The long straddles and strangles in the account: a call and a put on the underlying with the same expiry
    and quantity, both passing the leg filter. Returns (legs to adopt, [(position, why not)] for the rest of the
    options on the underlying) — a lone call the operator bought by hand is never hedged."""
    fit = [p for p in positions if is_adoptable(p, params, spot, today)]
    by_expiry: dict[tuple[date | None, float], dict[str, list[BrokerPosition]]] = {}
    for p in fit:
        by_expiry.setdefault((p.contract.expiry, p.qty), {"C": [], "P": []})[p.contract.right or "C"].append(p)
    adopted: list[BrokerPosition] = []
    for sides in by_expiry.values():
        calls = sorted(sides["C"], key=lambda p: abs((p.contract.strike or 0.0) / spot - 1.0))
        puts = sorted(sides["P"], key=lambda p: abs((p.contract.strike or 0.0) / spot - 1.0))
        for call, put in zip(calls, puts, strict=False):  # nearest the money first
            adopted += [call, put]
    taken = {p.contract.con_id for p in adopted}
    left = []
    for p in positions:
        c = p.contract
        if c.sec_type != "OPT" or c.symbol != params.underlying or c.con_id in taken:
            continue
        why = ("no put/call of the same expiry and quantity to make a straddle or strangle with"
               if p in fit else _why_not_a_leg(p, params, spot, today))
        left.append((p, why))
    return adopted, left


def _why_not_a_leg(position: BrokerPosition, params: StrategyParams, spot: float, today: date) -> str:
    c = position.contract
    if position.qty <= 0:
        return "short, not long"
    if c.expiry is None or c.strike is None:
        return "no expiry or strike"
    dte = (c.expiry - today).days
    if not params.min_dte <= dte <= params.max_dte:
        return f"{dte} days to expiry, outside {params.min_dte}..{params.max_dte}"
    return f"strike {c.strike:g} is {abs(c.strike / spot - 1.0):.1%} from spot, outside the {params.atm_band_frac:.0%} band"


@dataclass
class ManagedBook:
    """Legs by con_id plus the hedge ledger. Hedge shares change only on confirmed fills."""

    legs: dict[int, Leg] = field(default_factory=dict)
    hedge_shares: float = 0.0
    next_expiry_s: float | None = None  # the nearest expiry (POSIX s) of a leg still held and not settled
    _has_options: bool = False

    def adopt(self, contract: Contract, qty: float, avg_cost: float | None) -> Leg:
        leg = Leg(contract=contract, qty=qty, avg_cost=avg_cost)
        self.legs[contract.con_id] = leg
        self._recount()
        return leg

    def sync_quantities(self, positions: tuple[BrokerPosition, ...]) -> None:
        """Take each managed leg's quantity from the account; a leg missing from the account counts as 0."""
        held = {p.contract.con_id: p for p in positions}
        for con_id, leg in self.legs.items():
            position = held.get(con_id)
            leg.qty = position.qty if position is not None else 0.0
            if position is not None and position.avg_cost is not None:
                leg.avg_cost = position.avg_cost
        self._recount()

    @property
    def has_options(self) -> bool:
        return self._has_options

    def _recount(self) -> None:
        # Quantities change only at adoption, position syncs and expiry; the hot path asks on every tick.
        self._has_options = any(leg.qty != 0 and leg.settled is None for leg in self.legs.values())
        live = [expiry_instant(leg.contract.expiry) for leg in self.legs.values()
                if leg.qty != 0 and leg.settled is None and leg.contract.expiry is not None]
        self.next_expiry_s = min(live) if live else None

    def settle_expired(self, spot: float, now_s: float) -> list[Leg]:
        """Legs whose expiry (16:00 New York) has passed settle at their intrinsic value at `spot`: from then on
        they count for nothing in delta and are marked at that value. Returns the legs settled now."""
        if self.next_expiry_s is None or now_s < self.next_expiry_s:
            return []
        settled = []
        for leg in self.legs.values():
            c = leg.contract
            if leg.settled is None and c.expiry is not None and now_s >= expiry_instant(c.expiry):
                assert c.strike is not None
                leg.settled = intrinsic_value(1.0 if c.right == "C" else -1.0, spot, c.strike)
                leg.greeks = (leg.settled, 0.0, 0.0, 0.0, 0.0)
                settled.append(leg)
        self._recount()
        return settled

    def compute_greeks(self, spot: float, now: datetime, params: StrategyParams) -> BookGreeks:
        """Reprice every leg at `spot`; IV per leg: broker model → solved from mid → params.fallback_vol."""
        delta = gamma = theta = vega = 0.0
        valid = spot > 0 and math.isfinite(spot)
        fallbacks = 0
        t_by_expiry: dict[date, float] = {}  # a straddle's two legs share one expiry
        rate, div = params.risk_free_rate, params.dividend_yield
        for leg in self.legs.values():
            c = leg.contract
            assert c.right in ("C", "P") and c.strike is not None and c.expiry is not None
            if leg.settled is not None:
                continue  # expired: no delta, no gamma, no time left
            t_years = t_by_expiry.get(c.expiry)
            if t_years is None:
                t_years = t_by_expiry[c.expiry] = year_fraction(c.expiry, now)
            iv = self._resolve_iv(leg, spot, t_years, params)
            fallbacks += leg.iv_source == "fallback"
            # bs_greeks' own numbers, without its named tuple: this runs for every leg on every quote
            leg.greeks = bs_scalar(1.0 if c.right == "C" else -1.0, spot, c.strike, t_years, rate, div, iv)
            _, g_delta, g_gamma, g_theta, g_vega = leg.greeks
            units = leg.qty * c.multiplier
            delta += units * g_delta
            gamma += units * g_gamma
            theta += units * g_theta
            vega += units * g_vega
            valid = valid and math.isfinite(g_delta) and math.isfinite(g_gamma)
        return BookGreeks(delta, gamma, theta, vega, valid, fallbacks)

    @staticmethod
    def _resolve_iv(leg: Leg, spot: float, t_years: float, params: StrategyParams) -> float:
        if leg.broker_iv is not None and leg.broker_iv > 0 and math.isfinite(leg.broker_iv):
            leg.iv, leg.iv_source = leg.broker_iv, "broker"
        elif leg.iv_source == "mid" and leg.iv is not None:
            pass  # solved when the option quote arrived; re-solving on every stock tick would cost the hot path
        else:
            leg.iv, leg.iv_source = params.fallback_vol, "fallback"
        return leg.iv

    def on_option_quote(self, con_id: int, bid: float, ask: float, greeks: LegGreeks | None, iv: float | None,
                        spot: float | None, now: datetime, params: StrategyParams) -> None:
        leg = self.legs.get(con_id)
        if leg is None or leg.settled is not None:
            return
        leg.bid, leg.ask = bid, ask
        broker_iv = greeks.iv if greeks is not None else iv
        leg.broker_iv = broker_iv if broker_iv is not None and broker_iv > 0 and math.isfinite(broker_iv) else None
        if leg.broker_iv is None and leg.mid is not None and spot is not None:
            c = leg.contract
            assert c.right is not None and c.strike is not None and c.expiry is not None
            solved = implied_vol(c.right, leg.mid, spot, c.strike, year_fraction(c.expiry, now),
                                 params.risk_free_rate, params.dividend_yield)
            if solved is not None:
                leg.iv, leg.iv_source = solved, "mid"
