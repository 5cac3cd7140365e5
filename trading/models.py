"""What the daemon records and what the control room reads: snapshots, the operations log, orders, fills,
decisions, control commands, strategy configs, the lease, the managed book and the account."""
from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class StrategyConfig(models.Model):
    """An immutable version of the strategy parameters; exactly one row is active."""

    name = models.CharField(max_length=100)
    params = models.JSONField()
    params_hash = models.CharField(max_length=64, db_index=True)
    created_by = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(auto_now_add=True)
    active = models.BooleanField(default=False)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["active"], condition=Q(active=True), name="one_active_strategy_config"),
        ]

    def __str__(self) -> str:
        return f"{self.name} [{self.params_hash[:8]}]{' (active)' if self.active else ''}"


class DaemonLease(models.Model):
    """The single-instance lock: one row per lease name, renewed by the holder.

    Freshness is judged by the database's clock (`heartbeat_at` is always written as the database's now()) against
    the holder's own interval, so neither a newcomer's config nor a host clock can take a healthy daemon's lease."""

    name = models.CharField(max_length=50, unique=True, default="daemon")
    token = models.CharField(max_length=32)
    owner = models.CharField(max_length=200)
    host = models.CharField(max_length=200)
    pid = models.IntegerField()
    mode = models.CharField(max_length=10, default="sim")
    started_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField()
    heartbeat_interval = models.DurationField(default=timedelta(seconds=1))
    # The holder's own clock at its last renewal: compared with its snapshots' time, it shows how far behind
    # the written status is while the daemon itself is alive (same clock on both sides).
    daemon_clock_at = models.DateTimeField(null=True, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.owner} ({self.token})"


class SinkProgress(models.Model):
    """How far each daemon's records have been written: the sequence number of the last one applied.

    Written in the same transaction as the records, so a journal replayed after its batch did commit (a write that
    outlived its deadline, a crash between commit and truncation) applies nothing twice."""

    source = models.CharField(max_length=32, unique=True)  # the writing daemon's lease token
    last_seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "sink progress"

    def __str__(self) -> str:
        return f"{self.source}: {self.last_seq}"


class ControlState(models.Model):
    """Operator switches that must survive a daemon restart (pause, risk halt). A singleton, id=1."""

    paused = models.BooleanField(default=False)
    paused_reason = models.CharField(max_length=500, blank=True)
    halted = models.BooleanField(default=False)
    halt_reason = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    @classmethod
    def load(cls) -> ControlState:
        obj, _ = cls.objects.get_or_create(id=1)
        return obj


class ControlCommand(models.Model):
    """An operator command on its way to the daemon: pending → acked → done | rejected | expired."""

    class Command(models.TextChoices):
        START = "start"
        STOP = "stop"
        PAUSE = "pause"
        RESUME = "resume"
        FLATTEN = "flatten"
        RESET_HALT = "reset_halt"
        RECONNECT = "reconnect"
        REFRESH_ACCOUNT = "refresh_account"
        COMMANDER_RUN = "commander_run"

    class State(models.TextChoices):
        PENDING = "pending"
        ACKED = "acked"
        DONE = "done"
        REJECTED = "rejected"
        EXPIRED = "expired"

    command = models.CharField(max_length=20, choices=Command.choices)
    reason = models.CharField(max_length=500, blank=True)
    payload = models.JSONField(default=dict, blank=True)  # commander_run: {"run_id": n}
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    result = models.TextField(blank=True)
    created_by = models.CharField(max_length=150)
    source = models.CharField(max_length=20, default="api")
    # Database time, as every age and expiry of a command is judged: no host clock decides what is too old.
    created_at = models.DateTimeField(db_default=Now(), db_index=True)
    acked_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.command} ({self.state})"


