"""Suite-wide fixtures: loud skips for absent services."""
from __future__ import annotations

import pytest

from tests.probe import reachable


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for service in ("postgres", "redis"):
        if reachable(service):
            continue
        skip = pytest.mark.skip(reason=f"SKIPPED LOUDLY: {service} is not reachable on 127.0.0.1")
        for item in items:
            if service in item.keywords:
                item.add_marker(skip)
