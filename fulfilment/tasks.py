"""Thin tasks: one per stage, on the stage's queue of the batch's warehouse.

Stage tasks are published by the workflow with `.set(queue=fulfilment.<stage>.<warehouse>)`
(the route depends on data); the aggregator has a fixed route. Every task uses
`core.tasks.ShopTask` (transient database errors retried, dead letters when a task gives
up) and acknowledges late (settings), so a killed worker's batch is delivered again and
the guarded transitions make the second delivery harmless.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from django.conf import settings

from core.tasks import ShopTask
from fulfilment import clients, services, workflows
from fulfilment.models import FulfilmentBatch

RUN = "fulfilment.FulfilmentBatch"
MAX_RETRIES = settings.FULFILMENT_MAX_RETRIES + settings.TASK_DB_MAX_RETRIES


class OrderRefused(Exception):
    """A split-out order was refused on every attempt: its task gives up (a dead letter)."""


@shared_task(bind=True, base=ShopTask, name="fulfilment.tasks.orders_aggregate")
def orders_aggregate(self: Task, timer: bool = False) -> str:
    """Close every batch that is due; wake up again when the next one will be.

    `timer`: this is the delayed message itself. It is the fast path of the timer; the
    reconciler's pass is what survives a restart (released_at is in the database).
    """
    closed, next_due = workflows.batches_close(timer=timer)
    if next_due is not None:
        self.apply_async(kwargs={"timer": True}, countdown=next_due + 0.05)
    return f"closed {len(closed)} batches"


def _after(task: Task, batch_id: int, stage: str, outcome: services.StageOutcome) -> dict[str, Any]:
    """Split out refused orders, or retry / give up on a batch of one; retry the stage on a
    transient API error with backoff and jitter, and leave a dead letter when it gives up."""
    if outcome.refused:
        batch = FulfilmentBatch.objects.only("rerun_of").get(pk=batch_id)
        if not batch.is_solo:
            workflows.batch_split(batch_id=batch_id, refused=outcome.refused, stage=stage)
        else:
            reason = next(iter(outcome.refused.values()))
            attempt = task.request.retries + 1
            if attempt <= settings.FULFILMENT_MAX_RETRIES:
                delay = services.solo_order_retry(batch_id=batch_id, reason=reason, attempt=attempt)
                raise task.retry(countdown=delay, max_retries=MAX_RETRIES)
            services.solo_order_fail(batch_id=batch_id, reason=reason, attempts=attempt)
            raise OrderRefused(f"{stage}: {reason} (gave up after {attempt} attempts)")
    if outcome.retry_in is not None:
        if task.request.retries < settings.FULFILMENT_MAX_RETRIES:
            raise task.retry(countdown=outcome.retry_in, max_retries=MAX_RETRIES)
        raise clients.TransientError(
            f"{stage}: {outcome.error}; gave up after {task.request.retries + 1} attempts "
            "(the reconciler resumes the batch)"
        )
    return outcome.summary()


@shared_task(
    bind=True, base=ShopTask, run_model=RUN, name="fulfilment.tasks.batch_pick",
    max_retries=MAX_RETRIES,
)  # fmt: skip
def batch_pick(self: Task, run_id: int) -> dict[str, Any]:
    outcome = services.batch_pick(batch_id=run_id, attempt=self.request.retries + 1)
    return _after(self, run_id, "pick", outcome)


@shared_task(
    bind=True, base=ShopTask, run_model=RUN, name="fulfilment.tasks.batch_pack",
    max_retries=MAX_RETRIES,
)  # fmt: skip
def batch_pack(self: Task, run_id: int) -> dict[str, Any]:
    outcome = services.batch_pack(batch_id=run_id)
    return _after(self, run_id, "pack", outcome)


@shared_task(
    bind=True, base=ShopTask, run_model=RUN, name="fulfilment.tasks.batch_ship",
    max_retries=MAX_RETRIES,
)  # fmt: skip
def batch_ship(self: Task, run_id: int) -> dict[str, Any]:
    outcome = services.batch_ship(batch_id=run_id, attempt=self.request.retries + 1)
    summary = _after(self, run_id, "ship", outcome)
    services.batch_finish(batch_id=run_id)
    return summary


@shared_task(bind=True, base=ShopTask, run_model=RUN, name="fulfilment.tasks.batch_finish")
def batch_finish(self: Task, run_id: int) -> str:
    """Settle a batch whose orders are all done (the reconciler's last step for it)."""
    return services.batch_finish(batch_id=run_id) or "not finished"
