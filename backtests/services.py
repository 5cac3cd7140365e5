"""Business actions on backtests: datasets (and queued imports of large tick files), queueing and cancelling runs
and sweeps, executing them (the django-q2 tasks call these), the statistics rollup, history retention and the
scheduled jobs."""
from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.db import transaction
from django.db.models import Count, DateTimeField, ExpressionWrapper, F, Value
from django.db.models.functions import Now
from django.utils import timezone

from backtests import data as tickdata
from backtests.errors import BacktestStateError
from backtests.models import ACTIVE_STATES, BacktestRun, DailyStats, DatasetImport, MarketDataset, RunState, Sweep
from backtests.replay import Cancelled, parse_start_position, run_backtest
from trading.core.calendar import trading_date
from trading.core.gates import GATE_REASONS
from trading.core.params import StrategyParams
from trading.errors import ConfigError, DataFileError
from trading.models import Decision, StatusHistory

log = logging.getLogger(__name__)
PROGRESS_MIN_INTERVAL_S = 0.25
TASK_RUN = "backtests.tasks.backtest_run_task"
TASK_IMPORT = "backtests.tasks.dataset_import_task"
MB = 1024 * 1024
SCHEDULES = (
    # (name, func, schedule type, minutes); both run once a day, after the US close.
    ("bifrost: daily stats rollup", "backtests.tasks.stats_rollup_task", "D"),
    ("bifrost: history retention", "backtests.tasks.history_retention_task", "D"),
)


# ---- datasets ---------------------------------------------------------------------------------------------------


def dataset_create(*, name: str, ticks: tickdata.TickData, source: str, user: str,
                   meta: Mapping[str, Any] | None = None) -> MarketDataset:
    """Store validated ticks as a dataset (.npz under MEDIA_ROOT/datasets/)."""
    if source not in MarketDataset.Source.values:
        raise ConfigError("source", f"expected one of {MarketDataset.Source.values}, got {source!r}")
    if not name.strip():
        raise ConfigError("name", "must not be empty")
    dataset = MarketDataset(
        name=name.strip()[:200], source=source, ticks=len(ticks), first_ts=ticks.ts(0), last_ts=ticks.ts(len(ticks) - 1),
        has_iv=ticks.has_iv, meta=dict(meta or {}), created_by=user,
    )
    dataset.file.save(f"{uuid.uuid4().hex}.npz", ContentFile(tickdata.npz_bytes(ticks)), save=False)
    dataset.save()
    return dataset


def dataset_import_csv(*, name: str, file: str | Path | IO[str], user: str, source: str = "import",
                       progress: tickdata.Progress | None = None, original_name: str = "") -> MarketDataset:
    """Validate a tick file in full (a CSV, or Parquet from a path) and store it; a bad row raises
    DataFileError(line, reason), nothing is stored."""
    ticks = (tickdata.read_ticks(file, progress=progress) if isinstance(file, str | Path)
             else tickdata.read_ticks_csv(file, progress=progress))
    label = original_name or (Path(file).name if isinstance(file, str | Path) else "")
    meta: dict[str, Any] = {"original_name": label}
    if isinstance(file, str | Path):
        meta["sha256"] = _sha256(Path(file))
    return dataset_create(name=name, ticks=ticks, source=source, user=user, meta=meta)


def dataset_synthetic_create(*, name: str, synthetic: Mapping[str, Any], user: str) -> MarketDataset:
    spec = tickdata.SyntheticSpec.from_dict(synthetic_spec_check(synthetic=synthetic))
    return dataset_create(name=name, ticks=tickdata.generate(spec), source="synthetic", user=user,
                          meta={"synthetic": spec.to_dict()})


def dataset_from_history(*, name: str, since: datetime, until: datetime, user: str) -> MarketDataset:
    """Recorded daemon history as a dataset: StatusHistory snapshots in [since, until). See
    `backtests.data.from_status_history` for its cadence limitation (one quote per snapshot)."""
    if since >= until:
        raise ConfigError("until", "must be after since")
    rows = StatusHistory.objects.filter(ts__gte=since, ts__lt=until).order_by("ts", "id").values_list("ts", "payload")
    try:
        ticks = tickdata.from_status_history(rows.iterator(chunk_size=2000))
    except DataFileError:
        raise ConfigError("since", f"no usable quotes in the status history between {since.isoformat()} and "
                                   f"{until.isoformat()}") from None
    return dataset_create(name=name, ticks=ticks, source="recorded", user=user, meta={
        "since": since.isoformat(), "until": until.isoformat(),
        "cadence_note": f"one quote per StatusHistory snapshot (every {settings.BIFROST_HISTORY_S:g} s and at order "
                        "events), not every quote the daemon saw",
    })


