"""The commander of seed 003: strategies publish the positions they want (intents) and never trade; the commander
reads the account as reconcile saw it and those intents, skips the stale, missing and errored ones, aggregates the
rest per contract, caps each strategy's premium at its capital allocation, applies the global risk rules, and
diffs the final target against what Bifrost owns and has pending. Manual holdings are never in a diff and the
hedger's shares of the underlying are never a target: the engine's fast loop owns those.

Pure: the caller reads the account and the intents, assigns orderRefs, places the orders and keeps the record.
A contract that no usable intent names is left as it is, so a skipped strategy's legs are not closed by accident.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from trading.core.events import Contract

ContractKey = tuple[str, str, str | None, float | None, date | None]  # symbol, sec_type, right, strike, expiry

COMMANDER_REF_PREFIX = "bifrost:cmd:"  # the commander's orderRefs: bifrost:cmd:<run>:<n>, never a hedge's

RULE_HEDGER = "hedger_owns_shares"
RULE_ALLOCATION = "capital_allocation"
RULE_PER_UNDERLYING = "max_contracts_per_underlying"
RULE_TOTAL_PREMIUM = "max_total_premium_usd"


def contract_key(contract: Contract) -> ContractKey:
    """A contract's identity across brokers and strategies (con_ids are the broker's, not a strategy's)."""
    return contract.symbol, contract.sec_type, contract.right, contract.strike, contract.expiry


@dataclass(frozen=True, slots=True)
class Target:
    """One contract a strategy wants to hold: `qty` contracts (negative is short) at `price_usd`, the option's mid
    per share (premium and the limit price are computed from it)."""

    contract: Contract
    qty: int
    price_usd: float


@dataclass(frozen=True, slots=True)
class Intent:
    """A strategy's latest published wish."""

    strategy: str
    updated_at: datetime
    status: Literal["success", "error"]
    targets: tuple[Target, ...] = ()
    error: str = ""


@dataclass(frozen=True, slots=True)
class StrategySlot:
    """A strategy the run asked for: its share of net liquidation it may spend on premium."""

    slug: str
    capital_allocation: float


@dataclass(frozen=True, slots=True)
class Portfolio:
    """The account as reconcile saw it: Bifrost's holdings, the operator's manual ones (reported, never diffed),
    Bifrost's open orders (signed, counted as if filled) and the account's funds."""

    owned: Mapping[ContractKey, int]
    manual: Mapping[ContractKey, int]
    pending: Mapping[ContractKey, int]
    net_liquidation_usd: float
    available_funds_usd: float
    hedged_underlying: str


@dataclass(frozen=True, slots=True)
class Rules:
    """Global risk rules; None means no limit. Orders are limits at mid ± `limit_offset_usd` per share."""

    max_contracts_per_underlying: int | None = None
    max_total_premium_usd: float | None = None
    limit_offset_usd: float = 0.05


@dataclass(frozen=True, slots=True)
class PlannedOrder:
    contract: Contract
    action: Literal["BUY", "SELL"]
    qty: int
    limit_price_usd: float


@dataclass(frozen=True, slots=True)
class Clip:
    contract: Contract
    rule: str
    before: int
    after: int
    strategy: str = ""


