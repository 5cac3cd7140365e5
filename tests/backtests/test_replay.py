"""The replay: P&L accounting, causality (no look-ahead), determinism and the shape of result.json."""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from backtests.replay import (
    DECISION_HEDGE,
    EQUITY_POINTS,
    MULTIPLIER,
    Execution,
    build_structure,
    write_decisions_csv,
)
from tests.backtests.conftest import market, params, replay
from trading.core.greeks import bs_price, year_fraction
from trading.errors import ConfigError

CONTRACT_KEYS = {"params", "params_hash", "ticks", "hedges", "hedged_shares", "blocks", "pnl_total_usd",
                 "pnl_options_usd", "pnl_hedge_usd", "commissions_usd", "max_drawdown_usd", "sharpe", "equity_curve",
                 "engine_version"}


@pytest.fixture(scope="module")
def busy():
    """Two sessions of a lively market hedged often, with an IV path."""
    data = market(days=2, realized_vol=0.9, vol_of_vol=0.6)
    return data, replay(data, params(hedge_threshold_shares=40, cooldown_s=30), path="fast")


def test_result_json_has_every_contract_key(busy):
    data, outcome = busy
    result = outcome.result

    assert CONTRACT_KEYS <= set(result)
    assert result["ticks"] == len(data)
    assert result["params_hash"] == params(hedge_threshold_shares=40, cooldown_s=30).params_hash
    assert 2 <= len(result["equity_curve"]) <= EQUITY_POINTS
    assert result["equity_curve"][-1][1] == pytest.approx(result["pnl_total_usd"], abs=1e-6)
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN or infinity anywhere


def test_total_pnl_is_options_plus_hedge_minus_commissions(busy):
    r = busy[1].result

    assert r["hedges"] > 50
    assert r["pnl_total_usd"] == pytest.approx(r["pnl_options_usd"] + r["pnl_hedge_usd"] - r["commissions_usd"],
                                               abs=1e-6)


def test_hedge_pnl_equals_the_cash_flows_of_the_fills(busy):
    data, outcome = busy
    trace = outcome.trace
    last_mid = float(data.mid[-1])

    cash = -float(np.sum(trace.fill_qty * trace.fill_price))
    position = float(np.sum(trace.fill_qty))

    assert outcome.result["pnl_hedge_usd"] == pytest.approx(cash + position * last_mid, abs=1e-6)
    assert outcome.result["commissions_usd"] == pytest.approx(float(np.sum(trace.fill_commission)), abs=1e-9)


def test_options_pnl_is_the_straddle_repriced_at_the_last_tick(busy):
    data, outcome = busy
    s = outcome.structure
    p = params()
    now = data.ts(len(data) - 1)
    t = year_fraction(s.expiry, now)
    iv = float(data.iv[-1])
    value = sum(bs_price(right, float(data.mid[-1]), s.strike, t, p.risk_free_rate, p.dividend_yield, iv)
                for right in ("C", "P"))

    expected = s.straddles * MULTIPLIER * (value - s.call_cost - s.put_cost)

    assert outcome.result["pnl_options_usd"] == pytest.approx(expected, abs=1e-6)


def test_an_order_fills_no_earlier_than_its_decision_plus_latency_at_the_quote_then():
    data = market(realized_vol=0.9)
    execution = Execution(latency_ms=2500)

    trace = replay(data, params(), execution=execution).trace

    assert len(trace.fill_us) > 20
    assert np.all(trace.fill_us - trace.order_us == 2_500_000)
    prevailing = np.searchsorted(data.ts_us, trace.fill_us, side="right") - 1
    expected = np.where(trace.fill_qty > 0, data.ask[prevailing], data.bid[prevailing])
    assert np.array_equal(trace.fill_price, expected)
    assert np.array_equal(trace.fill_row, prevailing)


def test_no_look_ahead_the_past_does_not_change_when_the_future_does():
    data = market(realized_vol=0.9)
    cut = len(data) // 2
    future = data.with_changes(bid=np.concatenate([data.bid[:cut], data.bid[cut:] * 1.2]),
                               ask=np.concatenate([data.ask[:cut], data.ask[cut:] * 1.2]))

    a = replay(data, params(), path="fast").trace
    b = replay(future, params(), path="fast").trace

    for name in ("decision", "reasons", "intent_shares", "hedge_shares", "hedge_realized", "call_mark"):
        assert np.array_equal(getattr(a, name)[:cut], getattr(b, name)[:cut], equal_nan=name != "decision"
                              and name != "reasons"), name


def test_same_data_and_params_give_an_identical_result_except_timing(busy):
    data, first = busy

    again = replay(data, params(hedge_threshold_shares=40, cooldown_s=30), path="fast")

    a, b = dict(first.result), dict(again.result)
    assert a.pop("timing") != {} and b.pop("timing") != {}
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_decisions_csv_has_one_row_per_tick_with_every_reason(busy):
    data, outcome = busy
    buffer = io.StringIO()

    write_decisions_csv(data, outcome.trace, buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))

    assert len(rows) == len(data)
    hedges = [r for r in rows if r["decision"] == "hedge"]
    blocked = [r for r in rows if r["decision"] == "blocked"]
    assert len(hedges) == outcome.result["hedges"] == int((outcome.trace.decision == DECISION_HEDGE).sum())
    assert blocked and all(r["reasons"] for r in blocked)
    assert sum(r["reasons"].split(";").count("cooldown") for r in blocked) == outcome.result["blocks"]["cooldown"]
    assert all(abs(float(r["intent_shares"])) >= 40 for r in hedges)


def test_the_straddle_is_atm_with_an_expiry_inside_the_dte_window():
    data = market()
    p = params(min_dte=21, max_dte=35)

    s = build_structure(data, p, 10)

    assert abs(s.strike / float(data.mid[0]) - 1) <= p.atm_band_frac
    assert 21 <= (s.expiry - data.ts(0).date()).days <= 35 and s.expiry.weekday() == 4
    assert s.call_cost > 0 and s.put_cost > 0 and s.iv0 == float(data.iv[0])


def test_without_an_iv_column_options_are_priced_at_fallback_vol():
    data = market()
    data = data.with_changes(iv=np.full(len(data), math.nan))

    outcome = replay(data, params(fallback_vol=0.5), path="fast")

    assert outcome.structure.iv0 == 0.5
    assert outcome.result["start_position"]["iv0"] == 0.5


def test_a_bad_start_position_is_refused():
    from backtests.replay import parse_start_position

    assert parse_start_position("straddle:3") == 3
    for bad in ("straddle:0", "strangle:2", "straddle:x", "10"):
        with pytest.raises(ConfigError) as info:
            parse_start_position(bad)
        assert info.value.field == "start_position"
