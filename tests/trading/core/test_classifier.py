"""The classifier: one comparison rule everywhere, a level is reached when abs(x) >= level."""
from __future__ import annotations

import pytest

from trading.core.classifier import (
    Classification,
    classify_delta,
    classify_execution,
    classify_liquidity,
    classify_option,
    classify_system,
)
from trading.core.params import StrategyParams

PARAMS = StrategyParams()  # epsilon 10, threshold 25, force 500; wide 10 bps, extreme 50 bps; lag 1000 ms


@pytest.mark.parametrize(
    ("net_delta", "expected"),
    [
        (0.0, "D0"), (9.999, "D0"), (10.0, "D1"), (24.999, "D1"), (25.0, "D2"), (499.999, "D2"), (500.0, "D3"),
        (-9.999, "D0"), (-10.0, "D1"), (-25.0, "D2"), (-500.0, "D3"), (1e9, "D3"),
    ],
)
def test_delta_levels_are_reached_at_exactly_their_value_on_either_side(net_delta: float, expected: str) -> None:
    level = classify_delta(net_delta, True, PARAMS)

    assert level == expected


def test_max_net_delta_shares_is_a_force_level_reached_at_its_exact_value() -> None:
    params = StrategyParams(max_net_delta_shares=300.0)

    assert classify_delta(299.999, True, params) == "D2"
    assert classify_delta(-300.0, True, params) == "D3"


def test_invalid_greeks_classify_delta_as_d4_whatever_its_size() -> None:
    assert classify_delta(0.0, False, PARAMS) == "D4"
    assert classify_delta(1000.0, False, PARAMS) == "D4"


@pytest.mark.parametrize(
    ("spread_bps", "expected"),
    [(0.0, "L0"), (9.999, "L0"), (10.0, "L1"), (49.999, "L1"), (50.0, "L2"), (500.0, "L2"), (None, "L3")],
)
def test_liquidity_levels_are_reached_at_exactly_their_value(spread_bps: float | None, expected: str) -> None:
    level = classify_liquidity(spread_bps, PARAMS)

    assert level == expected


def test_option_dimension_tells_none_long_and_short_gamma() -> None:
    assert classify_option(False, 0.0) == "O0"
    assert classify_option(True, 45.0) == "O1"
    assert classify_option(True, -45.0) == "O2"


def test_execution_dimension_puts_a_disconnect_before_everything_else() -> None:
    assert classify_execution(False, True, True, True) == "E3"
    assert classify_execution(True, True, True, True) == "E4"
    assert classify_execution(True, False, True, True) == "E2"
    assert classify_execution(True, False, False, True) == "E1"
    assert classify_execution(True, False, False, False) == "E0"


@pytest.mark.parametrize(
    ("quote_age_ms", "expected"), [(0.0, "S0"), (999.999, "S0"), (1000.0, "S2"), (None, "S2")],
)
def test_data_lag_is_reached_at_exactly_max_data_lag_ms(quote_age_ms: float | None, expected: str) -> None:
    level = classify_system(False, True, quote_age_ms, PARAMS)

    assert level == expected


def test_system_dimension_puts_a_risk_halt_before_bad_greeks_and_lag() -> None:
    assert classify_system(True, False, None, PARAMS) == "S3"
    assert classify_system(False, False, None, PARAMS) == "S1"


def test_a_classification_reads_as_its_five_levels() -> None:
    text = str(Classification("O1", "D2", "L0", "E0", "S0"))

    assert text == "O1/D2/L0/E0/S0"
