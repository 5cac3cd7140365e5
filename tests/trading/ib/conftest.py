"""The TWS-protocol simulator on a real loopback socket, served from a thread with its own loop, and the client
library under test (ib_insync, or ib_async when BIFROST_IB_CLIENT=ib_async in its own venv)."""
from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from types import ModuleType
from typing import Any

import pytest
from django.conf import settings

from trading.sim.market import MarketConfig
from trading.sim.tws_server import TwsServer


class ServerThread:
    """A TwsServer on 127.0.0.1:<free port> running in its own thread and event loop."""

    def __init__(self, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = TwsServer(MarketConfig(realized_vol=0.8, fill_latency_ms=20), port=0, **kwargs)
        self.thread = threading.Thread(target=self.loop.run_forever, name="tws-sim", daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        self.call(self.server.start())
        return self

    def call(self, coro: Any, timeout_s: float = 30.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout_s)

    def command(self, line: str) -> dict[str, Any]:
        reply = self.call(self.server.command(line))
        assert reply["ok"], reply
        return reply

    def state(self) -> dict[str, Any]:
        return self.command("state")

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        if not self.thread.is_alive():
            return  # a test stopped it already
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def tws() -> Iterator[ServerThread]:
    server = ServerThread(tick_s=0.05, speed=50.0).start()
    yield server
    server.stop()


TWO_ACCOUNTS = ("DU1111111", "DU2222222")


@pytest.fixture
def tws_two_accounts() -> Iterator[ServerThread]:
    """A login managing two accounts: the first with the seeded book, the second with cash and some NVDA shares."""
    server = ServerThread(tick_s=0.05, speed=50.0, accounts=TWO_ACCOUNTS).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ib_lib() -> ModuleType:
    return importlib.import_module(settings.BIFROST_IB_CLIENT)


def run(coro: Any, timeout_s: float = 60.0) -> Any:
    """Run one test scenario on a fresh loop of its own (the client library lives in it)."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


async def wait_for(predicate: Any, timeout_s: float = 5.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
