"""The engine end to end, one event at a time: adoption, hedging, the original's failures, operator commands,
order trouble and bad data. No database, no wall clock: a FakeClock and explicit UTC datetimes."""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import pytest

from trading.core.calendar import AlwaysOpenCalendar
from trading.core.engine import Engine, EngineSeed
from trading.core.events import (
    Action,
    AdoptLegs,
    BrokerOrder,
    BrokerPosition,
    BrokerStatus,
    CancelOrder,
    Contract,
    Control,
    Event,
    Fill,
    Halt,
    OptionQuote,
    OrderUpdate,
    PlaceOrder,
    PositionsSynced,
    Quote,
    Reconciled,
    Record,
    Stop,
    Timer,
)
from trading.core.fsm import OrderState, TradingState
from trading.core.params import StrategyParams
from trading.errors import BifrostError

T0 = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)  # a Tuesday, 11:00 in New York
EXPIRY = date(2026, 4, 7)  # 28 days out
SPOT = 180.0
PREFIX = "bifrost:test"

CALL = Contract(101, "NVDA", "OPT", "C", 180.0, EXPIRY, 100, "NVDA  260407C00180000")
PUT = Contract(102, "NVDA", "OPT", "P", 180.0, EXPIRY, 100, "NVDA  260407P00180000")
FAR_CALL = Contract(103, "NVDA", "OPT", "C", 260.0, date(2026, 6, 8), 100, "NVDA  260608C00260000")
SHARES = Contract(104, "NVDA", "STK")
MANUAL_SHARES = 100.0
# avg_cost as IB reports it for options: per contract, i.e. price x multiplier.
ACCOUNT = (
    BrokerPosition(CALL, 10, avg_cost=7.30 * 100),
    BrokerPosition(PUT, 10, avg_cost=6.60 * 100),
    BrokerPosition(SHARES, MANUAL_SHARES, avg_cost=170.0),
    BrokerPosition(FAR_CALL, 2, avg_cost=1.10 * 100),
)


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class Harness:
    """The engine with a clock; optionally a broker that acks and fills every order at the touch at once."""

    engine: Engine
    clock: FakeClock
    auto_fill: bool = False
    actions: list[Action] = field(default_factory=list)
    states: list[TradingState] = field(default_factory=list)
    _exec_seq: int = 0

    @property
    def now(self) -> datetime:
        return self.clock.now

    def send(self, event: Event, after_s: float = 0.0) -> list[Action]:
        now = self.clock.advance(after_s)
        out = self.engine.on_event(event, now)
        self.actions.extend(out)
        self.states.append(self.engine.state)
        if self.auto_fill:
            for order in placed(out):
                out = out + self.ack(order) + self.fill(order)
        return out

    def quote(self, mid: float, spread: float = 0.02, after_s: float = 1.0) -> list[Action]:
        now = self.clock.advance(after_s)
        return self.send(Quote("NVDA", mid - spread / 2, mid + spread / 2, mid, now))

    def option_quote(self, contract: Contract, mid: float, after_s: float = 0.0) -> list[Action]:
        now = self.clock.advance(after_s)
        return self.send(OptionQuote(contract.con_id, mid - 0.05, mid + 0.05, now))

    def ack(self, order: PlaceOrder) -> list[Action]:
        return self.send(OrderUpdate(order.order_ref, "submitted", 0.0, None, self.now))

    def fill(self, order: PlaceOrder, qty: float | None = None, exec_id: str | None = None,
             price: float | None = None) -> list[Action]:
        self._exec_seq += 1
        engine = self.engine
        touch = engine.ask if order.side == "BUY" else engine.bid
        fill = Fill(order.order_ref, exec_id or f"exec.{self._exec_seq}", order.side, order.qty if qty is None else qty,
                    price if price is not None else (touch or SPOT), 0.35, self.now)
        return self.send(fill)

    def update(self, order: PlaceOrder, status: str, filled: float = 0.0, message: str = "") -> list[Action]:
        return self.send(OrderUpdate(order.order_ref, status, filled, None, self.now, message))

    def control(self, command: str) -> list[Action]:
        return self.send(Control(command, actor="test"))

    def timer(self, after_s: float) -> list[Action]:
        now = self.clock.advance(after_s)
        return self.send(Timer(now))


def placed(actions: Iterable[Action]) -> list[PlaceOrder]:
    return [a for a in actions if isinstance(a, PlaceOrder)]


def _at_broker(order: PlaceOrder, status: str, filled: float = 0.0) -> BrokerOrder:
    return BrokerOrder(order.order_ref, order.side, order.qty, filled, status)


def records(actions: Iterable[Action], kind: str) -> list[dict[str, object]]:
    return [a.data for a in actions if isinstance(a, Record) and a.kind == kind]


def operations(actions: Iterable[Action], kind: str) -> list[dict[str, object]]:
    return [r for r in records(actions, "operation") if r["kind"] == kind]


def make_engine(clock: FakeClock, **params: object) -> Engine:
    return Engine(StrategyParams(trading_hours_only=False, **params), PREFIX, AlwaysOpenCalendar(),
                  clock.now)


def new_harness(start: datetime = T0, auto_fill: bool = False, **params: object) -> Harness:
    clock = FakeClock(start)
    return Harness(make_engine(clock, **params), clock, auto_fill=auto_fill)


def started(start: datetime = T0, auto_fill: bool = False, account: tuple[BrokerPosition, ...] = ACCOUNT,
            **params: object) -> Harness:
    """Connected, positions synced, reconciled and one quote at SPOT: the engine is in monitor, not yet hedged."""
    h = new_harness(start, auto_fill, **params)
    h.send(BrokerStatus(True, h.now))
    h.send(PositionsSynced(account, h.now))
    h.send(Reconciled((), h.now))
    h.quote(SPOT, after_s=0.0)
    assert h.engine.state == TradingState.MONITOR
    return h


