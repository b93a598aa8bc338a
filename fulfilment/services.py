"""The fulfilment pipeline's business logic: plain functions taking ids, safe to run twice.

An order's `Fulfilment.status` moves forward only, one stage at a time, through guarded
UPDATEs (`WHERE status = <the stage before>`): a stage delivered twice finds nothing left
in the status it works on and does nothing, which is what makes a batch ship once.

Each stage works on a whole batch (one API call, bulk writes). An order the warehouse or
carrier refuses, or whose label cannot be drawn, is *split out*: its item in the batch
fails with the reason and the order goes on alone in a batch of its own (the workflow
publishes it), so one order never holds up or fails the others.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Min, Q
from django.utils import timezone

from core import runs
from core.bulk import bulk_update_rows
from core.db import release_pooled_connection
from core.text import plural
from fulfilment import clients, labels
from fulfilment.models import NEXT, BatchOrder, Fulfilment, FulfilmentBatch
from notifications.services import notify
from shop.models import Order, OrderLine

logger = logging.getLogger(__name__)

Status = Fulfilment.Status
Stage = FulfilmentBatch.Stage
Item = BatchOrder.Status
# The order status each stage works on.
STAGE_FROM = {Stage.PICK: Status.BATCHED, Stage.PACK: Status.PICKED, Stage.SHIP: Status.PACKED}
RELEASABLE = (Order.Status.PLACED, Order.Status.PAID)


def warehouses() -> tuple[str, ...]:
    return tuple(settings.FULFILMENT_WAREHOUSES)


def warehouse_for(reference: str) -> str:
    """The rule that assigns an order to a warehouse: stable, spread evenly."""
    codes = warehouses()
    return codes[zlib.crc32(reference.encode()) % len(codes)]


def retry_delay(attempt: int) -> float:
    """Exponential backoff with full jitter, bounded by FULFILMENT_RETRY_BACKOFF_MAX."""
    ceiling = min(
        settings.FULFILMENT_RETRY_BACKOFF * 2 ** max(attempt - 1, 0),
        settings.FULFILMENT_RETRY_BACKOFF_MAX,
    )
    return random.uniform(0, ceiling)


# --- releasing and placing orders ------------------------------------------------------------
@dataclass
class Released:
    """What a release did: how many orders went to the aggregator, and why others did not."""

    released: int = 0
    already: int = 0  # released before (maybe shipped by now)
    not_releasable: int = 0  # cancelled or shipped outside fulfilment

    def summary(self) -> str:
        parts = [f"{plural(self.released, 'order')} released for fulfilment"]
        if self.already:
            parts.append(f"{plural(self.already, 'order')} already released")
        if self.not_releasable:
            parts.append(f"{plural(self.not_releasable, 'order')} cancelled or shipped: skipped")
        return "; ".join(parts) + "."


def orders_release(*, order_ids: Iterable[int], warehouse: str | None = None) -> Released:
    """Give these orders a fulfilment row (and warehouse) and mark them released.

    Call inside the transaction that publishes the aggregator (the workflow does): the
    aggregator finds released orders in the database, so a lost message loses nothing.
    """
    if warehouse is not None and warehouse not in warehouses():
        raise ValueError(f"unknown warehouse {warehouse!r}; configured: {', '.join(warehouses())}")
    ids = sorted(set(order_ids))
    result = Released()
    if not ids:
        return result
    now = timezone.now()
    orders = dict(
        Order.objects.filter(pk__in=ids, status__in=RELEASABLE).values_list("pk", "reference")
    )
    result.not_releasable = len(ids) - len(orders)
    Fulfilment.objects.bulk_create(
        [
            Fulfilment(order_id=pk, warehouse=warehouse or warehouse_for(ref), status_at=now)
            for pk, ref in orders.items()
        ],
        ignore_conflicts=True,  # already has one: counted as already released below
        batch_size=1000,
    )
    result.released = Fulfilment.objects.filter(
        order_id__in=list(orders), status=Status.PLACED, released_at__isnull=True
    ).update(released_at=now, status_at=now)
    result.already = len(orders) - result.released
    return result


def orders_releasable() -> list[int]:
    """Orders placed or paid that were never released (what cron releases)."""
    return list(
        Order.objects.filter(status__in=RELEASABLE)
        .filter(Q(fulfilment__isnull=True) | Q(fulfilment__released_at__isnull=True))
        .order_by("placed_at", "pk")
        .values_list("pk", flat=True)
    )


def order_create(
    *,
    reference: str,
    customer_email: str,
    lines: Iterable[tuple[int, int, Decimal]],
    customer_id: int | None = None,
) -> Order:
    """Place an order with its lines (product id, quantity, unit price)."""
    order = Order.objects.create(
        reference=reference,
        customer_email=customer_email,
        customer_id=customer_id,
        placed_at=timezone.now(),
    )
    OrderLine.objects.bulk_create(
        OrderLine(order=order, product_id=pid, quantity=qty, unit_price=price)
        for pid, qty, price in lines
    )
    return order


# --- aggregation ---------------------------------------------------------------------------
def waiting_orders(warehouse: str) -> Any:
    return Fulfilment.objects.filter(
        warehouse=warehouse, status=Status.PLACED, released_at__isnull=False, batch__isnull=True
    )


def batch_close_one(
    *, warehouse: str, now: datetime, timer: bool = False, size: int | None = None
) -> FulfilmentBatch | float | None:
    """Close one batch of `warehouse` if one is due: the batch. Else the seconds until the
    oldest waiting order is due if the caller should set a timer for it, or None (nothing
    waits, or a timer for that order is already set). Call inside a transaction.

    Due: BATCH_SIZE orders wait, or the oldest has waited BATCH_MAX_WAIT seconds. The rows
    are locked (PostgreSQL) or the database is (SQLite, IMMEDIATE), so two aggregators
    never batch one order twice; the guarded UPDATE checks again anyway. Each order is
    timed once (`timer_set`), when it is the oldest waiting: however many releases wake the
    aggregator, one delayed message per warehouse is in flight; `timer` (the delayed
    message itself) always sets the next one, which a message that came early needs.
    """
    size = size or settings.FULFILMENT_BATCH_SIZE
    wait = timedelta(seconds=settings.FULFILMENT_BATCH_MAX_WAIT)
    rows = list(
        waiting_orders(warehouse)
        .select_for_update()
        .order_by("released_at", "pk")
        .values_list("pk", "released_at", "timer_set")[:size]
    )
    if not rows:
        return None
    oldest_pk, oldest, timed = rows[0]
    if len(rows) < size and oldest > now - wait:
        if timed and not timer:
            return None
        if not timed:
            Fulfilment.objects.filter(pk=oldest_pk).update(timer_set=True)
        return max((oldest + wait - now).total_seconds(), 0.0)
    ids = [pk for pk, _, _ in rows]
    batch = FulfilmentBatch.objects.create(
        warehouse=warehouse, trigger=runs.Trigger.SERVICE, total=len(ids)
    )
    taken = Fulfilment.objects.filter(pk__in=ids, status=Status.PLACED, batch__isnull=True).update(
        status=Status.BATCHED, status_at=now, batch=batch
    )
    if taken != len(ids):  # cannot happen under the lock; never batch an order twice
        raise RuntimeError(f"batch {batch.pk}: {len(ids) - taken} orders were taken meanwhile")
    BatchOrder.objects.bulk_create(
        [BatchOrder(run=batch, fulfilment_id=pk) for pk in ids], batch_size=1000
    )
    return batch


# --- the stages -----------------------------------------------------------------------------
@dataclass
class StageOutcome:
    """What a stage did with its batch.

    `refused`: fulfilment id -> reason, orders to split out (or, in a batch of one, to retry
    and finally fail). `retry_in`: the API failed transiently, try the stage again then.
    """

    done: int = 0
    refused: dict[int, str] = field(default_factory=dict)
    retry_in: float | None = None
    error: str = ""

    def summary(self) -> dict[str, Any]:
        return {"done": self.done, "refused": len(self.refused), "retrying": self.retry_in}


@dataclass(frozen=True)
class Todo:
    item_id: int
    fulfilment_id: int
    order_id: int
    reference: str
    email: str
    attempts: int  # a split-out order's refusals so far


def _todo(batch_id: int, stage: str) -> list[Todo]:
    """The batch's orders still waiting for this stage (none on a second delivery)."""
    rows = (
        BatchOrder.objects.filter(
            run_id=batch_id, status=Item.PENDING, fulfilment__status=STAGE_FROM[stage]
        )
        .order_by("pk")
        .values_list(
            "pk", "fulfilment_id", "fulfilment__order_id", "fulfilment__order__reference",
            "fulfilment__order__customer_email", "attempts",
        )
    )  # fmt: skip
    return [Todo(*row) for row in rows]


