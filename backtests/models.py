"""Backtest records: market datasets (and imports of large tick files), backtest runs and parameter sweeps (django-q2
runs them), and the daily statistics rollup."""
from __future__ import annotations

from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q


class MarketDataset(models.Model):
    """Validated ticks of one underlying, stored as a compact .npz under MEDIA_ROOT/datasets/."""

    class Source(models.TextChoices):
        UPLOAD = "upload"
        IMPORT = "import"
        RECORDED = "recorded"
        SYNTHETIC = "synthetic"

    name = models.CharField(max_length=200)
    source = models.CharField(max_length=10, choices=Source.choices)
    file = models.FileField(upload_to="datasets/", max_length=300)
    ticks = models.PositiveIntegerField()
    first_ts = models.DateTimeField()
    last_ts = models.DateTimeField()
    has_iv = models.BooleanField(default=False)
    # Where it came from: the original file name and its sha256, the synthetic spec, the history period.
    meta = models.JSONField(default=dict, blank=True)
    created_by = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.source}, {self.ticks} ticks)"


class RunState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATES = (RunState.QUEUED, RunState.RUNNING)


class Sweep(models.Model):
    """A grid (or list) of parameter sets replayed over one dataset, ranked by an objective."""

    class Objective(models.TextChoices):
        PNL = "pnl"
        SHARPE = "sharpe"
        DRAWDOWN_ADJUSTED = "drawdown_adjusted"

    name = models.CharField(max_length=200, blank=True)
    dataset = models.ForeignKey(MarketDataset, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="sweeps")
    synthetic = models.JSONField(null=True, blank=True)
    # {"base": {...params...}, "grid": {"name": [values, ...]}} or {"base": {...}, "list": [{...}, ...]}
    spec = models.JSONField()
    objective = models.CharField(max_length=20, choices=Objective.choices, default=Objective.PNL)
    start_position = models.CharField(max_length=40, default="straddle:10")
    state = models.CharField(max_length=10, choices=RunState.choices, default=RunState.QUEUED, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    runs_total = models.PositiveIntegerField(default=0)
    runs_done = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # Ranked, best first: [{rank, run_id, params (the varied ones), params_hash, objective, pnl_total_usd, ...}]
    results = models.JSONField(null=True, blank=True)
    created_by = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(progress__lte=100), name="sweep_progress_le_100"),
            models.CheckConstraint(condition=Q(dataset__isnull=False) | Q(synthetic__isnull=False),
                                   name="sweep_has_data"),
        ]

    def __str__(self) -> str:
        return f"sweep #{self.pk} {self.name} ({self.state}, {self.runs_done}/{self.runs_total})"


class BacktestRun(models.Model):
    """One replay of a dataset (or a synthetic spec) under one parameter set; `result` is result.json."""

    dataset = models.ForeignKey(MarketDataset, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="runs")
    synthetic = models.JSONField(null=True, blank=True)
    params = models.JSONField()
    params_hash = models.CharField(max_length=64, db_index=True)
    start_position = models.CharField(max_length=40, default="straddle:10")
    state = models.CharField(max_length=10, choices=RunState.choices, default=RunState.QUEUED, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    error = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    path = models.CharField(max_length=10, blank=True)  # fast | per_event, as run
    created_by = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    elapsed_s = models.FloatField(null=True, blank=True)
    sweep = models.ForeignKey(Sweep, null=True, blank=True, on_delete=models.CASCADE, related_name="runs")
    # Which worker holds the run (host:pid), its claim count and its last sign of life, by the database's clock: a
    # run whose worker stopped heart-beating is queued again (`backtest_runs_requeue_stale`), and only the claim
    # that holds it may record its result.
    worker = models.CharField(max_length=100, blank=True)
    attempt = models.PositiveSmallIntegerField(default=0)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(progress__lte=100), name="run_progress_le_100"),
        ]
        indexes = [models.Index(fields=["sweep", "state"])]

    def __str__(self) -> str:
        return f"backtest #{self.pk} ({self.state}, {self.progress} %)"


class DailyStats(models.Model):
    """The statistics of one US/Eastern trading date, rolled up by the scheduled job `stats_rollup_daily`."""

    trading_date = models.DateField(unique=True)
    stats = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-trading_date"]
        verbose_name_plural = "daily stats"

    def __str__(self) -> str:
        return f"stats {self.trading_date}"


class DatasetImport(models.Model):
    """A tick CSV too large to parse in the web request: staged under MEDIA_ROOT/imports/ and parsed by a django-q2
    worker into a MarketDataset; a refused file keeps its line and reason in `error`, and nothing is stored."""

    name = models.CharField(max_length=200)
    original_name = models.CharField(max_length=300, blank=True)
    file = models.FileField(upload_to="imports/", max_length=300, blank=True)  # the staged copy, deleted once parsed
    size_bytes = models.PositiveBigIntegerField(default=0)
    state = models.CharField(max_length=10, choices=RunState.choices, default=RunState.QUEUED, db_index=True)
    progress = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    error = models.TextField(blank=True)
    dataset = models.ForeignKey(MarketDataset, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="imports")
    task_id = models.CharField(max_length=64, blank=True)
    created_by = models.CharField(max_length=150, default="system")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(progress__lte=100), name="import_progress_le_100"),
        ]

    def __str__(self) -> str:
        return f"import #{self.pk} {self.name} ({self.state}, {self.progress} %)"
