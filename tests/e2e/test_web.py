"""The web as shipped (daphne, BIFROST_WEB_PROCESSES processes on one address) against crafted traffic."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.authtoken.models import Token

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_control_throttle_holds_across_the_web_processes(system):
    """Two daphne processes (BIFROST_WEB_PROCESSES defaults to 2), the kernel spreading connections between them,
    one shared count: exactly the rate passes (before, each process counted its own: 116 of 200 got through)."""
    user = User.objects.create_user("throttled")
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    token = Token.objects.create(user=user).key
    codes = []
    for _ in range(70):
        request = urllib.request.Request(f"{system['url']}/api/control/", method="POST",
                                         data=json.dumps({"command": "refresh_account"}).encode(),
                                         headers={"Authorization": f"Token {token}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                codes.append(response.status)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)

    assert codes.count(201) == 60 and codes.count(429) == 10
