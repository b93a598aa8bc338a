"""The refresh workflow's business logic: plain functions taking ids, safe to run twice.

A run's items are the record of truth: a chunk only touches items still pending, so a
duplicate delivery, a resumed chunk or a late chord finds nothing to do. Tasks call these
functions and decide nothing about Celery beyond scheduling the retries they are told of.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from core import runs
from core.bulk import bulk_insert_rows, bulk_update_rows
from core.concurrency import map_in_batches, process_gate
from core.db import TRANSIENT_DB_ERRORS, record_done, release_pooled_connection
from core.text import plural
from notifications import audiences
from notifications.services import notify_user
from shop import supplier
from shop.models import Customer, Order, PriceChange, Product, RefreshItem, RefreshRun

logger = logging.getLogger(__name__)

Item = RefreshItem.Status
Callback = RefreshRun.Callback
CALLBACK_LEASE = timedelta(seconds=120)
FAILED_SKUS_IN_CALLBACK = 100
PRODUCT_FIELDS = (
    "name", "description", "price", "currency", "stock", "supplier_details",
    "last_refreshed_at", "last_error",
)  # fmt: skip


def products_stale(*, hours: float) -> QuerySet[Product]:
    """Products never refreshed, or not refreshed for `hours` (0: every product)."""
    if hours <= 0:
        return Product.objects.all()
    cutoff = timezone.now() - timedelta(hours=hours)
    return Product.objects.filter(
        Q(last_refreshed_at__isnull=True) | Q(last_refreshed_at__lt=cutoff)
    )


@transaction.atomic
def refresh_run_create(
    *,
    product_ids: Iterable[int],
    trigger: str,
    requested_by: Any = None,
    rerun_of: RefreshRun | None = None,
    chunk_size: int | None = None,
) -> RefreshRun:
    ids = sorted(set(product_ids))
    if not ids:
        # An empty chord header would fire the callback at once and report a success.
        raise ValueError("a refresh run needs at least one product")
    run = RefreshRun.objects.create(
        trigger=trigger,
        requested_by=requested_by if getattr(requested_by, "pk", None) else None,
        rerun_of=rerun_of,
        total=len(ids),
        chunk_size=chunk_size or settings.REFRESH_CHUNK_SIZE,
    )
    # The workers wait for this insert: bulk_create's per-instance work was 0.27 s of 10k.
    bulk_insert_rows(RefreshItem, ("run", "product"), ((run.pk, pid) for pid in ids))
    return run


def refresh_run_chunks(*, run: RefreshRun) -> list[list[int]]:
    """The run's still-pending products, in chunks: all of them at first, the rest on resume."""
    ids = list(
        run.items.filter(status=Item.PENDING)
        .order_by("product_id")
        .values_list("product_id", flat=True)
    )
    return [ids[i : i + run.chunk_size] for i in range(0, len(ids), run.chunk_size)]


@dataclass
class ChunkOutcome:
    """What one chunk did; `retry_ids` are products worth another attempt in `retry_in` s."""

    succeeded: int = 0
    failed: int = 0
    retry_ids: list[int] = field(default_factory=list)
    retry_in: float = 0.0

    def add(self, other: ChunkOutcome) -> None:
        """Count another batch of the same chunk in."""
        self.succeeded += other.succeeded
        self.failed += other.failed
        self.retry_ids += other.retry_ids
        self.retry_in = max(self.retry_in, other.retry_in)

    def summary(self) -> dict[str, int]:
        return {"succeeded": self.succeeded, "failed": self.failed, "retrying": len(self.retry_ids)}


def _pending_in_range(run_id: int, product_ids: list[int]) -> QuerySet[RefreshItem]:
    """The run's pending items between the chunk's lowest and highest product id.

    A chunk is a slice of the run's pending products in id order (or a retry of some of
    them), and items only ever leave pending, so this is the chunk's own items in all but
    odd cases (a resumed duplicate's retries); callers keep only the chunk's ids. Two
    parameters instead of `product_id__in`, whose per-id preparation in Django was 7% of
    the refresh's CPU.
    """
    return RefreshItem.objects.filter(
        run_id=run_id,
        status=Item.PENDING,
        product_id__gte=min(product_ids),
        product_id__lte=max(product_ids),
    )


