"""The project's settings plus a query counter: what bench/fulfilment.py's workers load.

Every SQL statement a worker process sends is counted (executemany once: one statement
sent to the database, whatever the rows) and added to a Redis counter after each task,
so the benchmark can report database statements per order without touching product code.
"""

from __future__ import annotations

import os
from typing import Any

from proj.settings import *  # noqa: F403

BENCH_COUNTER = "bench:fulfilment:queries"
_state: dict[str, Any] = {"count": 0, "redis": None}


def _count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    _state["count"] += 1
    return execute(sql, params, many, context)


def _wrap(sender: Any, connection: Any, **kwargs: Any) -> None:
    if _count not in connection.execute_wrappers:
        connection.execute_wrappers.append(_count)


def _flush(**kwargs: Any) -> None:
    if not _state["count"]:
        return
    if _state["redis"] is None:
        import redis

        _state["redis"] = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    _state["redis"].incrby(BENCH_COUNTER, _state["count"])
    _state["count"] = 0


def _connect() -> None:
    from celery.signals import task_postrun
    from django.db.backends.signals import connection_created

    connection_created.connect(_wrap, weak=False)
    task_postrun.connect(_flush, weak=False)


_connect()
