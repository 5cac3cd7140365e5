"""The state classifier: five dimensions (options, delta, liquidity, execution, system) of the situation now.

One comparison rule everywhere: a level is reached when abs(x) >= level."""
from __future__ import annotations

from dataclasses import dataclass

from trading.core.params import StrategyParams


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


def classify_delta(net_delta_shares: float, valid: bool, params: StrategyParams) -> str:
    if not valid:
        return "D4"
    level = abs(net_delta_shares)
    if level >= params.force_hedge_shares or (
        params.max_net_delta_shares is not None and level >= params.max_net_delta_shares
    ):
        return "D3"
    if level >= params.hedge_threshold_shares:
        return "D2"
    if level >= params.epsilon_band_shares:
        return "D1"
    return "D0"


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
