"""django-q2 end to end: runs and sweeps queued through the services are run by a real `manage.py qcluster`
process on the test database (ORM broker; Redis when reachable). Progress rises, cancel works, results are read."""
from __future__ import annotations

import pytest
from django.test import override_settings

from backtests import services
from backtests.models import BacktestRun, RunState, Sweep
from tests.backtests.conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ONE_DAY = {"days": 1, "seed": 3, "realized_vol": 0.8}  # 23,400 ticks: a few seconds on the per-event path
THREE_DAYS = {"days": 3, "seed": 4}


def _progress_rises_cancel_works_results_read(cluster) -> None:
    run = services.backtest_run_enqueue(synthetic=ONE_DAY, params={"cooldown_s": 5}, user="e2e", path="per_event")
    slow = services.backtest_run_enqueue(synthetic=THREE_DAYS, params={}, user="e2e", path="per_event")

    seen: set[int] = set()

    def finished() -> bool:
        run.refresh_from_db()
        seen.add(run.progress)
        return run.state not in (RunState.QUEUED, RunState.RUNNING)

    wait_until(finished, 90, f"run #{run.pk} to finish\n{cluster.output}")
    assert run.state == RunState.DONE, run.error
    assert len({p for p in seen if 0 < p < 100}) >= 2, seen  # progress was seen rising while it ran
    assert run.progress == 100 and run.result["ticks"] == 23_400 and run.result["path"] == "per_event"

    wait_until(lambda: BacktestRun.objects.get(pk=slow.pk).progress > 0, 60, "the slow run to make progress")
    services.backtest_run_cancel(run=BacktestRun.objects.get(pk=slow.pk), user="e2e")
    slow.refresh_from_db()
    assert slow.state == RunState.CANCELLED
    progress = slow.progress
    # The worker stops at its next progress report and leaves the row cancelled, without a result.
    wait_until(lambda: "no longer running" in cluster.output or BacktestRun.objects.get(pk=slow.pk).progress
               == progress, 10, "the worker to notice")
    slow.refresh_from_db()
    assert slow.state == RunState.CANCELLED and slow.result is None and slow.progress < 100


def test_a_real_cluster_runs_reports_progress_cancels_and_keeps_results(cluster_factory):
    cluster = cluster_factory()

    _progress_rises_cancel_works_results_read(cluster)


def test_a_sweep_fans_out_over_the_cluster_and_is_ranked(cluster_factory):
    cluster = cluster_factory()

    sweep = services.sweep_enqueue(synthetic={"days": 1, "tick_s": 5.0, "seed": 8},
                                   grid={"cooldown_s": [0, 60], "min_price_move_bps": [0, 30]}, objective="sharpe",
                                   user="e2e")

    def finished() -> bool:
        sweep.refresh_from_db()
        return sweep.state not in (RunState.QUEUED, RunState.RUNNING)

    wait_until(finished, 60, f"sweep #{sweep.pk} to finish\n{cluster.output}")
    assert sweep.state == RunState.DONE and sweep.progress == 100
    assert [r["rank"] for r in sweep.results] == [1, 2, 3, 4]
    assert all("blocks" in r for r in sweep.results)
    assert Sweep.objects.get(pk=sweep.pk).runs.filter(state=RunState.DONE).count() == 4


@pytest.mark.redis
def test_the_cluster_works_on_the_redis_broker_too(cluster_factory):
    from django_q.conf import Conf

    url = "redis://127.0.0.1:6379/14"
    cluster = cluster_factory(REDIS_URL=url)
    with override_settings(REDIS_URL=url):
        saved = Conf.ORM, Conf.REDIS
        Conf.ORM, Conf.REDIS = None, url  # this test process enqueues to Redis as well
        try:
            _progress_rises_cancel_works_results_read(cluster)
        finally:
            Conf.ORM, Conf.REDIS = saved
