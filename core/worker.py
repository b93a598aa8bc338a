"""Worker start-up: say out loud what `manage.py check` would, where operators look."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import celeryd_after_setup, worker_process_init, worker_ready
from django.conf import settings

from core.broker import broker_problems

logger = logging.getLogger("core.worker")


@worker_ready.connect
def warn_about_the_broker(sender: Any = None, **kwargs: Any) -> None:
    """An evicting or non-persistent broker Redis loses messages; the log says so at start."""
    for problem in broker_problems(settings.CELERY_BROKER_URL, debug=settings.DEBUG):
        log = {"error": logger.error, "warning": logger.warning}.get(problem.severity, logger.info)
        log("Broker: %s %s", problem.message, problem.hint)


@celeryd_after_setup.connect
def fill_freed_slots_at_once(sender: str, instance: Any, **kwargs: Any) -> None:
    """Green nodes take the next message when a slot frees, change queues at once, and on
    RabbitMQ do not wait 0.1 s after each message (core.greenpoll); no node stops for good
    when Redis goes away with tasks in flight (core.redis_restore)."""
    from core import greenpoll, redis_restore

    redis_restore.install()
    if getattr(instance.pool_cls, "is_green", False):
        greenpoll.install(brpop_timeout=settings.WORKER_BRPOP_TIMEOUT)


@worker_process_init.connect
def one_connection_per_prefork_child(sender: Any = None, **kwargs: Any) -> None:
    """A prefork child runs one task at a time: its database pool needs one connection.

    Without this every child would keep a pool of DB_POOL_MAX_SIZE, and a few report nodes
    would hold more PostgreSQL connections than all the gevent nodes together.
    """
    from django.db import connections

    for alias in connections:
        options = connections[alias].settings_dict.get("OPTIONS", {})
        if isinstance(options.get("pool"), dict):
            options["pool"] = {**options["pool"], "min_size": 0, "max_size": 1}
