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


def _staff(name: str, group: str | None, *codenames: str) -> User:
    from django.contrib.auth.models import Group, Permission

    user = User.objects.create_user(name, is_staff=True)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="backtests", codename__in=codenames))
    return User.objects.get(pk=user.pk)  # a fresh object: no cached permissions


VIEW_ONLY = ("view_backtestrun", "view_sweep", "view_marketdataset")
FULL = (*VIEW_ONLY, "add_backtestrun", "change_backtestrun", "add_sweep", "change_sweep", "add_marketdataset")


def _dataset():
    from backtests import services
    from backtests.data import SyntheticSpec, generate

    return services.dataset_create(name="d", ticks=generate(SyntheticSpec(days=1, tick_s=60.0)), source="synthetic",
                                   user="root")


def _act(client, model: str, action: str, *pks: int):
    return client.post(f"/admin/backtests/{model}/", {"action": action, "_selected_action": [str(p) for p in pks]},
                       follow=True)


def test_a_staff_user_with_only_view_permissions_cannot_cancel_requeue_or_queue(client):
    from backtests import services

    client.force_login(_staff("otis", "operator", *VIEW_ONLY))  # the role allows it, the model permissions do not
    run = services.backtest_run_enqueue(synthetic={"days": 1, "tick_s": 10}, params={}, user="root")
    sweep = services.sweep_enqueue(synthetic={"days": 1, "tick_s": 10}, grid={"cooldown_s": [0]}, user="root")
    dataset = _dataset()

    listing = client.get("/admin/backtests/backtestrun/").content.decode()
    _act(client, "backtestrun", "cancel", run.pk)
    _act(client, "backtestrun", "requeue", run.pk)
    _act(client, "sweep", "cancel", sweep.pk)
    _act(client, "marketdataset", "queue_default_backtest", dataset.pk)

    assert 'value="cancel"' not in listing and 'value="requeue"' not in listing
    assert client.get("/admin/backtests/backtestrun/add/").status_code == 403
    assert BacktestRun.objects.count() == 2 and not BacktestRun.objects.filter(state=RunState.CANCELLED).exists()
    sweep.refresh_from_db()
    assert sweep.state == RunState.QUEUED


def test_a_staff_viewer_with_every_model_permission_still_cannot_queue_or_cancel(client):
    from backtests import services

    client.force_login(_staff("vic", "viewer", *FULL))
    run = services.backtest_run_enqueue(synthetic={"days": 1, "tick_s": 10}, params={}, user="vic")
    dataset = _dataset()

    add = client.get("/admin/backtests/backtestrun/add/")
    add_sweep = client.get("/admin/backtests/sweep/add/")
    _act(client, "backtestrun", "cancel", run.pk)
    _act(client, "backtestrun", "requeue", run.pk)
    _act(client, "marketdataset", "queue_default_backtest", dataset.pk)

    assert add.status_code == 403 and add_sweep.status_code == 403
    run.refresh_from_db()
    assert run.state == RunState.QUEUED and BacktestRun.objects.count() == 1


def test_a_staff_researcher_cancels_their_own_runs_and_an_operator_anyones(client):
    from backtests import services

    researcher = _staff("rosa", "researcher", *FULL)
    operator = _staff("olga", "operator", *FULL)
    own = services.backtest_run_enqueue(synthetic={"days": 1, "tick_s": 10}, params={}, user="rosa")
    theirs = services.backtest_run_enqueue(synthetic={"days": 1, "tick_s": 10}, params={}, user="someone-else")
    their_sweep = services.sweep_enqueue(synthetic={"days": 1, "tick_s": 10}, grid={"cooldown_s": [0]},
                                         user="someone-else")

    client.force_login(researcher)
    refused = _act(client, "backtestrun", "cancel", own.pk, theirs.pk).content.decode()
    _act(client, "sweep", "cancel", their_sweep.pk)
    states = {r.pk: r.state for r in BacktestRun.objects.filter(pk__in=(own.pk, theirs.pk))}
    their_sweep.refresh_from_db()
    client.force_login(operator)
    _act(client, "backtestrun", "cancel", theirs.pk)
    _act(client, "sweep", "cancel", their_sweep.pk)

    assert states == {own.pk: RunState.CANCELLED, theirs.pk: RunState.QUEUED}
    assert f"#{theirs.pk}" in refused and "operator role" in refused
    assert their_sweep.state == RunState.QUEUED
    theirs.refresh_from_db()
    their_sweep.refresh_from_db()
    assert theirs.state == RunState.CANCELLED and their_sweep.state == RunState.CANCELLED


