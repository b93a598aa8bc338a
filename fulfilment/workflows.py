"""The only place that builds the fulfilment canvases: chain(pick, pack, ship) per batch.

Closing a batch records its chain in the outbox in the same transaction that creates the
batch, so a batch never exists without its work. Signatures are built by task name (as
notifications does), because the stage tasks call back in here to split orders out.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from celery import chain, signature
from celery.canvas import Signature
from django.db import transaction
from django.utils import timezone

from core import runs
from core.models import OutboxMessage
from core.outbox import outbox_enqueue
from core.text import plural
from fulfilment import services
from fulfilment.models import BatchOrder, FulfilmentBatch
from proj.topology.fulfilment import STAGES, stage_queue
from shop.models import Order

AGGREGATE_TASK = "fulfilment.tasks.orders_aggregate"


def _stage(stage: str, batch: FulfilmentBatch) -> Signature:
    return signature(
        f"fulfilment.tasks.batch_{stage}", kwargs={"run_id": batch.pk}, immutable=True
    ).set(queue=stage_queue(stage, batch.warehouse))


def batch_remaining_work(batch: FulfilmentBatch) -> Signature:
    """The stages its pending orders still need, in order; or just the settling step."""
    stage = services.batch_stage_now(batch)
    if stage is None:
        return _stage("finish", batch).set(queue=stage_queue("ship", batch.warehouse))
    steps = [_stage(s, batch) for s in STAGES[STAGES.index(stage) :]]
    return chain(*steps) if len(steps) > 1 else steps[0]


def orders_release_request(
    *, order_ids: Iterable[int], warehouse: str | None = None
) -> tuple[services.Released, OutboxMessage | None]:
    """Release orders and wake the aggregator, in one transaction."""
    with transaction.atomic():
        released = services.orders_release(order_ids=order_ids, warehouse=warehouse)
        message = None
        if released.released:
            message = outbox_enqueue(
                signature(AGGREGATE_TASK),
                description=f"aggregate {plural(released.released, 'released order')}",
            )
    return released, message


def order_place(
    *,
    reference: str,
    customer_email: str,
    lines: Iterable[tuple[int, int, Decimal]],
    customer_id: int | None = None,
) -> Order:
    """Place an order and release it for fulfilment once the transaction commits."""
    with transaction.atomic():
        order = services.order_create(
            reference=reference, customer_email=customer_email, lines=lines,
            customer_id=customer_id,
        )  # fmt: skip
        orders_release_request(order_ids=[order.pk])
    return order


def batches_close(
    now: datetime | None = None, *, timer: bool = False
) -> tuple[list[FulfilmentBatch], float | None]:
    """Close every due batch of every warehouse; (closed, seconds until the next is due if
    a timer should be set for it, see services.batch_close_one)."""
    now = now or timezone.now()
    closed: list[FulfilmentBatch] = []
    next_due: float | None = None
    for warehouse in services.warehouses():
        while True:
            with transaction.atomic():
                result = services.batch_close_one(warehouse=warehouse, now=now, timer=timer)
                if isinstance(result, FulfilmentBatch):
                    outbox_enqueue(
                        batch_remaining_work(result),
                        description=f"fulfil {result} ({plural(result.total, 'order')})",
                        run=result,
                    )
            if isinstance(result, FulfilmentBatch):
                closed.append(result)
                continue
            if result is not None:
                next_due = result if next_due is None else min(next_due, result)
            break
    return closed, next_due


def batch_split(*, batch_id: int, refused: dict[int, str], stage: str) -> list[FulfilmentBatch]:
    """Split refused orders out into batches of one, each published from `stage` on."""
    with transaction.atomic():
        solos = services.batch_split_out(batch_id=batch_id, refused=refused, stage=stage)
        for solo in solos:
            outbox_enqueue(
                batch_remaining_work(solo),
                description=f"retry the order of {solo} alone (split out of #{batch_id})",
                run=solo,
            )
    return solos


def fulfilment_upkeep(now: datetime) -> str:
    """The reconciler's hook: close batches whose oldest order waited BATCH_MAX_WAIT."""
    closed, next_due = batches_close(now)
    if next_due is not None:  # this pass claimed a waiting order's timer: set it
        with transaction.atomic():
            outbox_enqueue(
                signature(AGGREGATE_TASK, kwargs={"timer": True}).set(countdown=next_due + 0.05),
                description="aggregate when the oldest waiting order is due",
            )
    if not closed:
        return ""
    return f"closed {plural(len(closed), 'fulfilment batch', 'fulfilment batches')}"


def _cancel(batch: FulfilmentBatch, actor: Any) -> str:
    return services.batch_cancel(batch, actor)


RUN_KIND = runs.RunKind(
    model=FulfilmentBatch,
    item_model=BatchOrder,
    item_run_field="run",
    remaining_work=batch_remaining_work,
    cancel=_cancel,
    # Where its next step waits: the stage its pending orders need (the finish: ship's).
    queues=lambda batch: (stage_queue(services.batch_stage_now(batch) or "ship", batch.warehouse),),
)