def hedged(start: datetime = T0, **params: object) -> tuple[Harness, PlaceOrder]:
    """Started, and the first hedge (a sale of about 70 shares at SPOT) sent, acked and filled."""
    h = started(start, **params)
    order = placed(h.quote(SPOT))[0]
    h.ack(order)
    h.fill(order)
    assert h.engine.book.hedge_shares == -order.qty
    return h, order


# ---- adoption and the first hedge --------------------------------------------------------------------------


def test_only_the_straddle_legs_are_adopted() -> None:
    h = new_harness()
    h.send(BrokerStatus(True, h.now))
    h.send(PositionsSynced(ACCOUNT, h.now))

    adopted = records(h.quote(SPOT), "managed_leg")

    assert [r["con_id"] for r in adopted] == [CALL.con_id, PUT.con_id]
    assert set(h.engine.book.legs) == {CALL.con_id, PUT.con_id}


def test_a_lone_near_the_money_call_bought_by_hand_is_not_adopted_and_says_why() -> None:
    lone_call = Contract(105, "NVDA", "OPT", "C", 182.5, EXPIRY, 100, "NVDA  260407C00182500")
    h = new_harness()
    h.send(BrokerStatus(True, h.now))
    h.send(PositionsSynced((*ACCOUNT, BrokerPosition(lone_call, 3, avg_cost=6.0 * 100)), h.now))

    actions = h.quote(SPOT)

    assert set(h.engine.book.legs) == {CALL.con_id, PUT.con_id}
    reasons = {o["data"]["con_id"]: o["data"]["why"] for o in operations(actions, "leg_not_adopted")}
    assert "no put/call of the same expiry and quantity" in reasons[lone_call.con_id]
    assert "outside" in reasons[FAR_CALL.con_id]


def test_legs_a_commander_run_opened_are_adopted_and_hedged_once_the_account_holds_them() -> None:
    new_call = Contract(201, "NVDA", "OPT", "C", 185.0, date(2026, 5, 15), 100, "NVDA  260515C00185000")
    new_put = Contract(202, "NVDA", "OPT", "P", 185.0, date(2026, 5, 15), 100, "NVDA  260515P00185000")
    h = started()
    delta_before = h.engine.greeks.option_delta_shares

    early = h.send(AdoptLegs(frozenset({new_call.con_id, new_put.con_id}), "commander run #7"))
    assert records(early, "managed_leg") == [] and set(h.engine.book.legs) == {CALL.con_id, PUT.con_id}

    # The roll filled: the old legs sold, the new ones held; the operator's far call is still not ours.
    rolled = (BrokerPosition(new_call, 10, 9.0 * 100), BrokerPosition(new_put, 10, 8.0 * 100), *ACCOUNT[2:])
    actions = h.send(PositionsSynced(rolled, h.now))
    actions += h.quote(SPOT)

    assert [r["con_id"] for r in records(actions, "managed_leg")] == [new_call.con_id, new_put.con_id]
    assert all("commander run #7" in o["message"] for o in operations(actions, "leg_adopted"))
    assert h.engine.book.legs[CALL.con_id].qty == 0 and h.engine.book.legs[new_call.con_id].qty == 10
    assert FAR_CALL.con_id not in h.engine.book.legs
    assert h.engine.greeks.option_delta_shares != delta_before  # the new legs' delta is what is hedged now


def test_a_strangle_is_adopted_and_legs_of_unequal_quantity_are_not() -> None:
    call = Contract(201, "NVDA", "OPT", "C", 184.0, EXPIRY, 100)
    put = Contract(202, "NVDA", "OPT", "P", 176.0, EXPIRY, 100)
    odd_put = Contract(203, "NVDA", "OPT", "P", 178.0, EXPIRY, 100)
    h = new_harness()
    h.send(BrokerStatus(True, h.now))
    h.send(PositionsSynced((BrokerPosition(call, 5, 500.0), BrokerPosition(put, 5, 450.0),
                            BrokerPosition(odd_put, 2, 500.0)), h.now))

    h.quote(SPOT)

    assert set(h.engine.book.legs) == {call.con_id, put.con_id}


def test_no_hedge_in_the_structures_last_half_hour_and_its_legs_settle_at_intrinsic_at_expiry() -> None:
    expires = datetime(2026, 4, 7, 20, 0, tzinfo=UTC)  # 16:00 in New York on EXPIRY
    h = started(start=expires - timedelta(minutes=40), min_dte=0, cooldown_s=0, min_price_move_bps=0,
                auto_fill=True)

    near = h.quote(SPOT + 2.0, after_s=15 * 60)  # 25 minutes to go, delta far out of band
    after = h.quote(SPOT + 4.0, after_s=26 * 60)  # a minute past the expiry
    later = [a for spot in (170.0, 195.0, 181.0) for a in h.quote(spot, after_s=60.0)]

    assert placed(near) == [] and "near_expiry" in records(near, "decision")[0]["reasons"]
    assert {o["data"]["con_id"] for o in operations(after, "leg_settled")} == {CALL.con_id, PUT.con_id}
    assert h.engine.pnl.holdings[str(CALL.con_id)].mark == pytest.approx(4.0)  # intrinsic at the first spot after
    assert h.engine.pnl.holdings[str(PUT.con_id)].mark == 0.0
    assert h.engine.greeks.option_delta_shares == 0.0
    assert placed(after + later) == []  # nothing left to hedge: a step delta is never chased
    assert h.engine.state == TradingState.IDLE
    assert h.engine.pnl.holdings[str(CALL.con_id)].mark == pytest.approx(4.0)  # settled once, not re-marked