# ---- uploads: small files are parsed in the request (by the form), larger ones by a worker -----------------------


def dataset_upload_check(*, size_bytes: int) -> bool:
    """Refuse an upload over BIFROST_UPLOAD_MAX_MB (ConfigError on `csv_file` naming the limit). True when it is
    small enough to parse in the web request, False when a worker must (`dataset_import_enqueue`)."""
    limit_mb = float(settings.BIFROST_UPLOAD_MAX_MB)
    if size_bytes > limit_mb * MB:
        raise ConfigError("csv_file", f"the file is {size_bytes / MB:,.2f} MB; uploads are at most {limit_mb:g} MB "
                                      "(BIFROST_UPLOAD_MAX_MB): import larger files with `manage.py import_ticks`")
    return size_bytes <= settings.BIFROST_UPLOAD_INLINE_MAX_MB * MB


def dataset_import_enqueue(*, name: str, upload: File, user: str) -> DatasetImport:
    """Stage an uploaded tick CSV under MEDIA_ROOT/imports/ and queue its import for the django-q2 cluster."""
    from django_q.tasks import async_task

    size = int(upload.size or 0)
    dataset_upload_check(size_bytes=size)
    job = DatasetImport(name=(name.strip() or str(upload.name))[:200], original_name=str(upload.name)[:300],
                        size_bytes=size, created_by=user)
    job.file.save(f"{uuid.uuid4().hex}.csv", upload, save=False)

    def push() -> None:
        task_id = async_task(TASK_IMPORT, job.pk, task_name=f"import-{job.pk}", group="imports")
        DatasetImport.objects.filter(pk=job.pk).update(task_id=str(task_id))

    with transaction.atomic():
        job.save()
        transaction.on_commit(push)
    return job


class _ImportProgress:
    """Rows parsed → the job's percentage, written at most every PROGRESS_MIN_INTERVAL_S."""

    def __init__(self, job_id: int, total_lines: int) -> None:
        self.job_id, self.total, self.done, self.last_write = job_id, max(total_lines, 1), 0, 0.0

    def __call__(self, rows: int) -> None:
        self.done += rows
        now = time.monotonic()
        if now - self.last_write >= PROGRESS_MIN_INTERVAL_S:
            self.last_write = now
            DatasetImport.objects.filter(pk=self.job_id).update(progress=min(99, int(100 * self.done / self.total)))