class Operation(models.Model):
    """The operations log: every command, state transition, order event, block and halt, with who and why."""

    class Kind(models.TextChoices):
        """Every kind of operation there is (README: the operations log); a new feature adds its kinds here."""

        # operators and the control queue
        COMMAND = "command", "command queued"
        COMMAND_ACKED = "command_acked"
        COMMAND_DONE = "command_done"
        COMMAND_REJECTED = "command_rejected"
        COMMAND_EXPIRED = "command_expired"
        PAUSE = "pause"
        RESUME = "resume"
        FLATTEN = "flatten"
        RESET_HALT = "reset_halt"
        STOP = "stop"
        CONFIG_ACTIVATED = "config_activated"
        ALERT_ACKED = "alert_acked"
        ALERTS_SILENCED = "alerts_silenced"
        # the daemon's life
        DAEMON_START = "daemon_start"
        DAEMON_STOP = "daemon_stop"
        DAEMON_STATE = "daemon_state"
        LEASE_TAKEOVER = "lease_takeover"
        LEASE_LOST = "lease_lost"
        LEASE_UNCONFIRMED = "lease_unconfirmed"
        LEASE_CONFIRMED = "lease_confirmed"
        EDGE = "edge", "edge safety (lease, journal, clock) changed"
        PERIODIC_FAILED = "periodic_failed"
        PERIODIC_RECOVERED = "periodic_recovered"
        JOURNAL_TORN = "journal_torn"
        RECORD_REJECTED = "record_rejected"
        # the broker and reconciliation
        BROKER = "broker"
        CLOCK_SKEW = "clock_skew"
        CLOCK_OK = "clock_ok"
        RECONCILE = "reconcile"
        RECONCILE_MISMATCH = "reconcile_mismatch"
        FOREIGN_IGNORED = "foreign_ignored"
        # the book
        LEG_ADOPTED = "leg_adopted"
        LEG_NOT_ADOPTED = "leg_not_adopted"
        LEG_SETTLED = "leg_settled"
        NEW_TRADING_DAY = "new_trading_day"
        TRADING_STATE = "trading_state"
        HALT = "halt"
        HEDGE_BLOCKED = "hedge_blocked"
        FLATTEN_DONE = "flatten_done"
        FLATTEN_FAILED = "flatten_failed"
        # strategies and the commander
        STRATEGY_SENDING = "strategy_sending", "strategy sending switched"
        COMMANDER_RUN = "commander_run"
        STRATEGY_SKIPPED = "strategy_skipped", "strategy skipped (stale or missing intent)"
        # orders and fills
        ORDER_SENT = "order_sent"
        ORDER_WORKING = "order_working"
        ORDER_PARTIAL = "order_partial"
        ORDER_FILLED = "order_filled"
        ORDER_CANCELLED = "order_cancelled"
        ORDER_REJECTED = "order_rejected"
        ORDER_UNKNOWN = "order_unknown"
        ORDER_CANCEL = "order_cancel", "cancel sent"
        ORDER_CANCEL_FAILED = "order_cancel_failed"
        ORDER_SUPPRESSED = "order_suppressed"
        ORDER_ADOPTED = "order_adopted"
        FILL = "fill"
        FILL_RECOVERED = "fill_recovered"
        FILL_CORRECTED = "fill_corrected"
        FILL_IGNORED = "fill_ignored"

    ts = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=40, db_index=True, choices=Kind.choices)
    actor = models.CharField(max_length=150, default="daemon")
    message = models.TextField()
    order_ref = models.CharField(max_length=64, blank=True, db_index=True)
    side = models.CharField(max_length=4, blank=True)
    qty = models.FloatField(null=True, blank=True)
    price = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)
    reasons = models.JSONField(default=list, blank=True)
    trading_state = models.CharField(max_length=20, blank=True)
    params_hash = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-ts", "-id"]
        indexes = [models.Index(fields=["kind", "-ts"])]

    def __str__(self) -> str:
        return f"{self.ts:%Y-%m-%d %H:%M:%S} {self.kind}: {self.message}"


class Order(models.Model):
    """A Bifrost order, keyed by its idempotent orderRef `bifrost:<lease>:<seq>`."""

    order_ref = models.CharField(max_length=64, unique=True)
    intent = models.CharField(max_length=10, default="hedge")  # hedge | flatten
    account = models.CharField(max_length=32, blank=True)
    mode = models.CharField(max_length=10, blank=True)  # sim | paper | live
    symbol = models.CharField(max_length=20)
    side = models.CharField(max_length=4)
    qty = models.FloatField()
    order_type = models.CharField(max_length=10)
    limit_price = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)
    state = models.CharField(max_length=12, db_index=True)
    filled_qty = models.FloatField(default=0)
    avg_price = models.DecimalField(max_digits=18, decimal_places=6, null=True, blank=True)
    broker_order_id = models.CharField(max_length=32, blank=True)
    message = models.TextField(blank=True)
    reason = models.CharField(max_length=200, blank=True)
    spot_at_decision = models.FloatField(null=True, blank=True)
    params_hash = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(db_index=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.order_ref} {self.side} {self.qty:g} {self.symbol} ({self.state})"