def test_manual_shares_are_never_counted_as_hedge_shares() -> None:
    h = started()

    h.send(PositionsSynced((*ACCOUNT[:2], BrokerPosition(SHARES, 900.0)), h.now))

    assert h.engine.book.hedge_shares == 0.0
    assert h.engine.net_delta_shares == pytest.approx(h.engine.greeks.option_delta_shares)
    assert 60 < h.engine.net_delta_shares < 80  # a long ATM straddle alone: about +70 shares


def test_delta_out_of_band_sends_a_hedge_with_our_ref_and_records_an_allowed_decision() -> None:
    h = started()

    actions = h.quote(SPOT)

    [order] = placed(actions)
    assert order == PlaceOrder(f"{PREFIX}:1", "NVDA", "SELL", 70.0, "market", None, "hedge")
    [decision] = records(actions, "decision")
    assert decision["allowed"] is True
    assert decision["reasons"] == []
    assert decision["order_ref"] == order.order_ref
    assert h.engine.state == TradingState.HEDGING


def test_hedge_shares_change_on_the_fill_and_never_on_the_order_or_its_status() -> None:
    h = started()
    order = placed(h.quote(SPOT))[0]
    after_order = h.engine.book.hedge_shares
    h.ack(order)
    after_ack = h.engine.book.hedge_shares
    h.update(order, "filled", filled=70.0)
    after_filled_status = h.engine.book.hedge_shares

    h.fill(order)

    assert (after_order, after_ack, after_filled_status) == (0.0, 0.0, 0.0)
    assert h.engine.book.hedge_shares == -70.0
    assert abs(h.engine.net_delta_shares) < h.engine.params.epsilon_band_shares
    assert h.engine.state == TradingState.MONITOR
    assert h.engine.orders[order.order_ref].state == OrderState.FILLED


def test_a_filled_status_without_its_fill_keeps_the_order_in_flight() -> None:
    h = started()
    order = placed(h.quote(SPOT))[0]

    h.update(order, "filled", filled=70.0)
    later = [a for _ in range(10) for a in h.quote(SPOT + 3.0, after_s=30.0)]

    assert placed(later) == []
    assert h.engine.orders[order.order_ref].state == OrderState.WORKING
    assert h.engine.state == TradingState.HEDGING


def test_order_refs_count_up_under_the_prefix() -> None:
    h, first = hedged()

    second = placed(h.quote(SPOT + 2.0, after_s=61.0))

    assert [first.order_ref, second[0].order_ref] == [f"{PREFIX}:1", f"{PREFIX}:2"]


# ---- the original's known failures ---------------------------------------------------------------------


@pytest.mark.parametrize("order", list(itertools.permutations(["positions", "reconciled", "quote"])))
def test_starts_in_sync_and_reaches_monitor_whatever_arrives_first(order: tuple[str, ...]) -> None:
    h = new_harness()
    h.send(BrokerStatus(True, h.now))
    events = {
        "positions": lambda: PositionsSynced(ACCOUNT, h.now),
        "reconciled": lambda: Reconciled((), h.now),
        "quote": lambda: Quote("NVDA", SPOT - 0.01, SPOT + 0.01, SPOT, h.now),
    }

    for name in order:
        h.send(events[name](), after_s=0.5)

    assert h.states[0] == TradingState.SYNC
    assert TradingState.MONITOR in h.states
    assert TradingState.SAFE not in h.states
    assert h.engine.state in (TradingState.MONITOR, TradingState.HEDGING)  # hedging once reconciled and quoted


def test_sync_waits_for_data_instead_of_failing_to_safe() -> None:
    h = new_harness()
    h.send(BrokerStatus(True, h.now))

    for _ in range(30):
        h.timer(after_s=1.0)

    assert set(h.states) == {TradingState.SYNC}


def test_a_start_before_the_broker_connects_recovers_from_safe_by_itself() -> None:
    h = new_harness()
    h.send(PositionsSynced(ACCOUNT, h.now))
    h.quote(SPOT)
    h.quote(SPOT)

    h.send(BrokerStatus(True, h.now))
    h.send(Reconciled((), h.now))
    for _ in range(5):
        h.quote(SPOT, after_s=1.0)

    assert h.engine.state in (TradingState.MONITOR, TradingState.HEDGING)


def test_need_hedge_is_never_where_an_event_leaves_the_engine() -> None:
    h = started(auto_fill=True)
    walk = random.Random(7)
    spot = SPOT

    for _ in range(600):
        spot *= math.exp(walk.gauss(0.0, 0.002))
        h.quote(spot, after_s=5.0)
        if walk.random() < 0.05:
            h.control(walk.choice(["pause", "resume"]))

    assert TradingState.NEED_HEDGE not in h.states
    assert len(placed(h.actions)) > 10
    assert {TradingState.HEDGING, TradingState.MONITOR, TradingState.NO_TRADE, TradingState.PAUSE_COST} <= set(h.states)


def test_need_hedge_is_left_for_no_trade_when_a_gate_blocks() -> None:
    h, _ = hedged()
    h.control("pause")

    h.quote(SPOT + 2.0, after_s=61.0)

    assert h.engine.state == TradingState.NO_TRADE


def test_need_hedge_is_left_for_pause_cost_inside_the_cooldown_and_for_monitor_back_in_band() -> None:
    h, _ = hedged()

    h.quote(SPOT + 2.0, after_s=10.0)
    inside_cooldown = h.engine.state
    h.quote(SPOT, after_s=1.0)

    assert inside_cooldown == TradingState.PAUSE_COST
    assert h.engine.state == TradingState.MONITOR


