"""The backtest, sweep and cancel endpoints of DESIGN §6: queue through the services, read progress and results,
refuse bad input with 400 naming the field and queue nothing. Runs are executed in process here (the task's own
function); tests/backtests/test_cluster.py runs them on a real django-q2 cluster."""
from __future__ import annotations

import pytest
from django_q.models import OrmQ

from backtests import services
from backtests.models import BacktestRun, RunState, Sweep

pytestmark = pytest.mark.django_db(transaction=True)  # tasks are put on the queue on commit
SMALL = {"days": 1, "tick_s": 10.0, "seed": 5, "realized_vol": 0.8}


def test_a_viewer_queues_a_run_polls_it_and_reads_the_result(viewer_api):
    response = viewer_api.post("/api/backtests/", {"synthetic": SMALL, "params": {"cooldown_s": 5}}, format="json")

    assert response.status_code == 201, response.json()
    run_id = response.json()["id"]
    assert response.json()["state"] == "queued" and response.json()["progress"] == 0
    assert OrmQ.objects.count() == 1 and BacktestRun.objects.get(pk=run_id).created_by == "vera"

    services.backtest_run_execute(run_id=run_id)  # what the worker's task does

    body = viewer_api.get(f"/api/backtests/{run_id}/").json()
    assert body["state"] == "done" and body["progress"] == 100
    result = body["result"]
    assert result["ticks"] == 2340 and result["params_hash"] == body["params_hash"]
    assert result["pnl_total_usd"] == pytest.approx(
        result["pnl_options_usd"] + result["pnl_hedge_usd"] - result["commissions_usd"], abs=0.02)
    assert result["equity_curve"] and result["pnl_split_curve"] and "blocks" in result  # the page's figures


@pytest.mark.parametrize(("payload", "field"), [
    ({"synthetic": SMALL, "params": {"cooldown_s": -1}}, "cooldown_s"),
    ({"synthetic": SMALL, "params": {"colldown_s": 1}}, "colldown_s"),
    ({"synthetic": SMALL, "params": "fast"}, "params"),
    ({"synthetic": {"days": 0}}, "synthetic.days"),
    ({"params": {}}, "dataset"),
    ({"dataset": 999, "params": {}}, "dataset"),
    ({"synthetic": SMALL, "start_position": "straddle:0"}, "start_position"),
])
def test_bad_runs_are_400_with_the_field_named_and_queue_nothing(viewer_api, payload, field):
    response = viewer_api.post("/api/backtests/", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert BacktestRun.objects.count() == 0 and OrmQ.objects.count() == 0


def test_the_list_is_newest_first_and_paginated_by_cursor(viewer_api):
    for seed in range(3):
        services.backtest_run_enqueue(synthetic={**SMALL, "seed": seed}, params={}, user="vera")

    first = viewer_api.get("/api/backtests/", {"page_size": 2}).json()
    ids = [r["id"] for r in first["results"]]

    assert ids == sorted(ids, reverse=True) and "result" not in first["results"][0]
    if first["next"]:  # page_size may be fixed; when a next page exists it carries on without repeats
        more = viewer_api.get(first["next"]).json()
        assert not {r["id"] for r in more["results"]} & set(ids)


def test_cancel_stops_a_queued_run_and_refuses_a_finished_one(viewer_api):
    queued = services.backtest_run_enqueue(synthetic=SMALL, params={}, user="vera")

    response = viewer_api.post(f"/api/backtests/{queued.pk}/cancel/")

    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    again = viewer_api.post(f"/api/backtests/{queued.pk}/cancel/")
    assert again.status_code == 400 and "state" in again.json()["errors"]
    assert viewer_api.post("/api/backtests/999/cancel/").status_code == 404
    assert viewer_api.get("/api/backtests/999/").status_code == 404


def test_a_sweep_is_queued_ranked_and_cancellable(viewer_api):
    response = viewer_api.post("/api/sweeps/", {"synthetic": SMALL, "grid": {"cooldown_s": [0, 60]},
                                                "objective": "sharpe", "name": "cooldown"}, format="json")

    assert response.status_code == 201, response.json()
    sweep_id = response.json()["id"]
    assert response.json()["runs_total"] == 2 and OrmQ.objects.count() == 2
    for run in Sweep.objects.get(pk=sweep_id).runs.all():
        services.backtest_run_execute(run_id=run.pk)
    body = viewer_api.get(f"/api/sweeps/{sweep_id}/").json()
    assert body["state"] == "done" and [r["rank"] for r in body["results"]] == [1, 2]
    assert all("blocks" in r for r in body["results"])  # guard validation per parameter set
    assert viewer_api.post(f"/api/sweeps/{sweep_id}/cancel/").status_code == 400

    other = viewer_api.post("/api/sweeps/", {"synthetic": SMALL, "grid": {"cooldown_s": [0, 60]}}, format="json")
    cancelled = viewer_api.post(f"/api/sweeps/{other.json()['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert not Sweep.objects.get(pk=other.json()["id"]).runs.exclude(state=RunState.CANCELLED).exists()


@pytest.mark.parametrize(("payload", "field"), [
    ({"synthetic": SMALL, "grid": {"cooldown_s": []}}, "grid.cooldown_s"),
    ({"synthetic": SMALL, "grid": {"cooldown_s": [-5]}}, "cooldown_s"),
    ({"synthetic": SMALL, "grid": {"cooldown_s": [0]}, "objective": "luck"}, "objective"),
    ({"synthetic": SMALL}, "grid"),
])
def test_bad_sweeps_are_400_with_the_field_named_and_queue_nothing(viewer_api, payload, field):
    response = viewer_api.post("/api/sweeps/", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert Sweep.objects.count() == 0 and BacktestRun.objects.count() == 0


def test_reading_and_queueing_need_a_role(anonymous_api, nobody_api):
    for client, code in ((anonymous_api, 401), (nobody_api, 403)):
        assert client.get("/api/backtests/").status_code == code
        assert client.post("/api/backtests/", {"synthetic": SMALL}, format="json").status_code == code
        assert client.get("/api/sweeps/").status_code == code
    assert BacktestRun.objects.count() == 0
