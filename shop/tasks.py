"""Thin tasks: deserialize, call a service, decide on retry. Routes: proj/topology.py."""

from __future__ import annotations

import random
from typing import Any

from celery import Task, shared_task
from django.conf import settings

from shop import services
from shop.supplier import TransientError


def backoff(task: Task, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never sooner than the supplier's Retry-After."""
    ceiling = settings.SUPPLIER_RETRY_BACKOFF * 2**task.request.retries
    delay = random.uniform(0, min(ceiling, settings.SUPPLIER_RETRY_BACKOFF_MAX))
    return min(max(delay, retry_after or 0.0), settings.SUPPLIER_RETRY_BACKOFF_MAX)


@shared_task(bind=True, name="shop.tasks.product_refresh_chunk", max_retries=None)
def product_refresh_chunk(self: Task, run_id: int, product_ids: list[int]) -> dict[str, Any]:
    """Refresh a chunk; retry only its transiently failed products, with backoff."""
    final = self.request.retries >= settings.SUPPLIER_MAX_RETRIES
    outcome = services.product_refresh_chunk(
        run_id=run_id, product_ids=product_ids, final_attempt=final
    )
    if outcome.retry_ids:
        raise self.retry(
            kwargs={"run_id": run_id, "product_ids": outcome.retry_ids},
            countdown=backoff(self, outcome.retry_after),
        )
    return outcome.summary()


@shared_task(bind=True, name="shop.tasks.refresh_run_finish", max_retries=None)
def refresh_run_finish(self: Task, chunk_results: list[Any], run_id: int) -> str:
    """The chord callback. The database, not `chunk_results`, is the record of truth."""
    if services.refresh_run_finish(run_id=run_id):
        final = self.request.retries >= settings.SUPPLIER_MAX_RETRIES
        try:
            services.refresh_run_notify(run_id=run_id, final_attempt=final)
        except TransientError as exc:
            raise self.retry(countdown=backoff(self, exc.retry_after)) from exc
    return "finished"


@shared_task(name="shop.tasks.refresh_run_abort")
def refresh_run_abort(run_id: int) -> str:
    """Chord error path: a chunk crashed, so the callback will not run; finish the run as
    failed (its unfinished products are recorded as such) instead of leaving it running."""
    services.refresh_run_finish(run_id=run_id)
    return "aborted"
