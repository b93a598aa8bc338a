"""Tasks that misbehave on purpose, to show the safety net on real workers (tests, demos).

Installed only with the devtools app (DEBUG or tests); they go to the queue the caller
names. They use the project's base task, so what they exercise is the real mechanism:
retries, dead letters, replay, the delivery limit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import shared_task
from django.db import OperationalError

from core.tasks import ShopTask


@shared_task(base=ShopTask, name="devtools.tasks.fail_while_exists")
def fail_while_exists(marker: str, done: str) -> str:
    """A dependency that is down while `marker` exists (a transient error), then works."""
    if Path(marker).exists():
        raise OperationalError(f"the dependency is down ({marker} exists)")
    Path(done).write_text("done")
    return "done"


@shared_task(base=ShopTask, name="devtools.tasks.crash_process")
def crash_process() -> None:
    """Kill the process running it, as a segfault or the OOM killer would."""
    os._exit(1)


@shared_task(base=ShopTask, name="devtools.tasks.touch")
def touch(path: str) -> str:
    """Leave a trace: the node is alive and serving."""
    Path(path).write_text("served")
    return "served"


@shared_task(base=ShopTask, name="devtools.tasks.hold")
def hold(marker: str, started: str) -> str:
    """Hold a worker slot while `marker` exists (a long task), yielding to other greenlets."""
    Path(started).write_text("started")
    while Path(marker).exists():
        time.sleep(0.05)
    return "released"


def _counter() -> Any:
    """A Redis client on the broker's Redis, where the overhead benchmark counts tasks done."""
    global _redis
    if _redis is None:
        import redis
        from django.conf import settings

        _redis = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    return _redis


_redis: Any = None


@shared_task(base=ShopTask, name="devtools.tasks.bench_noop")
def bench_noop(counter: str) -> None:
    """Nothing but a count: what a task costs the worker by itself (bench/overhead.py)."""
    _counter().incr(counter)


@shared_task(base=ShopTask, name="devtools.tasks.bench_http")
def bench_http(url: str, counter: str) -> None:
    """One GET, then a count (bench/overhead.py); the same client as the plain baseline."""
    global _http
    if _http is None:
        import urllib3

        _http = urllib3.PoolManager(maxsize=100, retries=False)
    with _http.request("GET", url, preload_content=False) as response:
        response.read()
    _counter().incr(counter)


_http: Any = None


@shared_task(base=ShopTask, name="devtools.tasks.write_group")
def write_group(name: str) -> str:
    """A real write to the database (an auth group), for tests of write contention."""
    from django.contrib.auth.models import Group

    Group.objects.get_or_create(name=name)
    return name