def dataset_import_execute(*, import_id: int) -> str:
    """Claim a queued import and parse it in full: a MarketDataset, or the refusal (line and reason) kept on the job
    and nothing stored. The staged copy is deleted either way. Returns the final state; never raises for a bad file
    (the queue must not retry it)."""
    now = timezone.now()
    if not DatasetImport.objects.filter(pk=import_id, state=RunState.QUEUED).update(state=RunState.RUNNING,
                                                                                   started_at=now):
        return str(DatasetImport.objects.filter(pk=import_id).values_list("state", flat=True).first() or "missing")
    job = DatasetImport.objects.get(pk=import_id)
    fields: dict[str, Any]
    try:
        path = Path(job.file.path)
        dataset = dataset_import_csv(name=job.name, file=path, user=job.created_by, source="upload",
                                     progress=_ImportProgress(job.pk, tickdata.count_rows(path)),
                                     original_name=job.original_name)
        fields = {"state": RunState.DONE, "dataset": dataset, "progress": 100}
    except DataFileError as exc:
        fields = {"state": RunState.FAILED, "error": f"refused, nothing imported: {exc}"}
    except (ConfigError, UnicodeDecodeError, OSError, ValueError) as exc:
        fields = {"state": RunState.FAILED, "error": f"refused, nothing imported: {exc}"}
    except Exception as exc:  # a bug must still end the job visibly instead of leaving it `running` for ever
        log.exception("dataset import #%s failed", import_id)
        fields = {"state": RunState.FAILED, "error": f"{type(exc).__name__}: {exc}"}
    job.file.delete(save=False)
    DatasetImport.objects.filter(pk=import_id).update(file="", finished_at=timezone.now(), **fields)
    return str(fields["state"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@lru_cache(maxsize=4)
def _dataset_ticks(path: str, mtime_ns: int) -> tickdata.TickData:
    return tickdata.load_npz(path)


def dataset_ticks(dataset: MarketDataset) -> tickdata.TickData:
    """The dataset's ticks (cached per worker process: a sweep's runs load the same file)."""
    path = dataset.file.path
    return _dataset_ticks(path, Path(path).stat().st_mtime_ns)


@lru_cache(maxsize=2)
def _synthetic_ticks(canonical: str) -> tickdata.TickData:
    import json

    return tickdata.generate(tickdata.SyntheticSpec.from_dict(json.loads(canonical)))


def synthetic_ticks(synthetic: Mapping[str, Any]) -> tickdata.TickData:
    return _synthetic_ticks(tickdata.SyntheticSpec.from_dict(synthetic).canonical_json())


# ---- queueing -----------------------------------------------------------------------------------------------


def synthetic_spec_check(*, synthetic: Mapping[str, Any]) -> dict[str, Any]:
    """A synthetic spec, normalised (every setting explicit); refused (ConfigError naming `synthetic.<setting>`) when
    invalid or when it makes more ticks than BIFROST_MAX_SYNTHETIC_TICKS (counted as `ticks_estimate`: 6.5-hour
    sessions, or round the clock)."""
    spec = tickdata.SyntheticSpec.from_dict(synthetic)
    limit = int(settings.BIFROST_MAX_SYNTHETIC_TICKS)
    ticks = spec.ticks_estimate()
    if ticks > limit:
        # Blame the days when they alone, at the default one-second ticks, are too many; else the fine tick_s.
        at_one_second = ticks * spec.tick_s
        field = "synthetic.days" if spec.tick_s >= 1.0 or at_one_second > limit else "synthetic.tick_s"
        raise ConfigError(field, f"{spec.days} days of {spec.tick_s:g}-s ticks make {ticks:,} ticks; at most "
                                 f"{limit:,} (BIFROST_MAX_SYNTHETIC_TICKS): fewer days or a longer tick_s")
    return spec.to_dict()


def _data_source(dataset: MarketDataset | None, synthetic: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Exactly one of a dataset or a synthetic spec; the spec comes back normalised (every setting explicit)."""
    if (dataset is None) == (synthetic is None):
        raise ConfigError("dataset", "give exactly one of a dataset or a synthetic spec")
    if synthetic is not None:
        return synthetic_spec_check(synthetic=synthetic)
    return None


def _enqueue(run: BacktestRun) -> None:
    from django_q.tasks import async_task

    def push() -> None:
        task_id = async_task(TASK_RUN, run.pk, task_name=f"backtest-{run.pk}",
                             group=f"sweep-{run.sweep_id}" if run.sweep_id else "backtests")
        BacktestRun.objects.filter(pk=run.pk).update(task_id=str(task_id), heartbeat_at=Now())

    transaction.on_commit(push)


def backtest_run_enqueue(*, dataset: MarketDataset | None = None, synthetic: Mapping[str, Any] | None = None,
                         params: Mapping[str, Any], start_position: str = "straddle:10", user: str,
                         path: str = "auto") -> BacktestRun:
    """Queue one backtest for the django-q2 cluster. Refused (ConfigError naming the field, nothing queued): bad
    params (`StrategyParams` field names), a bad synthetic spec (`synthetic.<setting>`), a bad start position,
    both or neither of dataset/synthetic, an unknown path (auto | fast | per_event)."""
    spec = _data_source(dataset, synthetic)
    parsed = StrategyParams.from_dict(params)
    parse_start_position(start_position)
    if path not in ("auto", "fast", "per_event"):
        raise ConfigError("path", f"expected auto, fast or per_event, got {path!r}")
    with transaction.atomic():
        run = BacktestRun.objects.create(dataset=dataset, synthetic=spec, params=parsed.to_dict(),
                                         params_hash=parsed.params_hash, start_position=start_position or "straddle:10",
                                         path=path, created_by=user)
        _enqueue(run)
    return run


def sweep_param_sets(*, grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
                     base: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every parameter set of a grid (cartesian product) or a list, over `base`; and the names that vary. Refused
    (ConfigError naming the field): a bad base or set, an empty grid, more sets than BIFROST_MAX_SWEEP_RUNS."""
    limit = int(settings.BIFROST_MAX_SWEEP_RUNS)
    StrategyParams.from_dict(base)
    if isinstance(grid, Mapping):
        if not grid:
            raise ConfigError("grid", "name at least one parameter with a list of values")
        names = list(grid)
        for name in names:
            values = grid[name]
            if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
                raise ConfigError(f"grid.{name}", "expected a non-empty list of values")
        count = math.prod(len(grid[n]) for n in names)
        if count > limit:
            raise ConfigError("grid", f"{count:,} parameter sets; a sweep runs at most {limit:,} "
                                      "(BIFROST_MAX_SWEEP_RUNS)")
        sets = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(grid[n] for n in names))]
    elif isinstance(grid, Sequence) and not isinstance(grid, str | bytes):
        if not grid or len(grid) > limit:
            raise ConfigError("grid", f"expected 1..{limit:,} parameter sets (at most {limit:,}: "
                                      f"BIFROST_MAX_SWEEP_RUNS), got {len(grid):,}")
        sets = []
        for i, entry in enumerate(grid):
            if not isinstance(entry, Mapping):
                raise ConfigError(f"grid[{i}]", "expected a mapping of parameter names to values")
            sets.append(dict(entry))
        names = sorted({k for s in sets for k in s})
    else:
        raise ConfigError("grid", "expected {name: [values]} (a grid) or [{name: value}, ...] (a list)")
    full = []
    for i, varied in enumerate(sets):
        try:
            full.append(StrategyParams.from_dict({**base, **varied}).to_dict())
        except ConfigError as exc:
            where = f"grid[{i}]" if not isinstance(grid, Mapping) else "grid"
            raise ConfigError(exc.field, f"{exc.reason} (in {where}: {varied})") from None
    return full, names


def sweep_enqueue(*, dataset: MarketDataset | None = None, synthetic: Mapping[str, Any] | None = None,
                  grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]], objective: str = "pnl", user: str,
                  base: Mapping[str, Any] | None = None, start_position: str = "straddle:10",
                  name: str = "", path: str = "auto") -> Sweep:
    """Fan a grid ({name: [values]}, every combination) or a list ([{...}, ...]) of parameter sets over `base`
    (default params when omitted) out into one queued BacktestRun per set; the cluster's workers share them and
    the last one to finish ranks them by `objective` (pnl | sharpe | drawdown_adjusted). Every set is validated
    before anything is queued."""
    spec = _data_source(dataset, synthetic)
    if path not in ("auto", "fast", "per_event"):
        raise ConfigError("path", f"expected auto, fast or per_event, got {path!r}")
    if objective not in Sweep.Objective.values:
        raise ConfigError("objective", f"expected one of {Sweep.Objective.values}, got {objective!r}")
    parse_start_position(start_position)
    base = dict(base or {})
    sets, names = sweep_param_sets(grid=grid, base=base)
    with transaction.atomic():
        sweep = Sweep.objects.create(
            name=name[:200], dataset=dataset, synthetic=spec,
            spec={"base": base, "grid" if isinstance(grid, Mapping) else "list": grid, "varied": names},
            objective=objective, start_position=start_position, runs_total=len(sets), created_by=user,
        )
        runs = BacktestRun.objects.bulk_create([
            BacktestRun(dataset=dataset, synthetic=spec, params=p, params_hash=StrategyParams.from_dict(p).params_hash,
                        start_position=start_position, created_by=user, sweep=sweep, path=path)
            for p in sets
        ])
        if not all(r.pk for r in runs):  # bulk_create returns keys on PostgreSQL and SQLite >= 3.35
            runs = list(sweep.runs.order_by("id"))
        for run in runs:
            _enqueue(run)
    return sweep


