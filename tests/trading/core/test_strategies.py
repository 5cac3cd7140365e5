"""Strategies publish targets and never trade: straddle_keeper opens, keeps and rolls; fixed_target repeats its
list; the registry builds a kind by name and refuses a bad one or a bad param by name."""
from __future__ import annotations

from datetime import date, timedelta

import pytest

from trading.core.commander import contract_key
from trading.core.events import Contract
from trading.core.strategies import REGISTRY, MarketView, build
from trading.errors import ConfigError

TODAY = date(2026, 12, 2)
EXPIRIES = [TODAY + timedelta(days=d) for d in (2, 9, 23, 30, 58)]


def chain(spot: float = 180.0) -> MarketView:
    options = {}
    for expiry in EXPIRIES:
        for strike in (170.0, 175.0, 180.0, 185.0, 190.0):
            for right in "CP":
                contract = Contract(len(options) + 1, "NVDA", "OPT", right, strike, expiry, 100,  # type: ignore[arg-type]
                                    f"NVDA {expiry:%y%m%d}{right}{strike:g}")
                options[(right, strike, expiry)] = (contract, 5.0)
    return MarketView("NVDA", spot, TODAY, options)


def held(market: MarketView, expiry: date, strike: float, qty: int = 2) -> dict:
    return {contract_key(market.options[(r, strike, expiry)][0]): qty for r in "CP"}


def wanted(targets) -> set:
    return {(t.contract.right, t.contract.strike, (t.contract.expiry - TODAY).days, t.qty) for t in targets}


def test_straddle_keeper_opens_at_the_strike_nearest_spot_inside_the_dte_window():
    keeper = build("straddle_keeper", {"straddles": 2, "min_dte": 20, "max_dte": 45})

    targets, meta = keeper.targets(chain(spot=183.0), {})

    assert wanted(targets) == {("C", 185.0, 23, 2), ("P", 185.0, 23, 2)}
    assert meta["action"] == "open"


def test_straddle_keeper_keeps_a_healthy_straddle():
    market = chain(spot=181.0)
    targets, meta = build("straddle_keeper", {"straddles": 2}).targets(market, held(market, EXPIRIES[3], 180.0))

    assert wanted(targets) == {("C", 180.0, 30, 2), ("P", 180.0, 30, 2)} and meta["action"] == "keep"


@pytest.mark.parametrize(("spot", "expiry", "new_strike", "why"), [(181.0, EXPIRIES[0], 180.0, "roll: dte"),
                                                                   (192.0, EXPIRIES[3], 190.0, "roll: spot drift")])
def test_straddle_keeper_rolls_into_the_window_and_sets_the_old_legs_to_zero(spot, expiry, new_strike, why):
    market = chain(spot=spot)
    targets, meta = build("straddle_keeper", {"straddles": 2, "roll_dte": 7}).targets(
        market, held(market, expiry, 180.0))

    old = (expiry - TODAY).days
    assert wanted(targets) == {("C", new_strike, 23, 2), ("P", new_strike, 23, 2), ("C", 180.0, old, 0),
                               ("P", 180.0, old, 0)}
    assert meta["action"].startswith(why)


def test_fixed_target_repeats_its_list_priced_from_the_chain():
    expiry = EXPIRIES[2].isoformat()
    strategy = build("fixed_target", {"targets": [{"right": "C", "strike": 180, "expiry": expiry, "qty": 3}]})

    targets, _ = strategy.targets(chain(), {})

    assert wanted(targets) == {("C", 180.0, 23, 3)} and targets[0].price_usd == 5.0


@pytest.mark.parametrize(("kind", "params", "field"), [
    ("martingale", {}, "kind"),
    ("straddle_keeper", {"straddles": -1}, "params.straddles"),
    ("straddle_keeper", {"min_dte": 30, "max_dte": 10}, "params.max_dte"),
    ("fixed_target", {"targets": [{"right": "X", "strike": 1, "expiry": "2026-12-18", "qty": 1}]},
     "params.targets[0]"),
])
def test_a_bad_kind_or_param_is_refused_by_name(kind, params, field):
    with pytest.raises(ConfigError) as info:
        build(kind, params)
    assert info.value.field == field


def test_the_registry_knows_both_kinds():
    assert set(REGISTRY) >= {"straddle_keeper", "fixed_target"}
