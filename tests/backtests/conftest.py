"""Backtest test helpers: small seeded markets, relaxed params, and a real django-q2 cluster process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backtests.data import SyntheticSpec, TickData, generate
from backtests.replay import BacktestOutcome, Execution, run_backtest
from trading.core.params import StrategyParams

REPO = Path(__file__).resolve().parents[2]

# Hedge often, never stop for the day: the guards under test are switched on one at a time.
RELAXED: dict[str, Any] = {
    "cooldown_s": 0, "min_price_move_bps": 0, "max_daily_hedges": 100_000, "max_position_shares": 100_000,
    "max_daily_loss_usd": 1e9, "trading_hours_only": False,
}


def market(**spec: Any) -> TickData:
    """A seeded synthetic market: one 6.5-hour session of 1-s ticks unless told otherwise."""
    return generate(SyntheticSpec(**{"days": 1, "seed": 11, **spec}))


def params(**overrides: Any) -> StrategyParams:
    return StrategyParams.from_dict({**RELAXED, **overrides})


def replay(data: TickData, p: StrategyParams, *, path: str = "per_event", execution: Execution | None = None,
           straddles: int = 10, halt_policy: str = "resume_next_day") -> BacktestOutcome:
    return run_backtest(data, p, path=path, execution=execution, straddles=straddles, halt_policy=halt_policy)


def widen_spread(data: TickData, start: int, stop: int, bps: float) -> TickData:
    """Quotes `bps` wide around the mid over rows [start, stop)."""
    mid = data.mid
    bid, ask = data.bid.copy(), data.ask.copy()
    half = mid[start:stop] * bps / 20_000.0
    bid[start:stop] = np.round(mid[start:stop] - half, 2)
    ask[start:stop] = np.round(mid[start:stop] + half, 2)
    return data.with_changes(bid=bid, ask=ask)


def database_url() -> str:
    from tests.e2e.conftest import database_url as url

    return url()


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    from tests.e2e.conftest import wait_until as wait

    return wait(predicate, timeout_s, what)


class Cluster:
    """`manage.py qcluster` as a real process on the test database."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=REPO, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, text=True, start_new_session=True)

    @property
    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # the cluster stops its own workers
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture
def cluster_factory(transactional_db: None, tmp_path: Path, settings: Any) -> Iterator[Callable[..., Cluster]]:
    started: list[Cluster] = []
    base_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bifrost.settings",
        "BIFROST_ALLOW_DEV_SECRET": "1",
        "DATABASE_URL": database_url(),
        # The same var dir as this test process: datasets are files under its media root.
        "BIFROST_VAR_DIR": str(settings.VAR_DIR),
        "BIFROST_Q_WORKERS": "2",
        "BIFROST_LOG_LEVEL": "WARNING",
    }
    base_env.pop("REDIS_URL", None)

    def make(**env: str) -> Cluster:
        cluster = Cluster({**base_env, **env}, tmp_path / f"qcluster-{time.monotonic_ns()}.log")
        started.append(cluster)
        return cluster

    yield make
    for cluster in started:
        cluster.stop()
