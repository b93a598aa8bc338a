"""Thin tasks: deserialize, call a service. Chunks go to the queue their run was given
(a user queue, set on the signature by imports.workflows); the rest is routed by the
topology to the callbacks node, so it never waits a turn in the users' round robin.
"""

from __future__ import annotations

from celery import Task, shared_task

from core.tasks import ShopTask
from imports import fair, services

RUN = "imports.ImportRun"


@shared_task(bind=True, base=ShopTask, run_model=RUN, name="imports.tasks.import_chunk_apply")
def import_chunk_apply(self: Task, run_id: int, chunk_id: int) -> str:
    """Apply one chunk of confirmed rows; a duplicate delivery finds it settled."""
    outcome = services.import_chunk_apply(run_id=run_id, chunk_id=chunk_id)
    return "already applied" if outcome is None else f"{outcome.failed} rows refused"


@shared_task(bind=True, base=ShopTask, run_model=RUN, name="imports.tasks.import_run_finish")
def import_run_finish(self: Task, run_id: int) -> str:
    """The chord callback: record the outcome from the chunks, once."""
    return services.import_run_finish(run_id=run_id) or "not finished"


@shared_task(bind=True, base=ShopTask, name="imports.tasks.fair_queues_sync")
def fair_queues_sync(self: Task) -> str:
    """A queue was made or revived: every imports node consumes it, checked."""
    if not fair.queues_sync_needed():
        return "already in agreement"  # a sync since the queue was assigned saw it consumed
    return fair.queues_sync().summary() or "in agreement"
