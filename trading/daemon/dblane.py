"""Database lanes: each of the daemon's database users (the sink, the control poll, the lease) gets a thread of its
own and so a connection of its own, so a stalled write can never hold up a lease renewal or a stop command."""
from __future__ import annotations

from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import DatabaseError, connection

P = ParamSpec("P")
R = TypeVar("R")


class DbLane:
    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"db-{name}")

    def __call__(self, fn: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
        @wraps(fn)
        def closing_on_error(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except DatabaseError:
                connection.close()  # this lane's own connection: the next call opens a fresh one
                raise

        return sync_to_async(closing_on_error, thread_sensitive=False, executor=self._executor)
