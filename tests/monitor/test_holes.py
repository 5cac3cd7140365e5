"""The control room's holes a review found, each closed: crafted cursors, deep or NUL-bearing JSON, admin actions
past their permissions, anonymous API docs from a CDN, per-process throttles, sockets outliving a logout, known
secret keys, unthrottled logins, a hanging supervisord, and Django's HTML errors on the API."""
from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.test import Client

from monitor.consumers import StatusConsumer
from trading.errors import ControlCommandError
from trading.models import ControlCommand, StrategyConfig
from trading.services import control_command_create, strategy_config_create

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("cursor", [
    base64.b64encode(b"p=x").decode(), "not base64!", base64.b64encode(b"p=\x00").decode(),
    base64.b64encode(b"p=99999999999999999999999999").decode(), base64.b64encode(b"p=2026-99-99").decode(),
])
def test_a_crafted_cursor_is_a_400_naming_the_cursor(viewer_api, cursor):
    for url in ("/api/operations/", "/api/orders/", "/api/alerts/"):
        response = viewer_api.get(url, {"cursor": cursor})

        assert response.status_code == 400, (url, response.content)
        assert "cursor" in response.json()["errors"]


def test_json_nested_deeper_than_the_parser_recurses_is_a_400_naming_the_field(operator_api):
    deep = '{"command": ' + "[" * 100_000 + "]" * 100_000 + "}"

    control = operator_api.post("/api/control/", deep, content_type="application/json")
    silence = operator_api.post("/api/alerts/silence/", '{"kinds": ' + "[" * 5_000 + "]" * 5_000 + "}",
                                content_type="application/json")

    assert control.status_code == 400 and "command" in control.json()["errors"]
    assert silence.status_code == 400 and "kinds" in silence.json()["errors"]
    assert ControlCommand.objects.count() == 0


def test_a_nul_character_in_json_is_a_400_naming_the_field(operator_api):
    response = operator_api.post("/api/control/", {"command": "pause", "reason": "lunch\u0000"}, format="json")

    assert response.status_code == 400 and "reason" in response.json()["errors"]
    assert ControlCommand.objects.count() == 0


def test_a_staff_user_with_only_view_permission_cannot_activate_a_config():
    config = strategy_config_create(name="mine", params={"cooldown_s": 5}, user="mallory")
    mallory = User.objects.create_user("mallory", password="pw-mallory", is_staff=True)
    mallory.user_permissions.add(Permission.objects.get(codename="view_strategyconfig"))
    client = Client()
    client.force_login(mallory)

    client.post("/admin/trading/strategyconfig/", {"action": "activate", "_selected_action": [config.pk]})

    config.refresh_from_db()
    assert not config.active
    assert not StrategyConfig.objects.filter(active=True).exists()


def test_an_operator_without_the_change_permission_cannot_activate_either(operator):
    config = strategy_config_create(name="theirs", params={}, user="x")
    operator.is_staff = True
    operator.save()
    client = Client()
    client.force_login(operator)

    client.post("/admin/trading/strategyconfig/", {"action": "activate", "_selected_action": [config.pk]})

    config.refresh_from_db()
    assert not config.active


def test_the_api_schema_and_docs_need_a_viewer_and_load_nothing_from_a_cdn(viewer, anonymous_api):
    client = Client()
    client.force_login(viewer)

    assert anonymous_api.get("/api/schema/").status_code == 401
    assert anonymous_api.get("/api/docs/").status_code == 401
    docs = client.get("/api/docs/").content.decode()
    assert client.get("/api/schema/").status_code == 200
    assert "cdn.jsdelivr" not in docs and "unpkg" not in docs
    assert "/static/drf_spectacular_sidecar/" in docs


def test_admin_and_cli_commands_are_bounded_per_user_like_the_api(settings, daemon_lease):
    settings.BIFROST_CONTROL_RATE = "5/min"
    for _ in range(5):
        control_command_create(command="refresh_account", user="cli:ops", source="cli")

    with pytest.raises(ControlCommandError) as refused:
        control_command_create(command="refresh_account", user="cli:ops", source="admin")

    assert "too many commands" in str(refused.value)
    assert ControlCommand.objects.count() == 5


def test_login_attempts_are_limited_per_user_name_and_address(settings):
    settings.BIFROST_LOGIN_RATE = "3/min"
    client = Client()

    codes = [client.post("/login/", {"username": "otto", "password": "guess"}).status_code for _ in range(4)]

    assert codes == [200, 200, 200, 429]


