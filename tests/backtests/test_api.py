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


def test_a_researcher_queues_a_run_and_a_viewer_polls_it_and_reads_the_result(researcher_api, viewer_api):
    response = researcher_api.post("/api/backtests/", {"synthetic": SMALL, "params": {"cooldown_s": 5}},
                                   format="json")

    assert response.status_code == 201, response.json()
    run_id = response.json()["id"]
    assert response.json()["state"] == "queued" and response.json()["progress"] == 0
    assert OrmQ.objects.count() == 1 and BacktestRun.objects.get(pk=run_id).created_by == "rita"

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
def test_bad_runs_are_400_with_the_field_named_and_queue_nothing(researcher_api, payload, field):
    response = researcher_api.post("/api/backtests/", payload, format="json")

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


def test_cancel_stops_a_queued_run_and_refuses_a_finished_one(researcher_api, viewer_api):
    queued = services.backtest_run_enqueue(synthetic=SMALL, params={}, user="rita")

    response = researcher_api.post(f"/api/backtests/{queued.pk}/cancel/")

    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    again = researcher_api.post(f"/api/backtests/{queued.pk}/cancel/")
    assert again.status_code == 400 and "state" in again.json()["errors"]
    assert researcher_api.post("/api/backtests/999/cancel/").status_code == 404
    assert viewer_api.get("/api/backtests/999/").status_code == 404


def test_a_sweep_is_queued_ranked_and_cancellable(researcher_api, viewer_api):
    response = researcher_api.post("/api/sweeps/", {"synthetic": SMALL, "grid": {"cooldown_s": [0, 60]},
                                                "objective": "sharpe", "name": "cooldown"}, format="json")

    assert response.status_code == 201, response.json()
    sweep_id = response.json()["id"]
    assert response.json()["runs_total"] == 2 and OrmQ.objects.count() == 2
    for run in Sweep.objects.get(pk=sweep_id).runs.all():
        services.backtest_run_execute(run_id=run.pk)
    body = viewer_api.get(f"/api/sweeps/{sweep_id}/").json()
    assert body["state"] == "done" and [r["rank"] for r in body["results"]] == [1, 2]
    assert all("blocks" in r for r in body["results"])  # guard validation per parameter set
    assert researcher_api.post(f"/api/sweeps/{sweep_id}/cancel/").status_code == 400

    other = researcher_api.post("/api/sweeps/", {"synthetic": SMALL, "grid": {"cooldown_s": [0, 60]}}, format="json")
    cancelled = researcher_api.post(f"/api/sweeps/{other.json()['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert not Sweep.objects.get(pk=other.json()["id"]).runs.exclude(state=RunState.CANCELLED).exists()


@pytest.mark.parametrize(("payload", "field"), [
    ({"synthetic": SMALL, "grid": {"cooldown_s": []}}, "grid.cooldown_s"),
    ({"synthetic": SMALL, "grid": {"cooldown_s": [-5]}}, "cooldown_s"),
    ({"synthetic": SMALL, "grid": {"cooldown_s": [0]}, "objective": "luck"}, "objective"),
    ({"synthetic": SMALL}, "grid"),
])
def test_bad_sweeps_are_400_with_the_field_named_and_queue_nothing(researcher_api, payload, field):
    response = researcher_api.post("/api/sweeps/", payload, format="json")

    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert Sweep.objects.count() == 0 and BacktestRun.objects.count() == 0


def test_reading_and_queueing_need_a_role(anonymous_api, nobody_api):
    for client, code in ((anonymous_api, 401), (nobody_api, 403)):
        assert client.get("/api/backtests/").status_code == code
        assert client.post("/api/backtests/", {"synthetic": SMALL}, format="json").status_code == code
        assert client.get("/api/sweeps/").status_code == code
    assert BacktestRun.objects.count() == 0


def _queued_by(user: str) -> tuple[BacktestRun, Sweep]:
    run = services.backtest_run_enqueue(synthetic=SMALL, params={}, user=user)
    sweep = services.sweep_enqueue(synthetic=SMALL, grid={"cooldown_s": [0, 60]}, user=user)
    return run, sweep


def test_a_viewer_reads_everything_but_may_not_queue_or_cancel(viewer_api):
    run, sweep = _queued_by("rita")

    refusals = [viewer_api.post("/api/backtests/", {"synthetic": SMALL}, format="json"),
                viewer_api.post("/api/sweeps/", {"synthetic": SMALL, "grid": {"cooldown_s": [0]}}, format="json"),
                viewer_api.post(f"/api/backtests/{run.pk}/cancel/"),
                viewer_api.post(f"/api/sweeps/{sweep.pk}/cancel/")]

    assert [r.status_code for r in refusals] == [403, 403, 403, 403]
    assert "researcher or operator role" in refusals[0].json()["detail"] and refusals[0].json()["errors"] == {}
    assert "operator role" in refusals[2].json()["detail"]
    assert BacktestRun.objects.filter(sweep__isnull=True).count() == 1 and Sweep.objects.count() == 1
    assert not BacktestRun.objects.filter(state=RunState.CANCELLED).exists()
    assert viewer_api.get("/api/backtests/").status_code == 200
    assert viewer_api.get(f"/api/sweeps/{sweep.pk}/").status_code == 200


def test_a_researcher_cancels_their_own_runs_and_an_operator_anyones(researcher_api, operator_api):
    theirs, their_sweep = _queued_by("someone-else")
    own, own_sweep = _queued_by("rita")

    assert researcher_api.post(f"/api/backtests/{theirs.pk}/cancel/").status_code == 403
    assert researcher_api.post(f"/api/sweeps/{their_sweep.pk}/cancel/").status_code == 403
    assert researcher_api.post(f"/api/backtests/{own.pk}/cancel/").status_code == 200
    assert researcher_api.post(f"/api/sweeps/{own_sweep.pk}/cancel/").status_code == 200
    assert operator_api.post(f"/api/backtests/{theirs.pk}/cancel/").status_code == 200
    assert operator_api.post(f"/api/sweeps/{their_sweep.pk}/cancel/").status_code == 200
    assert not BacktestRun.objects.exclude(state=RunState.CANCELLED).exists()


def test_queueing_is_throttled_per_user_in_the_json_error_shape(researcher_api, operator_api, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"queue": "2/hour"})
    assert researcher_api.post("/api/backtests/", {"synthetic": SMALL}, format="json").status_code == 201
    assert researcher_api.post("/api/sweeps/", {"synthetic": SMALL, "grid": {"cooldown_s": [0]}},
                               format="json").status_code == 201

    third = researcher_api.post("/api/backtests/", {"synthetic": SMALL}, format="json")

    assert third.status_code == 429
    assert set(third.json()) == {"detail", "errors"} and "2/hour" in third.json()["detail"]
    assert int(third["Retry-After"]) > 0
    assert researcher_api.post("/api/sweeps/", {"synthetic": SMALL, "grid": {"cooldown_s": [0]}},
                               format="json").status_code == 429
    assert researcher_api.get("/api/backtests/").status_code == 200  # reading spends nothing
    assert operator_api.post("/api/backtests/", {"synthetic": SMALL}, format="json").status_code == 201  # per user
    assert BacktestRun.objects.count() == 3