def backtest_run_cancel(*, run: BacktestRun, user: str) -> BacktestRun:
    """Cancel a queued or running run (a running one stops at its next progress report, within a second)."""
    now = timezone.now()
    updated = BacktestRun.objects.filter(pk=run.pk, state__in=ACTIVE_STATES).update(
        state=RunState.CANCELLED, finished_at=now, error=f"cancelled by {user}")
    run.refresh_from_db()
    if not updated:
        raise BacktestStateError("state", f"backtest #{run.pk} is {run.state}: only queued or running runs cancel")
    if run.sweep_id:
        sweep_refresh(sweep_id=run.sweep_id)
    return run


def sweep_cancel(*, sweep: Sweep, user: str) -> Sweep:
    """Cancel every queued or running run of a sweep; the sweep ends cancelled, with what finished ranked."""
    now = timezone.now()
    with transaction.atomic():
        claimed = Sweep.objects.filter(pk=sweep.pk, state__in=ACTIVE_STATES).update(
            state=RunState.CANCELLED, error=f"cancelled by {user}")
        if not claimed:
            sweep.refresh_from_db()
            raise BacktestStateError("state", f"sweep #{sweep.pk} is {sweep.state}: only queued or running sweeps cancel")
        BacktestRun.objects.filter(sweep=sweep, state__in=ACTIVE_STATES).update(
            state=RunState.CANCELLED, finished_at=now, error=f"sweep cancelled by {user}")
    _sweep_finish(sweep.pk, final_state=RunState.CANCELLED)
    sweep.refresh_from_db()
    return sweep