class Fill(models.Model):
    """One execution of a Bifrost order, as confirmed by the broker (never assumed)."""

    exec_id = models.CharField(max_length=64, unique=True)
    order_ref = models.CharField(max_length=64, db_index=True)
    account = models.CharField(max_length=32, blank=True)
    con_id = models.BigIntegerField(null=True, blank=True)
    symbol = models.CharField(max_length=20)
    side = models.CharField(max_length=4)
    qty = models.FloatField()
    price = models.DecimalField(max_digits=18, decimal_places=6)
    commission = models.DecimalField(max_digits=18, decimal_places=6, default=0)
    ts = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-ts", "-id"]

    def __str__(self) -> str:
        return f"{self.exec_id} {self.side} {self.qty:g} @ {self.price}"


class Decision(models.Model):
    """An evaluated hedge: allowed or not, with every reason, the intended shares and the state behind it."""

    ts = models.DateTimeField(db_index=True)
    allowed = models.BooleanField()
    reasons = models.JSONField(default=list)
    intent_shares = models.FloatField()
    order_shares = models.FloatField(null=True, blank=True)  # after rounding, the per-order cap and the clip
    net_delta_shares = models.FloatField()
    spot = models.FloatField(null=True, blank=True)
    trading_state = models.CharField(max_length=20)
    classification = models.CharField(max_length=20, blank=True)
    order_ref = models.CharField(max_length=64, blank=True)
    params_hash = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-ts", "-id"]

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else "blocked: " + ", ".join(self.reasons)
        return f"{self.ts:%H:%M:%S} {self.intent_shares:+g} {verdict}"


class StatusCurrent(models.Model):
    """The latest snapshot the daemon wrote (a singleton, id=1); `payload` has the /api/status/ shape."""

    ts = models.DateTimeField()
    daemon_state = models.CharField(max_length=20)
    trading_state = models.CharField(max_length=20)
    verdict = models.CharField(max_length=10)
    payload = models.JSONField()


class StatusHistory(models.Model):
    """Snapshots kept over time: every BIFROST_HISTORY_S and at every order event."""

    ts = models.DateTimeField(db_index=True)
    daemon_state = models.CharField(max_length=20)
    trading_state = models.CharField(max_length=20)
    verdict = models.CharField(max_length=10)
    payload = models.JSONField()

    class Meta:
        ordering = ["-ts", "-id"]
        verbose_name_plural = "status history"


class ManagedLeg(models.Model):
    """An option leg Bifrost manages: it counts in delta whatever its moneyness until it is retired."""

    con_id = models.BigIntegerField(unique=True)
    symbol = models.CharField(max_length=20)
    local_symbol = models.CharField(max_length=40, blank=True)
    right = models.CharField(max_length=1)
    strike = models.FloatField()
    expiry = models.DateField()
    multiplier = models.IntegerField(default=100)
    adopted_qty = models.FloatField()
    adopted_at = models.DateTimeField()
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["expiry", "strike", "right"]

    def __str__(self) -> str:
        return f"{self.symbol} {self.expiry} {self.strike:g}{self.right}"