@dataclass
class Decision:
    aggregated_target: dict[ContractKey, int] = field(default_factory=dict)
    final_target: dict[ContractKey, int] = field(default_factory=dict)
    diff: dict[ContractKey, int] = field(default_factory=dict)
    orders: list[PlannedOrder] = field(default_factory=list)
    skipped: dict[str, dict[str, str]] = field(default_factory=lambda: {"stale": {}, "missing": {}, "errored": {}})
    clipped: list[Clip] = field(default_factory=list)
    contracts: dict[ContractKey, Contract] = field(default_factory=dict)
    prices_usd: dict[ContractKey, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The audit record's JSON: every contract spelled out, quantities as ints."""
        def rows(quantities: Mapping[ContractKey, int]) -> list[dict[str, Any]]:
            return [{"contract": contract_json(self.contracts[k]), "qty": q} for k, q in sorted(
                quantities.items(), key=lambda item: _sort_key(item[0]))]

        return {
            "aggregated_target": rows(self.aggregated_target),
            "final_target": rows(self.final_target),
            "diff": rows(self.diff),
            "orders": [{"contract": contract_json(o.contract), "action": o.action, "qty": o.qty,
                        "limit_price_usd": o.limit_price_usd} for o in self.orders],
            "skipped": {kind: dict(sorted(reasons.items())) for kind, reasons in self.skipped.items()},
            "clipped": [{"contract": contract_json(c.contract), "rule": c.rule, "from": c.before, "to": c.after,
                         **({"strategy": c.strategy} if c.strategy else {})} for c in self.clipped],
        }


def contract_json(contract: Contract) -> dict[str, Any]:
    return {"con_id": contract.con_id, "symbol": contract.symbol, "sec_type": contract.sec_type,
            "right": contract.right, "strike": contract.strike,
            "expiry": contract.expiry.isoformat() if contract.expiry else None,
            "multiplier": contract.multiplier, "local_symbol": contract.local_symbol}


def _sort_key(key: ContractKey) -> tuple[Any, ...]:
    symbol, sec_type, right, strike, expiry = key
    return symbol, sec_type, expiry or date.min, strike or 0.0, right or ""


def premium_usd(qty: int, price_usd: float, multiplier: int) -> float:
    """What holding `qty` contracts is worth at `price_usd` per share, long or short."""
    return abs(qty) * price_usd * multiplier


def decide(portfolio: Portfolio, intents: Mapping[str, Intent], strategies: Sequence[StrategySlot],
           window_start: datetime, rules: Rules) -> Decision:
    """The commander's decision for the strategies asked for (see the module docstring)."""
    decision = Decision()
    per_strategy: list[tuple[str, list[Target]]] = []
    for slot in strategies:
        intent = intents.get(slot.slug)
        if intent is None:
            decision.skipped["missing"][slot.slug] = "no intent published"
        elif intent.status != "success":
            decision.skipped["errored"][slot.slug] = intent.error or "the strategy reported an error"
        elif intent.updated_at < window_start:
            decision.skipped["stale"][slot.slug] = (f"updated {intent.updated_at.isoformat()}, before the window "
                                                    f"start {window_start.isoformat()}")
        elif (unpriced := [t for t in intent.targets if not (t.price_usd > 0 and math.isfinite(t.price_usd))]):
            contract = unpriced[0].contract
            decision.skipped["errored"][slot.slug] = f"no price for {contract.local_symbol or contract_key(contract)}"
        else:
            per_strategy.append((slot.slug, _allocated(slot, intent.targets, portfolio, decision)))
    for _, targets in per_strategy:
        for target in targets:
            key = contract_key(target.contract)
            decision.contracts.setdefault(key, target.contract)
            decision.prices_usd.setdefault(key, target.price_usd)
            decision.final_target[key] = decision.final_target.get(key, 0) + target.qty
    _apply_global_rules(decision, rules)
    for key in sorted(decision.final_target, key=_sort_key):
        change = decision.final_target[key] - portfolio.owned.get(key, 0) - portfolio.pending.get(key, 0)
        if change == 0:
            continue
        decision.diff[key] = change
        price = decision.prices_usd[key]
        buy = change > 0
        limit = max(price + rules.limit_offset_usd if buy else price - rules.limit_offset_usd, 0.01)
        decision.orders.append(PlannedOrder(decision.contracts[key], "BUY" if buy else "SELL", abs(change),
                                            round(limit, 2)))
    return decision


def _allocated(slot: StrategySlot, targets: Iterable[Target], portfolio: Portfolio,
               decision: Decision) -> list[Target]:
    """A strategy's targets, recorded in the aggregate as asked, without the hedger's shares and scaled down to its
    capital allocation."""
    kept: list[Target] = []
    for target in targets:
        key = contract_key(target.contract)
        decision.contracts.setdefault(key, target.contract)
        decision.aggregated_target[key] = decision.aggregated_target.get(key, 0) + target.qty
        if target.contract.sec_type == "STK" and target.contract.symbol == portfolio.hedged_underlying:
            decision.clipped.append(Clip(target.contract, RULE_HEDGER, target.qty, 0, slot.slug))
            continue
        kept.append(target)
    budget = max(slot.capital_allocation, 0.0) * portfolio.net_liquidation_usd
    spent = sum(premium_usd(t.qty, t.price_usd, t.contract.multiplier) for t in kept)
    if spent <= budget:
        return kept
    scaled = [Target(t.contract, _scaled(t.qty, budget / spent), t.price_usd) for t in kept]
    decision.clipped += [Clip(t.contract, RULE_ALLOCATION, t.qty, s.qty, slot.slug)
                         for t, s in zip(kept, scaled, strict=True) if s.qty != t.qty]
    return scaled


def _apply_global_rules(decision: Decision, rules: Rules) -> None:
    final = decision.final_target
    if rules.max_contracts_per_underlying is not None:
        for symbol in sorted({k[0] for k in final if k[1] == "OPT"}):
            keys = [k for k in final if k[0] == symbol and k[1] == "OPT"]
            held = sum(abs(final[k]) for k in keys)
            if held > rules.max_contracts_per_underlying:
                _scale_final(decision, keys, rules.max_contracts_per_underlying / held, RULE_PER_UNDERLYING)
    if rules.max_total_premium_usd is not None:
        total = sum(premium_usd(q, decision.prices_usd[k], decision.contracts[k].multiplier) for k, q in final.items())
        if total > rules.max_total_premium_usd:
            _scale_final(decision, list(final), rules.max_total_premium_usd / total, RULE_TOTAL_PREMIUM)


def _scale_final(decision: Decision, keys: Iterable[ContractKey], factor: float, rule: str) -> None:
    for key in keys:
        before = decision.final_target[key]
        after = _scaled(before, factor)
        if after != before:
            decision.final_target[key] = after
            decision.clipped.append(Clip(decision.contracts[key], rule, before, after))


def _scaled(qty: int, factor: float) -> int:
    """qty times factor (< 1), toward zero: a limit is never exceeded by rounding."""
    return int(math.copysign(math.floor(abs(qty) * factor + 1e-9), qty))