# ---- executing (inside a django-q2 worker, or synchronously for `manage.py backtest --save`) ---------------------


class _Reporter:
    """Progress callback: writes the percentage at most every PROGRESS_MIN_INTERVAL_S and stops the run when the
    row is no longer `running` (cancelled)."""

    def __init__(self, run_id: int, attempt: int, scale: float = 99.0) -> None:
        self.run_id = run_id
        self.attempt = attempt
        self.scale = scale
        self.last_pct = -1
        self.last_write = 0.0

    def __call__(self, fraction: float) -> None:
        pct = min(99, int(fraction * self.scale))
        now = time.monotonic()
        if pct == self.last_pct or now - self.last_write < PROGRESS_MIN_INTERVAL_S:
            return
        self.last_pct, self.last_write = pct, now
        if not BacktestRun.objects.filter(pk=self.run_id, state=RunState.RUNNING, attempt=self.attempt).update(
                progress=pct, heartbeat_at=Now()):
            raise Cancelled(f"backtest #{self.run_id} is no longer running (cancelled, or queued again)")


def run_ticks(run: BacktestRun) -> tickdata.TickData:
    if run.dataset_id is not None:
        assert run.dataset is not None
        return dataset_ticks(run.dataset)
    if run.synthetic is not None:
        return synthetic_ticks(run.synthetic)
    raise ConfigError("dataset", "the run's dataset was deleted")


