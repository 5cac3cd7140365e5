"""Strategies → reconcile → commander, the records (seed 003, DESIGN §11): intents published by the strategies,
the portfolio snapshot reconcile saw, and the commander's run with its whole decision. The decision itself is
`trading.core.commander.decide`; the strategies are `trading.core.strategies`.

Not built yet (README, "Strategies and the commander"): the broker steps inside the daemon (option chain and
quotes for the strategies, the `commander_run` control command), sending option orders, and the schedule. A run
asked to send is therefore refused with nothing sent; a dry run writes its full record.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any

from django.db import transaction

from trading.core.calendar import ET, trading_date
from trading.core.commander import (
    ContractKey,
    Intent,
    Portfolio,
    Rules,
    StrategySlot,
    Target,
    contract_json,
    contract_key,
    decide,
)
from trading.core.events import Contract
from trading.core.strategies import MarketView, build
from trading.errors import ConfigError
from trading.models import (
    AccountSnapshot,
    CommanderRun,
    Operation,
    PortfolioSnapshot,
    Position,
    Strategy,
    StrategyIntent,
)

ORDER_REF_PREFIX = "bifrost:cmd:"


def contract_from_json(data: Mapping[str, Any]) -> Contract:
    expiry = data.get("expiry")
    return Contract(int(data.get("con_id") or 0), data["symbol"], data["sec_type"], data.get("right"),
                    data.get("strike"), date.fromisoformat(expiry) if expiry else None,
                    int(data.get("multiplier") or 1), data.get("local_symbol") or "")


def window_start(now: datetime) -> datetime:
    """The start of the current intent window: the US/Eastern trading date's midnight (an intent published
    earlier is stale)."""
    return datetime.combine(trading_date(now), time(0), ET)


def intent_publish(*, strategy: Strategy, market: MarketView, held: Mapping[ContractKey, int],
                   now: datetime) -> StrategyIntent:
    """Run one strategy on a market view and store what it wants; a strategy that fails is stored as an error
    intent (the commander skips and reports it), never raised."""
    try:
        targets, metadata = build(strategy.kind, strategy.params).targets(market, held)
        return StrategyIntent.objects.create(
            strategy=strategy, updated_at=now, status=StrategyIntent.Status.SUCCESS, metadata=metadata,
            target_positions=[{"contract": contract_json(t.contract), "qty": t.qty, "price_usd": t.price_usd}
                              for t in targets])
    except (ConfigError, KeyError, ValueError) as exc:
        return StrategyIntent.objects.create(strategy=strategy, updated_at=now, status=StrategyIntent.Status.ERROR,
                                             error_message=str(exc))


def snapshot_from_positions(*, account: str, now: datetime, open_orders: Sequence[Mapping[str, Any]] = ()
                            ) -> PortfolioSnapshot:
    """The account as the daemon's last reconcile stored it: managed option legs are Bifrost's, every other
    position is the operator's."""
    holdings = []
    for p in Position.objects.filter(account=account).exclude(qty=0):
        contract = Contract(p.con_id, p.symbol, p.sec_type, p.right or None, p.strike, p.expiry,  # type: ignore[arg-type]
                            p.multiplier, p.local_symbol)
        owner = "bifrost" if p.managed and p.sec_type == "OPT" else "manual"
        holdings.append({"contract": contract_json(contract), "qty": p.qty, "owner": owner})
    summary = AccountSnapshot.objects.filter(account=account).first()
    return PortfolioSnapshot.objects.create(
        taken_at=now, account=account, holdings=holdings, open_orders=list(open_orders),
        net_liquidation=float(summary.net_liquidation) if summary and summary.net_liquidation is not None else None,
        available_funds=float(summary.buying_power) if summary and summary.buying_power is not None else None)


def _portfolio(snapshot: PortfolioSnapshot, underlying: str) -> Portfolio:
    owned: dict[ContractKey, int] = {}
    manual: dict[ContractKey, int] = {}
    pending: dict[ContractKey, int] = {}
    for row in snapshot.holdings:
        book = owned if row["owner"] == "bifrost" else manual
        key = contract_key(contract_from_json(row["contract"]))
        book[key] = book.get(key, 0) + int(row["qty"])
    for row in snapshot.open_orders:
        key = contract_key(contract_from_json(row["contract"]))
        pending[key] = pending.get(key, 0) + int(row["qty"])
    return Portfolio(owned, manual, pending, snapshot.net_liquidation or 0.0, snapshot.available_funds or 0.0,
                     underlying)


