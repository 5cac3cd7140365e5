"""Queueing, executing and cancelling runs and sweeps through the services (the admin, the API and the CLI all
call these), executed in process here; tests/backtests/test_cluster.py runs them on a real django-q2 cluster."""
from __future__ import annotations

import pytest
from django_q.models import OrmQ, Schedule

from backtests import services
from backtests.errors import BacktestStateError
from backtests.models import BacktestRun, RunState, Sweep
from trading.core.params import StrategyParams
from trading.errors import ConfigError

pytestmark = pytest.mark.django_db(transaction=True)
SMALL = {"days": 1, "tick_s": 10.0, "seed": 5, "realized_vol": 0.8}


def test_queueing_a_run_validates_everything_and_puts_one_task_on_the_queue():
    run = services.backtest_run_enqueue(synthetic=SMALL, params={"cooldown_s": 5}, user="alice")

    assert run.state == RunState.QUEUED and run.progress == 0
    assert run.params == StrategyParams(cooldown_s=5).to_dict()
    assert run.params_hash == StrategyParams(cooldown_s=5).params_hash
    assert run.synthetic["seed"] == 5 and run.synthetic["days"] == 1
    assert OrmQ.objects.count() == 1
    run.refresh_from_db()
    assert run.task_id


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"synthetic": SMALL, "params": {"cooldown_s": -1}}, "cooldown_s"),
    ({"synthetic": SMALL, "params": {"colldown_s": 1}}, "colldown_s"),
    ({"synthetic": {"days": 0}, "params": {}}, "synthetic.days"),
    ({"params": {}}, "dataset"),
    ({"synthetic": SMALL, "params": {}, "start_position": "straddle:0"}, "start_position"),
])
def test_bad_requests_are_refused_naming_the_field_and_queue_nothing(kwargs, field):
    with pytest.raises(ConfigError) as info:
        services.backtest_run_enqueue(user="alice", **kwargs)

    assert info.value.field == field
    assert BacktestRun.objects.count() == 0 and OrmQ.objects.count() == 0


def test_executing_a_run_keeps_the_result_and_reaches_100():
    run = services.backtest_run_enqueue(synthetic=SMALL, params={}, user="alice")

    assert services.backtest_run_execute(run_id=run.pk) == "done"

    run.refresh_from_db()
    assert run.progress == 100 and run.result["ticks"] == 2340 and run.path == "fast"
    assert run.started_at <= run.finished_at and run.elapsed_s > 0
    assert services.backtest_run_execute(run_id=run.pk) == "done"  # a second delivery of the task changes nothing


def test_a_failing_run_records_its_message():
    run = services.backtest_run_enqueue(synthetic=SMALL, params={}, user="alice")
    BacktestRun.objects.filter(pk=run.pk).update(params={"min_dte": 40, "max_dte": 30})

    assert services.backtest_run_execute(run_id=run.pk) == "failed"

    run.refresh_from_db()
    assert "ConfigError" in run.error and "min_dte" in run.error and run.result is None


def test_cancel_stops_a_queued_run_and_refuses_a_finished_one():
    run = services.backtest_run_enqueue(synthetic=SMALL, params={}, user="alice")

    services.backtest_run_cancel(run=run, user="bob")

    assert run.state == RunState.CANCELLED and "bob" in run.error
    assert services.backtest_run_execute(run_id=run.pk) == "cancelled"  # the task finds it cancelled: no-op
    with pytest.raises(BacktestStateError):
        services.backtest_run_cancel(run=run, user="bob")


def test_a_sweep_fans_out_one_run_per_set_and_ranks_them_with_guard_counts():
    sweep = services.sweep_enqueue(synthetic=SMALL, grid={"cooldown_s": [0, 120], "max_daily_hedges": [3, 1000]},
                                   objective="pnl", user="alice")

    assert sweep.runs_total == 4 and OrmQ.objects.count() == 4
    for run in sweep.runs.all():
        services.backtest_run_execute(run_id=run.pk)

    sweep.refresh_from_db()
    assert sweep.state == RunState.DONE and sweep.progress == 100 and sweep.runs_done == 4
    ranks = [row["rank"] for row in sweep.results]
    assert ranks == [1, 2, 3, 4]
    objectives = [row["objective"] for row in sweep.results]
    assert objectives == sorted(objectives, reverse=True)
    by_params = {(r["params"]["cooldown_s"], r["params"]["max_daily_hedges"]): r for r in sweep.results}
    assert by_params[(120.0, 1000)]["blocks"].get("cooldown", 0) > 0
    assert by_params[(0.0, 3)]["blocks"].get("max_daily_hedges", 0) > 0
    assert "cooldown" not in by_params[(0.0, 1000)]["blocks"]


def test_a_sweep_list_and_the_other_objectives():
    sweep = services.sweep_enqueue(synthetic=SMALL, grid=[{"cooldown_s": 0}, {"cooldown_s": 60}],
                                   objective="drawdown_adjusted", user="alice", base={"max_daily_hedges": 500})
    for run in sweep.runs.all():
        assert run.params["max_daily_hedges"] == 500
        services.backtest_run_execute(run_id=run.pk)

    sweep.refresh_from_db()
    best = sweep.results[0]
    assert best["objective"] == pytest.approx(best["pnl_total_usd"] / max(best["max_drawdown_usd"], 1.0))


@pytest.mark.parametrize(("grid", "field"), [
    ({"cooldown_s": [0, -5]}, "cooldown_s"),
    ({"cooldown_s": []}, "grid.cooldown_s"),
    ({}, "grid"),
    ({"cooldown_s": list(range(40)), "min_price_move_bps": list(range(40))}, "grid"),
    ("cooldown_s", "grid"),
])
def test_a_bad_grid_is_refused_before_anything_is_queued(grid, field):
    with pytest.raises(ConfigError) as info:
        services.sweep_enqueue(synthetic=SMALL, grid=grid, objective="pnl", user="alice")

    assert info.value.field == field
    assert Sweep.objects.count() == 0 and OrmQ.objects.count() == 0


