"""Strategies → reconcile → commander, the records (seed 003, DESIGN §11). A run is requested by the web, the CLI
or the daily schedule (`commander_request`: a queued CommanderRun and a `commander_run` control command); only the
daemon talks to the broker, so it reconciles the account, reads the option chain and then calls
`commander_execute`, which runs the strategies (intents), stores the snapshot, decides
(`trading.core.commander.decide`) and records the run with its planned orderRefs before anything could be sent.

A live run sends the orders of the strategies whose sending the operator enabled (the daemon's
`_commander_send`, through the same fence and journal as a hedge); every other run is a dry run and writes its
full record.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from trading.core.calendar import ET, MarketCalendar, trading_date
from trading.core.commander import (
    COMMANDER_REF_PREFIX,
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
from trading.models import CommanderRun, ControlCommand, Operation, PortfolioSnapshot, Strategy, StrategyIntent
from trading.services import control_command_create


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
            target_positions=[{"contract": contract_json(t.contract), "qty": t.qty,  # JSON has no NaN: null
                               "price_usd": t.price_usd if math.isfinite(t.price_usd) else None} for t in targets])
    except (ConfigError, LookupError, ValueError, ArithmeticError) as exc:  # reported by the commander as errored
        why = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
        return StrategyIntent.objects.create(strategy=strategy, updated_at=now, status=StrategyIntent.Status.ERROR,
                                             error_message=why)


def _is_bifrost_leg(position: Mapping[str, Any]) -> bool:
    """A managed option leg: the commander's to trade; every other position is the operator's or the hedger's."""
    return bool(position.get("managed")) and position["sec_type"] == "OPT"


def held_options(positions: Iterable[Mapping[str, Any]]) -> dict[ContractKey, int]:
    """Bifrost's option legs (the managed ones) among the account's positions."""
    return {contract_key(contract_from_json(p)): int(p["qty"]) for p in positions if _is_bifrost_leg(p) and p["qty"]}


def snapshot_create(*, account: Mapping[str, Any], positions: Iterable[Mapping[str, Any]],
                    open_orders: Sequence[Mapping[str, Any]] = (), now: datetime) -> PortfolioSnapshot:
    """The account as the daemon's reconcile just saw it: managed option legs are Bifrost's, every other position
    is the operator's (the underlying's shares, hedge and manual together, are never the commander's)."""
    holdings = [{"contract": contract_json(contract_from_json(p)), "qty": p["qty"],
                 "owner": "bifrost" if _is_bifrost_leg(p) else "manual"}
                for p in positions if p["qty"]]
    return PortfolioSnapshot.objects.create(
        taken_at=now, account=account.get("account") or "", holdings=holdings, open_orders=list(open_orders),
        net_liquidation=account.get("net_liquidation"), available_funds=account.get("available_funds"))


def rules_configured() -> Rules:
    return Rules(max_contracts_per_underlying=settings.BIFROST_COMMANDER_MAX_CONTRACTS,
                 max_total_premium_usd=settings.BIFROST_COMMANDER_MAX_PREMIUM_USD,
                 limit_offset_usd=settings.BIFROST_COMMANDER_LIMIT_OFFSET_USD)


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
    targets = tuple(Target(contract_from_json(t["contract"]), int(t["qty"]),
                           math.nan if t["price_usd"] is None else float(t["price_usd"])) for t in row.target_positions)
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


def commander_request(*, dry_run: bool = True, strategies: Sequence[str] = (), user: str, source: str = "api",
                      trigger: str = CommanderRun.Trigger.MANUAL) -> CommanderRun:
    """Queue a run for the daemon. An unknown or disabled slug is refused (ConfigError) before anything is
    stored; with no daemon running the run fails at once, naming why."""
    asked = strategies_asked(strategies)
    run = CommanderRun.objects.create(executed_at=timezone.now(), trigger=trigger, dry_run=dry_run,
                                      requested_by=user, strategies=[s.slug for s in asked] if strategies else [])
    command = control_command_create(command=ControlCommand.Command.COMMANDER_RUN, reason=f"commander run #{run.pk}",
                                     user=user, source=source, payload={"run_id": run.pk})
    if command.state in (ControlCommand.State.EXPIRED, ControlCommand.State.REJECTED):
        commander_fail(run_id=run.pk, step="queue", why=command.result, now=timezone.now())
        run.refresh_from_db()
    return run


