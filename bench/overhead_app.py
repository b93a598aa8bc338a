"""A plain Celery app, without Django: the baseline bench/overhead.py compares against.

Celery's defaults but for what the comparison must share with the project: JSON, the same
broker, gevent, no results. The tasks do what devtools.tasks.bench_* do.
"""

from __future__ import annotations

import os

import redis
import urllib3
from celery import Celery

BROKER = os.environ["CELERY_BROKER_URL"]
app = Celery("plain", broker=BROKER)
app.conf.update(
    task_serializer="json", accept_content=["json"], task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)  # fmt: skip
_counter = redis.Redis.from_url(BROKER)
_http = urllib3.PoolManager(maxsize=100, retries=False)


@app.task(name="devtools.tasks.bench_noop")
def bench_noop(counter: str) -> None:
    _counter.incr(counter)


@app.task(name="devtools.tasks.bench_http")
def bench_http(url: str, counter: str) -> None:
    with _http.request("GET", url, preload_content=False) as response:
        response.read()
    _counter.incr(counter)