def _fetch(sku: str) -> supplier.SupplierProduct | Exception:
    try:
        return supplier.fetch_product(sku)
    except supplier.SupplierError as exc:
        return exc
    except Exception as exc:  # a bug must fail one product, not the chunk
        logger.exception("Refreshing %s failed unexpectedly", sku)
        return supplier.PermanentError(f"unexpected error: {exc.__class__.__name__}: {exc}")


# The retry's own message may run a moment before the time its chunk recorded (the
# countdown starts at publishing, after the write; the worker's timer is not exact): that
# is its time, not a duplicate to send back.
RETRY_EARLY_BY = timedelta(seconds=0.5)


def product_refresh_chunk(*, run_id: int, product_ids: list[int]) -> ChunkOutcome:
    """Refresh the still-pending products of a chunk; a second delivery finds nothing to do.

    A product waiting out a retry's backoff (a batch of an earlier delivery of this chunk
    recorded it) is not asked for again before its time: it goes back to the retry.
    """
    if not product_ids:
        return ChunkOutcome()
    wanted, now = set(product_ids), timezone.now()
    pending, outcome = {}, ChunkOutcome()
    for pid, sku, retry_at in _pending_in_range(run_id, product_ids).values_list(
        "product_id", "product__sku", "retry_at"
    ):
        if pid not in wanted:
            continue
        if retry_at is not None and retry_at > now + RETRY_EARLY_BY:
            outcome.retry_ids.append(pid)
            outcome.retry_in = max(outcome.retry_in, (retry_at - now).total_seconds())
        else:
            pending[pid] = sku
    if not pending:
        return outcome
    runs.run_mark_started(RefreshRun, run_id)
    release_pooled_connection()
    pids, written = list(pending), 0
    # Each batch: what answered in the last REFRESH_PROGRESS_EVERY seconds while others are
    # still out (one product waiting out the read timeout holds no one else's result), or
    # everything at once when the chunk is quick, as nearly all are.
    batches = map_in_batches(
        _fetch,
        list(pending.values()),
        limit=settings.REFRESH_CHUNK_CONCURRENCY,
        every=settings.REFRESH_PROGRESS_EVERY,
    )
    with closing(batches):  # a failed write stops the fetches still out
        for batch in batches:
            # One chunk writes at a time in a process: at a run's end, forty chunks writing
            # at once on one core each took 50-90 ms for 10 ms of work, and the callback
            # waited for them.
            with process_gate("refresh-writes"):
                fetched = {pids[i]: result for i, result in batch}
                outcome.add(_refresh_apply(run_id=run_id, fetched=fetched))
            written += len(batch)
            if written < len(pids):  # more to wait for; after the last, the chord's
                release_pooled_connection()  # bookkeeping uses the connection at once
    return outcome