def _stage_started(batch_id: int, stage: str, attempts_field: str) -> None:
    """Count the attempt, mark the run started (once) and show which stage it is in."""
    runs.run_mark_started(FulfilmentBatch, batch_id)
    FulfilmentBatch.objects.filter(pk=batch_id).exclude(stage=Stage.DONE).update(
        stage=stage, progress_at=timezone.now(), **{attempts_field: F(attempts_field) + 1}
    )


def _advance(
    todo: list[Todo], stage: str, now: datetime, values: dict[int, dict[str, Any]] | None = None
) -> list[Todo]:
    """Move these orders to the stage's next status, guarded; the ones this call moved."""
    frm = STAGE_FROM[stage]
    to = NEXT[frm]
    locked = set(
        Fulfilment.objects.select_for_update()
        .filter(pk__in=[t.fulfilment_id for t in todo], status=frm)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    moved = [t for t in todo if t.fulfilment_id in locked]
    if values:
        names = sorted({name for v in values.values() for name in v})
        bulk_update_rows(
            Fulfilment,
            ("status", "status_at", *names),
            (
                (t.fulfilment_id, (to, now, *(values[t.fulfilment_id].get(n) for n in names)))
                for t in moved
            ),
        )
    else:
        Fulfilment.objects.filter(pk__in=list(locked)).update(status=to, status_at=now)
    return moved


def _api_failed(batch_id: int, exc: clients.ApiError, attempt: int) -> StageOutcome:
    if isinstance(exc, clients.TransientError):
        delay = retry_delay(attempt)
        _retry_at(batch_id, delay)
        return StageOutcome(retry_in=delay, error=str(exc))
    return StageOutcome(error=str(exc))


def _retry_at(batch_id: int, delay: float) -> None:
    """Pending items wait for a scheduled retry: the reconciler must not call the run stalled."""
    BatchOrder.objects.filter(run_id=batch_id, status=Item.PENDING).update(
        retry_at=timezone.now() + timedelta(seconds=delay)
    )


def batch_pick(*, batch_id: int, attempt: int) -> StageOutcome:
    """One warehouse call for every order of the batch still to pick."""
    todo = _todo(batch_id, Stage.PICK)
    if not todo:
        return StageOutcome()
    batch = FulfilmentBatch.objects.only("warehouse").get(pk=batch_id)
    _stage_started(batch_id, Stage.PICK, "pick_attempts")
    release_pooled_connection()
    try:
        answer = clients.warehouse_pick(
            batch_id=batch_id,
            warehouse=batch.warehouse,
            references=[t.reference for t in todo],
            round=max(t.attempts for t in todo),
        )
    except clients.ApiError as exc:
        if isinstance(exc, clients.PermanentError):
            return StageOutcome(refused={t.fulfilment_id: str(exc) for t in todo}, error=str(exc))
        return _api_failed(batch_id, exc, attempt)
    now = timezone.now()
    with transaction.atomic():
        picked = _advance([t for t in todo if t.reference in answer.done], Stage.PICK, now)
        FulfilmentBatch.objects.filter(pk=batch_id).update(picked_at=now, progress_at=now)
    refused = {
        t.fulfilment_id: answer.failed[t.reference] for t in todo if t.reference in answer.failed
    }
    return StageOutcome(done=len(picked), refused=refused)


def batch_pack(*, batch_id: int) -> StageOutcome:
    """Render a shipping label per picked order (CPU-bound: the prefork pool)."""
    todo = _todo(batch_id, Stage.PACK)
    if not todo:
        return StageOutcome()
    batch = FulfilmentBatch.objects.only("warehouse").get(pk=batch_id)
    _stage_started(batch_id, Stage.PACK, "pack_attempts")
    lines: dict[int, list[tuple[str, str, int]]] = {}
    for order_id, sku, name, qty in OrderLine.objects.filter(
        order_id__in=[t.order_id for t in todo]
    ).values_list("order_id", "product__sku", "product__name", "quantity"):
        lines.setdefault(order_id, []).append((sku, name, qty))
    folder = Path(settings.FULFILMENT_LABELS_ROOT) / batch.warehouse / str(batch_id)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[int, dict[str, Any]] = {}
    refused: dict[int, str] = {}
    for t in todo:
        try:
            pdf = labels.shipping_label(
                reference=t.reference, email=t.email, warehouse=batch.warehouse,
                batch_id=batch_id, lines=lines.get(t.order_id, []),
            )  # fmt: skip
            path = folder / f"{t.reference}.pdf"
            # Whole or not at all: a second delivery may be writing the same label.
            part = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
            part.write_bytes(pdf)
            os.replace(part, path)
        except Exception as exc:  # one label's trouble is that order's, not the batch's
            logger.exception("Label for order %s failed", t.reference)
            refused[t.fulfilment_id] = f"label could not be made: {exc.__class__.__name__}: {exc}"
            continue
        written[t.fulfilment_id] = {"label": str(path.relative_to(settings.FULFILMENT_LABELS_ROOT))}
    now = timezone.now()
    with transaction.atomic():
        packed = _advance([t for t in todo if t.fulfilment_id in written], Stage.PACK, now, written)
        FulfilmentBatch.objects.filter(pk=batch_id).update(
            packed_at=now, progress_at=now, packed_by=f"{socket.gethostname()}:{os.getpid()}"
        )
    return StageOutcome(done=len(packed), refused=refused)


def batch_ship(*, batch_id: int, attempt: int) -> StageOutcome:
    """One carrier call for the packed orders; shipped orders settle and are notified once."""
    todo = _todo(batch_id, Stage.SHIP)
    if not todo:
        return StageOutcome()
    batch = FulfilmentBatch.objects.only("warehouse").get(pk=batch_id)
    _stage_started(batch_id, Stage.SHIP, "ship_attempts")
    release_pooled_connection()
    parcels = [{"reference": t.reference, "email": t.email} for t in todo]
    try:
        answer = clients.carrier_ship(
            batch_id=batch_id,
            warehouse=batch.warehouse,
            parcels=parcels,
            round=max(t.attempts for t in todo),
        )
    except clients.ApiError as exc:
        if isinstance(exc, clients.PermanentError):
            return StageOutcome(refused={t.fulfilment_id: str(exc) for t in todo}, error=str(exc))
        return _api_failed(batch_id, exc, attempt)
    now = timezone.now()
    done = [t for t in todo if t.reference in answer.done]
    values = {
        t.fulfilment_id: {"tracking_number": answer.done[t.reference], "shipped_at": now}
        for t in done
    }
    with transaction.atomic():
        shipped = _advance(done, Stage.SHIP, now, values)
        _settle_items([t.item_id for t in shipped], Item.SUCCEEDED, now)
        FulfilmentBatch.objects.filter(pk=batch_id).update(shipped_at=now)
        runs.run_add_progress(FulfilmentBatch, batch_id, succeeded=len(shipped))
        if settings.FULFILMENT_NOTIFY_CUSTOMERS:
            for t in shipped:  # only the orders this call moved: a duplicate notifies nobody
                notify(
                    recipient=t.email,
                    key=f"order-{t.reference}-shipped",
                    subject=f"Your order {t.reference} has shipped",
                    body=(
                        f"Your order {t.reference} is on its way.\n"
                        f"Tracking number: {answer.done[t.reference]}\n"
                    ),
                )
    refused = {
        t.fulfilment_id: answer.failed[t.reference] for t in todo if t.reference in answer.failed
    }
    return StageOutcome(done=len(shipped), refused=refused)


def _settle_items(item_ids: list[int], status: str, now: datetime, error: str = "") -> None:
    BatchOrder.objects.filter(pk__in=item_ids, status=Item.PENDING).update(
        status=status, finished_at=now, retry_at=None, error=error[:5000]
    )


# --- splitting out, retrying alone, failing ---------------------------------------------------
def batch_split_out(*, batch_id: int, refused: dict[int, str], stage: str) -> list[FulfilmentBatch]:
    """Take refused orders out of `batch_id`, each into a batch of its own at `stage`.

    Call inside a transaction (the workflow publishes the new batches in it). Orders whose
    item is no longer pending here (a duplicate delivery did it) are left alone.
    """
    now = timezone.now()
    items = {
        fid: pk
        for pk, fid in BatchOrder.objects.select_for_update()
        .filter(run_id=batch_id, fulfilment_id__in=list(refused), status=Item.PENDING)
        .order_by("pk")
        .values_list("pk", "fulfilment_id")
    }
    parent = FulfilmentBatch.objects.get(pk=batch_id)
    solos = []
    for fid, item_id in items.items():
        solo = FulfilmentBatch.objects.create(
            warehouse=parent.warehouse,
            trigger=runs.Trigger.RERUN,
            rerun_of=parent,
            total=1,
            stage=stage,
        )
        BatchOrder.objects.create(run=solo, fulfilment_id=fid)
        Fulfilment.objects.filter(pk=fid).update(batch=solo, error=refused[fid][:5000])
        BatchOrder.objects.filter(pk=item_id).update(
            status=Item.FAILED,
            finished_at=now,
            retry_at=None,
            attempts=1,
            error=f"split out into batch #{solo.pk}: {refused[fid]}"[:5000],
        )
        solos.append(solo)
    if items:
        runs.run_add_progress(FulfilmentBatch, batch_id, failed=len(items))
    return solos


def solo_order_retry(*, batch_id: int, reason: str, attempt: int) -> float:
    """A split-out order refused again: record the attempt; the delay before the next."""
    delay = retry_delay(attempt)
    BatchOrder.objects.filter(run_id=batch_id, status=Item.PENDING).update(
        attempts=attempt,
        error=f"{reason} (attempt {attempt}, will retry)"[:5000],
        retry_at=timezone.now() + timedelta(seconds=delay),
    )
    return delay


@transaction.atomic
def solo_order_fail(*, batch_id: int, reason: str, attempts: int) -> None:
    """Give up on a split-out order: the order fails, and its batch of one with it."""
    now = timezone.now()
    message = f"gave up after {plural(attempts, 'attempt')}: {reason}"
    fids = list(
        BatchOrder.objects.filter(run_id=batch_id, status=Item.PENDING).values_list(
            "fulfilment_id", flat=True
        )
    )
    Fulfilment.objects.filter(pk__in=fids).exclude(status__in=list(FINAL_STATUSES)).update(
        status=Status.FAILED, status_at=now, error=message[:5000]
    )
    BatchOrder.objects.filter(run_id=batch_id, status=Item.PENDING).update(
        status=Item.FAILED, finished_at=now, retry_at=None, attempts=attempts, error=message[:5000]
    )
    batch_finish(batch_id=batch_id)


FINAL_STATUSES = (Status.SHIPPED, Status.FAILED, Status.CANCELLED)


def batch_finish(*, batch_id: int) -> str | None:
    """Settle the batch from its items once none is pending; its final status or None."""
    status = runs.run_settle(FulfilmentBatch, batch_id)
    if status is not None:
        FulfilmentBatch.objects.filter(pk=batch_id).update(stage=Stage.DONE)
        # Orders whose item failed here without being split out (the reconciler gave up
        # on them) fail too, so no order waits for a stage that will never come.
        now = timezone.now()
        for fid, error in BatchOrder.objects.filter(
            run_id=batch_id, status=Item.FAILED, fulfilment__batch_id=batch_id
        ).values_list("fulfilment_id", "error"):
            Fulfilment.objects.filter(pk=fid).exclude(status__in=list(FINAL_STATUSES)).update(
                status=Status.FAILED, status_at=now, error=error[:5000]
            )
    return status


def batch_stage_now(batch: FulfilmentBatch) -> str | None:
    """The first stage any pending order of the batch still needs (None: only settling)."""
    statuses = set(
        BatchOrder.objects.filter(run=batch, status=Item.PENDING).values_list(
            "fulfilment__status", flat=True
        )
    )
    for stage, frm in STAGE_FROM.items():
        if frm in statuses:
            return stage
    return None


@transaction.atomic
def batch_cancel(batch: FulfilmentBatch, actor: Any = None) -> str:
    """Cancel the orders not shipped yet; the stages skip them and the batch ends cancelled."""
    fids = list(
        BatchOrder.objects.filter(run=batch, status=Item.PENDING).values_list(
            "fulfilment_id", flat=True
        )
    )
    cancelled, who = runs.run_cancel_pending(FulfilmentBatch, batch, actor)
    Fulfilment.objects.filter(pk__in=fids).exclude(status__in=list(FINAL_STATUSES)).update(
        status=Status.CANCELLED, status_at=timezone.now()
    )
    FulfilmentBatch.objects.filter(pk=batch.pk).update(stage=Stage.DONE)
    return f"Cancelled{who}: {plural(cancelled, 'unshipped order')} will not ship."


# --- the pipeline overview ------------------------------------------------------------------
@dataclass
class StageRow:
    warehouse: str
    stage: str
    waiting: int
    in_progress: int
    done_last_hour: int
    oldest_waiting: datetime | None


def pipeline_overview(now: datetime | None = None) -> list[StageRow]:
    """Per warehouse and stage: orders waiting for it, in a batch being worked on, done in
    the last hour, and since when the oldest waiting one waits. A few GROUP BY queries.

    Waiting for a stage = in the status before it; "in progress" = of those, the ones
    whose batch is in that stage right now (its task is running or retrying).
    """
    now = now or timezone.now()
    hour_ago = now - timedelta(hours=1)
    active = Fulfilment.objects.exclude(status__in=list(FINAL_STATUSES))
    waiting = {
        (w, s): (n, oldest)
        for w, s, n, oldest in active.values_list("warehouse", "status")
        .annotate(n=Count("id"), oldest=Min("status_at"))
        .values_list("warehouse", "status", "n", "oldest")
    }
    busy = {
        (w, st): n
        for w, st, n in active.filter(batch__stage__in=list(STAGE_FROM), batch__status="running")
        .values_list("warehouse", "batch__stage")
        .annotate(n=Count("id"))
        .values_list("warehouse", "batch__stage", "n")
    }
    done_orders = _orders_done_last_hour(hour_ago)
    rows = []
    for w in warehouses():
        batching_n, batching_oldest = waiting.get((w, Status.PLACED), (0, None))
        rows.append(
            StageRow(w, "batch", batching_n, 0, done_orders.get((w, "batch"), 0), batching_oldest)
        )
        for stage, frm in STAGE_FROM.items():
            n, oldest = waiting.get((w, frm), (0, None))
            rows.append(
                StageRow(
                    w, stage, n, busy.get((w, stage), 0),
                    done_orders.get((w, stage), 0), oldest,
                )
            )  # fmt: skip
    return rows


def _orders_done_last_hour(since: datetime) -> dict[tuple[str, str], int]:
    """Orders that left each stage in the last hour, from their batches' stage times."""
    counts: dict[tuple[str, str], int] = {}
    columns = {
        "created_at": "batch",
        "picked_at": "pick",
        "packed_at": "pack",
        "shipped_at": "ship",
    }
    for column, stage in columns.items():
        rows = (
            FulfilmentBatch.objects.filter(**{f"{column}__gte": since})
            .values_list("warehouse")
            .annotate(orders=Count("items"))
            .values_list("warehouse", "orders")
        )
        for warehouse, n in rows:
            counts[(warehouse, stage)] = counts.get((warehouse, stage), 0) + n
    return counts
