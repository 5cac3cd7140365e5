"""Suite-wide fixtures: loud skips for absent services; users in each role and API clients with their tokens."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.probe import reachable


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for service in ("postgres", "redis"):
        if reachable(service):
            continue
        skip = pytest.mark.skip(reason=f"SKIPPED LOUDLY: {service} is not reachable on 127.0.0.1")
        for item in items:
            if service in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_throttles(request):
    """Throttle counters live in the cache (a database table): each test that can reach it starts with none."""
    if request.node.get_closest_marker("django_db") or {"db", "transactional_db"} & set(request.fixturenames):
        from django.core.cache import cache

        cache.clear()


@pytest.fixture(autouse=True)
def _fresh_status_reuse(monkeypatch):
    """The web reuses a judged status payload for 0.2 s: each test starts without one built by another."""
    from monitor import selectors

    monkeypatch.setattr(selectors, "_recent", (-float("inf"), {}))


@pytest.fixture
def daemon_lease(db):
    """A daemon holds a fresh lease: commands stay queued for it (this one never takes them)."""
    from trading.services import lease_acquire

    return lease_acquire(mode="sim", heartbeat_s=60.0)


def _user(name: str, group: str | None) -> User:
    user = User.objects.create_user(name, password="pw-" + name)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])  # a transactional test flushed the migration's rows
    return user


def _client(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


@pytest.fixture
def viewer(db) -> User:
    return _user("vera", "viewer")


@pytest.fixture
def researcher(db) -> User:
    return _user("rita", "researcher")


@pytest.fixture
def researcher_api(researcher) -> APIClient:
    return _client(researcher)


@pytest.fixture
def operator(db) -> User:
    return _user("otto", "operator")


@pytest.fixture
def anonymous_api(db) -> APIClient:
    return _client(None)


@pytest.fixture
def viewer_api(viewer) -> APIClient:
    return _client(viewer)


@pytest.fixture
def operator_api(operator) -> APIClient:
    return _client(operator)


@pytest.fixture
def nobody_api(db) -> APIClient:
    return _client(_user("nadia", None))