def test_legs_that_drift_out_of_the_atm_band_stay_in_the_book_and_keep_counting() -> None:
    h, _ = hedged()

    actions = h.quote(SPOT * 1.2, after_s=61.0)
    h.send(PositionsSynced(ACCOUNT, h.now))

    assert set(h.engine.book.legs) == {CALL.con_id, PUT.con_id}
    assert h.engine.greeks.option_delta_shares > 900  # the call is deep in the money now
    [order] = placed(actions)
    assert (order.side, order.qty) == ("SELL", 500.0)  # more hedge, capped per order: never an unwind


def test_a_leg_the_operator_sold_keeps_its_place_in_the_book_at_zero() -> None:
    h = started()

    h.send(PositionsSynced((ACCOUNT[0], *ACCOUNT[2:]), h.now))

    assert set(h.engine.book.legs) == {CALL.con_id, PUT.con_id}
    assert h.engine.book.legs[PUT.con_id].qty == 0.0
    assert h.engine.greeks.option_delta_shares > 500  # only the 10 calls count now


def test_daily_counters_reset_at_the_us_eastern_date_change() -> None:
    h, _ = hedged(start=datetime(2026, 3, 10, 3, 50, tzinfo=UTC), max_daily_hedges=1)  # 23:50 in New York
    h.clock.now = datetime(2026, 3, 10, 3, 59, tzinfo=UTC)

    before_midnight = h.quote(SPOT + 2.0, after_s=0.0)
    h.clock.now = datetime(2026, 3, 10, 4, 1, tzinfo=UTC)
    after_midnight = h.quote(SPOT + 2.0, after_s=0.0)

    assert placed(before_midnight) == []
    assert records(before_midnight, "decision")[0]["reasons"] == ["max_daily_hedges"]
    assert len(placed(after_midnight)) == 1
    assert len(operations(after_midnight, "new_trading_day")) == 1
    assert h.engine.counters.trading_date == date(2026, 3, 10)
    assert h.engine.counters.daily_hedges == 1


def test_daily_pnl_follows_the_market() -> None:
    h, _ = hedged()
    at_hedge = h.engine.pnl.snapshot("hedge").daily_usd

    h.quote(SPOT + 3.0, after_s=10.0)

    moved = h.engine.pnl.snapshot("hedge")
    assert moved.daily_usd != pytest.approx(at_hedge)
    assert moved.daily_usd - at_hedge > 100.0  # long gamma, hedged: a 3-dollar move earns about ½Γ dS²
    assert moved.gamma_usd == pytest.approx(0.5 * h.engine.greeks.gamma_shares * 9.0, rel=0.1)


def test_an_old_unrealized_loss_on_adopted_legs_is_not_todays_loss() -> None:
    bought_dear = (BrokerPosition(CALL, 10, avg_cost=12.0 * 100), BrokerPosition(PUT, 10, avg_cost=12.0 * 100))

    h = started(account=bought_dear)

    assert h.engine.pnl.unrealized_usd < -8000.0
    assert h.engine.pnl.snapshot("hedge").daily_usd == pytest.approx(0.0)
    assert not [a for a in h.actions if isinstance(a, Halt)]
    assert h.engine.state == TradingState.MONITOR


def test_option_quotes_arriving_after_the_first_model_marks_do_not_jolt_the_daily_pnl() -> None:
    h = started()  # the first stock quote marked the legs at their model price (fallback vol): the day starts there
    model_mark = h.engine.pnl.holdings["101"].mark
    assert h.engine.pnl.snapshot("hedge").daily_usd == pytest.approx(0.0)

    h.option_quote(CALL, model_mark + 2.0)  # the market prices the call 2 dollars above the model
    h.option_quote(PUT, h.engine.pnl.holdings["102"].mark + 2.0)

    assert h.engine.pnl.holdings["101"].mark == pytest.approx(model_mark + 2.0)
    assert h.engine.pnl.unrealized_usd > 3000.0  # the marks moved 2 x 10 x 100 x 2 ...
    assert h.engine.pnl.snapshot("hedge").daily_usd == pytest.approx(0.0, abs=1e-6)  # ... but not today's P&L
    h.option_quote(CALL, model_mark + 3.0, after_s=1.0)
    assert h.engine.pnl.snapshot("hedge").daily_usd == pytest.approx(1000.0)  # a market move after that counts


def test_the_operator_selling_managed_contracts_does_not_jolt_the_daily_pnl() -> None:
    bought_cheap = (BrokerPosition(CALL, 10, avg_cost=4.0 * 100), BrokerPosition(PUT, 10, avg_cost=4.0 * 100))
    h = started(account=bought_cheap)
    total_before = h.engine.pnl.total_usd

    h.send(PositionsSynced((BrokerPosition(CALL, 5, avg_cost=4.0 * 100), bought_cheap[1]), h.now))

    assert h.engine.pnl.total_usd == pytest.approx(total_before)
    assert h.engine.pnl.snapshot("hedge").daily_usd == pytest.approx(0.0, abs=1.0)
    assert h.engine.pnl.realized_usd == pytest.approx(5 * 100 * (h.engine.pnl.holdings["101"].mark - 4.0))


def _restarted(seed: EngineSeed, start: datetime = T0, **params: object) -> Harness:
    clock = FakeClock(start)
    engine = Engine(StrategyParams(trading_hours_only=False, **params), PREFIX, AlwaysOpenCalendar(), clock.now, seed)
    return Harness(engine, clock)


