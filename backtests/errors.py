"""Refusals specific to backtests (the rest come from trading.errors: ConfigError, DataFileError)."""
from __future__ import annotations

from trading.errors import BifrostError


class BacktestStateError(BifrostError):
    """A run or sweep is not in a state that allows the request (e.g. cancelling one that already finished)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
