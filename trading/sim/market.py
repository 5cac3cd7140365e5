"""The simulated market behind SimBroker, the TWS-protocol simulator and synthetic backtests: one seeded price model,
its quotes, a fill model, commissions and the account a demo starts with."""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from trading.core.events import Contract, OrderType, Side
from trading.core.greeks import Greeks, Right, bs_greeks, year_fraction
from trading.core.rules import book_trade, commission_usd, touch_price
from trading.errors import ConfigError

SecType = Literal["STK", "OPT"]
FloatArray = npt.NDArray[np.float64]

_EASTERN = ZoneInfo("America/New_York")
_SECONDS_PER_DAY = 86_400.0
# Quotes are rounded to this many decimals after snapping to the tick grid, so 179.99 prints as 179.99 and
# equal prices compare equal; far finer than any tick size we use.
_PRICE_DECIMALS = 8


@dataclass(frozen=True)
class MarketConfig:
    """Everything that shapes the simulated market; units are in the names or beside them."""

    symbol: str = "NVDA"
    spot0: float = 180.0  # USD, starting mid
    realized_vol: float = 0.60  # annualised GBM vol of the mid (fraction, 0.60 = 60 %)
    drift: float = 0.0  # annualised expected return of the mid (jumps are compensated, so this stays the drift)
    jump_intensity_per_day: float = 0.0  # expected jumps per calendar day (Poisson)
    jump_mean_frac: float = 0.0  # mean jump as a log-return (≈ fraction of price for small jumps)
    jump_std_frac: float = 0.02  # std of one jump's log-return
    spread_bps: float = 4.0  # stock bid/ask full width, bps of mid (before snapping to the tick grid)
    implied_vol: float = 0.35  # options are priced at this annualised IV
    option_spread_frac: float = 0.02  # option full width as a fraction of option mid ...
    option_min_spread: float = 0.02  # ... but never narrower than this many USD
    rate: float = 0.05  # continuously compounded risk-free rate, annual
    div: float = 0.0  # continuous dividend yield, annual
    fill_latency_ms: int = 150  # order-to-fill delay the broker faces apply (not used by the model itself)
    partial_fill_prob: float = 0.0  # probability that an order fills in several pieces
    commission_per_share: float = 0.005  # USD per share (IB Fixed pricing)
    min_commission_usd: float = 1.0  # USD per order
    # Continuous-time GBM over calendar seconds, so the sim moves at any hour (the demo runs at night too).
    seconds_per_year: float = 365 * 86_400
    tick_size: float = 0.01  # USD, price grid for stock and option quotes

    def __post_init__(self) -> None:
        """Refuse a config the model cannot honour, naming the field."""
        positive = ("spot0", "tick_size", "seconds_per_year")
        non_negative = (
            "realized_vol", "jump_intensity_per_day", "jump_std_frac", "spread_bps", "implied_vol",
            "option_spread_frac", "option_min_spread", "fill_latency_ms", "commission_per_share",
            "min_commission_usd",
        )
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(name, f"must be a finite number > 0, got {value!r}")
        for name in non_negative:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(name, f"must be a finite number >= 0, got {value!r}")
        if not 0.0 <= self.partial_fill_prob <= 1.0:
            raise ConfigError("partial_fill_prob", f"must be within 0..1, got {self.partial_fill_prob!r}")
        if not self.symbol:
            raise ConfigError("symbol", "must not be empty")


@dataclass(frozen=True)
class StockQuote:
    """A top-of-book stock quote on the tick grid; `mid` is (bid + ask) / 2 of this quote."""

    bid: float
    ask: float
    last: float
    mid: float
    spread_bps: float


@dataclass(frozen=True)
class OptionQuoteData:
    """An option quote plus what a broker's model would report: `iv` and per-share `greeks` at that IV.

    `greeks.price` is the model's theoretical value; `mid` is (bid + ask) / 2 of the rounded quote."""

    bid: float
    ask: float
    mid: float
    iv: float
    greeks: Greeks


@dataclass(frozen=True)
class TickArrays:
    """A synthetic tick series, one row per index; `ts_epoch_s` is POSIX seconds (UTC)."""

    ts_epoch_s: FloatArray
    bid: FloatArray
    ask: FloatArray
    last: FloatArray
    iv: FloatArray


