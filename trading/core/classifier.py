"""The state classifier: five dimensions (options, delta, liquidity, execution, system) of the situation now.

One comparison rule everywhere: a level is reached when abs(x) >= level."""
from __future__ import annotations

import math
from dataclasses import dataclass

from trading.core.params import StrategyParams
from trading.core.rules import delta_class


@dataclass(frozen=True, slots=True)
class Classification:
    option: str  # O0 none, O1 long gamma, O2 short gamma
    delta: str  # D0 in band, D1 minor, D2 hedge needed, D3 force, D4 invalid
    liquidity: str  # L0 normal, L1 wide, L2 extreme, L3 no quote
    execution: str  # E0 idle, E1 working, E2 partial, E3 disconnected, E4 broker error
    system: str  # S0 ok, S1 greeks bad, S2 data lag, S3 risk halt

    def __str__(self) -> str:
        return f"{self.option}/{self.delta}/{self.liquidity}/{self.execution}/{self.system}"


def classify_option(has_options: bool, gamma_shares: float) -> str:
    if not has_options:
        return "O0"
    return "O1" if gamma_shares >= 0 else "O2"


_DELTA_CLASSES = ("D0", "D1", "D2", "D3", "D4")


def classify_delta(net_delta_shares: float, valid: bool, params: StrategyParams) -> str:
    max_net = math.nan if params.max_net_delta_shares is None else params.max_net_delta_shares
    return _DELTA_CLASSES[delta_class(net_delta_shares, valid, params.force_hedge_shares, max_net,
                                      params.hedge_threshold_shares, params.epsilon_band_shares)]


def classify_liquidity(spread_bps: float | None, params: StrategyParams) -> str:
    if spread_bps is None:
        return "L3"
    if spread_bps >= params.extreme_spread_bps:
        return "L2"
    if spread_bps >= params.wide_spread_bps:
        return "L1"
    return "L0"


def classify_execution(connected: bool, unknown_orders: bool, partial: bool, working: bool) -> str:
    if not connected:
        return "E3"
    if unknown_orders:
        return "E4"
    if partial:
        return "E2"
    return "E1" if working else "E0"


def classify_system(halted: bool, greeks_valid: bool, quote_age_ms: float | None, params: StrategyParams) -> str:
    if halted:
        return "S3"
    if not greeks_valid:
        return "S1"
    if quote_age_ms is None or quote_age_ms >= params.max_data_lag_ms:
        return "S2"
    return "S0"