def backtest_run_execute(*, run_id: int) -> str:
    """Claim a queued run and replay it; the result, or the failure with its message, is kept on the row.
    Returns the final state. Never raises for a failed backtest (the queue must not retry it)."""
    now = timezone.now()
    if not BacktestRun.objects.filter(pk=run_id, state=RunState.QUEUED).update(
            state=RunState.RUNNING, started_at=now, progress=0, heartbeat_at=Now(), attempt=F("attempt") + 1,
            worker=f"{socket.gethostname()}:{os.getpid()}"[:100]):
        state = BacktestRun.objects.filter(pk=run_id).values_list("state", flat=True).first()
        return str(state or "missing")
    run = BacktestRun.objects.select_related("dataset").get(pk=run_id)
    mine = BacktestRun.objects.filter(pk=run_id, state=RunState.RUNNING, attempt=run.attempt)
    if run.sweep_id:
        Sweep.objects.filter(pk=run.sweep_id, state=RunState.QUEUED).update(state=RunState.RUNNING, started_at=now)
    started = time.perf_counter()
    final = RunState.DONE
    fields: dict[str, Any] = {}
    try:
        ticks = run_ticks(run)
        params = StrategyParams.from_dict(run.params)
        outcome = run_backtest(ticks, params, straddles=parse_start_position(run.start_position),
                               path=run.path or "auto", progress=_Reporter(run.pk, run.attempt), keep_trace=False)
        fields = {"result": outcome.result, "progress": 100, "path": outcome.result["path"]}
    except Cancelled:
        final = RunState.CANCELLED
    except (ConfigError, DataFileError, ValueError, OSError) as exc:
        final, fields = RunState.FAILED, {"error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # a bug must still end the run visibly instead of leaving it `running` for ever
        log.exception("backtest #%s failed", run_id)
        final, fields = RunState.FAILED, {"error": f"{type(exc).__name__}: {exc}"}
    if final != RunState.CANCELLED:
        elapsed = time.perf_counter() - started
        mine.update(state=final, finished_at=timezone.now(), elapsed_s=elapsed, **fields)  # this claim's only
    if run.sweep_id:
        sweep_refresh(sweep_id=run.sweep_id)
    return str(BacktestRun.objects.filter(pk=run_id).values_list("state", flat=True).first())


def backtest_runs_requeue_stale(*, stale_s: float | None = None) -> list[int]:
    """Queue again what a dead worker or machine holds, judged by the database's clock: a running run whose worker
    has not written progress for `stale_s` (BIFROST_RUN_STALE_S), and a queued run not taken for as long (a cluster
    that died had it prefetched, and the broker would present it again only after Q_CLUSTER retry). A run is only
    ever claimed once per attempt, so a second task for it is harmless, and a late word from a frozen worker is
    refused. Scheduled every minute; returns the run ids."""
    limit = timedelta(seconds=settings.BIFROST_RUN_STALE_S if stale_s is None else stale_s)
    cutoff = ExpressionWrapper(Now() - Value(limit), output_field=DateTimeField())
    requeued = []
    for run in BacktestRun.objects.filter(state__in=[RunState.QUEUED, RunState.RUNNING], heartbeat_at__lt=cutoff):
        with transaction.atomic():
            if BacktestRun.objects.filter(pk=run.pk, state=run.state, attempt=run.attempt,
                                          heartbeat_at__lt=cutoff).update(state=RunState.QUEUED, progress=0,
                                                                          heartbeat_at=Now()):
                _enqueue(run)
                requeued.append(run.pk)
                log.warning("backtest #%s (%s, worker %r): no sign of life for %s: queued again", run.pk, run.state,
                            run.worker, limit)
    return requeued


def backtest_run_save(*, result: Mapping[str, Any], params: StrategyParams, start_position: str, user: str,
                      dataset: MarketDataset | None = None, synthetic: Mapping[str, Any] | None = None) -> BacktestRun:
    """Keep a backtest that already ran synchronously (`manage.py backtest --save`)."""
    timing = result.get("timing") or {}
    now = timezone.now()
    return BacktestRun.objects.create(
        dataset=dataset, synthetic=dict(synthetic) if synthetic is not None else None, params=params.to_dict(),
        params_hash=params.params_hash, start_position=start_position, state=RunState.DONE, progress=100,
        result=dict(result), path=str(result.get("path", "")), created_by=user, started_at=now, finished_at=now,
        elapsed_s=timing.get("elapsed_s"),
    )


# ---- sweeps: progress and ranking ---------------------------------------------------------------------------


def objective_value(objective: str, result: Mapping[str, Any]) -> float:
    """Higher is better. drawdown_adjusted = total P&L / max drawdown (a drawdown under $1 counts as $1)."""
    pnl = float(result["pnl_total_usd"])
    if objective == "pnl":
        return pnl
    if objective == "sharpe":
        sharpe = result.get("sharpe")
        return float(sharpe) if sharpe is not None else -math.inf
    if objective == "drawdown_adjusted":
        return pnl / max(float(result["max_drawdown_usd"]), 1.0)
    raise ConfigError("objective", f"unknown objective {objective!r}")


def sweep_ranking(sweep: Sweep) -> list[dict[str, Any]]:
    """Every run of the sweep, best first by the objective; failed and cancelled runs last, with their error."""
    varied = (sweep.spec or {}).get("varied") or []
    rows: list[dict[str, Any]] = []
    for run in sweep.runs.order_by("id").only("id", "params", "params_hash", "state", "result", "error"):
        row: dict[str, Any] = {"run_id": run.pk, "params": {k: run.params.get(k) for k in varied},
                               "params_hash": run.params_hash, "state": run.state}
        if run.state == RunState.DONE and run.result:
            r = run.result
            value = objective_value(sweep.objective, r)
            row.update({
                "objective": value if math.isfinite(value) else None, "pnl_total_usd": r["pnl_total_usd"],
                "pnl_options_usd": r["pnl_options_usd"], "pnl_hedge_usd": r["pnl_hedge_usd"],
                "commissions_usd": r["commissions_usd"], "max_drawdown_usd": r["max_drawdown_usd"],
                "sharpe": r["sharpe"], "hedges": r["hedges"], "hedged_shares": r["hedged_shares"],
                "blocks": {reason: int(r["blocks"].get(reason, 0)) for reason in GATE_REASONS
                           if r["blocks"].get(reason)},
            })
        else:
            row.update({"objective": None, "error": run.error})
        rows.append(row)
    done = [r for r in rows if r["state"] == RunState.DONE and "pnl_total_usd" in r]
    rest = [r for r in rows if r not in done]
    done.sort(key=lambda r: (-(r["objective"] if r["objective"] is not None else -math.inf), r["run_id"]))
    for rank, row in enumerate(done, start=1):
        row["rank"] = rank
    for row in rest:
        row["rank"] = None
    return done + rest


def sweep_refresh(*, sweep_id: int) -> None:
    """After a run ends: the sweep's progress; once no run is queued or running, rank and finish it."""
    counts = dict(BacktestRun.objects.filter(sweep_id=sweep_id).values_list("state").annotate(n=Count("id")))
    total = sum(counts.values())
    active = sum(counts.get(s, 0) for s in ACTIVE_STATES)
    finished = total - active
    Sweep.objects.filter(pk=sweep_id).update(runs_done=finished,
                                             progress=int(100 * finished / total) if total else 100)
    if active == 0:
        final = RunState.DONE if counts.get(RunState.DONE) else RunState.FAILED
        _sweep_finish(sweep_id, final_state=final)


def _sweep_finish(sweep_id: int, *, final_state: str) -> None:
    sweep = Sweep.objects.get(pk=sweep_id)
    ranking = sweep_ranking(sweep)
    guards = sorted({reason for row in ranking for reason in row.get("blocks", {})}, key=GATE_REASONS.index)
    now = timezone.now()
    fields: dict[str, Any] = {"results": ranking, "finished_at": now, "state": final_state}
    if final_state == RunState.FAILED:
        fields["error"] = "every run failed: " + "; ".join(sorted({str(r.get("error")) for r in ranking}))[:2000]
    # Several workers may finish the last runs at once: the first to move the sweep out of an active state wins.
    if final_state == RunState.CANCELLED:
        Sweep.objects.filter(pk=sweep_id).update(results=ranking, finished_at=now)
    else:
        Sweep.objects.filter(pk=sweep_id, state__in=ACTIVE_STATES).update(progress=100, **fields)
    log.info("sweep #%s %s: %d runs, guards seen: %s", sweep_id, final_state, len(ranking), ", ".join(guards))


# ---- statistics rollup, retention and the scheduled jobs -------------------------------------------------------


def stats_rollup(*, days: int = 7, now: datetime | None = None) -> int:
    """Recompute and keep the statistics of the last `days` US/Eastern trading dates (late rows are picked up on
    the next run). Returns how many dates were written."""
    from backtests import stats

    now = now or timezone.now()
    until = trading_date(now) + timedelta(days=1)
    since = until - timedelta(days=days)
    report = stats.stats_report(period="day", since=since, until=until)
    written = 0
    for row in report["periods"]:
        DailyStats.objects.update_or_create(trading_date=row["start"], defaults={"stats": row})
        written += 1
    return written


def history_retention(*, now: datetime | None = None, days: float | None = None) -> dict[str, int]:
    """Delete status snapshots and blocked decisions older than BIFROST_HISTORY_RETENTION_DAYS (0 keeps all).
    Orders, fills, allowed decisions and the operations log are the audit trail: never deleted here."""
    days = settings.BIFROST_HISTORY_RETENTION_DAYS if days is None else days
    if not days or days <= 0:
        return {"status_history": 0, "decisions": 0}
    cutoff = (now or timezone.now()) - timedelta(days=days)
    snapshots, _ = StatusHistory.objects.filter(ts__lt=cutoff).delete()
    blocked, _ = Decision.objects.filter(ts__lt=cutoff, allowed=False).delete()
    return {"status_history": snapshots, "decisions": blocked}


def schedules_ensure() -> list[str]:
    """Create or update the scheduled django-q2 jobs (idempotent: one row per name)."""
    from django_q.models import Schedule

    names = []
    for name, func, schedule_type in SCHEDULES:
        existing = Schedule.objects.filter(name=name).first()
        if existing is None:
            first = _next_run_after_close(timezone.now())
            Schedule.objects.create(name=name, func=func, schedule_type=schedule_type, repeats=-1, next_run=first)
        elif existing.func != func or existing.schedule_type != schedule_type:
            Schedule.objects.filter(pk=existing.pk).update(func=func, schedule_type=schedule_type, repeats=-1)
        names.append(name)
    return names


def _next_run_after_close(now: datetime) -> datetime:
    """22:30 UTC (after the 16:00 New York close in both summer and winter time), today or tomorrow."""
    run = now.replace(hour=22, minute=30, second=0, microsecond=0)
    return run if run > now else run + timedelta(days=1)