class AccountSnapshot(models.Model):
    """The account summary as fetched from the broker, kept over time."""

    ts = models.DateTimeField(db_index=True)
    account = models.CharField(max_length=32)
    net_liquidation = models.DecimalField(max_digits=18, decimal_places=2, null=True)
    buying_power = models.DecimalField(max_digits=18, decimal_places=2, null=True)
    maintenance_margin = models.DecimalField(max_digits=18, decimal_places=2, null=True)
    cash = models.DecimalField(max_digits=18, decimal_places=2, null=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-ts", "-id"]


class Position(models.Model):
    """An account position as last synced, with its mark; `managed` says whether Bifrost trades it."""

    account = models.CharField(max_length=32)
    con_id = models.BigIntegerField()
    # Sized for whatever IB sends (CRYPTO, CMDTY, FUND, BAG...; long local symbols), not only for stock and options.
    symbol = models.CharField(max_length=32)
    local_symbol = models.CharField(max_length=64, blank=True)
    sec_type = models.CharField(max_length=16)
    right = models.CharField(max_length=8, blank=True)
    strike = models.FloatField(null=True, blank=True)
    expiry = models.DateField(null=True, blank=True)
    multiplier = models.IntegerField(default=1)
    qty = models.FloatField()
    avg_cost = models.FloatField(null=True, blank=True)
    market_price = models.FloatField(null=True, blank=True)
    managed = models.BooleanField(default=False)
    data = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["symbol", "sec_type", "expiry", "strike"]
        constraints = [models.UniqueConstraint(fields=["account", "con_id"], name="one_position_per_contract")]

    def __str__(self) -> str:
        return f"{self.local_symbol or self.symbol} x {self.qty:g}"


# ---- strategies and the commander (seed 003, DESIGN §11) ---------------------------------------------------------


class Strategy(models.Model):
    """A strategy that publishes intents (target option positions) and never trades. `send_enabled` is the
    operator's audited switch from dry-run to sending; off by default."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=50)  # a key of trading.core.strategies.REGISTRY
    enabled = models.BooleanField(default=True)
    send_enabled = models.BooleanField(default=False)
    params = models.JSONField(default=dict, blank=True)
    capital_allocation = models.FloatField(default=0.1)  # share of net liquidation it may hold in premium
    risk_params = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]
        verbose_name_plural = "strategies"

    def __str__(self) -> str:
        return f"{self.slug} ({self.kind})"


class StrategyIntent(models.Model):
    """One published intent; the latest per strategy is the one the commander reads, the rest is history."""

    class Status(models.TextChoices):
        SUCCESS = "success"
        ERROR = "error"

    strategy = models.ForeignKey(Strategy, on_delete=models.CASCADE, related_name="intents")
    updated_at = models.DateTimeField(db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices)
    error_message = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    target_positions = models.JSONField(default=list, blank=True)  # [{contract, qty, price_usd}]

    class Meta:
        ordering = ["-updated_at", "-id"]
        get_latest_by = ["updated_at", "id"]

    def __str__(self) -> str:
        return f"{self.strategy.slug} @ {self.updated_at:%Y-%m-%d %H:%M} ({self.status})"


class PortfolioSnapshot(models.Model):
    """The account as reconcile saw it for one commander run: the commander's single source of truth."""

    taken_at = models.DateTimeField(db_index=True)
    account = models.CharField(max_length=32, blank=True)
    net_liquidation = models.FloatField(null=True, blank=True)
    available_funds = models.FloatField(null=True, blank=True)
    holdings = models.JSONField(default=list, blank=True)  # [{contract, qty, owner: bifrost|manual}]
    open_orders = models.JSONField(default=list, blank=True)  # Bifrost's, [{contract, qty, order_ref}]

    class Meta:
        ordering = ["-taken_at", "-id"]

    def __str__(self) -> str:
        return f"snapshot {self.taken_at:%Y-%m-%d %H:%M:%S}"


class CommanderRun(models.Model):
    """The audit record of one commander decision: what it read, what it decided, what it sent."""

    class Trigger(models.TextChoices):
        SCHEDULED = "scheduled"
        MANUAL = "manual"

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"
        PARTIAL_SUCCESS = "partial_success"

    executed_at = models.DateTimeField(db_index=True)
    trigger = models.CharField(max_length=10, choices=Trigger.choices, default=Trigger.MANUAL)
    dry_run = models.BooleanField(default=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.QUEUED, db_index=True)
    summary = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150, default="system")
    strategies = models.JSONField(default=list, blank=True)  # the slugs asked for ([] = every enabled one)
    snapshot = models.ForeignKey(PortfolioSnapshot, null=True, blank=True, on_delete=models.SET_NULL)
    intents_read = models.JSONField(default=list, blank=True)  # [{strategy, intent_id, updated_at}]
    decision = models.JSONField(default=dict, blank=True)
    orders = models.JSONField(default=list, blank=True)  # planned with their orderRefs first, then outcomes
    steps = models.JSONField(default=list, blank=True)  # [{step, by, at, outcome}]

    class Meta:
        ordering = ["-executed_at", "-id"]

    def __str__(self) -> str:
        return f"commander run #{self.pk} ({self.state}{', dry-run' if self.dry_run else ''})"
