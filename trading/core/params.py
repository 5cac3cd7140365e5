"""The strategy's parameter set: defaults, strict parsing from JSON-like mappings, validation and its hash."""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal, get_args

from trading.core.calendar import exchange_problem
from trading.core.events import OrderType
from trading.errors import ConfigError

ORDER_TYPES: frozenset[str] = frozenset(get_args(OrderType))

_Kind = Literal["str", "int", "float", "float?", "bool", "dates"]

# The wire type of every parameter, in declaration order (a test keeps it in step with the dataclass).
_KINDS: dict[str, _Kind] = {
    "underlying": "str",
    "min_dte": "int",
    "max_dte": "int",
    "atm_band_frac": "float",
    "epsilon_band_shares": "int",
    "hedge_threshold_shares": "int",
    "force_hedge_shares": "int",
    "min_hedge_shares": "int",
    "max_hedge_shares_per_order": "int",
    "cooldown_s": "float",
    "min_price_move_bps": "float",
    "order_type": "str",
    "limit_offset_bps": "float",
    "ack_timeout_s": "float",
    "working_timeout_s": "float",
    "flatten_timeout_s": "float",
    "expiry_cutoff_minutes": "float",
    "max_daily_hedges": "int",
    "max_position_shares": "int",
    "max_daily_loss_usd": "float",
    "max_net_delta_shares": "float?",
    "wide_spread_bps": "float",
    "extreme_spread_bps": "float",
    "max_spread_bps": "float?",
    "max_data_lag_ms": "float",
    "stale_quote_ms": "float",
    "trading_hours_only": "bool",
    "exchange": "str",
    "earnings_dates": "dates",
    "blackout_days_before": "int",
    "blackout_days_after": "int",
    "risk_free_rate": "float",
    "dividend_yield": "float",
    "fallback_vol": "float",
}

_EXPECTED: dict[_Kind, str] = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "float?": "a number or null",
    "bool": "true or false",
    "dates": "a list of ISO dates 'YYYY-MM-DD'",
}

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# Zero is allowed for every number below except these, where it would stop the strategy outright
# (every order times out, every quote is stale, the first cent of loss halts, nothing may be sent).
_POSITIVE = (
    "max_hedge_shares_per_order", "ack_timeout_s", "working_timeout_s", "flatten_timeout_s", "max_daily_loss_usd",
    "max_net_delta_shares", "max_spread_bps", "max_data_lag_ms", "stale_quote_ms", "fallback_vol",
)
# Signed by nature (negative rates exist; a negative yield models borrow cost), but written as fractions:
# |x| < 1 catches "5" typed for 5 %.
_RATES = ("risk_free_rate", "dividend_yield")
# Pairs (lower, upper) with lower <= upper.
_ORDERED = (
    ("min_dte", "max_dte"),
    ("epsilon_band_shares", "hedge_threshold_shares"),
    ("hedge_threshold_shares", "force_hedge_shares"),
    ("min_hedge_shares", "max_hedge_shares_per_order"),
    ("wide_spread_bps", "extreme_spread_bps"),
)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _got(value: object) -> str:
    return f"got {type(value).__name__} {_shown(value)}"


def _coerce_dates(value: object) -> tuple[tuple[date, ...] | None, str | None]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        return None, f"expected {_EXPECTED['dates']}, {_got(value)}"
    days: set[date] = set()
    for i, item in enumerate(value):
        if isinstance(item, date) and not isinstance(item, datetime):
            days.add(item)
        elif isinstance(item, str) and _ISO_DATE.fullmatch(item):
            try:
                days.add(date.fromisoformat(item))
            except ValueError:
                return None, f"item {i}: {item!r} is not a calendar date"
        else:
            return None, f"item {i}: expected an ISO date 'YYYY-MM-DD', {_got(item)}"
    # A set of dates: order and repeats carry no meaning, so they must not change the hash.
    return tuple(sorted(days)), None


