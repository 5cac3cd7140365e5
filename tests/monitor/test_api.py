"""The API of DESIGN §6: shapes, the auth matrix, bad input as 400 with the field named, filters, pagination."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from trading.models import AccountSnapshot, ControlCommand, Decision, Operation, Position, StatusCurrent

pytestmark = pytest.mark.django_db

READ_PATHS = ["/api/status/", "/api/operations/", "/api/orders/", "/api/fills/", "/api/decisions/",
              "/api/positions/", "/api/account/", "/api/stats/"]
STATUS_KEYS = {"lamp", "verdict", "block_reasons", "checks", "daemon", "trading", "market", "book", "pnl",
               "counters", "config", "account", "ts"}


@pytest.mark.parametrize("path", READ_PATHS + ["/api/control/1/"])
def test_anonymous_reads_get_401_json(anonymous_api, path):
    response = anonymous_api.get(path)

    assert response.status_code == 401
    assert response.json()["detail"] and response.json()["errors"] == {}


@pytest.mark.parametrize("path", READ_PATHS)
def test_a_user_without_a_role_gets_403(nobody_api, path):
    assert nobody_api.get(path).status_code == 403


def test_viewer_reads_but_cannot_control(viewer_api):
    assert viewer_api.get("/api/status/").status_code == 200

    response = viewer_api.post("/api/control/", {"command": "pause"}, format="json")

    assert response.status_code == 403
    assert "operator" in response.json()["detail"]
    assert ControlCommand.objects.count() == 0


def test_operator_queues_a_command_and_reads_it_back(operator_api, daemon_lease):
    created = operator_api.post("/api/control/", {"command": "pause", "reason": "lunch"}, format="json")

    assert created.status_code == 201
    body = created.json()
    assert set(body) >= {"id", "command", "state"} and body["command"] == "pause" and body["state"] == "pending"
    read = operator_api.get(f"/api/control/{body['id']}/").json()
    assert set(read) >= {"id", "command", "state", "result", "created_at", "acked_at", "done_at"}


@pytest.mark.parametrize("body, field", [
    ({"command": "shutdown"}, "command"),
    ({}, "command"),
    ({"command": "pause", "reason": "x" * 501}, "reason"),
])
def test_bad_control_input_is_400_with_the_field_named_and_nothing_queued(operator_api, body, field):
    response = operator_api.post("/api/control/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert ControlCommand.objects.count() == 0


def test_unknown_control_id_is_404(viewer_api):
    assert viewer_api.get("/api/control/999/").status_code == 404


def test_status_has_the_contract_shape_and_is_red_without_a_daemon(viewer_api):
    body = viewer_api.get("/api/status/").json()

    assert set(body) >= STATUS_KEYS
    assert body["lamp"] == "red" and "daemon_not_running" in body["block_reasons"]
    assert set(body["daemon"]) >= {"state", "mode", "pid", "host", "started_at", "heartbeat_at", "heartbeat_age_s",
                                   "broker_connected"}


def _operations(n: int) -> None:
    now = timezone.now()
    for i in range(n):
        Operation.objects.create(ts=now - timedelta(seconds=i), kind="fill" if i % 2 else "order_sent",
                                 message=f"op {i}")


def test_operations_are_newest_first_filtered_by_kind_and_cursor_paginated(viewer_api):
    _operations(30)

    first = viewer_api.get("/api/operations/", {"limit": 10, "kind": ["fill"]}).json()
    second = viewer_api.get(first["next"]).json()

    assert [o["kind"] for o in first["results"]] == ["fill"] * 10
    assert first["results"][0]["message"] == "op 1"
    assert {o["id"] for o in first["results"]}.isdisjoint({o["id"] for o in second["results"]})
    assert len(second["results"]) == 5


def test_operations_since_and_until_bound_the_time(viewer_api):
    _operations(10)
    now = timezone.now()

    body = viewer_api.get("/api/operations/", {"since": (now - timedelta(seconds=3.5)).isoformat(),
                                               "until": now.isoformat()}).json()

    assert len(body["results"]) == 4


@pytest.mark.parametrize("params, field", [
    ({"since": "yesterday"}, "since"),
    ({"limit": 1001}, "limit"),
    ({"limit": 0}, "limit"),
    ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
])
def test_bad_filters_are_400_with_the_field_named(viewer_api, params, field):
    response = viewer_api.get("/api/operations/", params)

    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_decisions_carry_reasons_and_filter_by_reason(viewer_api):
    now = timezone.now()
    Decision.objects.create(ts=now, allowed=False, reasons=["paused", "cooldown"], intent_shares=-40,
                            net_delta_shares=40, trading_state="no_trade")
    Decision.objects.create(ts=now, allowed=True, reasons=[], intent_shares=30, net_delta_shares=-30,
                            trading_state="need_hedge", order_ref="bifrost:x:1")

    paused = viewer_api.get("/api/decisions/", {"kind": "paused"}).json()["results"]
    allowed = viewer_api.get("/api/decisions/", {"kind": "allowed"}).json()["results"]

    assert [d["reasons"] for d in paused] == [["paused", "cooldown"]]
    assert set(paused[0]) >= {"allowed", "reasons", "intent_shares", "state"}
    assert [d["order_ref"] for d in allowed] == ["bifrost:x:1"]


def test_positions_show_managed_and_manual_with_marks_pnl_and_greeks(viewer_api):
    now = timezone.now()
    StatusCurrent.objects.create(id=1, ts=now, daemon_state="running", trading_state="monitor", verdict="ok",
                                 payload={"market": {"symbol": "NVDA", "spot": 180.0}, "book": {"legs": []}})
    Position.objects.create(account="SIM", con_id=1, symbol="NVDA", sec_type="STK", qty=100, avg_cost=170.0,
                            market_price=180.0, managed=False, updated_at=now)
    Position.objects.create(account="SIM", con_id=2, symbol="NVDA", sec_type="OPT", right="C", strike=180.0,
                            expiry=(now + timedelta(days=30)).date(), multiplier=100, qty=10, avg_cost=7.0,
                            market_price=7.5, managed=True, updated_at=now)

    rows = {r["con_id"]: r for r in viewer_api.get("/api/positions/").json()["results"]}

    assert rows[1]["managed"] is False and rows[1]["pnl_usd"] == pytest.approx(1000.0)
    assert rows[2]["managed"] is True and rows[2]["pnl_usd"] == pytest.approx(500.0)
    assert rows[2]["moneyness"] == pytest.approx(1.0)
    assert 0.4 < rows[2]["greeks"]["delta"] < 0.7


def test_account_is_404_until_fetched_then_has_its_fetch_time(viewer_api):
    assert viewer_api.get("/api/account/").status_code == 404

    AccountSnapshot.objects.create(ts=timezone.now(), account="SIM", net_liquidation=1_000_000, cash=900_000)
    body = viewer_api.get("/api/account/").json()

    assert body["net_liquidation"] == 1_000_000 and body["fetched_at"]


def test_stats_come_from_the_history_tables(viewer_api):
    body = viewer_api.get("/api/stats/", {"period": "week"}).json()

    assert body["period"] == "week"
    assert set(body["totals"]) >= {"hedges", "fills", "pnl_usd", "win_rate", "slippage_bps", "pnl_distribution",
                                   "blocks"}


@pytest.mark.parametrize("params, field", [({"period": "year"}, "period"), ({"since": "soon"}, "since"),
                                           ({"since": "2026-02-01", "until": "2026-01-01"}, "until")])
def test_bad_stats_queries_are_400_with_the_field_named(viewer_api, params, field):
    response = viewer_api.get("/api/stats/", params)

    assert response.status_code == 400 and field in response.json()["errors"]


def test_schema_and_docs_are_served(viewer_api):
    assert viewer_api.get("/api/schema/").status_code == 200
    assert viewer_api.get("/api/docs/").status_code == 200


def test_control_is_throttled(operator_api, monkeypatch):
    from rest_framework.throttling import ScopedRateThrottle

    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"control": "3/min"})

    codes = [operator_api.post("/api/control/", {"command": "pause"}, format="json").status_code for _ in range(5)]

    assert codes == [201, 201, 201, 429, 429]


def test_lamp_page_needs_login_and_shows_controls_only_to_operators(client, viewer, operator):
    assert client.get("/").status_code == 302

    client.force_login(viewer)
    as_viewer = client.get("/").content.decode()
    client.force_login(operator)
    as_operator = client.get("/").content.decode()

    assert 'id="lamp"' in as_viewer and 'data-command="pause"' not in as_viewer
    assert 'data-command="pause"' in as_operator and 'data-command="start"' in as_operator


def test_a_judged_status_is_reused_for_a_fifth_of_a_second_then_read_again(viewer_api, monkeypatch):
    from monitor import selectors

    assert viewer_api.get("/api/status/").json()["market"]["symbol"] is None
    payload = selectors._empty_payload()
    payload["market"]["symbol"] = "NVDA"
    StatusCurrent.objects.create(id=1, ts=timezone.now(), daemon_state="running", trading_state="monitor",
                                 verdict="ok", payload=payload)

    assert viewer_api.get("/api/status/").json()["market"]["symbol"] is None  # the same judged payload, reused
    built_at, reused = selectors._recent
    monkeypatch.setattr(selectors, "_recent", (built_at - selectors.STATUS_REUSE_S, reused))  # 0.2 s later
    assert viewer_api.get("/api/status/").json()["market"]["symbol"] == "NVDA"


def test_a_silent_daemons_checks_are_unknown_and_its_figures_carry_their_age(viewer_api):
    from trading.models import DaemonLease
    from trading.services import lease_acquire

    lease = lease_acquire(mode="sim", heartbeat_s=1.0)
    DaemonLease.objects.update(heartbeat_at=timezone.now() - timedelta(seconds=30))
    payload = {"lamp": "green", "verdict": "ok", "block_reasons": [], "checks": [
        {"name": "market_data", "status": "ok", "reason": "", "detail": "last quote 169 ms old"},
        {"name": "hedging", "status": "ok", "reason": "", "detail": "all gates open"}],
        "daemon": {"state": "running", "lease": lease.token}, "trading": {"state": "monitor"},
        "ts": (timezone.now() - timedelta(seconds=30)).isoformat()}
    StatusCurrent.objects.create(id=1, ts=timezone.now(), daemon_state="running", trading_state="monitor",
                                 verdict="ok", payload=payload)

    status = viewer_api.get("/api/status/").json()

    assert status["lamp"] == "red" and status["block_reasons"] == ["heartbeat_stale"]
    assert {c["name"]: c["status"] for c in status["checks"]} == {"market_data": "unknown", "hedging": "unknown",
                                                                  "heartbeat": "blocked"}
    assert status["daemon"]["responding"] is False and status["daemon"]["snapshot_age_s"] >= 29