@pytest.mark.parametrize(("payload", "field", "limit"), [
    ({"grid": {"cooldown_s": list(range(15)), "min_price_move_bps": list(range(14))}}, "grid", "200"),
    ({"grid": [{"cooldown_s": s} for s in range(201)]}, "grid", "200"),
    ({"grid": {"cooldown_s": [0]}, "synthetic": {"days": 300}}, "synthetic.days", "5,000,000"),
    ({"grid": {"cooldown_s": [0]}, "synthetic": {"days": 20, "tick_s": 0.05}}, "synthetic.tick_s", "5,000,000"),
])
def test_a_sweep_or_market_over_the_caps_is_400_naming_the_limit(researcher_api, payload, field, limit):
    response = researcher_api.post("/api/sweeps/", {"synthetic": SMALL, **payload}, format="json")

    assert response.status_code == 400, response.json()
    assert limit in " ".join(response.json()["errors"][field])
    assert Sweep.objects.count() == 0 and BacktestRun.objects.count() == 0 and OrmQ.objects.count() == 0


def test_a_run_over_the_synthetic_tick_cap_is_400_and_the_cap_follows_the_setting(researcher_api, settings):
    refused = researcher_api.post("/api/backtests/", {"synthetic": {"days": 300, "tick_s": 1}}, format="json")
    settings.BIFROST_MAX_SYNTHETIC_TICKS = 2000
    small_cap = researcher_api.post("/api/backtests/", {"synthetic": SMALL}, format="json")  # 2,340 ticks

    assert refused.status_code == 400 and "5,000,000" in refused.json()["errors"]["synthetic.days"][0]
    assert small_cap.status_code == 400 and "2,000" in small_cap.json()["errors"]["synthetic.days"][0]
    assert BacktestRun.objects.count() == 0


def _nested(depth: int, inner: str = "0") -> str:
    return "[" * depth + inner + "]" * depth


def _nested_dict(depth: int) -> str:
    return '{"a": ' * depth + "0" + "}" * depth


@pytest.mark.parametrize(("url", "body", "field"), [
    ("/api/backtests/", f'{{"synthetic": {{"days": 1}}, "params": {_nested(100_000)}}}', "params"),
    ("/api/backtests/", f'{{"params": {{}}, "synthetic": {_nested(100_000)}}}', "synthetic"),
    ("/api/backtests/", f'{{"synthetic": {{"days": 1}}, "params": {_nested_dict(25)}}}', "params"),
    ("/api/backtests/", '{"synthetic": {"days": 1}, "params": {"underlying": "NV\\u0000DA"}}', "params"),
    ("/api/sweeps/", f'{{"synthetic": {{"days": 1}}, "grid": {_nested(100_000)}}}', "grid"),
    ("/api/sweeps/", f'{{"synthetic": {{"days": 1}}, "grid": {{"cooldown_s": {_nested(25)}}}}}', "grid"),
    ("/api/sweeps/", f'{{"synthetic": {{"days": 1}}, "grid": {{"cooldown_s": [0]}}, "base": {_nested_dict(25)}}}',
     "base"),
    ("/api/sweeps/", '{"synthetic": {"days": 1}, "grid": {"underlying": ["NV\\u0000DA"]}}', "grid"),
    ("/api/sweeps/", '{"synthetic": {"days": 1}, "grid": {"cooldown_s": [0]}, "name": "a\\u0000b"}', "name"),
    ("/api/sweeps/", '{"synthetic": {"days": 1, "exchange": "X\\u0000"}, "grid": {"cooldown_s": [0]}}',
     "synthetic"),
])
def test_deeply_nested_json_or_a_nul_character_is_400_naming_the_field(researcher_api, url, body, field):
    response = researcher_api.post(url, body, content_type="application/json")

    assert response.status_code == 400, response.content[:300]
    assert field in response.json()["errors"], response.json()
    assert BacktestRun.objects.count() == 0 and Sweep.objects.count() == 0
