"""The pure commander (seed 003): skipped intents are reported, allocation and global rules clip with the rule
named, and the diff, applied to what Bifrost owns and has pending, gives the final target without ever touching a
manual holding or the hedger's shares."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from trading.core.commander import (
    RULE_ALLOCATION,
    RULE_HEDGER,
    RULE_PER_UNDERLYING,
    RULE_TOTAL_PREMIUM,
    Intent,
    Portfolio,
    Rules,
    StrategySlot,
    Target,
    contract_key,
    decide,
    premium_usd,
)
from trading.core.events import Contract

WINDOW = datetime(2026, 12, 2, 20, 30, tzinfo=UTC)
FRESH = WINDOW + timedelta(minutes=1)


def option(right: str, strike: float, expiry: date = date(2026, 12, 18), symbol: str = "NVDA") -> Contract:
    return Contract(hash((symbol, right, strike, expiry)) & 0xFFFFFF, symbol, "OPT", right, strike, expiry, 100,  # type: ignore[arg-type]
                    f"{symbol} {expiry:%y%m%d}{right}{strike:g}")


SHARES = Contract(1, "NVDA", "STK")
CALL, PUT = option("C", 180.0), option("P", 180.0)


def portfolio(owned=None, manual=None, pending=None, nlv=1_000_000.0) -> Portfolio:
    def keyed(items):
        return {contract_key(c): q for c, q in (items or {}).items()}
    return Portfolio(keyed(owned), keyed(manual), keyed(pending), nlv, nlv / 2, "NVDA")


def intent(slug: str, *targets: Target, at: datetime = FRESH) -> Intent:
    return Intent(slug, at, "success", tuple(targets))


def test_stale_missing_and_errored_intents_are_skipped_and_reported():
    intents = {"old": intent("old", Target(CALL, 1, 5.0), at=WINDOW - timedelta(hours=1)),
               "broken": Intent("broken", FRESH, "error", error="no option chain"),
               "ok": intent("ok", Target(CALL, 2, 5.0))}
    slots = [StrategySlot(s, 1.0) for s in ("old", "broken", "ok", "absent")]

    decision = decide(portfolio(), intents, slots, WINDOW, Rules())

    assert set(decision.skipped["stale"]) == {"old"} and "before the window start" in decision.skipped["stale"]["old"]
    assert decision.skipped["missing"] == {"absent": "no intent published"}
    assert decision.skipped["errored"] == {"broken": "no option chain"}
    assert decision.final_target == {contract_key(CALL): 2}


def test_a_strategy_over_its_allocation_is_clipped_with_the_rule_named():
    # 10 straddles at 5.00 + 4.00 = 9,000 USD of premium; 0.5 % of 1M = 5,000 USD allowed.
    intents = {"keeper": intent("keeper", Target(CALL, 10, 5.0), Target(PUT, 10, 4.0))}

    decision = decide(portfolio(), intents, [StrategySlot("keeper", 0.005)], WINDOW, Rules())

    assert decision.aggregated_target == {contract_key(CALL): 10, contract_key(PUT): 10}
    assert decision.final_target == {contract_key(CALL): 5, contract_key(PUT): 5}
    assert {(c.rule, c.before, c.after, c.strategy) for c in decision.clipped} == {(RULE_ALLOCATION, 10, 5, "keeper")}
    assert decision.as_dict()["clipped"][0]["rule"] == RULE_ALLOCATION


def test_global_rules_cap_contracts_per_underlying_and_total_premium():
    intents = {"a": intent("a", Target(CALL, 6, 5.0)), "b": intent("b", Target(PUT, 6, 5.0))}
    slots = [StrategySlot("a", 1.0), StrategySlot("b", 1.0)]

    capped = decide(portfolio(), intents, slots, WINDOW, Rules(max_contracts_per_underlying=8))
    assert capped.final_target == {contract_key(CALL): 4, contract_key(PUT): 4}
    assert {c.rule for c in capped.clipped} == {RULE_PER_UNDERLYING}

    cheap = decide(portfolio(), intents, slots, WINDOW, Rules(max_total_premium_usd=3_000.0))
    assert cheap.final_target == {contract_key(CALL): 3, contract_key(PUT): 3}
    assert {c.rule for c in cheap.clipped} == {RULE_TOTAL_PREMIUM}


def test_the_hedgers_shares_are_never_a_target():
    intents = {"greedy": intent("greedy", Target(SHARES, 500, 180.0), Target(CALL, 1, 5.0))}

    decision = decide(portfolio(owned={SHARES: 300}), intents, [StrategySlot("greedy", 1.0)], WINDOW, Rules())

    assert contract_key(SHARES) not in decision.final_target and contract_key(SHARES) not in decision.diff
    assert [(c.rule, c.before, c.after) for c in decision.clipped] == [(RULE_HEDGER, 500, 0)]


def test_a_roll_buys_the_new_legs_sells_the_old_and_counts_open_orders_as_pending():
    new_call, new_put = option("C", 185.0, date(2027, 1, 15)), option("P", 185.0, date(2027, 1, 15))
    intents = {"keeper": intent("keeper", Target(CALL, 0, 1.0), Target(PUT, 0, 2.0), Target(new_call, 2, 8.0),
                                Target(new_put, 2, 7.5))}
    account = portfolio(owned={CALL: 2, PUT: 2}, manual={CALL: 3}, pending={new_call: 1})

    decision = decide(account, intents, [StrategySlot("keeper", 1.0)], WINDOW, Rules(limit_offset_usd=0.05))

    orders = {(o.contract.local_symbol, o.action, o.qty, o.limit_price_usd) for o in decision.orders}
    assert orders == {(CALL.local_symbol, "SELL", 2, 0.95), (PUT.local_symbol, "SELL", 2, 1.95),
                      (new_call.local_symbol, "BUY", 1, 8.05), (new_put.local_symbol, "BUY", 2, 7.55)}


def test_a_contract_no_usable_intent_names_is_left_alone():
    account = portfolio(owned={CALL: 2, PUT: 2})
    stale = {"keeper": intent("keeper", Target(CALL, 0, 1.0), at=WINDOW - timedelta(days=1))}

    assert decide(account, stale, [StrategySlot("keeper", 1.0)], WINDOW, Rules()).orders == []


CONTRACTS = [option(r, k, e) for r in "CP" for k in (170.0, 180.0) for e in (date(2026, 12, 18), date(2027, 1, 15))]
CONTRACTS += [option("C", 50.0, symbol="AMD"), SHARES]
quantities = st.dictionaries(st.sampled_from(CONTRACTS), st.integers(-20, 20), max_size=6)


@settings(max_examples=300, deadline=None)
@given(owned=quantities, manual=quantities, pending=quantities,
       wishes=st.lists(st.tuples(quantities, st.floats(0.0, 0.05)), min_size=1, max_size=3),
       per_underlying=st.none() | st.integers(0, 30), total_premium=st.none() | st.floats(0.0, 50_000.0))
def test_the_diff_applied_to_holdings_gives_the_final_target_and_never_touches_manual_or_hedge(
        owned, manual, pending, wishes, per_underlying, total_premium):
    owned.pop(SHARES, None)  # the hedger's shares are not in Bifrost's option holdings
    pending.pop(SHARES, None)
    intents, slots = {}, []
    for n, (targets, allocation) in enumerate(wishes):
        slug = f"s{n}"
        intents[slug] = intent(slug, *(Target(c, q, 1.0 + c.strike / 100 if c.strike else 180.0)
                                       for c, q in targets.items()))
        slots.append(StrategySlot(slug, allocation))
    rules = Rules(max_contracts_per_underlying=per_underlying, max_total_premium_usd=total_premium)
    account = portfolio(owned, manual, pending, nlv=200_000.0)

    decision = decide(account, intents, slots, WINDOW, rules)

    for key, target in decision.final_target.items():
        assert account.owned.get(key, 0) + account.pending.get(key, 0) + decision.diff.get(key, 0) == target
    assert set(decision.diff) <= set(decision.final_target)
    assert all(k[1] == "OPT" for k in decision.final_target)  # never the hedger's shares
    assert sum(o.qty if o.action == "BUY" else -o.qty for o in decision.orders) == sum(decision.diff.values())
    # Manual holdings change nothing the commander decides.
    assert decide(portfolio(owned, {}, pending, nlv=200_000.0), intents, slots, WINDOW, rules).as_dict() == \
        decision.as_dict()
    if per_underlying is not None:
        for symbol in {k[0] for k in decision.final_target}:
            assert sum(abs(q) for k, q in decision.final_target.items() if k[0] == symbol) <= per_underlying
    if total_premium is not None:
        assert sum(premium_usd(q, decision.prices_usd[k], 100) for k, q in decision.final_target.items()) <= \
            total_premium + 1e-6
