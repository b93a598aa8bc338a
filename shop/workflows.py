"""The only place that builds the refresh canvas: chord(group(chunks), finish).

Starting a run records the canvas in the outbox in the same transaction as the run, so a
run is never saved without its work, whatever the broker does. The reconciler rebuilds the
canvas from the items still pending when a run stalls (`refresh_remaining_work`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import chord, group
from celery.canvas import Signature
from django.db import transaction

from core import runs
from core.models import OutboxMessage
from core.outbox import outbox_enqueue
from proj import topology
from shop import services
from shop.models import RefreshItem, RefreshRun
from shop.tasks import product_refresh_chunk, refresh_run_finish, refresh_run_notify


def refresh_remaining_work(run: RefreshRun) -> Signature:
    """Every still-pending chunk, then the finish step (immutable: it reads the items)."""
    finish = refresh_run_finish.si(run_id=run.pk)
    chunks = services.refresh_run_chunks(run=run)
    if not chunks:
        return finish
    header = group(_chunk(run.pk, c) for c in chunks)
    return chord(header, finish)


def _work_queues(run: RefreshRun) -> tuple[str, ...]:
    """Where its remaining work waits: chunks while products are pending, else the finish."""
    if run.items.filter(status=RefreshItem.Status.PENDING).exists():
        return (topology.REFRESH_QUEUE,)
    return (topology.CALLBACKS_QUEUE,)


def _chunk(run_id: int, product_ids: list[int]) -> Signature:
    """A chunk's task, with the kwargs Flower and `inspect` show written out short.

    Left to Celery, every message's kwargs go through saferepr, id by id (0.1 ms per
    100-product chunk: 10 of the ~160 ms of CPU to start a 10,000-product run), for a list
    Flower cuts at 1,024 characters anyway.
    """
    ids = f"<{len(product_ids)} ids, {product_ids[0]}..{product_ids[-1]}>" if product_ids else "[]"
    return product_refresh_chunk.si(run_id=run_id, product_ids=product_ids).set(
        kwargsrepr=f"{{'run_id': {run_id}, 'product_ids': {ids}}}"
    )


def refresh_run_request(
    *,
    product_ids: list[int],
    trigger: str,
    requested_by: Any = None,
    rerun_of: RefreshRun | None = None,
    chunk_size: int | None = None,
) -> tuple[RefreshRun, OutboxMessage]:
    """Create the run and its outbox message; published once the transaction commits.

    The message's `outcome` says whether the broker took it (see core.outbox.Published).
    """
    with transaction.atomic():
        run = services.refresh_run_create(
            product_ids=product_ids,
            trigger=trigger,
            requested_by=requested_by,
            rerun_of=rerun_of,
            chunk_size=chunk_size,
        )
        message = outbox_enqueue(
            refresh_remaining_work(run), description=f"start refresh run #{run.pk}", run=run
        )
    return run, message


def refresh_run_rerun_failed(
    *, run: RefreshRun, requested_by: Any = None
) -> tuple[RefreshRun, OutboxMessage] | None:
    """A new run for the failed products of `run`; None when none failed."""
    failed = services.refresh_run_failed_product_ids(run=run)
    if not failed:
        return None
    return refresh_run_request(
        product_ids=failed,
        trigger=RefreshRun.Trigger.RERUN,
        requested_by=requested_by,
        rerun_of=run,
    )


def _cancel(run: RefreshRun, actor: Any) -> str:
    message = services.refresh_run_cancel(run, actor)
    outbox_enqueue(
        refresh_run_notify.si(run_id=run.pk),
        description=f"status callback of cancelled refresh run #{run.pk}",
        run=run,
    )
    return message


def _followup(run: RefreshRun, now: datetime) -> Signature | None:
    if services.refresh_callback_rearm(run, now):
        return refresh_run_notify.si(run_id=run.pk)
    return None


RUN_KIND = runs.RunKind(
    model=RefreshRun,
    item_model=RefreshItem,
    item_run_field="run",
    remaining_work=refresh_remaining_work,
    cancel=_cancel,
    followup=_followup,
    followup_candidates=services.refresh_callback_overdue,
    queues=_work_queues,
)
