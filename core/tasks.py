"""The base class of every project task, and infrastructure tasks.

`ShopTask` gives every task the same safety net, so no task gives up silently:
- transient database errors (connection dropped, server restarting, serialization failure,
  SQLite busy) are retried with exponential backoff and jitter (Celery's autoretry);
- a task that gives up (retries exhausted or a permanent error) leaves a `DeadLetter`;
- a message delivered more than TASK_MAX_DELIVERIES times without finishing (its worker
  died each time: os._exit, a segfault, the OOM killer) is dead-lettered instead of run
  again, so a poison message cannot take a node down for ever.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore
from django.conf import settings
from django.db import DatabaseError

from core import deadletters
from core.db import TRANSIENT_DB_ERRORS
from core.models import DeadLetter

logger = logging.getLogger(__name__)


class ShopTask(Task):
    """Use as `@shared_task(base=ShopTask, ...)`; pass `run_model="app.Model"` for run tasks."""

    # "app.Model" of the run a task works for; its `run_id` argument links dead letters.
    run_model: str | None = None
    autoretry_for = TRANSIENT_DB_ERRORS
    retry_backoff = 1
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = settings.TASK_DB_MAX_RETRIES

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        info = self.request.delivery_info or {}
        if not info.get("redelivered"):
            return
        try:
            deliveries = deadletters.delivery_count(task_id=task_id, task_name=self.name)
        except DatabaseError:
            logger.warning("Could not count deliveries of %s[%s]; running it", self.name, task_id)
            return
        limit = deadletters.delivery_limit()
        if deliveries <= limit:
            return
        logger.error(
            "%s[%s] delivered %d times without finishing: dead-lettered, not run again",
            self.name, task_id, deliveries,
        )  # fmt: skip
        deadletters.deadletter_record(
            task_id=task_id,
            task_name=self.name,
            queue=self._queue(),
            args=args,
            kwargs=kwargs,
            reason=DeadLetter.Reason.DELIVERY_LIMIT,
            exc=RuntimeError(
                f"delivered {deliveries} times without finishing (limit {limit}): its worker "
                "died each time (killed, crashed or out of memory)"
            ),
            attempts=deliveries,
            run_model=self.run_model,
        )
        raise Ignore()

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        reason = (
            DeadLetter.Reason.RETRIES_EXHAUSTED
            if isinstance(exc, TRANSIENT_DB_ERRORS)
            else DeadLetter.Reason.FAILED
        )
        try:
            deadletters.deadletter_record(
                task_id=task_id,
                task_name=self.name,
                queue=self._queue(),
                args=args,
                kwargs=kwargs,
                reason=reason,
                exc=exc,
                traceback=str(einfo or ""),
                attempts=self.request.retries + 1,
                run_model=self.run_model,
            )
        except Exception:  # the database may be what failed: the log keeps the record then
            logger.exception("Could not record the dead letter of %s[%s]", self.name, task_id)

    def _queue(self) -> str:
        info = self.request.delivery_info or {}
        return str(info.get("routing_key") or info.get("queue") or "")


@shared_task(base=ShopTask, name="core.tasks.ping", ignore_result=False)
def ping() -> str:
    """A round trip through broker, worker and result backend: health checks and tests."""
    return "pong"
