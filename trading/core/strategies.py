"""Strategies publish intents and never trade (seed 003): each turns a market view and Bifrost's current option
legs into the positions it wants. Pure; a third strategy is one more registered class.

- `straddle_keeper`: hold N straddles on the underlying at the strike nearest spot, expiry in a DTE window; roll
  (the new expiry/strike as target, the old legs to 0) when DTE falls below `roll_dte` or spot drifts past
  `roll_band_frac` from the strike.
- `fixed_target`: a configured list of option positions (an operator's explicit wish; handy in tests).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar

from trading.core.commander import ContractKey, Target, contract_key
from trading.core.events import Contract
from trading.errors import ConfigError

OptionKey = tuple[str, float, date]  # right, strike, expiry


@dataclass(frozen=True, slots=True)
class MarketView:
    """What a strategy may look at: the underlying's spot, today's trading date and its option chain, each option
    with its contract and mid (NaN when the broker gave no quote)."""

    underlying: str
    spot: float
    today: date
    options: Mapping[OptionKey, tuple[Contract, float]]

    def expiries(self) -> list[date]:
        return sorted({e for _, _, e in self.options})

    def strikes(self, expiry: date) -> list[float]:
        return sorted({k for _, k, e in self.options if e == expiry})

    def target(self, right: str, strike: float, expiry: date, qty: int) -> Target:
        contract, mid = self.options[(right, strike, expiry)]
        return Target(contract, qty, mid)


class Strategy:
    """A strategy of one `kind`, built from its params (ConfigError names a bad one)."""

    kind: ClassVar[str]

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = dict(params)

    def targets(self, market: MarketView, held: Mapping[ContractKey, int]) -> tuple[list[Target], dict[str, Any]]:
        """The positions wanted now, and metadata worth recording with them."""
        raise NotImplementedError


REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    REGISTRY[cls.kind] = cls
    return cls


def build(kind: str, params: Mapping[str, Any]) -> Strategy:
    if kind not in REGISTRY:
        raise ConfigError("kind", f"unknown strategy kind {kind!r}; known: {sorted(REGISTRY)}")
    return REGISTRY[kind](params)


def _number(params: Mapping[str, Any], name: str, default: float, check: Callable[[float], bool],
            what: str) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not check(value):
        raise ConfigError(f"params.{name}", f"must be {what}, got {value!r}")
    return float(value)


@register
class StraddleKeeper(Strategy):
    kind = "straddle_keeper"

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        self.straddles = int(_number(params, "straddles", 1, lambda v: v >= 0 and v == int(v), "a whole number >= 0"))
        self.min_dte = int(_number(params, "min_dte", 20, lambda v: v >= 0, ">= 0"))
        self.max_dte = int(_number(params, "max_dte", 45, lambda v: v >= self.min_dte, ">= min_dte"))
        self.roll_dte = int(_number(params, "roll_dte", 7, lambda v: 0 <= v <= self.min_dte, "within 0..min_dte"))
        self.roll_band_frac = _number(params, "roll_band_frac", 0.05, lambda v: v > 0, "> 0")

    def targets(self, market: MarketView, held: Mapping[ContractKey, int]) -> tuple[list[Target], dict[str, Any]]:
        legs = {k: q for k, q in held.items() if k[0] == market.underlying and k[1] == "OPT" and q != 0}
        current = max(legs, key=lambda k: abs(legs[k]), default=None)
        why = "open"
        if current is not None:
            _, _, _, strike, expiry = current
            assert strike is not None and expiry is not None
            dte = (expiry - market.today).days
            drift = abs(market.spot / strike - 1.0)
            if dte >= self.roll_dte and drift <= self.roll_band_frac and (market.options.get(("C", strike, expiry))
                                                                         and market.options.get(("P", strike, expiry))):
                wanted = [market.target("C", strike, expiry, self.straddles),
                          market.target("P", strike, expiry, self.straddles)]
                return self._closing(market, legs, wanted), {"action": "keep", "dte": dte, "drift_frac": drift}
            why = f"roll: dte {dte} < {self.roll_dte}" if dte < self.roll_dte else f"roll: spot drift {drift:.4f}"
        expiry = self._expiry(market)
        strikes = [k for k in market.strikes(expiry) if ("C", k, expiry) in market.options
                   and ("P", k, expiry) in market.options]
        if not strikes:
            raise ConfigError("chain", f"no strike with both a call and a put for {expiry}")
        strike = min(strikes, key=lambda k: (abs(k - market.spot), k))
        wanted = [market.target("C", strike, expiry, self.straddles), market.target("P", strike, expiry, self.straddles)]
        return self._closing(market, legs, wanted), {"action": why, "expiry": expiry.isoformat(), "strike": strike,
                                                      "dte": (expiry - market.today).days}

    def _expiry(self, market: MarketView) -> date:
        """The first expiry with DTE in min_dte..max_dte, else the first one past min_dte."""
        later = [e for e in market.expiries() if (e - market.today).days >= self.min_dte]
        if not later:
            raise ConfigError("chain", f"no expiry at least {self.min_dte} days out")
        inside = [e for e in later if (e - market.today).days <= self.max_dte]
        return (inside or later)[0]

    @staticmethod
    def _closing(market: MarketView, legs: Mapping[ContractKey, int], wanted: list[Target]) -> list[Target]:
        """The wanted legs plus every other held leg of the underlying at 0, priced from the chain."""
        keys = {contract_key(t.contract) for t in wanted}
        closing = []
        for key in legs:
            if key in keys:
                continue
            _, _, right, strike, expiry = key
            assert right is not None and strike is not None and expiry is not None
            if (right, strike, expiry) in market.options:
                closing.append(market.target(right, strike, expiry, 0))
            else:  # an expired or delisted leg: no quote, the commander reports it unpriced
                closing.append(Target(Contract(0, key[0], "OPT", right, strike, expiry, 100), 0,  # type: ignore[arg-type]
                                      math.nan))
        return wanted + closing


@register
class FixedTarget(Strategy):
    kind = "fixed_target"

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__(params)
        rows = params.get("targets", [])
        if not isinstance(rows, list):
            raise ConfigError("params.targets", "must be a list of {right, strike, expiry, qty}")
        self.rows: list[tuple[OptionKey, int]] = []
        for n, row in enumerate(rows):
            try:
                right, strike, qty = row["right"], float(row["strike"]), row["qty"]
                expiry = date.fromisoformat(row["expiry"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"params.targets[{n}]", f"needs right, strike, expiry (YYYY-MM-DD), qty: {exc}") \
                    from None
            if right not in ("C", "P") or isinstance(qty, bool) or not isinstance(qty, int):
                raise ConfigError(f"params.targets[{n}]", "right must be C or P and qty a whole number")
            self.rows.append(((right, strike, expiry), qty))

    def targets(self, market: MarketView, held: Mapping[ContractKey, int]) -> tuple[list[Target], dict[str, Any]]:
        missing = [key for key, _ in self.rows if key not in market.options]
        if missing:
            raise ConfigError("params.targets", f"not in the option chain: {missing[0]}")
        return [market.target(*key, qty) for key, qty in self.rows], {"rows": len(self.rows)}
