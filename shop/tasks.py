"""Thin tasks: deserialize, call a service, schedule the retry it asks for.

Routes come from proj/topology.py. Every task uses `core.tasks.ShopTask`: transient
database errors are retried, and a task that gives up leaves a dead letter.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from django.conf import settings

from core.tasks import ShopTask
from shop import services

RUN = "shop.RefreshRun"


@shared_task(
    bind=True,
    base=ShopTask,
    run_model=RUN,
    name="shop.tasks.product_refresh_chunk",
    max_retries=settings.SUPPLIER_MAX_RETRIES + settings.TASK_DB_MAX_RETRIES,
)
def product_refresh_chunk(self: Task, run_id: int, product_ids: list[int]) -> dict[str, Any]:
    """Refresh a chunk; re-queue only its transiently failed products, after their backoff."""
    outcome = services.product_refresh_chunk(run_id=run_id, product_ids=product_ids)
    if outcome.retry_ids:
        raise self.retry(
            kwargs={"run_id": run_id, "product_ids": outcome.retry_ids},
            countdown=outcome.retry_in,
        )
    return outcome.summary()


NOTIFY_RETRIES = settings.SUPPLIER_MAX_RETRIES + settings.TASK_DB_MAX_RETRIES


@shared_task(
    bind=True,
    base=ShopTask,
    run_model=RUN,
    name="shop.tasks.refresh_run_finish",
    max_retries=NOTIFY_RETRIES,
)
def refresh_run_finish(self: Task, run_id: int) -> str:
    """The chord callback: record the outcome (from the items), then notify, once."""
    if not services.refresh_run_finish(run_id=run_id):
        return "not finished"
    return _notify(self, run_id)


@shared_task(
    bind=True,
    base=ShopTask,
    run_model=RUN,
    name="shop.tasks.refresh_run_notify",
    max_retries=NOTIFY_RETRIES,
)
def refresh_run_notify(self: Task, run_id: int) -> str:
    """The status callback alone: after a cancel, or re-sent by the reconciler."""
    return _notify(self, run_id)


def _notify(task: Task, run_id: int) -> str:
    """POST the status callback; a transient failure is retried with backoff and jitter."""
    final = task.request.retries >= settings.SUPPLIER_MAX_RETRIES
    delay = services.refresh_run_notify(run_id=run_id, final_attempt=final)
    if delay is not None:
        raise task.retry(countdown=delay)
    return "notified"