@dataclass(frozen=True)
class SeedPosition:
    """One position of the starting account. `avg_cost` is per share / per unit of the option's quote (USD),
    not per contract: IB reports option avgCost multiplied by `multiplier`, so a wire adapter must do that."""

    symbol: str
    sec_type: SecType
    right: Right | None
    strike: float | None
    expiry: date | None
    multiplier: int
    qty: float
    avg_cost: float
    con_id: int
    local_symbol: str

    def contract(self) -> Contract:
        """The core's view of this instrument, so brokers can report the seed as ordinary positions."""
        return Contract(
            con_id=self.con_id, symbol=self.symbol, sec_type=self.sec_type, right=self.right, strike=self.strike,
            expiry=self.expiry, multiplier=self.multiplier, local_symbol=self.local_symbol,
        )


class _TwoSided(Protocol):
    @property
    def bid(self) -> float: ...

    @property
    def ask(self) -> float: ...


# ---- contract identity ----------------------------------------------------------------------------------


def local_symbol_for(symbol: str, sec_type: SecType, right: Right | None = None, strike: float | None = None,
                     expiry: date | None = None) -> str:
    """A readable broker-style name: the ticker for stocks, the OCC symbol (`NVDA  261218C00180000`) for options."""
    if sec_type == "STK":
        return symbol
    if right is None or strike is None or expiry is None:
        raise ValueError(f"an option needs right, strike and expiry: {symbol} {right} {strike} {expiry}")
    return f"{symbol:<6}{expiry:%y%m%d}{right}{round(strike * 1000):08d}"


def con_id_for(symbol: str, sec_type: SecType, right: Right | None = None, strike: float | None = None,
               expiry: date | None = None, multiplier: int = 1) -> int:
    """A stable, positive 31-bit contract id (IB conIds are int32) from a sha256 of the contract's terms.

    Python's hash() is salted per process, so it would give a different id after every restart."""
    key = f"{sec_type}|{symbol}|{right or ''}|{'' if strike is None else f'{strike:.4f}'}|{expiry or ''}|{multiplier}"
    digest = hashlib.sha256(key.encode()).digest()
    # Keep clear of 0 and of small ids a test might hard-code.
    return 1_000_000 + int.from_bytes(digest[:4], "big") % (2**31 - 1_000_000)


# ---- price model --------------------------------------------------------------------------------------


def _streams(seed: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for diffusion, jump counts, jump sizes and fills, all from one seed.

    Separate streams keep the price path identical whether it is drawn step by step or as one array, and let
    fills draw randomness without shifting the path."""
    return tuple(np.random.Generator(np.random.PCG64(child)) for child in np.random.SeedSequence(seed).spawn(4))


def _jump_compensator(config: MarketConfig) -> float:
    """E[e^J] - 1 for one jump; subtracting intensity x this from the drift keeps the mid's expected return at
    `drift` however jumpy the path is."""
    return math.expm1(config.jump_mean_frac + 0.5 * config.jump_std_frac**2)


def _log_returns(config: MarketConfig, dt_s: float, z: FloatArray, n_jumps: npt.NDArray[np.int64],
                 z_jump: FloatArray) -> FloatArray:
    """Exact log-return of GBM plus compound-Poisson normal jumps over `dt_s`, for given standard draws.

    The sum of n normal jumps is drawn as one normal (n*mean, sqrt(n)*std): same law, one draw per step."""
    dt_y = dt_s / config.seconds_per_year
    lam_per_s = config.jump_intensity_per_day / _SECONDS_PER_DAY
    sigma = config.realized_vol
    mu = config.drift - lam_per_s * config.seconds_per_year * _jump_compensator(config)
    diffusion = (mu - 0.5 * sigma * sigma) * dt_y + sigma * math.sqrt(dt_y) * z
    jumps = n_jumps * config.jump_mean_frac + np.sqrt(n_jumps) * config.jump_std_frac * z_jump
    return np.asarray(diffusion + jumps, dtype=np.float64)


def _stock_quotes(mid: FloatArray, config: MarketConfig) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Snap mid ± half-spread to the tick grid; at least one tick wide and the bid at least one tick above 0."""
    tick = config.tick_size
    half = mid * config.spread_bps / 20_000.0
    bid_ticks = np.maximum(np.round((mid - half) / tick), 1.0)
    ask_ticks = np.maximum(np.round((mid + half) / tick), bid_ticks + 1.0)
    last_ticks = np.clip(np.round(mid / tick), bid_ticks, ask_ticks)
    return (np.round(bid_ticks * tick, _PRICE_DECIMALS), np.round(ask_ticks * tick, _PRICE_DECIMALS),
            np.round(last_ticks * tick, _PRICE_DECIMALS))


def _check_step(dt_s: float) -> None:
    if not (math.isfinite(dt_s) and dt_s >= 0):
        raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s!r}")