def test_a_restart_never_halts_on_the_hedges_lifetime_pnl() -> None:
    seed = EngineSeed(hedge_shares=-100.0, hedge_avg_cost=180.0, hedge_realized_usd=-3200.0, commissions_usd=1900.0)
    h = _restarted(seed)

    h.send(BrokerStatus(True, h.now))  # before any quote: the day's baseline is not known yet
    before_a_quote = h.engine.self_check("running")
    h.send(PositionsSynced(ACCOUNT, h.now))
    h.send(Reconciled((), h.now))
    h.quote(SPOT, after_s=0.0)

    assert [a for a in h.actions if isinstance(a, Halt)] == []
    assert not h.engine.halt_reason
    assert h.engine.daily_pnl_usd == pytest.approx(0.0)
    assert not {c.reason for c in before_a_quote.checks} & {"risk_halt", "near_loss_limit"}


def test_yesterdays_loss_is_not_counted_again_after_a_restart_past_midnight() -> None:
    evening = datetime(2026, 3, 10, 21, 30, tzinfo=UTC) + timedelta(hours=4)  # 21:30 ET on the 10th ...
    seed = EngineSeed(daily_pnl_usd=-4000.0, daily_pnl_date=date(2026, 3, 10))
    h = _restarted(seed, start=evening + timedelta(hours=12), max_daily_loss_usd=5000.0)  # ... restarted the 11th

    h.send(BrokerStatus(True, h.now))
    h.send(PositionsSynced(ACCOUNT, h.now))
    h.send(Reconciled((), h.now))
    h.quote(SPOT, after_s=0.0)

    assert h.engine.daily_pnl_usd == pytest.approx(0.0)


def test_todays_loss_made_before_a_restart_still_counts() -> None:
    seed = EngineSeed(daily_pnl_usd=-4000.0, daily_pnl_date=date(2026, 3, 10))
    h = _restarted(seed)

    h.send(BrokerStatus(True, h.now))
    h.send(PositionsSynced(ACCOUNT, h.now))
    h.send(Reconciled((), h.now))
    h.quote(SPOT, after_s=0.0)

    assert h.engine.daily_pnl_usd == pytest.approx(-4000.0)


def test_no_hedge_leaves_a_moment_after_the_close() -> None:
    from trading.core.calendar import TradingCalendar

    before_close = datetime(2026, 3, 10, 19, 59, 59, 600_000, tzinfo=UTC)  # 15:59:59.6 in New York
    clock = FakeClock(before_close)
    h = Harness(Engine(StrategyParams(), PREFIX, TradingCalendar("XNYS"), clock.now), clock)
    h.send(BrokerStatus(True, h.now))
    h.send(PositionsSynced(ACCOUNT, h.now))
    h.send(Reconciled((), h.now))
    h.quote(SPOT, after_s=0.0)  # in band: nothing to do, but the calendar was asked at 15:59:59.6

    after_close = h.quote(SPOT + 3.0, after_s=0.8)  # 16:00:00.4, delta far out of band

    assert placed(after_close) == []
    assert "outside_trading_hours" in records(after_close, "decision")[0]["reasons"]


def test_hedge_shares_are_marked_even_with_no_managed_legs() -> None:
    seed = EngineSeed(hedge_shares=-800.0, hedge_avg_cost=180.0)
    h = _restarted(seed, max_daily_loss_usd=5000.0)
    h.send(BrokerStatus(True, h.now))
    h.send(PositionsSynced((BrokerPosition(SHARES, MANUAL_SHARES - 800.0, 170.0),), h.now))
    h.send(Reconciled((), h.now))
    h.quote(180.0, after_s=0.0)

    moved = h.quote(192.0, after_s=1.0)

    assert not h.engine.book.legs
    assert h.engine.pnl.unrealized_usd == pytest.approx(-800.0 * 12.0, abs=10.0)
    assert h.engine.daily_pnl_usd == pytest.approx(-9600.0, abs=10.0)
    assert [a for a in moved if isinstance(a, Halt)]  # and the breaker sees it


def test_a_big_enough_daily_loss_halts_and_only_reset_halt_leaves_halted() -> None:
    h, _ = hedged(max_daily_loss_usd=2000.0)
    h.option_quote(CALL, 7.30)
    h.option_quote(PUT, 6.60)

    h.option_quote(CALL, 6.20, after_s=1.0)
    crash = h.option_quote(PUT, 5.50)
    halted_state = h.engine.state
    check = h.engine.self_check("running")
    while_halted = [a for _ in range(5) for a in h.quote(SPOT + 4.0, after_s=61.0)]
    h.option_quote(CALL, 7.30)
    recovered = h.option_quote(PUT, 6.60)
    still = h.engine.state
    h.control("reset_halt")

    [halt] = [a for a in crash if isinstance(a, Halt)]
    assert "daily loss" in halt.reason
    assert halted_state == TradingState.HALTED
    assert "risk_halt" in check.block_reasons
    assert check.verdict == "blocked"
    assert placed(while_halted) == []
    assert [a for a in recovered if isinstance(a, Halt)] == []
    assert still == TradingState.HALTED
    assert h.engine.state == TradingState.MONITOR


def test_a_blocked_hedge_is_recorded_with_all_its_reasons() -> None:
    h, _ = hedged()
    h.control("pause")

    actions = h.quote(SPOT + 2.0, spread=1.0, after_s=10.0)

    [decision] = records(actions, "decision")
    assert decision["allowed"] is False
    assert decision["reasons"] == ["paused", "cooldown", "spread_too_wide"]
    [blocked] = operations(actions, "hedge_blocked")
    assert blocked["reasons"] == ["paused", "cooldown", "spread_too_wide"]
    assert placed(actions) == []


def test_the_self_check_reports_every_reason_at_once() -> None:
    h = started()
    h.control("pause")
    h.send(BrokerStatus(False, h.now, "socket closed"))

    check = h.engine.self_check("waiting_broker")

    assert check.block_reasons == ("paused", "broker_disconnected", "not_reconciled")
    assert {"daemon_not_running", "paused", "broker_disconnected", "not_reconciled"} <= {c.reason for c in check.checks}
    assert check.verdict == "blocked"