def _intent(row: StrategyIntent) -> Intent:
    targets = tuple(Target(contract_from_json(t["contract"]), int(t["qty"]), float(t["price_usd"]))
                    for t in row.target_positions)
    status = "success" if row.status == StrategyIntent.Status.SUCCESS else "error"
    return Intent(row.strategy.slug, row.updated_at, status, targets, row.error_message)  # type: ignore[arg-type]


def strategies_asked(slugs: Iterable[str] = ()) -> list[Strategy]:
    """The enabled strategies named (all enabled ones when none is); an unknown or disabled slug is refused by
    name before anything runs."""
    slugs = list(dict.fromkeys(slugs))
    enabled = {s.slug: s for s in Strategy.objects.filter(enabled=True)}
    unknown = [s for s in slugs if s not in enabled]
    if unknown:
        raise ConfigError("strategies", f"unknown or disabled strategy {unknown[0]!r}; enabled: {sorted(enabled)}")
    return [enabled[s] for s in slugs] if slugs else list(enabled.values())


def commander_decide(*, snapshot: PortfolioSnapshot, strategies: Sequence[Strategy], underlying: str, rules: Rules,
                     now: datetime, dry_run: bool = True, user: str = "system",
                     trigger: str = CommanderRun.Trigger.MANUAL) -> CommanderRun:
    """Decide and record: the intents read (with their updated_at), the snapshot, the decision and the planned
    orders with their orderRefs, all persisted in one transaction before anything could be sent."""
    latest: dict[str, StrategyIntent] = {}
    for strategy in strategies:
        row = strategy.intents.order_by("-updated_at", "-id").first()
        if row is not None:
            latest[strategy.slug] = row
    decision = decide(_portfolio(snapshot, underlying), {slug: _intent(row) for slug, row in latest.items()},
                      [StrategySlot(s.slug, s.capital_allocation) for s in strategies], window_start(now), rules)
    sending = not dry_run and any(s.send_enabled for s in strategies)
    with transaction.atomic():
        run = CommanderRun.objects.create(
            executed_at=now, trigger=trigger, dry_run=not sending, requested_by=user, snapshot=snapshot,
            strategies=[s.slug for s in strategies], state=CommanderRun.State.RUNNING,
            intents_read=[{"strategy": slug, "intent_id": row.pk, "updated_at": row.updated_at.isoformat()}
                          for slug, row in latest.items()],
            decision=decision.as_dict())
        run.orders = [{**order, "order_ref": f"{ORDER_REF_PREFIX}{run.pk}:{n}", "outcome": "planned"}
                      for n, order in enumerate(run.decision["orders"], start=1)]
        skipped = sum(len(v) for v in decision.skipped.values())
        planned = f"{len(run.orders)} order(s) planned, {len(decision.clipped)} clip(s), {skipped} strategy(ies) skipped"
        if sending:
            run.state = CommanderRun.State.FAILED
            run.summary = f"{planned}; nothing sent: sending option orders is not built yet"
            run.steps = [{"step": "execute", "by": "web", "at": now.isoformat(), "outcome": "refused: not built"}]
        else:
            run.state = CommanderRun.State.COMPLETED
            why = "dry-run" if dry_run else "dry-run (no strategy has sending enabled)"
            run.summary = f"{why}: {planned}, none sent"
        run.save()
        Operation.objects.create(ts=now, kind=Operation.Kind.COMMANDER_RUN, actor=user,
                                 message=f"commander run #{run.pk} {run.state}: {run.summary}")
    return run


def strategy_sending_set(*, strategy: Strategy, enabled: bool, user: str, now: datetime) -> None:
    """The operator's switch from dry-run to sending for one strategy, audited in the operations log."""
    if strategy.send_enabled == enabled:
        return
    with transaction.atomic():
        Strategy.objects.filter(pk=strategy.pk).update(send_enabled=enabled)
        strategy.send_enabled = enabled
        Operation.objects.create(ts=now, kind=Operation.Kind.STRATEGY_SENDING, actor=user,
                                 message=f"strategy {strategy.slug}: sending {'enabled' if enabled else 'disabled'}")
