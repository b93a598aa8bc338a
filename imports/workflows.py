"""The only place that builds the import canvas: chord(group(chunks on the user's queue), finish).

The run, its chunks and its queue assignment are written in one transaction with the
outbox message, so a run is never saved without its work. When the run needed a queue
that was not active, the same transaction asks the imports nodes to consume it
(`fair_queues_sync`, on the callbacks node); the chunks wait safely in the declared queue.
"""

from __future__ import annotations

from typing import Any

from celery import chord, group
from celery.canvas import Signature
from django.db import transaction

from core import runs
from core.models import OutboxMessage
from core.outbox import outbox_enqueue
from imports import fair, services
from imports.models import ImportChunk, ImportRun
from imports.tasks import fair_queues_sync, import_chunk_apply, import_run_finish


def import_remaining_work(run: ImportRun) -> Signature:
    """Every still-pending chunk on the run's queue, then the finish step."""
    finish = import_run_finish.si(run_id=run.pk)
    pending = services.import_run_pending_chunks(run=run)
    if not pending:
        return finish
    # A user queue is declared again on every publish (it may have been retired since a
    # process last declared it: core.families). Within one group the first chunk's publish
    # declares it and the run in flight keeps the sweep away, so the others skip that
    # round trip to the broker (a third of a chunk's publishing cost).
    # Each chunk's priority counts the queue's backlog ahead of it (fair.chunk_priority).
    ahead = fair.queue_backlog(run.queue, exclude_run=run.pk)
    header = group(
        import_chunk_apply.si(run_id=run.pk, chunk_id=pk).set(
            queue=run.queue,
            priority=fair.chunk_priority(ahead + i),
            **({} if i == 0 else {"declare": []}),
        )
        for i, pk in enumerate(pending)
    )
    return chord(header, finish)


def _tell_nodes(assignment: fair.Assignment, run: ImportRun) -> None:
    if assignment.activated:
        outbox_enqueue(
            fair_queues_sync.si(), description=f"consume {assignment.queue} ({run})", run=run
        )
        # At once too, unconfirmed: the sync's round trips would delay the first chunks.
        transaction.on_commit(lambda: fair.queues_announce([assignment.queue]))


def import_run_request(
    *,
    validation: services.Validation,
    file_name: str,
    trigger: str,
    requested_by: Any = None,
    chunk_size: int | None = None,
    after_create: Any = None,
) -> tuple[ImportRun, OutboxMessage]:
    """Create the run and publish its work once the transaction commits.

    `after_create(run)` runs inside the transaction (the admin stores the file there).
    """
    with transaction.atomic():
        run, assignment = services.import_run_create(
            validation=validation,
            file_name=file_name,
            trigger=trigger,
            requested_by=requested_by,
            chunk_size=chunk_size,
        )
        if after_create is not None:
            after_create(run)
        _tell_nodes(assignment, run)
        message = outbox_enqueue(
            import_remaining_work(run), description=f"start import #{run.pk}", run=run
        )
    return run, message


def _resume_work(run: ImportRun) -> Signature:
    """What the reconciler re-publishes: on the run's queue, made active again."""
    if services.import_run_pending_chunks(run=run):
        _tell_nodes(fair.queue_for_resume(run), run)
    return import_remaining_work(run)


def _still_queued(run_id: int) -> bool:
    """Chunks still in the run's queue wait their turn: with small first (FAIR_PRIORITY_CHUNKS)
    a big import's tail can wait longer than RUN_STALL_AFTER while newcomers' first chunks go
    ahead. A chunk lost with a killed node is not in the queue: once the queue drains, the
    run is resumed as before."""
    queue = ImportRun.objects.filter(pk=run_id).values_list("queue", flat=True).first()
    return bool(queue) and fair.broker_holds(queue)


RUN_KIND = runs.RunKind(
    model=ImportRun,
    item_model=ImportChunk,
    item_run_field="run",
    remaining_work=_resume_work,
    cancel=services.import_run_cancel,
    queued=_still_queued,
)
