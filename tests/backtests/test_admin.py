"""The admin control room queues runs and sweeps and imports datasets through the same services as the API."""
from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile

from backtests.models import BacktestRun, MarketDataset, RunState, Sweep

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def test_a_run_queued_from_the_admin_form_goes_through_the_service(admin_client):
    response = admin_client.post("/admin/backtests/backtestrun/add/", {
        "synthetic_text": json.dumps({"days": 1, "tick_s": 10}), "params_text": '{"cooldown_s": 15}',
        "start_position": "straddle:4", "path_choice": "auto",
    })

    assert response.status_code == 302, response.content.decode()[:2000]
    run = BacktestRun.objects.get()
    assert run.state == RunState.QUEUED and run.params["cooldown_s"] == 15 and run.start_position == "straddle:4"
    assert run.created_by == "root"


def test_bad_params_in_the_admin_form_are_shown_on_the_field_and_queue_nothing(admin_client):
    response = admin_client.post("/admin/backtests/backtestrun/add/", {
        "synthetic_text": "{}", "params_text": '{"cooldown_s": -1}', "start_position": "straddle:10",
        "path_choice": "auto",
    })

    assert response.status_code == 200
    assert "cooldown_s: must be &gt;= 0" in response.content.decode()
    assert BacktestRun.objects.count() == 0


def test_a_sweep_queued_from_the_admin_fans_out(admin_client):
    response = admin_client.post("/admin/backtests/sweep/add/", {
        "name": "cooldowns", "synthetic_text": '{"days": 1, "tick_s": 10}', "grid_text": '{"cooldown_s": [0, 30, 60]}',
        "base_text": "{}", "objective": "sharpe", "start_position": "straddle:10",
    })

    assert response.status_code == 302, response.content.decode()[:2000]
    sweep = Sweep.objects.get()
    assert sweep.runs_total == 3 and sweep.runs.count() == 3 and sweep.objective == "sharpe"


def test_a_csv_uploaded_in_the_admin_is_validated_before_it_is_stored(admin_client):
    good = SimpleUploadedFile("ticks.csv", b"ts,bid,ask\n1773153000,10,10.1\n1773153001,10.1,10.2\n")
    bad = SimpleUploadedFile("bad.csv", b"ts,bid,ask\n1773153000,10,10.1\n1773153001,10.3,10.2\n")

    admin_client.post("/admin/backtests/marketdataset/add/", {"name": "good", "csv_file": good})
    response = admin_client.post("/admin/backtests/marketdataset/add/", {"name": "bad", "csv_file": bad},
                                 follow=True)

    assert list(MarketDataset.objects.values_list("name", "ticks", "source")) == [("good", 2, "upload")]
    assert "line 3: crossed quote" in response.content.decode()


def test_the_changelists_render(admin_client):
    for path in ("backtestrun", "sweep", "marketdataset", "dailystats"):
        assert admin_client.get(f"/admin/backtests/{path}/").status_code == 200


def test_a_finished_run_and_sweep_show_their_results(admin_client):
    from backtests import services

    sweep = services.sweep_enqueue(synthetic={"days": 1, "tick_s": 10}, grid={"cooldown_s": [0, 60]}, user="root")
    for run in sweep.runs.all():
        services.backtest_run_execute(run_id=run.pk)
    run = sweep.runs.first()

    page = admin_client.get(f"/admin/backtests/backtestrun/{run.pk}/change/").content.decode()
    ranking = admin_client.get(f"/admin/backtests/sweep/{sweep.pk}/change/").content.decode()

    assert "P&amp;L" in page and "hedges" in page
    assert "rank" in ranking and "cooldown_s" in ranking