def _coerce(kind: _Kind, value: object) -> tuple[object, str | None]:
    """`value` converted to the parameter's Python type, or an error naming the expected type."""
    expected = f"expected {_EXPECTED[kind]}, {_got(value)}"
    if kind == "dates":
        return _coerce_dates(value)
    if kind == "str":
        return (value, None) if isinstance(value, str) else (None, expected)
    if kind == "bool":
        return (value, None) if isinstance(value, bool) else (None, expected)
    if kind == "float?" and value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, expected
    if kind == "int":
        if isinstance(value, int):
            return value, None
        if math.isfinite(value) and value.is_integer():
            return int(value), None
        return None, f"{expected} (share and day counts are whole numbers)"
    try:
        number = float(value)
    except OverflowError:
        return None, f"{expected} (too large)"
    if not math.isfinite(number):
        return None, f"expected a finite number, got {_shown(value)}"
    return number + 0.0, None  # + 0.0 turns -0.0 into 0.0 so equal values hash equally


def _check(values: Mapping[str, object], errors: dict[str, list[str]]) -> None:
    """Append semantic errors for every well-typed field of a complete `values` mapping."""
    mistyped = frozenset(errors)  # only type errors so far; every other rule runs, so all problems surface

    def add(name: str, reason: str) -> None:
        errors.setdefault(name, []).append(reason)

    def ok(*names: str) -> bool:
        return mistyped.isdisjoint(names)

    def number(name: str) -> float:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} was not coerced to a number")  # unreachable: ok(name) checked the type
        return value

    for name in ("underlying", "exchange"):
        text = values[name]
        if ok(name) and isinstance(text, str) and (not text or text.strip() != text):
            add(name, "must be non-empty without surrounding spaces")
    if ok("order_type") and values["order_type"] not in ORDER_TYPES:
        add("order_type", f"must be one of {sorted(ORDER_TYPES)}, got {_shown(values['order_type'])}")
    if ok("exchange") and isinstance(values["exchange"], str) and values["exchange"]:
        problem = exchange_problem(values["exchange"])
        if problem is not None:
            add("exchange", problem)
    for name, kind in _KINDS.items():
        if kind not in ("int", "float", "float?") or not ok(name) or values[name] is None or name in _RATES:
            continue
        if name in _POSITIVE:
            if number(name) <= 0:
                add(name, f"must be > 0, got {_shown(values[name])}")
        elif number(name) < 0:
            add(name, f"must be >= 0, got {_shown(values[name])}")
    for name in _RATES:
        if ok(name) and not -1 < number(name) < 1:
            add(name, f"must be a fraction between -1 and 1 (0.05 means 5 %), got {_shown(values[name])}")
    if ok("atm_band_frac") and number("atm_band_frac") > 1:
        add("atm_band_frac", f"must be a fraction <= 1 (0.03 means 3 %), got {_shown(values['atm_band_frac'])}")
    if ok("fallback_vol") and number("fallback_vol") > 5:
        add("fallback_vol", f"must be an annual vol fraction <= 5 (0.35 means 35 %), got {_shown(values['fallback_vol'])}")
    for lower, upper in _ORDERED:
        if ok(lower, upper) and number(lower) > number(upper):
            # Named on both sides: the operator may have meant to change either one.
            add(lower, f"must be <= {upper} ({_shown(values[upper])}), got {_shown(values[lower])}")
            add(upper, f"must be >= {lower} ({_shown(values[lower])}), got {_shown(values[upper])}")


def _parse(data: Mapping[str, object]) -> tuple[dict[str, object], dict[str, list[str]]]:
    """Typed values for the keys in `data` plus every error (unknown keys first, then declaration order)."""
    errors: dict[str, list[str]] = {}
    if not isinstance(data, Mapping):
        return {}, {"params": [f"expected a mapping of parameter names to values, {_got(data)}"]}
    for key in data:
        if key not in _KINDS:
            errors[str(key)] = ["unknown parameter"]
    parsed: dict[str, object] = {}
    for name, kind in _KINDS.items():
        if name in data:
            value, error = _coerce(kind, data[name])
            if error is None:
                parsed[name] = value
            else:
                errors[name] = [error]
    merged = {**_DEFAULTS, **parsed}
    _check(merged, errors)
    ordered = {k: v for k, v in errors.items() if k not in _KINDS}
    ordered.update((name, errors[name]) for name in _KINDS if name in errors)
    return parsed, ordered


