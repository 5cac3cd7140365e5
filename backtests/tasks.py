"""django-q2 task entry points: thin wrappers over the services (the queue stores their dotted names)."""
from __future__ import annotations

from typing import Any

from backtests import services


def backtest_run_task(run_id: int) -> str:
    """Run one queued backtest (a sweep's runs are queued one task each, so the cluster's workers share them)."""
    return services.backtest_run_execute(run_id=run_id)


def stats_rollup_task() -> int:
    return services.stats_rollup()


def history_retention_task() -> dict[str, Any]:
    return services.history_retention()


def dataset_import_task(import_id: int) -> str:
    """Parse a staged tick CSV too large for the web request into a dataset (or record why it was refused)."""
    return services.dataset_import_execute(import_id=import_id)


def requeue_stale_runs_task() -> list[int]:
    return services.backtest_runs_requeue_stale()
