"""StrategyParams: the DESIGN §3.1 defaults, strict parsing, validation that names the field, and a stable hash."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trading.core.params import _KINDS, StrategyParams
from trading.errors import ConfigError

DESIGN_TABLE: dict[str, object] = {
    "underlying": "NVDA",
    "min_dte": 21,
    "max_dte": 35,
    "atm_band_frac": 0.03,
    "epsilon_band_shares": 10,
    "hedge_threshold_shares": 25,
    "force_hedge_shares": 500,
    "min_hedge_shares": 10,
    "max_hedge_shares_per_order": 500,
    "cooldown_s": 60,
    "min_price_move_bps": 20,
    "order_type": "market",
    "limit_offset_bps": 5,
    "ack_timeout_s": 5,
    "working_timeout_s": 30,
    "flatten_timeout_s": 120,
    "expiry_cutoff_minutes": 30,
    "max_daily_hedges": 50,
    "max_position_shares": 2000,
    "max_daily_loss_usd": 5000,
    "max_net_delta_shares": None,
    "wide_spread_bps": 10,
    "extreme_spread_bps": 50,
    "max_spread_bps": None,
    "max_data_lag_ms": 1000,
    "stale_quote_ms": 5000,
    "trading_hours_only": True,
    "exchange": "XNYS",
    "earnings_dates": [],
    "blackout_days_before": 3,
    "blackout_days_after": 1,
    "risk_free_rate": 0.05,
    "dividend_yield": 0.0,
    "fallback_vol": 0.35,
}
INT_FIELDS = {
    "min_dte", "max_dte", "epsilon_band_shares", "hedge_threshold_shares", "force_hedge_shares", "min_hedge_shares",
    "max_hedge_shares_per_order", "max_daily_hedges", "max_position_shares", "blackout_days_before",
    "blackout_days_after",
}


def _reason(data: dict[str, object]) -> tuple[str, str]:
    with pytest.raises(ConfigError) as caught:
        StrategyParams.from_dict(data)
    return caught.value.field, caught.value.reason


def test_defaults_match_the_design_table_exactly():
    params = StrategyParams()

    values = params.to_dict()

    assert values == DESIGN_TABLE
    assert list(values) == list(DESIGN_TABLE)


def test_share_and_day_counts_are_ints_and_other_numbers_are_floats():
    params = StrategyParams()

    kinds = {name: type(value) for name, value in dataclasses.asdict(params).items() if name in _KINDS}

    for name in INT_FIELDS:
        assert kinds[name] is int, name
    for name, value in DESIGN_TABLE.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and name not in INT_FIELDS:
            assert kinds[name] is float, name


def test_every_dataclass_field_has_a_parsing_rule():
    names = [f.name for f in dataclasses.fields(StrategyParams) if f.init]

    assert names == list(_KINDS)


def test_missing_keys_take_the_defaults():
    params = StrategyParams.from_dict({"cooldown_s": 30})

    assert params.cooldown_s == 30.0
    assert params == StrategyParams(cooldown_s=30.0)


def test_unknown_key_is_rejected_naming_the_key_never_dropped():
    data: dict[str, object] = {"cooldown_s": 30, "hedge_treshold_shares": 40}

    field, reason = _reason(data)

    assert field == "hedge_treshold_shares"
    assert reason == "unknown parameter"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("cooldown_s", "60", "number"),
        ("max_daily_hedges", True, "integer"),
        ("hedge_threshold_shares", 2.5, "integer"),
        ("max_daily_loss_usd", False, "number"),
        ("trading_hours_only", 1, "true or false"),
        ("underlying", 7, "string"),
        ("max_net_delta_shares", "none", "number or null"),
        ("earnings_dates", "2026-02-25", "ISO dates"),
        ("earnings_dates", ["2026/02/25"], "ISO date"),
        ("earnings_dates", [datetime(2026, 2, 25, 16, 0)], "ISO date"),
        ("cooldown_s", float("nan"), "finite number"),
    ],
)
def test_wrong_type_is_rejected_naming_the_field_and_the_expected_type(name, value, expected):
    data: dict[str, object] = {name: value}

    field, reason = _reason(data)

    assert field == name
    assert expected in reason


def test_whole_floats_are_accepted_for_counts_and_ints_for_floats():
    params = StrategyParams.from_dict({"hedge_threshold_shares": 30.0, "cooldown_s": 45})

    assert params.hedge_threshold_shares == 30 and type(params.hedge_threshold_shares) is int
    assert params.cooldown_s == 45.0 and type(params.cooldown_s) is float


def test_earnings_dates_accept_iso_strings_and_dates_and_are_stored_sorted_once():
    params = StrategyParams.from_dict({"earnings_dates": ["2026-02-25", date(2025, 11, 19), "2026-02-25"]})

    assert params.earnings_dates == (date(2025, 11, 19), date(2026, 2, 25))
    assert params.to_dict()["earnings_dates"] == ["2025-11-19", "2026-02-25"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"epsilon_band_shares": 30}, "epsilon_band_shares"),
        ({"hedge_threshold_shares": 600}, "hedge_threshold_shares"),
        ({"force_hedge_shares": 20}, "force_hedge_shares"),
        ({"min_dte": 40}, "min_dte"),
        ({"max_dte": 7}, "max_dte"),
        ({"wide_spread_bps": 60}, "wide_spread_bps"),
        ({"extreme_spread_bps": 5}, "extreme_spread_bps"),
        ({"min_hedge_shares": 600}, "min_hedge_shares"),
        ({"max_hedge_shares_per_order": 5}, "max_hedge_shares_per_order"),
    ],
)
def test_ordering_constraints_are_enforced_naming_the_field_written(data, field):
    raised_field, reason = _reason(data)

    assert raised_field == field
    assert "must be" in reason


def test_ordering_violation_is_reported_on_both_fields():
    errors = StrategyParams.validate_all({"epsilon_band_shares": 30})

    assert errors == {
        "epsilon_band_shares": ["must be <= hedge_threshold_shares (25), got 30"],
        "hedge_threshold_shares": ["must be >= epsilon_band_shares (30), got 25"],
    }


def test_validate_all_reports_a_whole_broken_chain_and_other_rules_on_the_same_field():
    errors = StrategyParams.validate_all({"epsilon_band_shares": 30, "hedge_threshold_shares": 20, "force_hedge_shares": -1})

    assert set(errors) == {"epsilon_band_shares", "hedge_threshold_shares", "force_hedge_shares"}
    assert len(errors["hedge_threshold_shares"]) == 2
    assert errors["force_hedge_shares"][0] == "must be >= 0, got -1"


def test_equal_levels_are_allowed():
    params = StrategyParams.from_dict({"epsilon_band_shares": 25, "hedge_threshold_shares": 25, "min_dte": 35})

    assert params.epsilon_band_shares == params.hedge_threshold_shares == 25


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("cooldown_s", -1),
        ("min_dte", -1),
        ("blackout_days_before", -1),
        ("fallback_vol", 0),
        ("ack_timeout_s", 0),
        ("max_spread_bps", 0),
        ("risk_free_rate", 5),
        ("fallback_vol", 35),
        ("atm_band_frac", 3),
        ("order_type", "stop"),
        ("exchange", "NOPE"),
        ("underlying", ""),
        ("underlying", " NVDA"),
    ],
)
def test_semantically_invalid_value_is_rejected_naming_the_field(name, value):
    data: dict[str, object] = {name: value}

    field, _ = _reason(data)

    assert field == name


def test_limit_orders_negative_rates_and_optional_limits_are_accepted():
    data: dict[str, object] = {
        "order_type": "limit", "risk_free_rate": -0.005, "max_net_delta_shares": 800, "max_spread_bps": 25,
    }

    params = StrategyParams.from_dict(data)

    assert params.order_type == "limit"
    assert params.risk_free_rate == -0.005
    assert params.max_net_delta_shares == 800.0 and params.max_spread_bps == 25.0


def test_validate_all_returns_every_bad_field_at_once():
    data: dict[str, object] = {
        "bogus": 1,
        "cooldown_s": "sixty",
        "max_daily_hedges": True,
        "min_dte": 40,
        "order_type": "stop",
        "fallback_vol": 0,
    }

    errors = StrategyParams.validate_all(data)

    assert set(errors) == {"bogus", "cooldown_s", "max_daily_hedges", "min_dte", "max_dte", "order_type", "fallback_vol"}
    assert errors["bogus"] == ["unknown parameter"]
    assert all(reasons for reasons in errors.values())


def test_validate_all_is_empty_for_valid_data():
    errors = StrategyParams.validate_all(StrategyParams().to_dict())

    assert errors == {}


def test_non_mapping_is_rejected():
    errors = StrategyParams.validate_all(["cooldown_s", 60])  # type: ignore[arg-type]

    assert list(errors) == ["params"]


def test_direct_construction_validates_too():
    with pytest.raises(ConfigError) as caught:
        StrategyParams(min_dte=50)

    assert caught.value.field == "min_dte"


def test_round_trip_through_dict_is_identity():
    params = StrategyParams.from_dict({"earnings_dates": ["2026-02-25"], "max_spread_bps": 30, "order_type": "limit"})

    again = StrategyParams.from_dict(params.to_dict())

    assert again == params
    assert again.params_hash == params.params_hash


def test_to_dict_is_json_ready():
    params = StrategyParams.from_dict({"earnings_dates": ["2026-02-25"]})

    text = json.dumps(params.to_dict())

    assert json.loads(text)["earnings_dates"] == ["2026-02-25"]


def test_hash_is_sha256_of_the_canonical_json_and_stable():
    params = StrategyParams()

    expected = hashlib.sha256(
        json.dumps(params.to_dict(), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()

    assert params.params_hash == expected
    assert StrategyParams().params_hash == expected


def test_hash_does_not_depend_on_how_equal_values_were_written():
    written_one_way = StrategyParams.from_dict({"cooldown_s": 60, "earnings_dates": ["2026-02-25", "2025-11-19"]})
    written_another = StrategyParams.from_dict({"cooldown_s": 60.0, "earnings_dates": [date(2025, 11, 19), "2026-02-25"]})

    assert written_one_way.params_hash == written_another.params_hash


ONE_CHANGE_PER_FIELD: dict[str, object] = {
    "underlying": "AMD",
    "min_dte": 20,
    "max_dte": 36,
    "atm_band_frac": 0.04,
    "epsilon_band_shares": 9,
    "hedge_threshold_shares": 26,
    "force_hedge_shares": 501,
    "min_hedge_shares": 9,
    "max_hedge_shares_per_order": 501,
    "cooldown_s": 61,
    "min_price_move_bps": 21,
    "order_type": "limit",
    "limit_offset_bps": 6,
    "ack_timeout_s": 6,
    "working_timeout_s": 31,
    "flatten_timeout_s": 121,
    "expiry_cutoff_minutes": 31,
    "max_daily_hedges": 51,
    "max_position_shares": 2001,
    "max_daily_loss_usd": 5001,
    "max_net_delta_shares": 900,
    "wide_spread_bps": 11,
    "extreme_spread_bps": 51,
    "max_spread_bps": 40,
    "max_data_lag_ms": 1001,
    "stale_quote_ms": 5001,
    "trading_hours_only": False,
    "exchange": "XLON",
    "earnings_dates": ["2026-02-25"],
    "blackout_days_before": 4,
    "blackout_days_after": 2,
    "risk_free_rate": 0.051,
    "dividend_yield": 0.01,
    "fallback_vol": 0.36,
}


def test_hash_changes_with_any_single_value():
    base = StrategyParams()

    hashes = {name: base.replace(**{name: value}).params_hash for name, value in ONE_CHANGE_PER_FIELD.items()}

    assert set(hashes) == set(DESIGN_TABLE)
    assert base.params_hash not in hashes.values()
    assert len(set(hashes.values())) == len(hashes)


def test_replace_returns_a_validated_copy():
    base = StrategyParams()

    cheaper = base.replace(cooldown_s=30)

    assert cheaper.cooldown_s == 30.0 and base.cooldown_s == 60.0
    with pytest.raises(ConfigError) as caught:
        base.replace(cooldown_secs=30)
    assert caught.value.field == "cooldown_secs"


@given(
    threshold=st.integers(min_value=0, max_value=10_000),
    cooldown_s=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    rate=st.floats(min_value=-0.99, max_value=0.99, allow_nan=False),
    earnings=st.lists(st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)), max_size=5),
)
def test_any_valid_parameter_set_survives_the_json_round_trip(threshold, cooldown_s, rate, earnings):
    params = StrategyParams.from_dict({
        "epsilon_band_shares": 0, "hedge_threshold_shares": threshold, "force_hedge_shares": threshold,
        "cooldown_s": cooldown_s, "risk_free_rate": rate, "earnings_dates": earnings,
    })

    again = StrategyParams.from_dict(json.loads(json.dumps(params.to_dict())))

    assert again == params
    assert again.params_hash == params.params_hash