class MarketModel:
    """One underlying's mid following GBM with optional jumps, and the quotes a market would show around it.

    Pure and deterministic: the caller advances time with `step(dt_s)` and passes `now` where expiry matters."""

    def __init__(self, config: MarketConfig, seed: int) -> None:
        self.config = config
        self._spot = config.spot0
        self._implied_vol = config.implied_vol
        self._diffusion_rng, self._count_rng, self._size_rng, fill_rng = _streams(seed)
        self.fills = FillModel(config, fill_rng)

    @property
    def spot(self) -> float:
        """The model's true mid (not on the tick grid)."""
        return self._spot

    @property
    def implied_vol(self) -> float:
        return self._implied_vol

    def set_spot(self, price: float) -> None:
        """Jump the mid to `price` (scripted tests); the next `step` continues from here."""
        if not (math.isfinite(price) and price > 0):
            raise ValueError(f"price must be a finite number > 0, got {price!r}")
        self._spot = float(price)

    def set_implied_vol(self, vol: float) -> None:
        """Reprice options at `vol` from now on (scripted tests of vega and IV handling)."""
        if not (math.isfinite(vol) and vol > 0):
            raise ValueError(f"vol must be a finite number > 0, got {vol!r}")
        self._implied_vol = float(vol)

    def step(self, dt_s: float) -> None:
        """Advance the mid by `dt_s` seconds of exact log-normal GBM plus Poisson jumps."""
        _check_step(dt_s)
        lam = self.config.jump_intensity_per_day / _SECONDS_PER_DAY * dt_s
        z = np.array([self._diffusion_rng.standard_normal()])
        n_jumps = np.array([self._count_rng.poisson(lam)], dtype=np.int64)
        z_jump = np.array([self._size_rng.standard_normal()])
        self._spot *= math.exp(float(_log_returns(self.config, dt_s, z, n_jumps, z_jump)[0]))

    def stock_quote(self) -> StockQuote:
        """The stock's top of book around the current mid."""
        bid_a, ask_a, last_a = _stock_quotes(np.array([self._spot]), self.config)
        bid, ask, last = float(bid_a[0]), float(ask_a[0]), float(last_a[0])
        mid = (bid + ask) / 2.0
        return StockQuote(bid=bid, ask=ask, last=last, mid=mid, spread_bps=(ask - bid) / mid * 1e4)

    def option_quote(self, right: Right, strike: float, expiry: date, now: datetime) -> OptionQuoteData:
        """Quote an option at the model's implied vol: Black-Scholes value ± half of the option spread.

        After the 16:00 New York expiry bs_greeks gives intrinsic value and a step delta, so that is the quote."""
        cfg = self.config
        t_years = year_fraction(expiry, now)
        greeks = bs_greeks(right, self._spot, strike, t_years, cfg.rate, cfg.div, self._implied_vol)
        theo = greeks.price
        half = max(cfg.option_spread_frac * theo, cfg.option_min_spread) / 2.0
        tick = cfg.tick_size
        # The floor holds even when the bid is pinned at 0 (a far-OTM option shows 0.00 / 0.02, not 0.00 / 0.01).
        min_width_ticks = max(1, round(cfg.option_min_spread / tick))
        bid_ticks = max(round((theo - half) / tick), 0)
        ask_ticks = max(round((theo + half) / tick), bid_ticks + min_width_ticks)
        bid = round(bid_ticks * tick, _PRICE_DECIMALS)
        ask = round(ask_ticks * tick, _PRICE_DECIMALS)
        return OptionQuoteData(bid=bid, ask=ask, mid=(bid + ask) / 2.0, iv=self._implied_vol, greeks=greeks)