# ---- operator commands -----------------------------------------------------------------------------------


def test_pause_blocks_every_hedge_but_keeps_deciding_and_resume_hedges_again() -> None:
    h = started()
    h.control("pause")
    walk = random.Random(3)

    paused = [a for _ in range(300) for a in h.quote(SPOT + walk.uniform(1.0, 4.0), after_s=2.0)]
    resumed = h.control("resume") + h.quote(SPOT + 2.0, after_s=1.0)

    assert placed(paused) == []
    decisions = records(paused, "decision")
    assert decisions and all(d["allowed"] is False and "paused" in d["reasons"] for d in decisions)
    assert len(placed(resumed)) == 1


def test_flatten_cancels_working_orders_then_closes_exactly_our_hedge_shares() -> None:
    h, _ = hedged()
    second = placed(h.quote(SPOT + 2.0, after_s=61.0))[0]
    h.ack(second)
    h.fill(second, qty=30.0)
    hedge_shares = h.engine.book.hedge_shares

    on_flatten = h.control("flatten")
    on_cancelled = h.update(second, "cancelled", filled=30.0)
    [flatten] = placed(on_cancelled)
    on_flatten_fill = h.fill(flatten)
    afterwards = [a for _ in range(20) for a in h.quote(SPOT - 3.0, after_s=61.0)]

    assert hedge_shares == -100.0
    assert [a for a in on_flatten if isinstance(a, CancelOrder)] == [CancelOrder(second.order_ref)]
    assert placed(on_flatten) == []
    assert (flatten.side, flatten.qty, flatten.intent) == ("BUY", 100.0, "flatten")
    assert h.engine.book.hedge_shares == 0.0
    assert not h.engine.flattening
    assert h.engine.paused
    assert len(operations(on_flatten_fill, "flatten_done")) == 1
    assert placed(afterwards) == []


def test_flatten_never_touches_the_manual_shares() -> None:
    h, _ = hedged()

    [flatten] = placed(h.control("flatten"))
    h.fill(flatten)

    assert (flatten.side, flatten.qty) == ("BUY", 70.0)
    assert all(o.qty != MANUAL_SHARES + 70.0 for o in placed(h.actions))
    assert h.engine.book.hedge_shares == 0.0


def test_a_rejected_flatten_order_is_not_retried() -> None:
    h, _ = hedged()
    [flatten] = placed(h.control("flatten"))

    rejected = h.update(flatten, "rejected", message="no shortable shares")
    afterwards = [a for _ in range(20) for a in h.quote(SPOT + 3.0, after_s=61.0) + h.timer(after_s=1.0)]

    assert placed(rejected) == placed(afterwards) == []
    assert not h.engine.flattening
    assert h.engine.paused
    assert len(operations(rejected, "flatten_failed")) == 1


def test_a_flatten_order_works_past_the_working_timeout_and_the_flatten_fails_at_its_own_timeout() -> None:
    h, _ = hedged()
    [flatten] = placed(h.control("flatten"))
    h.ack(flatten)

    at_working_timeout = h.timer(after_s=h.engine.params.working_timeout_s + 1.0)
    at_flatten_timeout = h.timer(after_s=h.engine.params.flatten_timeout_s)
    afterwards = [a for _ in range(5) for a in h.quote(SPOT + 3.0, after_s=61.0) + h.timer(after_s=1.0)]

    assert [a for a in at_working_timeout if isinstance(a, CancelOrder | PlaceOrder)] == []  # never resent
    assert CancelOrder(flatten.order_ref) in at_flatten_timeout
    assert h.engine.flatten_outcome is not None and h.engine.flatten_outcome[0] == "failed"
    assert "within 120 s" in h.engine.flatten_outcome[1]
    assert placed(afterwards) == [] and h.engine.paused


def test_flatten_refuses_when_the_ledger_holds_fills_the_broker_does_not_call_ours() -> None:
    h, order = hedged()  # our ledger: one fill of -70 shares, exec.1 (the harness's id)
    foreign = Fill("bifrost:zzzz:1", "0000f001.foreign.0001.01", "BUY", 500, SPOT, 1.0, h.now)
    h.send(foreign)  # booked as ours by some path that went wrong

    found = h.send(Reconciled((), h.now + timedelta(seconds=1), exec_ids=frozenset({"exec.1"}), execs_since=T0),
                   after_s=1.0)
    actions = h.control("flatten")

    assert "reconcile_mismatch" in [o["kind"] for o in records(found, "operation")]
    assert not h.engine.reconciled and "not_reconciled" in h.engine.self_check("running").block_reasons
    assert placed(actions) == []
    assert h.engine.flatten_outcome is not None and h.engine.flatten_outcome[0] == "failed"
    assert "ledger mismatch" in h.engine.flatten_outcome[1] and h.engine.paused


def test_a_corrected_execution_replaces_the_original_instead_of_adding_to_it() -> None:
    h = started()
    [order] = placed(h.quote(SPOT))
    h.fill(order, exec_id="0000f007.65a1b2c3.0001.01", price=180.00)
    booked = h.engine.book.hedge_shares

    corrected = h.fill(order, exec_id="0000f007.65a1b2c3.0001.02", price=180.05)
    stale = h.fill(order, exec_id="0000f007.65a1b2c3.0001.01", price=180.00)  # the original, reported again

    assert h.engine.book.hedge_shares == booked == -order.qty
    assert records(corrected, "fill")[0]["replaces"] == "0000f007.65a1b2c3.0001.01"
    assert len(operations(corrected, "fill_corrected")) == 1
    assert records(stale, "fill") == []
    assert h.engine.last_hedge_price == 180.05
    assert h.engine.pnl.holding("hedge").avg_cost == pytest.approx(180.05)