def commander_fail(*, run_id: int, step: str, why: str, now: datetime) -> None:
    """A run that could not finish: it says whether any of its orders had left."""
    run = CommanderRun.objects.get(pk=run_id)
    if run.state not in (CommanderRun.State.QUEUED, CommanderRun.State.RUNNING):
        return
    sent = [o for o in run.orders if o["outcome"] != "planned" and not o["outcome"].startswith("not sent")]
    run.state = CommanderRun.State.FAILED
    run.summary = f"failed at {step}: {why}; " + (f"{len(sent)} order(s) had left: see their outcomes" if sent
                                                  else "nothing sent")
    run.steps = [*run.steps, {"step": step, "by": "daemon" if step != "queue" else "web", "at": now.isoformat(),
                              "outcome": why}]
    run.save(update_fields=["state", "summary", "steps"])
    Operation.objects.create(ts=now, kind=Operation.Kind.COMMANDER_RUN, actor=run.requested_by,
                             message=f"commander run #{run.pk} failed: {run.summary}")


def commander_execute(*, run_id: int | None, market: MarketView, account: Mapping[str, Any],
                      positions: Sequence[Mapping[str, Any]], open_orders: Iterable[tuple[str, float]] = (),
                      steps: Sequence[Mapping[str, Any]] = (), now: datetime) -> CommanderRun:
    """The daemon's part after its broker steps: publish the strategies' intents, store the snapshot, decide and
    record (see `commander_decide`). A run already past `queued` is returned as it is, so a redelivered command
    never decides (or sends) twice; no run_id (a bare `control commander_run`) is a dry run of every strategy."""
    with transaction.atomic():
        if run_id is None:
            run = CommanderRun.objects.create(executed_at=now, requested_by="control", dry_run=True)
        else:
            run = CommanderRun.objects.select_for_update().get(pk=run_id)
            if run.state != CommanderRun.State.QUEUED:
                return run
        run.state = CommanderRun.State.RUNNING
        run.executed_at = now
        run.steps = [*steps]
        run.save(update_fields=["state", "executed_at", "steps"])
    try:
        strategies = strategies_asked(run.strategies)
    except ConfigError as exc:
        commander_fail(run_id=run.pk, step="strategies", why=exc.reason, now=now)
        run.refresh_from_db()
        return run
    held = held_options(positions)
    for strategy in strategies:
        intent_publish(strategy=strategy, market=market, held=held, now=now)
    snapshot = snapshot_create(account=account, positions=positions, open_orders=pending_rows(open_orders), now=now)
    return commander_decide(run=run, snapshot=snapshot, strategies=strategies, underlying=market.underlying,
                            rules=rules_configured(), now=now)


def commander_decide(*, run: CommanderRun, snapshot: PortfolioSnapshot, strategies: Sequence[Strategy],
                     underlying: str, rules: Rules, now: datetime) -> CommanderRun:
    """Decide and record: the intents read (with their updated_at), the snapshot, the decision and the planned
    orders with their orderRefs, all persisted in one transaction before anything could be sent."""
    # A live run sends for the strategies whose sending the operator enabled, and decides for them only; with none
    # enabled it is a dry run of them all.
    senders = [s for s in strategies if s.send_enabled] if not run.dry_run else []
    silent = [s.slug for s in strategies if s not in senders] if senders else []
    strategies = senders or strategies
    latest: dict[str, StrategyIntent] = {}
    for strategy in strategies:
        row = strategy.intents.order_by("-updated_at", "-id").first()
        if row is not None:
            latest[strategy.slug] = row
    decision = decide(_portfolio(snapshot, underlying), {slug: _intent(row) for slug, row in latest.items()},
                      [StrategySlot(s.slug, s.capital_allocation) for s in strategies], window_start(now), rules)
    sending = bool(senders)
    with transaction.atomic():
        run.snapshot = snapshot
        run.intents_read = [{"strategy": slug, "intent_id": row.pk, "updated_at": row.updated_at.isoformat()}
                            for slug, row in latest.items()]
        run.decision = decision.as_dict()
        run.orders = [{**order, "order_ref": f"{COMMANDER_REF_PREFIX}{run.pk}:{n}", "outcome": "planned"}
                      for n, order in enumerate(run.decision["orders"], start=1)]
        skipped = sum(len(v) for v in decision.skipped.values())
        planned = (f"{len(run.orders)} order(s) planned, {len(decision.clipped)} clip(s), {skipped} strategy(ies) "
                   "skipped")
        step = {"step": "decide", "by": "daemon", "at": now.isoformat(), "outcome": planned}
        if sending:  # the daemon sends them next (its `_commander_send`), then `commander_orders_update`
            run.summary = planned + (f"; not sending for {', '.join(silent)}" if silent else "")
            run.steps = [*run.steps, step]
            if not run.orders:
                run.state = CommanderRun.State.COMPLETED
                run.summary = f"{run.summary}: nothing to send"
        else:
            why = "dry-run" if run.dry_run else "dry-run (no strategy has sending enabled)"
            run.state = CommanderRun.State.COMPLETED
            run.dry_run = True
            run.summary = f"{why}: {planned}, none sent"
            run.steps = [*run.steps, step]
        run.save()
        Operation.objects.create(ts=now, kind=Operation.Kind.COMMANDER_RUN, actor=run.requested_by,
                                 message=f"commander run #{run.pk} {run.state}: {run.summary}")
        lame = {kind: sorted(decision.skipped[kind]) for kind in ("stale", "missing") if decision.skipped[kind]}
        if lame:  # an alert (monitor.alerts): a strategy that did not publish today is not being managed
            Operation.objects.create(ts=now, kind=Operation.Kind.STRATEGY_SKIPPED, actor=run.requested_by,
                                     message=f"commander run #{run.pk} skipped "
                                             + "; ".join(f"{k}: {', '.join(v)}" for k, v in lame.items()))
    return run


