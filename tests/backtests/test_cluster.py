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


def test_two_machines_share_a_sweep_and_a_worker_killed_mid_run_loses_nothing(cluster_factory, tmp_path,
                                                                              settings):
    """Two clusters with working directories of their own (as two machines) take one sweep from the shared database;
    one is SIGKILLed while it holds a run. Its run stops heart-beating, is queued again and run by the other; every
    run's result is recorded once (by the claim that holds it), and the ranking is the one machine's."""
    import os
    import signal

    from backtests.replay import run_backtest
    from trading.core.params import StrategyParams

    machines = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        # Machines share the database and the secret key (django-q2 signs its tasks with it), nothing else.
        machines[name] = cluster_factory(BIFROST_VAR_DIR=str(tmp_path / name), BIFROST_Q_WORKERS="1",
                                         DJANGO_SECRET_KEY=settings.SECRET_KEY)
    spec = {"days": 1, "tick_s": 2.0, "seed": 5, "realized_vol": 0.8}  # 11,700 ticks: a few seconds per event
    grid = {"cooldown_s": [0, 30, 60], "min_price_move_bps": [0, 20]}
    sweep = services.sweep_enqueue(synthetic=spec, grid=grid, objective="pnl", user="e2e", path="per_event")

    def on_machine_a() -> BacktestRun | None:
        for run in BacktestRun.objects.filter(sweep=sweep, state=RunState.RUNNING).exclude(worker=""):
            if os.getpgid(int(run.worker.rsplit(":", 1)[1])) == machines["a"].proc.pid:
                return run
        return None

    victim = wait_until(on_machine_a, 60, f"machine a to hold a run\n{machines['a'].output}")
    os.killpg(machines["a"].proc.pid, signal.SIGKILL)  # the machine is gone, mid-run
    machines["a"].proc.wait()

    # What the minute's schedule does, here at once with a short limit: the victim, and whatever machine a had
    # prefetched from the broker, are queued again; machine b takes them.
    requeued: set[int] = set()

    def requeue() -> bool:
        requeued.update(services.backtest_runs_requeue_stale(stale_s=8.0))
        sweep.refresh_from_db()
        return sweep.state not in (RunState.QUEUED, RunState.RUNNING)

    wait_until(requeue, 180, f"sweep #{sweep.pk} to finish on machine b\n{machines['b'].output}\n"
               f"{list(sweep.runs.values_list('pk', 'state', 'attempt', 'worker', 'error'))}")
    assert victim.pk in requeued
    runs = {r.pk: r for r in sweep.runs.all()}
    assert sweep.state == RunState.DONE and all(r.state == RunState.DONE for r in runs.values())
    assert runs[victim.pk].attempt >= 2 and runs[victim.pk].worker != victim.worker  # finished by machine b
    # The ranking is the one a single machine computes: each set's P&L replayed here, in this process.
    ticks = services.synthetic_ticks(sweep.synthetic)
    expected = {r.params_hash: run_backtest(ticks, StrategyParams.from_dict(r.params), path="fast").result[
        "pnl_total_usd"] for r in runs.values()}
    assert {r.params_hash: r.result["pnl_total_usd"] for r in runs.values()} == expected
    ranked = [row["pnl_total_usd"] for row in sweep.results]
    assert ranked == sorted(expected.values(), reverse=True) and len(ranked) == 6