def test_flatten_with_no_hedge_shares_sends_nothing() -> None:
    h = started()

    actions = h.control("flatten")

    assert placed(actions) == []
    assert not h.engine.flattening
    assert h.engine.paused


def test_stop_emits_stop_and_no_order_follows_whatever_the_delta() -> None:
    h, _ = hedged()
    working = placed(h.quote(SPOT + 2.0, after_s=61.0))[0]
    h.ack(working)

    on_stop = h.control("stop")
    afterwards = [a for spot in (150.0, 200.0, 220.0) for a in h.quote(spot, after_s=61.0)]
    afterwards += h.control("flatten") + h.control("resume") + h.quote(230.0, after_s=61.0)

    assert [a for a in on_stop if isinstance(a, Stop)] != []
    assert CancelOrder(working.order_ref) in on_stop
    assert placed(afterwards) == []


def test_an_unknown_control_command_is_refused() -> None:
    h = started()

    with pytest.raises((ValueError, BifrostError), match="liquidate_everything"):
        h.control("liquidate_everything")


# ---- order trouble ---------------------------------------------------------------------------------------


def test_an_ack_timeout_makes_the_order_unknown_and_nothing_is_resent_while_it_is() -> None:
    h = started()
    order = placed(h.quote(SPOT))[0]

    h.timer(after_s=h.engine.params.ack_timeout_s)
    state_after_timeout = h.engine.orders[order.order_ref].state
    meanwhile = [a for spot in (183.0, 186.0, 190.0, 200.0) for a in h.quote(spot, after_s=61.0)]
    in_flight, execution = h.engine.gate_state(h.now).order_in_flight, h.engine.classification.execution
    resolved = h.send(Reconciled((_at_broker(order, "working"),), h.now))

    assert state_after_timeout == OrderState.UNKNOWN
    assert placed(meanwhile) == []
    assert in_flight
    assert execution == "E4"
    assert records(resolved, "order")[0]["state"] == "working"


def test_a_disconnect_makes_working_orders_unknown_until_the_broker_says_they_are_open() -> None:
    h = started()
    order = placed(h.quote(SPOT))[0]
    h.ack(order)

    h.send(BrokerStatus(False, h.now))
    unknown = h.engine.orders[order.order_ref].state
    h.send(BrokerStatus(True, h.now, ), after_s=2.0)
    h.send(Reconciled((_at_broker(order, "working"),), h.now))

    assert unknown == OrderState.UNKNOWN
    assert h.engine.reconciled
    assert h.engine.orders[order.order_ref].state == OrderState.WORKING


def test_an_order_the_broker_reports_filled_stays_unknown_and_blocks_until_its_executions_arrive() -> None:
    h = started()
    order = placed(h.quote(SPOT))[0]
    h.send(BrokerStatus(False, h.now))
    h.send(BrokerStatus(True, h.now), after_s=2.0)

    h.send(Reconciled((_at_broker(order, "filled", filled=order.qty),), h.now))
    before_executions = (h.engine.reconciled, h.engine.orders[order.order_ref].state)
    h.send(Fill(order.order_ref, "e1", order.side, order.qty, SPOT, 1.0, h.now))
    h.send(Reconciled((_at_broker(order, "filled", filled=order.qty),), h.now))

    assert before_executions == (False, OrderState.UNKNOWN)
    assert h.engine.reconciled
    assert h.engine.orders[order.order_ref].state == OrderState.FILLED


def test_an_order_the_broker_never_mentions_cannot_fill_and_is_cancelled_at_reconcile() -> None:
    h = started()
    order = placed(h.quote(SPOT))[0]
    h.send(BrokerStatus(False, h.now))
    h.send(BrokerStatus(True, h.now), after_s=2.0)

    h.send(Reconciled((), h.now))

    assert h.engine.reconciled
    assert h.engine.orders[order.order_ref].state == OrderState.CANCELLED


def test_an_open_order_of_ours_the_engine_never_knew_is_adopted_and_blocks_new_hedges() -> None:
    h = started()
    foreign = PlaceOrder("bifrost:dead0000:7", "NVDA", "SELL", 300, "market", None)

    adopted = h.send(Reconciled((_at_broker(foreign, "partial", filled=100),), h.now))
    meanwhile = [a for spot in (185.0, 190.0) for a in h.quote(spot, after_s=61.0)]

    assert h.engine.orders[foreign.order_ref].state == OrderState.PARTIAL
    assert records(adopted, "order")[0]["side"] == "SELL"
    assert "order_adopted" in [o["kind"] for o in records(adopted, "operation")]
    assert placed(meanwhile) == []
    assert h.engine.gate_state(h.now).order_in_flight


def test_a_periodic_reconcile_leaves_an_order_placed_while_asking_alone() -> None:
    h = started()
    asked_at = h.now
    order = placed(h.quote(SPOT, after_s=0.1))[0]

    h.send(Reconciled((), h.now, asked_at=asked_at))

    assert h.engine.orders[order.order_ref].state == OrderState.SENT


def test_after_a_reconnect_not_reconciled_blocks_until_reconciled() -> None:
    h, _ = hedged()
    h.send(BrokerStatus(False, h.now), after_s=1.0)
    h.send(BrokerStatus(True, h.now), after_s=1.0)

    blocked = [a for spot in (182.0, 182.1, 182.2, 182.3, 182.4) for a in h.quote(spot, after_s=15.0)]
    allowed = h.send(Reconciled((), h.now))

    assert placed(blocked) == []
    assert ["not_reconciled"] in [d["reasons"] for d in records(blocked, "decision")]
    assert len(placed(allowed)) == 1