def test_unknown_api_paths_and_oversized_bodies_answer_in_the_json_error_shape(operator_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    missing = operator_api.get("/api/no-such-thing/")
    big = operator_api.post("/api/control/", {"command": "pause", "reason": "x" * 5000}, format="json")

    assert missing.status_code == 404 and set(missing.json()) == {"detail", "errors"}
    assert big.status_code == 400 and set(big.json()) == {"detail", "errors"}


def test_a_supervisord_that_never_answers_does_not_hang_start(settings, tmp_path):
    path = tmp_path / "hung.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(server.accept()[0]), daemon=True).start()
    settings.BIFROST_SUPERVISOR_URL = f"unix://{path}"
    settings.BIFROST_SUPERVISOR_TIMEOUT_S = 0.5

    started = time.monotonic()
    command = control_command_create(command="start", user="op")
    elapsed = time.monotonic() - started

    assert elapsed < 3.0
    assert command.state == "rejected" and "not reachable" in command.result
    server.close()


@pytest.mark.django_db(transaction=True)
def test_an_open_websocket_closes_after_its_session_logs_out(viewer):
    client = Client()
    client.force_login(viewer)
    session = client.session

    async def scenario() -> tuple[dict, int | None]:
        from monitor import consumers

        consumers.RECHECK_S = 0.2
        communicator = WebsocketCommunicator(StatusConsumer.as_asgi(), "/ws/status/")
        communicator.scope["user"] = viewer
        communicator.scope["session"] = session
        connected, _ = await communicator.connect()
        assert connected
        first = await communicator.receive_json_from(timeout=3)
        await sync_to_async(client.logout)()
        closed = await communicator.receive_output(timeout=5)
        return first, closed.get("code")

    try:
        first, code = async_to_sync(scenario)()
    finally:
        import monitor.consumers

        monitor.consumers.RECHECK_S = 2.0

    assert "lamp" in first
    assert code == 4403


def _settings_with(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='bifrost.settings'; django.setup(); " \
           "from django.conf import settings as s; print(s.SECRET_KEY[:6], s.CSRF_TRUSTED_ORIGINS, " \
           "getattr(s, 'SECURE_PROXY_SSL_HEADER', None))"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "BIFROST_", "CSRF_"))}
    return subprocess.run([sys.executable, "-c", code], env={**base, **env}, cwd=REPO, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("key", ["change-me-to-a-long-random-string-please-yes", "short-key"])
def test_a_known_placeholder_or_short_secret_key_is_refused_in_production(key, tmp_path):
    result = _settings_with({"DJANGO_SECRET_KEY": key, "BIFROST_VAR_DIR": str(tmp_path)})

    assert result.returncode != 0 and "DJANGO_SECRET_KEY is a placeholder" in result.stderr


def test_the_demo_makes_a_random_secret_key_once_and_keeps_it(tmp_path):
    first = _settings_with({"BIFROST_ALLOW_DEV_SECRET": "1", "BIFROST_VAR_DIR": str(tmp_path)})
    again = _settings_with({"BIFROST_ALLOW_DEV_SECRET": "1", "BIFROST_VAR_DIR": str(tmp_path)})
    elsewhere = _settings_with({"BIFROST_ALLOW_DEV_SECRET": "1", "BIFROST_VAR_DIR": str(tmp_path / "other")})

    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[0] == again.stdout.split()[0] != elsewhere.stdout.split()[0]
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_tls_in_front_is_configured_from_the_environment(tmp_path):
    result = _settings_with({"BIFROST_ALLOW_DEV_SECRET": "1", "BIFROST_VAR_DIR": str(tmp_path),
                             "CSRF_TRUSTED_ORIGINS": "https://bifrost.example,https://ops.example",
                             "BIFROST_TRUST_PROXY_SSL": "1"})

    assert "['https://bifrost.example', 'https://ops.example']" in result.stdout
    assert "('HTTP_X_FORWARDED_PROTO', 'https')" in result.stdout


def test_a_post_through_a_tls_proxy_from_a_trusted_origin_passes_csrf(settings, operator, daemon_lease):
    settings.CSRF_TRUSTED_ORIGINS = ["https://bifrost.example"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["bifrost.example"]
    client = Client(enforce_csrf_checks=True, HTTP_HOST="bifrost.example")
    client.force_login(operator)
    client.get("/", HTTP_X_FORWARDED_PROTO="https")
    token = client.cookies["csrftoken"].value

    trusted = client.post("/api/control/", {"command": "pause"}, content_type="application/json",
                          HTTP_X_CSRFTOKEN=token, HTTP_ORIGIN="https://bifrost.example",
                          HTTP_REFERER="https://bifrost.example/", HTTP_X_FORWARDED_PROTO="https")
    foreign = client.post("/api/control/", {"command": "pause"}, content_type="application/json",
                          HTTP_X_CSRFTOKEN=token, HTTP_ORIGIN="https://evil.example",
                          HTTP_REFERER="https://evil.example/", HTTP_X_FORWARDED_PROTO="https")

    assert trusted.status_code == 201, trusted.content
    assert foreign.status_code == 403