def test_cancelling_a_sweep_cancels_its_queued_runs():
    sweep = services.sweep_enqueue(synthetic=SMALL, grid={"cooldown_s": [0, 10, 20]}, objective="sharpe",
                                   user="alice")
    first = sweep.runs.order_by("id").first()
    services.backtest_run_execute(run_id=first.pk)

    services.sweep_cancel(sweep=sweep, user="bob")

    assert sweep.state == RunState.CANCELLED
    states = sorted(sweep.runs.values_list("state", flat=True))
    assert states == ["cancelled", "cancelled", "done"]
    assert sweep.results[0]["run_id"] == first.pk and sweep.results[0]["rank"] == 1


def test_scheduled_jobs_exist_once_and_ensuring_them_is_idempotent():
    names = {"bifrost: daily stats rollup", "bifrost: history retention"}
    services.schedules_ensure()
    services.schedules_ensure()

    rows = Schedule.objects.filter(name__in=names)
    assert rows.count() == 2
    assert {r.func for r in rows} == {"backtests.tasks.stats_rollup_task", "backtests.tasks.history_retention_task"}


def test_operators_cancel_any_run_researchers_only_their_own_and_viewers_none(viewer, researcher, operator):
    from backtests.selectors import cancel_allowed

    own = services.backtest_run_enqueue(synthetic=SMALL, params={}, user=researcher.username)
    theirs = services.sweep_enqueue(synthetic=SMALL, grid={"cooldown_s": [0]}, user="someone-else")
    viewers_own = services.backtest_run_enqueue(synthetic=SMALL, params={}, user=viewer.username)

    assert cancel_allowed(user=operator, record=own) and cancel_allowed(user=operator, record=theirs)
    assert cancel_allowed(user=researcher, record=own) and not cancel_allowed(user=researcher, record=theirs)
    assert not cancel_allowed(user=viewer, record=viewers_own)


def test_a_sweep_larger_than_the_setting_is_refused_naming_the_limit(settings):
    settings.BIFROST_MAX_SWEEP_RUNS = 3

    with pytest.raises(ConfigError) as grid:
        services.sweep_enqueue(synthetic=SMALL, grid={"cooldown_s": [0, 10], "min_price_move_bps": [0, 5]},
                               user="alice")
    with pytest.raises(ConfigError) as listed:
        services.sweep_enqueue(synthetic=SMALL, grid=[{"cooldown_s": s} for s in range(4)], user="alice")

    assert grid.value.field == "grid" and "4 parameter sets" in grid.value.reason and "at most 3" in grid.value.reason
    assert listed.value.field == "grid" and "at most 3" in listed.value.reason
    assert services.sweep_enqueue(synthetic=SMALL, grid={"cooldown_s": [0, 10, 20]}, user="alice").runs_total == 3


@pytest.mark.parametrize(("synthetic", "field"), [
    ({"days": 300}, "synthetic.days"),  # 300 sessions of 23,400 one-second ticks
    ({"days": 3, "tick_s": 0.01}, "synthetic.tick_s"),
    ({"days": 100, "sessions_only": False, "tick_s": 1.0}, "synthetic.days"),  # round the clock: 8.64M
])
def test_a_synthetic_market_over_the_tick_cap_is_refused_naming_the_limit(synthetic, field):
    with pytest.raises(ConfigError) as run:
        services.backtest_run_enqueue(synthetic=synthetic, params={}, user="alice")
    with pytest.raises(ConfigError) as sweep:
        services.sweep_enqueue(synthetic=synthetic, grid={"cooldown_s": [0]}, user="alice")

    assert run.value.field == sweep.value.field == field
    assert "at most 5,000,000" in run.value.reason
    assert BacktestRun.objects.count() == 0 and OrmQ.objects.count() == 0


def test_a_run_whose_worker_went_silent_is_queued_again_and_its_old_claim_can_no_longer_write():
    from datetime import timedelta

    from django.utils import timezone

    run = services.backtest_run_enqueue(synthetic={"days": 1, "tick_s": 60.0, "seed": 2}, params={}, user="t")
    fresh = services.backtest_run_enqueue(synthetic={"days": 1, "tick_s": 60.0, "seed": 3}, params={}, user="t")
    long_ago = timezone.now() - timedelta(minutes=10)
    BacktestRun.objects.filter(pk=run.pk).update(state=RunState.RUNNING, attempt=1, worker="gone:1",
                                                 heartbeat_at=long_ago)
    BacktestRun.objects.filter(pk=fresh.pk).update(state=RunState.RUNNING, attempt=1, worker="here:2")
    tasks = OrmQ.objects.count()

    assert services.backtest_runs_requeue_stale(stale_s=60) == [run.pk]

    run.refresh_from_db()
    assert run.state == RunState.QUEUED and OrmQ.objects.count() == tasks + 1
    old_claim = services._Reporter(run.pk, attempt=1)
    with pytest.raises(services.Cancelled):  # the silent worker wakes up: its progress is refused, it stops
        old_claim(0.5)
    assert services.backtest_run_execute(run_id=run.pk) == RunState.DONE
    run.refresh_from_db()
    assert run.attempt == 2 and run.result["ticks"] > 0
    from importlib import import_module

    from django.apps import apps

    migration = import_module("backtests.migrations.0005_requeue_schedule")
    migration.create(apps, None)  # what the migration leaves (a transactional test may have flushed its row)
    assert Schedule.objects.get(name=migration.NAME).func == "backtests.tasks.requeue_stale_runs_task"