def test_memory_stays_bounded_over_months_of_hedging() -> None:
    h = started(auto_fill=True, max_daily_hedges=10_000, cooldown_s=0, min_price_move_bps=0)
    h.actions = _Discard()  # the harness's own log would be the only thing growing
    sizes = []

    for _day in range(25):  # 400 hedges a day for 25 days: 10,000 hedges, well past the 7-day execution memory
        for i in range(400):
            h.quote(SPOT + (3.0 if i % 2 else -3.0), after_s=1.0)
        sizes.append((len(h.engine.orders), len(h.engine._live), len(h.engine.fills)))
        h.quote(SPOT, after_s=86_400.0 - 400.0)  # the next morning

    assert h.engine.seq > 10_000  # every quote hedged
    assert sizes[-1] == sizes[9]  # after 10,000 hedges the same as after 4,000: nothing grows with time
    assert sizes[-1][0] <= 100 + 1 and sizes[-1][2] <= 8 * 401  # 100 finished orders; 7 days and today of fills


class _Discard(list):
    def extend(self, items: Iterable[Action]) -> None:
        pass


def test_a_duplicate_fill_is_ignored() -> None:
    h = started()
    order = placed(h.quote(SPOT))[0]
    h.ack(order)

    h.fill(order, qty=40.0, exec_id="exec.A")
    duplicate = h.fill(order, qty=40.0, exec_id="exec.A")

    assert h.engine.book.hedge_shares == -40.0
    assert duplicate == []
    assert h.engine.orders[order.order_ref].state == OrderState.PARTIAL


def test_a_rejected_order_is_recorded_and_the_cooldown_prevents_a_retry_storm() -> None:
    h = started()
    order = placed(h.quote(SPOT))[0]

    rejected = h.update(order, "rejected", message="margin")
    for _ in range(50):
        h.quote(SPOT, after_s=1.0)
    within_cooldown = placed(h.actions)
    after_cooldown = h.quote(SPOT + 0.5, after_s=15.0)

    assert records(rejected, "order")[0]["state"] == "rejected"
    assert len(operations(rejected, "order_rejected")) == 1
    assert h.engine.book.hedge_shares == 0.0
    assert within_cooldown == [order]
    assert len(placed(after_cooldown)) == 1


def test_a_working_order_is_cancelled_after_the_working_timeout() -> None:
    h = started()
    order = placed(h.quote(SPOT))[0]
    h.ack(order)

    early = h.timer(after_s=h.engine.params.working_timeout_s - 1)
    due = h.timer(after_s=1.0)
    again = h.timer(after_s=1.0)

    assert [a for a in early if isinstance(a, CancelOrder)] == []
    assert [a for a in due if isinstance(a, CancelOrder)] == [CancelOrder(order.order_ref)]
    assert [a for a in again if isinstance(a, CancelOrder)] == []


# ---- bad data --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bid", "ask"),
    [(math.nan, 180.01), (179.99, math.nan), (-1.0, -1.0), (-1.0, 180.01), (0.0, 0.0), (0.0, 180.01),
     (200.2, 199.8), (math.inf, math.inf)],
    ids=["nan_bid", "nan_ask", "minus_one", "minus_one_bid", "zero", "zero_bid", "crossed", "inf"],
)
def test_a_quote_that_is_not_a_price_is_ignored(bid: float, ask: float) -> None:
    h, _ = hedged()
    quote_ts = h.engine.quote_ts

    actions = h.send(Quote("NVDA", bid, ask, None, h.now), after_s=1.0)

    assert (h.engine.bid, h.engine.ask) == (SPOT - 0.01, SPOT + 0.01)
    assert h.engine.quote_ts == quote_ts
    assert placed(actions) == []


def test_a_bad_first_quote_does_not_complete_the_sync() -> None:
    h = new_harness()
    h.send(BrokerStatus(True, h.now))
    h.send(PositionsSynced(ACCOUNT, h.now))

    h.send(Quote("NVDA", -1.0, -1.0, None, h.now))

    assert h.engine.state == TradingState.SYNC
    assert h.engine.book.legs == {}


def test_a_bad_option_quote_is_ignored() -> None:
    h = started()

    h.send(OptionQuote(CALL.con_id, 0.0, -1.0, h.now))

    assert h.engine.book.legs[CALL.con_id].bid is None


def test_another_symbols_quote_is_ignored() -> None:
    h = started()

    h.send(Quote("AMD", 99.0, 99.1, None, h.now), after_s=1.0)

    assert h.engine.bid == SPOT - 0.01


# ---- determinism -----------------------------------------------------------------------------------------


def _scripted_run() -> list[Action]:
    h = started(auto_fill=True)
    walk = random.Random(11)
    spot = SPOT
    for i in range(400):
        spot *= math.exp(walk.gauss(0.0, 0.003))
        h.quote(spot, after_s=walk.choice([0.5, 1.0, 7.0]))
        if i % 50 == 25:
            h.control("pause" if i % 100 == 25 else "resume")
        if i % 60 == 0:
            h.timer(after_s=0.5)
    return h.actions


def test_the_same_events_give_the_same_actions() -> None:
    first = _scripted_run()

    second = _scripted_run()

    assert first == second
    assert len(placed(first)) > 5


def test_a_rejected_force_hedge_is_not_retried_on_every_quote() -> None:
    h = started(force_hedge_shares=50, hedge_threshold_shares=25, cooldown_s=0, min_price_move_bps=0)
    order = placed(h.quote(SPOT))[0]
    h.ack(order)

    h.update(order, "rejected", message="margin")
    retries = [placed(h.quote(SPOT + 0.01 * i, after_s=0.5)) for i in range(8)]  # 4 s of forced delta
    later = placed(h.quote(SPOT, after_s=2.0))

    assert all(r == [] for r in retries)
    assert len(later) == 1  # after the backoff the hedge is tried again, once