def _raise_first(data: Mapping[str, object], errors: dict[str, list[str]]) -> None:
    # Prefer a field the caller actually wrote over a default it collided with.
    name = next((n for n in errors if isinstance(data, Mapping) and n in data), next(iter(errors)))
    raise ConfigError(name, "; ".join(errors[name]))


@dataclass(frozen=True, slots=True)
class StrategyParams:
    """One immutable, validated parameter set (DESIGN §3.1); units are in the names.

    Constructing it directly validates too, so an invalid instance cannot exist. Int arguments for float
    fields are stored as floats and `earnings_dates` is stored sorted without repeats, so equal settings
    compare and hash equal however they were written.
    """

    # structure
    underlying: str = "NVDA"
    min_dte: int = 21
    max_dte: int = 35
    atm_band_frac: float = 0.03  # only used when adopting legs
    # delta
    epsilon_band_shares: int = 10
    hedge_threshold_shares: int = 25
    force_hedge_shares: int = 500
    # hedge
    min_hedge_shares: int = 10
    max_hedge_shares_per_order: int = 500
    cooldown_s: float = 60.0
    min_price_move_bps: float = 20.0
    order_type: OrderType = "market"
    limit_offset_bps: float = 5.0
    ack_timeout_s: float = 5.0
    working_timeout_s: float = 30.0
    flatten_timeout_s: float = 120.0  # a flatten not done by then fails (its order cancelled), never lingers
    expiry_cutoff_minutes: float = 30.0  # no hedging this close to the structure's expiry (gamma explodes)
    # risk
    max_daily_hedges: int = 50
    max_position_shares: int = 2000
    max_daily_loss_usd: float = 5000.0
    max_net_delta_shares: float | None = None  # reaching it forces a hedge
    # liquidity
    wide_spread_bps: float = 10.0
    extreme_spread_bps: float = 50.0
    max_spread_bps: float | None = None
    # data
    max_data_lag_ms: float = 1000.0
    stale_quote_ms: float = 5000.0
    # calendar
    trading_hours_only: bool = True
    exchange: str = "XNYS"
    earnings_dates: tuple[date, ...] = ()
    blackout_days_before: int = 3
    blackout_days_after: int = 1
    # greeks
    risk_free_rate: float = 0.05
    dividend_yield: float = 0.0
    fallback_vol: float = 0.35
    # sha256 of the canonical JSON, computed once: decisions and snapshots record it on the hot path.
    _params_hash: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        given = {name: getattr(self, name) for name in _KINDS}
        parsed, errors = _parse(given)
        if errors:
            _raise_first(given, errors)
        for name, value in parsed.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_params_hash", hashlib.sha256(self.canonical_json().encode()).hexdigest())

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> StrategyParams:
        """Parse a JSON-like mapping; missing keys take defaults, anything wrong raises ConfigError(field, reason).

        Unknown keys are refused, never dropped. When several fields are wrong only the first is raised
        (a key the caller wrote is preferred); use `validate_all` to report them all.
        """
        parsed, errors = _parse(data)
        if errors:
            _raise_first(data, errors)
        return cls(**parsed)  # type: ignore[arg-type]  # types were checked field by field in _parse

    @classmethod
    def validate_all(cls, data: Mapping[str, object]) -> dict[str, list[str]]:
        """Every error of every field in `data` ({} when `from_dict(data)` would succeed)."""
        return _parse(data)[1]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready values of every parameter: dates as ISO strings, tuples as lists."""
        out: dict[str, object] = {name: getattr(self, name) for name in _KINDS}
        out["earnings_dates"] = [d.isoformat() for d in self.earnings_dates]
        return out

    def canonical_json(self) -> str:
        """The exact text `params_hash` is taken over: sorted keys, no spaces."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def params_hash(self) -> str:
        """sha256 hex of `canonical_json()`; recorded with every snapshot, decision, order and backtest."""
        return self._params_hash

    def replace(self, **changes: object) -> StrategyParams:
        """A validated copy with `changes` applied (same parsing and errors as `from_dict`)."""
        return StrategyParams.from_dict({**self.to_dict(), **changes})


_DEFAULTS: dict[str, object] = {name: StrategyParams.__dataclass_fields__[name].default for name in _KINDS}