def commander_orders_update(*, run_id: int, outcomes: Mapping[str, str], final: bool, now: datetime
                            ) -> CommanderRun:
    """The daemon's word on the orders a run sent: each order's outcome ("not sent: ...", "submitted", "working
    ...", "filled ...", "cancelled", "rejected: ..."); when `final`, the run's state: completed when every order
    filled, failed when none left us, partial_success otherwise (a limit still resting included)."""
    with transaction.atomic():
        run = CommanderRun.objects.select_for_update().get(pk=run_id)
        run.orders = [{**o, "outcome": outcomes.get(o["order_ref"], o["outcome"])} for o in run.orders]
        states = [o["outcome"] for o in run.orders]
        if final:
            filled = sum(x.startswith("filled") for x in states)
            unsent = sum(x.startswith(("not sent", "rejected")) for x in states)
            run.state = (CommanderRun.State.COMPLETED if filled == len(states) else
                         CommanderRun.State.FAILED if unsent == len(states) else CommanderRun.State.PARTIAL_SUCCESS)
            run.summary = f"{run.summary}; {filled} of {len(states)} order(s) filled" + (
                f", {unsent} not sent or rejected" if unsent else "")
            Operation.objects.create(ts=now, kind=Operation.Kind.COMMANDER_RUN, actor=run.requested_by,
                                     message=f"commander run #{run.pk} {run.state}: {run.summary}")
        run.steps = [*run.steps, {"step": "execute" if not final else "follow", "by": "daemon",
                                  "at": now.isoformat(), "outcome": ", ".join(states)}]
        run.save(update_fields=["orders", "state", "summary", "steps"])
    return run


def pending_rows(open_orders: Iterable[tuple[str, float]]) -> list[dict[str, Any]]:
    """Bifrost's commander orders still open at the broker, as (orderRef, signed remaining qty), with the contract
    their run planned: they count as pending in the next decision, so a retry never doubles them."""
    rows = []
    for ref, remaining in open_orders:
        run_id, _, n = ref.removeprefix(COMMANDER_REF_PREFIX).partition(":")
        run = CommanderRun.objects.filter(pk=int(run_id)).first() if run_id.isdigit() and n.isdigit() else None
        if run is not None and 0 < int(n) <= len(run.orders):
            rows.append({"contract": run.orders[int(n) - 1]["contract"], "qty": remaining, "order_ref": ref})
    return rows


def commander_window_due(now: datetime, calendar: MarketCalendar) -> bool:
    """Whether the scheduled run is due: a trading day in New York, past the configured US/Eastern time, and no
    scheduled run yet on this trading date (django-q2 schedules run in UTC, so the task decides itself)."""
    day = trading_date(now)
    if calendar.session_bounds(day) is None:
        return False
    hour, minute = (int(x) for x in settings.BIFROST_COMMANDER_WINDOW.split(":"))
    if now.astimezone(ET).time() < time(hour, minute):
        return False
    return not CommanderRun.objects.filter(trigger=CommanderRun.Trigger.SCHEDULED,
                                           executed_at__gte=window_start(now)).exists()


def strategy_sending_set(*, strategy: Strategy, enabled: bool, user: str, now: datetime) -> None:
    """The operator's switch from dry-run to sending for one strategy, audited in the operations log."""
    if strategy.send_enabled == enabled:
        return
    with transaction.atomic():
        Strategy.objects.filter(pk=strategy.pk).update(send_enabled=enabled)
        strategy.send_enabled = enabled
        Operation.objects.create(ts=now, kind=Operation.Kind.STRATEGY_SENDING, actor=user,
                                 message=f"strategy {strategy.slug}: sending {'enabled' if enabled else 'disabled'}")
