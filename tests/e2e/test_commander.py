"""The commander's Contract end to end: `manage.py commander run` as a process against the daemon as a process
(exit 0 with the summary on a dry run, 1 on an unknown strategy named before anything runs, 2 with no daemon),
and `POST /api/commander/runs/` answering 201 {id, state} to an operator, 403 to a viewer."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.contrib.auth.models import Group, User

from tests.e2e.conftest import REPO, database_url, wait_until
from trading.models import CommanderRun, StatusCurrent, Strategy

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def commander(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bifrost.settings", "BIFROST_ALLOW_DEV_SECRET": "1",
           "DATABASE_URL": database_url()}
    return subprocess.run([sys.executable, "manage.py", "commander", "run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def keeper() -> Strategy:
    return Strategy.objects.create(slug="keeper", name="keeper", kind="straddle_keeper", capital_allocation=0.2,
                                   params={"straddles": 10, "min_dte": 40, "max_dte": 70, "roll_dte": 35})


def test_commander_run_exits_2_without_a_daemon_and_1_on_an_unknown_strategy():
    keeper()

    unknown = commander("--dry-run", "--strategy", "nope")
    assert unknown.returncode == 1 and "'nope'" in unknown.stderr
    assert CommanderRun.objects.count() == 0

    down = commander("--dry-run")
    assert down.returncode == 2 and "daemon is not running" in down.stderr


def test_commander_run_against_the_daemon_prints_the_dry_runs_orders_and_exits_0(daemon_factory, client):
    keeper()
    daemon_factory()
    wait_until(lambda: (s := StatusCurrent.objects.filter(id=1).first()) and s.payload["daemon"]["state"] == "running",
               30, "daemon running")

    done = commander("--dry-run", "--strategy", "keeper", "--wait", "60")

    assert done.returncode == 0, done.stderr + done.stdout
    assert "completed - dry-run: 4 order(s) planned" in done.stdout
    assert done.stdout.count("bifrost:cmd:") == 4

    operator = User.objects.create_user("op", password="x")
    operator.groups.add(Group.objects.get_or_create(name="operator")[0])
    viewer = User.objects.create_user("viewer", password="x")
    viewer.groups.add(Group.objects.get_or_create(name="viewer")[0])
    client.force_login(viewer)
    assert client.post("/api/commander/runs/", {"dry_run": True}, content_type="application/json").status_code == 403
    listed = client.get("/api/commander/runs/").json()
    assert listed["results"][0]["state"] == "completed" and len(listed["results"][0]["orders"]) == 4
    assert client.get("/api/strategies/").json()[0]["latest_intent"]["status"] == "success"
    client.force_login(operator)
    created = client.post("/api/commander/runs/", {"strategies": ["keeper"]}, content_type="application/json")
    assert created.status_code == 201 and set(created.json()) == {"id", "state"}
    run = wait_until(lambda: (r := CommanderRun.objects.get(pk=created.json()["id"])).state == "completed" and r,
                     30, "the API's run")
    assert run.dry_run and run.requested_by == "op"
    refused = client.post("/api/commander/runs/", {"strategies": ["nope"]}, content_type="application/json")
    assert refused.status_code == 400 and "strategies" in refused.json()["errors"]
