"""Refusals specific to backtests (the rest come from trading.errors: ConfigError, DataFileError)."""
from __future__ import annotations

from trading.errors import FieldError


class BacktestStateError(FieldError):
    """A run or sweep is not in a state that allows the request (e.g. cancelling one that already finished)."""