def generate_ticks(config: MarketConfig, seed: int, start: datetime, n: int, dt_s: float) -> TickArrays:
    """`n` stock ticks `dt_s` apart from `start`, vectorised, for synthetic backtests.

    Tick 0 is the quote at `spot0`; tick i is the quote after i steps. It draws the same streams as
    `MarketModel(config, seed).step(dt_s)`, so the paths agree except for floating-point rounding: the mid here is
    spot0 x exp(cumulative log-return) instead of a running product, which can move a quote by one tick when the
    mid sits on a rounding boundary. `iv` is config.implied_vol throughout."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    _check_step(dt_s)
    diffusion_rng, count_rng, size_rng, _ = _streams(seed)
    steps = max(n - 1, 0)
    lam = config.jump_intensity_per_day / _SECONDS_PER_DAY * dt_s
    # Drawn in the same order per stream as step() does, so both consume identical numbers.
    z = diffusion_rng.standard_normal(steps)
    n_jumps = count_rng.poisson(lam, steps).astype(np.int64)
    z_jump = size_rng.standard_normal(steps)
    log_path = np.concatenate(([0.0], np.cumsum(_log_returns(config, dt_s, z, n_jumps, z_jump))))[:n]
    mid = config.spot0 * np.exp(log_path)
    bid, ask, last = _stock_quotes(mid, config)
    ts = start.timestamp() + dt_s * np.arange(n, dtype=np.float64)
    return TickArrays(ts_epoch_s=ts, bid=bid, ask=ask, last=last, iv=np.full(n, config.implied_vol))


# ---- fills and commissions --------------------------------------------------------------------------------


class FillModel:
    """Where and in how many pieces an order fills, and what it costs. Rejections and faults are the broker's."""

    def __init__(self, config: MarketConfig, rng: np.random.Generator) -> None:
        self.config = config
        self._rng = rng

    def fill_price(self, side: Side, qty: float, order_type: OrderType, limit: float | None,
                   quote: _TwoSided) -> float | None:
        """Take liquidity at the touch: buys at the ask, sells at the bid. A limit order fills only when it is
        marketable (buy limit >= ask, sell limit <= bid), and then at the touch, not at its limit; otherwise
        None: it rests. No depth model, so `qty` does not move the price."""
        if qty <= 0:
            raise ValueError(f"qty must be > 0, got {qty}")
        if side not in ("BUY", "SELL"):
            raise ValueError(f"side must be BUY or SELL, got {side!r}")
        touch = touch_price(side == "BUY", quote.bid, quote.ask)
        if order_type == "market":
            return touch
        if order_type != "limit":
            raise ValueError(f"order_type must be market or limit, got {order_type!r}")
        if limit is None:
            raise ValueError("a limit order needs a limit price")
        marketable = limit >= quote.ask if side == "BUY" else limit <= quote.bid
        return touch if marketable else None

    def split_fills(self, qty: float) -> list[int]:
        """Break an order of whole shares into fills: one piece, or with `partial_fill_prob` two to four
        pieces of at least one share each, summing to `qty`."""
        if qty != int(qty) or qty < 1:
            raise ValueError(f"qty must be a whole number >= 1, got {qty}")
        total = int(qty)
        if total == 1 or self._rng.random() >= self.config.partial_fill_prob:
            return [total]
        pieces = int(self._rng.integers(2, min(total, 4), endpoint=True))
        cuts = np.sort(self._rng.choice(np.arange(1, total), size=pieces - 1, replace=False))
        bounds = [0, *(int(c) for c in cuts), total]
        return [hi - lo for lo, hi in zip(bounds, bounds[1:], strict=False)]

    def commission_usd(self, qty: float, price: float) -> float:
        """IB Fixed-style stock commission: max(min_commission_usd, |qty| x commission_per_share), capped at 1 %
        of trade value (the cap wins over the minimum for tiny trades). Exchange and regulatory fees ignored.
        Float for the simulation; whoever books it converts to Decimal."""
        return commission_usd(abs(qty), price, self.config.commission_per_share, self.config.min_commission_usd)


# ---- the starting account -----------------------------------------------------------------------------------

_MANUAL_OTHER_SYMBOL = "AAPL"
_MANUAL_OTHER_SHARES = 50.0
_MANUAL_OTHER_COST_USD = 200.0  # arbitrary: nothing prices AAPL in this model
_MANUAL_CALL_QTY = 2.0
_MANUAL_CALL_MONEYNESS = 1.5  # strike / spot of the manual far-OTM call
_OPTION_MULTIPLIER = 100