def test_the_admin_forms_spend_the_per_user_queue_budget(admin_client, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"queue": "1/hour"})
    form = {"synthetic_text": json.dumps({"days": 1, "tick_s": 10}), "params_text": "{}",
            "start_position": "straddle:10", "path_choice": "auto"}

    first = admin_client.post("/admin/backtests/backtestrun/add/", form)
    second = admin_client.post("/admin/backtests/backtestrun/add/", form)
    requeue = _act(admin_client, "backtestrun", "requeue", BacktestRun.objects.get().pk)

    assert first.status_code == 302
    assert second.status_code == 200 and "queue limit" in second.content.decode()
    assert "queue limit" in requeue.content.decode()
    assert BacktestRun.objects.count() == 1


def test_a_sweep_over_the_run_cap_is_refused_on_the_admin_form(admin_client):
    response = admin_client.post("/admin/backtests/sweep/add/", {
        "name": "big", "synthetic_text": '{"days": 1, "tick_s": 10}', "base_text": "{}", "objective": "pnl",
        "grid_text": json.dumps({"cooldown_s": list(range(15)), "min_price_move_bps": list(range(14))}),
        "start_position": "straddle:10"}, follow=True)

    html = response.content.decode()
    assert "at most 200" in html and "added successfully" not in html
    assert Sweep.objects.count() == 0 and BacktestRun.objects.count() == 0


def test_a_refused_csv_shows_its_line_and_reason_and_no_success_message(admin_client):
    bad = SimpleUploadedFile("bad.csv", b"ts,bid,ask\n1773153000,10,10.1\n1773153001,10.3,10.2\n")

    response = admin_client.post("/admin/backtests/marketdataset/add/", {"name": "bad", "csv_file": bad},
                                 follow=True)

    html = response.content.decode()
    assert "line 3: crossed quote" in html
    assert "added successfully" not in html and "imported" not in html.replace("nothing imported", "")
    assert MarketDataset.objects.count() == 0


def test_an_upload_over_the_size_cap_is_refused_naming_the_limit_and_stores_nothing(admin_client, settings):
    from backtests.models import DatasetImport

    settings.BIFROST_UPLOAD_MAX_MB = 0.001  # about 1 kB
    rows = "".join(f"{1773153000 + i},10,10.1\n" for i in range(100))
    big = SimpleUploadedFile("big.csv", ("ts,bid,ask\n" + rows).encode())

    response = admin_client.post("/admin/backtests/marketdataset/add/", {"name": "big", "csv_file": big},
                                 follow=True)

    html = response.content.decode()
    assert "at most 0.001 MB" in html and "added successfully" not in html
    assert MarketDataset.objects.count() == 0 and DatasetImport.objects.count() == 0


def test_a_large_upload_is_queued_and_its_failure_is_recorded_visibly(admin_client, settings):
    from backtests import services
    from backtests.models import DatasetImport

    settings.BIFROST_UPLOAD_INLINE_MAX_MB = 0.0001  # about 100 bytes: these files go to a worker
    rows = "".join(f"{1773153000 + i},10,10.1\n" for i in range(20))
    good = SimpleUploadedFile("good.csv", ("ts,bid,ask\n" + rows).encode())
    bad = SimpleUploadedFile("bad.csv", ("ts,bid,ask\n" + rows + "1773153100,10.3,10.2\n").encode())

    queued = admin_client.post("/admin/backtests/marketdataset/add/", {"name": "good", "csv_file": good},
                               follow=True).content.decode()
    admin_client.post("/admin/backtests/marketdataset/add/", {"name": "bad", "csv_file": bad})

    assert "queued" in queued and "added successfully" not in queued
    assert MarketDataset.objects.count() == 0
    imports = {i.name: i for i in DatasetImport.objects.all()}
    assert {i.state for i in imports.values()} == {RunState.QUEUED}

    assert services.dataset_import_execute(import_id=imports["good"].pk) == "done"
    assert services.dataset_import_execute(import_id=imports["bad"].pk) == "failed"

    good_import, bad_import = (DatasetImport.objects.get(pk=imports[n].pk) for n in ("good", "bad"))
    assert good_import.dataset.ticks == 20 and good_import.progress == 100 and good_import.dataset.source == "upload"
    assert bad_import.dataset is None and "line 22: crossed quote" in bad_import.error
    assert not good_import.file and not bad_import.file  # the staged copies are gone
    listing = admin_client.get("/admin/backtests/datasetimport/").content.decode()
    assert "line 22: crossed quote" in listing
    assert list(MarketDataset.objects.values_list("name", flat=True)) == ["good"]
