"""The Backtests, sweep and Statistics pages: forms queue through the same services as the API and the admin, bad
input is shown on the field it concerns with nothing queued, results are drawn as server-side charts."""
from __future__ import annotations

import json

import pytest
from django.test import Client
from django_q.models import OrmQ

from backtests import services
from backtests.models import BacktestRun, RunState, Sweep

pytestmark = pytest.mark.django_db(transaction=True)  # tasks are put on the queue on commit
SMALL = {"days": 1, "tick_s": 10.0, "seed": 5, "realized_vol": 0.8}


@pytest.fixture
def page(researcher) -> Client:
    client = Client()
    client.force_login(researcher)
    return client


@pytest.fixture
def viewer_page(viewer) -> Client:
    client = Client()
    client.force_login(viewer)
    return client


def _run_form(**fields: str) -> dict[str, str]:
    return {"queue_run": "1", "run-dataset": "", "run-synthetic_text": json.dumps(SMALL), "run-params_text": "{}",
            "run-start_position": "straddle:10", "run-path_choice": "auto",
            **{f"run-{k}": v for k, v in fields.items()}}


def test_a_backtest_queued_from_the_page_runs_and_shows_its_charts(page):
    response = page.post("/backtests/", _run_form(params_text='{"cooldown_s": 5}'))

    run = BacktestRun.objects.get()
    assert response.status_code == 302 and response.url == f"/backtests/{run.pk}/"
    assert run.params["cooldown_s"] == 5 and run.created_by == "rita" and OrmQ.objects.count() == 1
    assert b"Cancel this run" in page.get(response.url).content  # queued: it can still be cancelled

    services.backtest_run_execute(run_id=run.pk)

    html = page.get(response.url).content.decode()
    for figure in ("Equity curve", "options vs hedge vs commissions", "Hedges over price", "Blocks by reason"):
        assert figure in html
    assert html.count("<svg") >= 3 and "Cancel this run" not in html


@pytest.mark.parametrize(("fields", "field"), [
    ({"params_text": '{"cooldown_s": -1}'}, "params_text"),
    ({"params_text": "{cooldown"}, "params_text"),
    ({"synthetic_text": '{"days": 0}'}, "synthetic_text"),
    ({"start_position": "straddle:0"}, "start_position"),
])
def test_bad_input_on_the_page_is_shown_on_its_field_and_queues_nothing(page, fields, field):
    response = page.post("/backtests/", _run_form(**fields))

    assert response.status_code == 400
    assert f'data-field="{field}"' in response.content.decode()
    assert BacktestRun.objects.count() == 0 and OrmQ.objects.count() == 0


def test_a_sweep_queued_from_the_page_shows_its_ranking_heat_map_and_guard_counts(page):
    response = page.post("/backtests/", {
        "queue_sweep": "1", "sweep-name": "grid", "sweep-dataset": "", "sweep-synthetic_text": json.dumps(SMALL),
        "sweep-grid_text": '{"cooldown_s": [0, 60], "min_price_move_bps": [0, 30]}', "sweep-base_text": "{}",
        "sweep-objective": "pnl", "sweep-start_position": "straddle:10"})

    sweep = Sweep.objects.get()
    assert response.status_code == 302 and response.url == f"/backtests/sweeps/{sweep.pk}/"
    assert sweep.runs.count() == 4
    for run in sweep.runs.all():
        services.backtest_run_execute(run_id=run.pk)

    html = page.get(response.url).content.decode()
    assert 'class="heat"' in html and "min_price_move_bps" in html
    assert html.count("<tr><td>") >= 4  # one ranked row per parameter set


def test_cancel_from_the_page(page):
    run = services.backtest_run_enqueue(synthetic=SMALL, params={}, user="rita")

    response = page.post(f"/backtests/{run.pk}/cancel/")

    assert response.status_code == 302
    run.refresh_from_db()
    assert run.state == RunState.CANCELLED and run.error == "cancelled by rita"
    assert page.get(f"/backtests/{run.pk}/cancel/").status_code == 405


def test_the_statistics_page_renders_from_history(page):
    for period in ("day", "week", "month"):
        response = page.get("/stats/", {"period": period})
        assert response.status_code == 200
        assert "P&amp;L per " + period in response.content.decode()
    refused = page.get("/stats/", {"period": "fortnight"})
    assert refused.status_code == 400 and "period: expected one of day, week, month" in refused.content.decode()


def test_the_pages_need_a_login_and_a_role(client, django_user_model):
    assert client.get("/backtests/").status_code == 302  # to the login page
    client.force_login(django_user_model.objects.create_user("nadia"))
    assert client.get("/backtests/").status_code == 403
    assert client.post("/backtests/", _run_form()).status_code == 403
    assert BacktestRun.objects.count() == 0


def _sweep_form(**fields: str) -> dict[str, str]:
    return {"queue_sweep": "1", "sweep-name": "grid", "sweep-dataset": "", "sweep-synthetic_text": json.dumps(SMALL),
            "sweep-grid_text": '{"cooldown_s": [0, 60]}', "sweep-base_text": "{}", "sweep-objective": "pnl",
            "sweep-start_position": "straddle:10", **{f"sweep-{k}": v for k, v in fields.items()}}