def average_cost_after(qty: float, avg_price: float, signed_qty: float, price: float) -> tuple[float, float]:
    """The account's (qty, average price) after a trade, booked as the P&L ledger books it (crossing through zero
    opens the rest at the trade's price)."""
    qty, avg_price, _ = book_trade(qty, avg_price, signed_qty, price, 1.0)
    return qty, avg_price


def first_friday_on_or_after(day: date) -> date:
    return day + timedelta(days=(4 - day.weekday()) % 7)


CHAIN_WEEKS = 30  # weekly (Friday) expiries listed by the simulated market
STRIKE_STEP = 5.0


def chain_strikes(spot0: float) -> list[float]:
    """The simulated chain's strikes: every $5 from half to 1.7 times the starting spot."""
    low, high = max(5, round(spot0 * 0.5 / 5) * 5), round(spot0 * 1.7 / 5) * 5
    return [float(k) for k in range(low, high + 1, 5)]


def chain_expiries(today: date) -> list[date]:
    first = first_friday_on_or_after(today)
    return [first + timedelta(weeks=week) for week in range(CHAIN_WEEKS)]


def option_contract(symbol: str, right: Right, strike: float, expiry: date) -> Contract:
    return Contract(con_id_for(symbol, "OPT", right, strike, expiry, _OPTION_MULTIPLIER), symbol, "OPT", right,
                    strike, expiry, _OPTION_MULTIPLIER, local_symbol_for(symbol, "OPT", right, strike, expiry))


def _option(model: MarketModel, symbol: str, right: Right, strike: float, expiry: date, qty: float,
            now: datetime) -> SeedPosition:
    return SeedPosition(
        symbol=symbol, sec_type="OPT", right=right, strike=strike, expiry=expiry, multiplier=_OPTION_MULTIPLIER,
        qty=qty, avg_cost=model.option_quote(right, strike, expiry, now).mid,
        con_id=con_id_for(symbol, "OPT", right, strike, expiry, _OPTION_MULTIPLIER),
        local_symbol=local_symbol_for(symbol, "OPT", right, strike, expiry),
    )


def _stock(symbol: str, qty: float, avg_cost: float) -> SeedPosition:
    return SeedPosition(
        symbol=symbol, sec_type="STK", right=None, strike=None, expiry=None, multiplier=1, qty=qty,
        avg_cost=avg_cost, con_id=con_id_for(symbol, "STK"), local_symbol=local_symbol_for(symbol, "STK"),
    )


def seed_account(config: MarketConfig, now: datetime, *, straddles: int = 10,
                 manual_shares: int = 100) -> list[SeedPosition]:
    """The account a demo or test starts with: a long near-ATM straddle for Bifrost to adopt, plus manual
    positions it must never touch (shares of the same underlying, another stock, a far-OTM call outside the
    DTE window), so "manage and flatten only our own" is exercised from the first run.

    Straddle: strike = spot0 rounded to $5, expiry = first Friday >= 28 days after now's New York date (DTE 28..34,
    inside the default 21..35), avg_cost = model mid. Manual call: strike ~1.5 x spot, expiry first Friday >= 63
    days out (DTE > 60). Order of the list: call, put, same-underlying shares, AAPL, far-OTM call."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if straddles < 1:
        raise ValueError(f"straddles must be >= 1, got {straddles}")
    model = MarketModel(config, seed=0)  # never stepped: prices at spot0, the seed is irrelevant
    today_ny = now.astimezone(_EASTERN).date()
    symbol = config.symbol
    strike = float(max(5, round(config.spot0 / 5) * 5))
    expiry = first_friday_on_or_after(today_ny + timedelta(days=28))
    far_strike = float(max(5, round(config.spot0 * _MANUAL_CALL_MONEYNESS / 5) * 5))
    far_expiry = first_friday_on_or_after(today_ny + timedelta(days=63))
    positions = [
        _option(model, symbol, "C", strike, expiry, float(straddles), now),
        _option(model, symbol, "P", strike, expiry, float(straddles), now),
    ]
    if manual_shares:
        positions.append(_stock(symbol, float(manual_shares), config.spot0))
    if symbol != _MANUAL_OTHER_SYMBOL:
        positions.append(_stock(_MANUAL_OTHER_SYMBOL, _MANUAL_OTHER_SHARES, _MANUAL_OTHER_COST_USD))
    positions.append(_option(model, symbol, "C", far_strike, far_expiry, _MANUAL_CALL_QTY, now))
    return positions