def retry_delay(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never sooner than the supplier's Retry-After."""
    ceiling = min(
        settings.SUPPLIER_RETRY_BACKOFF * 2 ** (attempt - 1), settings.SUPPLIER_RETRY_BACKOFF_MAX
    )
    delay = random.uniform(0, ceiling)
    return min(max(delay, retry_after or 0.0), settings.SUPPLIER_RETRY_BACKOFF_MAX)


@dataclass(slots=True)
class _Item:
    """What a chunk writes back to one RefreshItem row."""

    pk: int
    attempts: int
    status: str = Item.PENDING
    error: str = ""
    retry_at: datetime | None = None
    finished_at: datetime | None = None


@transaction.atomic
def _refresh_apply(
    *, run_id: int, fetched: dict[int, supplier.SupplierProduct | Exception]
) -> ChunkOutcome:
    """Write a chunk's results in bulk, only for items no other delivery already settled."""
    now = timezone.now()
    # The items locked in pk order (the lock order of every writer of items, core.runs),
    # with what the price comparison needs of their products: the rows are rewritten whole.
    rows = (
        _pending_in_range(run_id, list(fetched))
        .select_for_update(of=("self",))
        .order_by("pk")
        .values_list("pk", "product_id", "attempts", "product__price", "product__last_refreshed_at")
    )
    items: dict[int, _Item] = {}
    before: dict[int, tuple[Any, Any]] = {}
    for pk, pid, attempts, price, refreshed in rows:
        if pid in fetched:
            items[pid] = _Item(pk, attempts)
            before[pid] = (price, refreshed)
    outcome = ChunkOutcome()
    writes: dict[int, tuple[Any, ...]] = {}
    errors: dict[int, str] = {}
    price_changes = []
    for pid, item in items.items():
        (old_price, refreshed_at), result = before[pid], fetched[pid]
        item.attempts += 1
        item.retry_at = None
        if isinstance(result, supplier.SupplierProduct):
            if old_price != result.price and refreshed_at is not None:
                price_changes.append(
                    PriceChange(
                        product_id=pid,
                        old_price=old_price,
                        new_price=result.price,
                        changed_at=now,
                        run_id=run_id,
                    )
                )
            writes[pid] = (
                result.name, result.description, result.price, result.currency,
                result.stock, result.details, now, "",
            )  # fmt: skip
            item.status, item.error, item.finished_at = Item.SUCCEEDED, "", now
        elif (
            isinstance(result, supplier.TransientError)
            and item.attempts <= settings.SUPPLIER_MAX_RETRIES
        ):
            delay = retry_delay(item.attempts, result.retry_after)
            item.error = f"{result} (attempt {item.attempts}, will retry)"
            item.retry_at = now + timedelta(seconds=delay)
            outcome.retry_ids.append(pid)
            outcome.retry_in = max(outcome.retry_in, delay)
        else:
            message = str(result)
            if isinstance(result, supplier.TransientError):
                message = f"{message}; gave up after {item.attempts} attempts"
            errors[pid] = message
            item.status, item.error, item.finished_at = Item.FAILED, message, now
    failed_writes = _write_products(writes)
    bulk_update_rows(Product, ("last_error",), ((pid, (e,)) for pid, e in errors.items()))
    for pid, message in failed_writes.items():  # a row the database refused: that product only
        item = items[pid]
        item.status, item.error, item.finished_at = Item.FAILED, message, now
        price_changes = [c for c in price_changes if c.product_id != pid]
    PriceChange.objects.bulk_create(price_changes)
    bulk_update_rows(
        RefreshItem,
        ("status", "error", "attempts", "retry_at", "finished_at"),
        (
            (item.pk, (item.status, item.error, item.attempts, item.retry_at, item.finished_at))
            for item in items.values()
        ),
    )
    outcome.succeeded = sum(1 for i in items.values() if i.status == Item.SUCCEEDED)
    outcome.failed = sum(1 for i in items.values() if i.status == Item.FAILED)
    runs.run_add_progress(RefreshRun, run_id, succeeded=outcome.succeeded, failed=outcome.failed)
    return outcome


def _write_products(writes: dict[int, tuple[Any, ...]]) -> dict[int, str]:
    """Write all rows at once; if the database refuses the batch, row by row.

    Returns the products whose row the database refused, with a message: values the
    supplier client validated can still surprise a database (a constraint added later, an
    encoding), and one product's surprise must not lose the rest of its chunk.
    """
    try:
        with transaction.atomic():
            bulk_update_rows(Product, PRODUCT_FIELDS, writes.items())
        return {}
    except DatabaseError as exc:
        if _transient(exc):
            raise
        logger.warning("Bulk product write refused (%s); writing row by row", exc)
    refused = {}
    for pid, values in writes.items():
        try:
            with transaction.atomic():
                bulk_update_rows(Product, PRODUCT_FIELDS, [(pid, values)])
        except DatabaseError as exc:
            if _transient(exc):
                raise
            refused[pid] = f"could not save the supplier's data: {exc.__class__.__name__}: {exc}"
            with transaction.atomic():
                Product.objects.filter(pk=pid).update(last_error=refused[pid][:2000])
    return refused


def _transient(exc: DatabaseError) -> bool:
    return isinstance(exc, TRANSIENT_DB_ERRORS)


# --- finishing and the status callback ----------------------------------------------------
@transaction.atomic
def refresh_run_finish(*, run_id: int) -> bool:
    """Record the run's outcome once; True when the status callback is due.

    A run with items still pending is not finished here (the chord fired early, or a
    resumed chunk is still working): the reconciler finishes it once its work is done.
    """
    run = RefreshRun.objects.select_for_update().get(pk=run_id)
    if not run.is_finished:
        status = runs.run_settle(RefreshRun, run_id)
        if status is None:
            logger.info("Refresh run %s still has unfinished items; not finished yet", run_id)
            return False
        _callback_due(run_id)
        if status in (RefreshRun.Status.COMPLETED_WITH_ERRORS, RefreshRun.Status.FAILED):
            refresh_run_notify_errors(run_id=run_id)
        return True  # due since the line above, and the run's row is ours until commit
    return RefreshRun.objects.filter(pk=run_id, callback_state=Callback.PENDING).exists()


FAILED_SKUS_IN_EMAIL = 20


def refresh_run_notify_errors(*, run_id: int) -> None:
    """Tell the person who started the run that products failed (sent after commit, once)."""
    run = RefreshRun.objects.select_related("requested_by").get(pk=run_id)
    if run.requested_by is None:
        return  # cron: the command's exit code and output tell
    failed = run.items.filter(status=Item.FAILED).select_related("product").order_by("product__sku")
    notify_user(
        run.requested_by,
        key=f"refresh-run-{run.pk}-errors",
        template="shop/email/refresh_errors",
        context={
            "run": run.pk,
            "user": run.requested_by.get_username(),
            "status": run.get_status_display(),
            "failed": run.failed,
            "total": run.total,
            "errors": [[i.product.sku, i.error] for i in failed[:FAILED_SKUS_IN_EMAIL]],
            "more": max(run.failed - FAILED_SKUS_IN_EMAIL, 0),
            "url": f"{settings.SITE_URL}{run.get_absolute_url()}",
        },
    )


def _callback_due(run_id: int) -> None:
    """The callback is owed; the worker that sends it decides how (or that it cannot)."""
    RefreshRun.objects.filter(pk=run_id).update(
        callback_state=Callback.PENDING, callback_detail="due"
    )


def refresh_callback_payload(run: RefreshRun) -> dict[str, Any]:
    """What the status receiver learns, whatever the outcome.

    The run's counters change in the same transactions as its items' statuses, so when
    they say none failed (or every item succeeded or failed) the items are not read: on
    the way to the callback, that is two scans of the run's items saved.
    """
    skus = []
    if run.failed:
        failed = run.items.filter(status=Item.FAILED).order_by("product__sku")
        skus = list(failed.values_list("product__sku", flat=True)[:FAILED_SKUS_IN_CALLBACK])
    settled = run.succeeded + run.failed
    cancelled = 0 if settled == run.total else run.items.filter(status=Item.CANCELLED).count()
    return {
        "run": run.pk,
        "status": run.status,
        "total": run.total,
        "succeeded": run.succeeded,
        "failed": run.failed,
        "cancelled": cancelled,
        "failed_skus": skus,
        "failed_skus_total": run.failed,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def refresh_run_notify(*, run_id: int, final_attempt: bool) -> float | None:
    """POST the summary once; the delay before another attempt when it failed transiently.

    Returns None when the callback is delivered, failed for good, or another delivery of
    this task holds the lease (a duplicate never sends a second request).
    """
    now = timezone.now()
    claimed = (
        RefreshRun.objects.filter(pk=run_id, callback_state=Callback.PENDING)
        .filter(Q(callback_lease_until__isnull=True) | Q(callback_lease_until__lt=now))
        .update(callback_lease_until=now + CALLBACK_LEASE, callback_next_at=None)
    )
    if not claimed:
        return None
    run = RefreshRun.objects.get(pk=run_id)
    attempt = run.callback_attempts + 1
    if not settings.STATUS_CALLBACK_URL:
        _callback_end(run_id, 0, Callback.SKIPPED, "not sent: STATUS_CALLBACK_URL is not set")
        return None
    payload = refresh_callback_payload(run)
    release_pooled_connection()  # hold no connection across the HTTP call
    try:
        code = supplier.post_status(payload, f"refresh-run-{run.pk}")
    except supplier.TransientError as exc:
        if not final_attempt:
            delay = retry_delay(attempt, exc.retry_after)
            RefreshRun.objects.filter(pk=run_id).update(
                callback_attempts=attempt,
                callback_lease_until=None,
                callback_next_at=timezone.now() + timedelta(seconds=delay),
                callback_detail=f"{exc} (attempt {attempt}, retrying in {delay:.1f} s)"[:255],
            )
            return delay
        _callback_end(run_id, attempt, Callback.FAILED, f"failed after {attempt} attempts: {exc}")
        return None
    except supplier.PermanentError as exc:
        _callback_end(run_id, attempt, Callback.FAILED, f"failed: {exc}")
        return None
    lease = now + CALLBACK_LEASE
    record_done(
        lambda: _callback_end(
            run_id, attempt, Callback.DELIVERED, f"delivered (HTTP {code})", lease=lease
        ),
        claimed_until=lease,
        what=f"Refresh run {run_id}'s status callback was delivered (HTTP {code})",
    )
    return None


def _callback_end(
    run_id: int, attempt: int, state: str, detail: str, *, lease: datetime | None = None
) -> int:
    """Record the callback's outcome (only while this `lease` holds, if given)."""
    rows = RefreshRun.objects.filter(pk=run_id)
    if lease is not None:
        rows = rows.filter(callback_lease_until=lease)
    return rows.update(
        callback_state=state,
        callback_detail=detail[:255],
        callback_attempts=attempt,
        callback_lease_until=None,
        callback_next_at=None,
        callback_sent_at=timezone.now() if state == Callback.DELIVERED else None,
    )


def refresh_callback_overdue() -> Q:
    """Finished runs whose callback is due and nobody is sending or scheduled to send it."""
    cutoff = timezone.now() - timedelta(seconds=settings.RUN_STALL_AFTER)
    return (
        Q(callback_state=Callback.PENDING)
        & (Q(callback_lease_until__isnull=True) | Q(callback_lease_until__lt=timezone.now()))
        & (Q(callback_next_at__isnull=True) | Q(callback_next_at__lt=cutoff))
        & Q(progress_at__lt=cutoff)
    )


def refresh_callback_rearm(run: RefreshRun, now: datetime) -> bool:
    """Claim an overdue callback for the reconciler (re-checked under the run's lock)."""
    if not RefreshRun.objects.filter(pk=run.pk).filter(refresh_callback_overdue()).exists():
        return False
    RefreshRun.objects.filter(pk=run.pk).update(progress_at=now)
    return True


@transaction.atomic
def refresh_run_cancel(run: RefreshRun, actor: Any = None) -> str:
    """Cancel the unfinished products; every chunk skips them, and the run ends cancelled."""
    cancelled, who = runs.run_cancel_pending(RefreshRun, run, actor)
    _callback_due(run.pk)
    return f"Cancelled{who}: {plural(cancelled, 'unfinished product')} will not be refreshed."


def refresh_run_failed_product_ids(*, run: RefreshRun) -> list[int]:
    return list(run.items.filter(status=Item.FAILED).values_list("product_id", flat=True))


# --- customers as a campaign audience -------------------------------------------------------
def customer_recipients(
    active_within_days: int | None, after: int | None, limit: int
) -> list[audiences.Recipient]:
    """Every customer in id order, with their consent: the opted-out ones are suppressed
    (and counted) by the campaign, not silently left out. `active_within_days`: only
    customers with an order placed in that many days.
    """
    customers = Customer.objects.order_by("pk")
    if after is not None:
        customers = customers.filter(pk__gt=after)
    if active_within_days:
        since = timezone.now() - timedelta(days=active_within_days)
        recent = Order.objects.filter(customer=OuterRef("pk"), placed_at__gte=since)
        customers = customers.filter(Exists(recent))
    rows = customers.values_list("pk", "email", "name", "marketing_opt_in")[:limit]
    return [audiences.Recipient(pk, email, name, opted_in) for pk, email, name, opted_in in rows]


def customers_opted_out(addresses: Iterable[str]) -> set[str]:
    """Which of these addresses withdrew consent (checked again just before sending)."""
    return set(
        Customer.objects.filter(email__in=list(addresses), marketing_opt_in=False).values_list(
            "email", flat=True
        )
    )


CUSTOMERS_AUDIENCE = audiences.Audience(
    identifier="customers",
    label="Customers who agreed to marketing email",
    recipients=customer_recipients,
    opted_out=customers_opted_out,
)