def test_a_viewer_reads_the_pages_but_is_refused_queueing_and_cancelling(viewer_page):
    run = services.backtest_run_enqueue(synthetic=SMALL, params={}, user="rita")
    sweep = services.sweep_enqueue(synthetic=SMALL, grid={"cooldown_s": [0, 60]}, user="rita")

    listing = viewer_page.get("/backtests/").content.decode()
    queued = viewer_page.post("/backtests/", _run_form())
    swept = viewer_page.post("/backtests/", _sweep_form())
    cancel = viewer_page.post(f"/backtests/{run.pk}/cancel/")
    cancel_sweep = viewer_page.post(f"/backtests/sweeps/{sweep.pk}/cancel/")

    assert "needs the researcher or operator role" in listing and 'id="backtest-form"' not in listing
    assert queued.status_code == 403 and "needs the researcher or operator role" in queued.content.decode()
    assert swept.status_code == 403
    assert cancel.status_code == 403 and "operator role" in cancel.content.decode()
    assert cancel_sweep.status_code == 403
    assert BacktestRun.objects.count() == 3 and Sweep.objects.count() == 1  # the ones made above, nothing more
    assert not BacktestRun.objects.filter(state=RunState.CANCELLED).exists()
    assert "Cancel this run" not in viewer_page.get(f"/backtests/{run.pk}/").content.decode()
    assert "Cancel the sweep" not in viewer_page.get(f"/backtests/sweeps/{sweep.pk}/").content.decode()


def test_a_researcher_cannot_cancel_someone_elses_run_from_the_page(page):
    theirs = services.backtest_run_enqueue(synthetic=SMALL, params={}, user="someone-else")

    response = page.post(f"/backtests/{theirs.pk}/cancel/")

    assert response.status_code == 403
    theirs.refresh_from_db()
    assert theirs.state == RunState.QUEUED
    assert "Cancel this run" not in page.get(f"/backtests/{theirs.pk}/").content.decode()


def test_the_page_forms_spend_the_same_per_user_queue_budget_as_the_api(page, researcher_api, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"queue": "2/hour"})
    assert researcher_api.post("/api/backtests/", {"synthetic": SMALL}, format="json").status_code == 201
    assert page.post("/backtests/", _run_form()).status_code == 302

    refused = page.post("/backtests/", _sweep_form())

    assert refused.status_code == 429
    assert "queue limit" in refused.content.decode() and "2/hour" in refused.content.decode()
    assert BacktestRun.objects.count() == 2 and Sweep.objects.count() == 0
    assert researcher_api.post("/api/backtests/", {"synthetic": SMALL}, format="json").status_code == 429


@pytest.mark.parametrize(("form", "fields", "field", "limit"), [
    ("sweep", {"grid_text": json.dumps({"cooldown_s": list(range(15)), "min_price_move_bps": list(range(14))})},
     "grid_text", "200"),
    ("sweep", {"synthetic_text": '{"days": 300}'}, "synthetic_text", "5,000,000"),
    ("run", {"synthetic_text": '{"days": 20, "tick_s": 0.05}'}, "synthetic_text", "5,000,000"),
])
def test_the_caps_are_refused_on_the_page_naming_the_limit(page, form, fields, field, limit):
    response = page.post("/backtests/", (_sweep_form if form == "sweep" else _run_form)(**fields))

    html = response.content.decode()
    assert response.status_code == 400
    assert f'data-field="{field}"' in html and limit in html
    assert BacktestRun.objects.count() == 0 and Sweep.objects.count() == 0 and OrmQ.objects.count() == 0


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(("form", "fields", "field"), [
    ("run", {"params_text": DEEP}, "params_text"),
    ("run", {"synthetic_text": DEEP}, "synthetic_text"),
    ("run", {"params_text": '{"underlying": "NV\\u0000DA"}'}, "params_text"),
    ("sweep", {"grid_text": DEEP}, "grid_text"),
    ("sweep", {"base_text": '{"a": ' * 100_000 + "0" + "}" * 100_000}, "base_text"),
    ("sweep", {"grid_text": '{"underlying": ["NV\\u0000DA"]}'}, "grid_text"),
    ("sweep", {"name": "a\x00b"}, "name"),
])
def test_deeply_nested_json_or_a_nul_character_on_the_page_is_refused_on_its_field(page, form, fields, field):
    response = page.post("/backtests/", (_sweep_form if form == "sweep" else _run_form)(**fields))

    assert response.status_code == 400
    assert f'data-field="{field}"' in response.content.decode()
    assert BacktestRun.objects.count() == 0 and Sweep.objects.count() == 0


def test_a_sweep_over_a_list_valued_parameter_shows_its_heat_map(page):
    sweep = services.sweep_enqueue(
        synthetic=SMALL, grid={"earnings_dates": [["2026-03-10"], ["2026-03-11"]], "cooldown_s": [0, 30]}, user="rita")
    for run in sweep.runs.all():
        services.backtest_run_execute(run_id=run.pk)

    response = page.get(f"/backtests/sweeps/{sweep.pk}/")

    html = response.content.decode()
    assert response.status_code == 200
    assert 'class="heat"' in html and "2026-03-10" in html and "2026-03-11" in html
    assert html.count("<tr><td>") >= 4
