"""The refresh workflow's business logic: plain functions taking ids, safe to run twice.

Tasks call these; they decide nothing about Celery beyond telling the task whether some
products deserve another attempt later.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import requests
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from shop import supplier
from shop.models import PriceChange, Product, RefreshItem, RefreshRun

logger = logging.getLogger(__name__)

CALLBACK_SENDING = "sending"
CALLBACK_LEASE = timedelta(seconds=120)


def products_stale(*, hours: float) -> QuerySet[Product]:
    """Products never refreshed, or not refreshed for `hours`."""
    cutoff = timezone.now() - timedelta(hours=hours)
    return Product.objects.filter(
        Q(last_refreshed_at__isnull=True) | Q(last_refreshed_at__lt=cutoff)
    )


@transaction.atomic
def refresh_run_create(
    *,
    product_ids: Iterable[int],
    trigger: str,
    user: Any = None,
    retry_of: RefreshRun | None = None,
    chunk_size: int | None = None,
) -> RefreshRun:
    ids = sorted(set(product_ids))
    if not ids:
        # An empty chord header would fire the callback at once and report a success.
        raise ValueError("a refresh run needs at least one product")
    run = RefreshRun.objects.create(
        trigger=trigger,
        requested_by=user if getattr(user, "pk", None) else None,
        retry_of=retry_of,
        total=len(ids),
        chunk_size=chunk_size or settings.REFRESH_CHUNK_SIZE,
    )
    RefreshItem.objects.bulk_create(
        [RefreshItem(run=run, product_id=pid) for pid in ids], batch_size=1000
    )
    return run


def refresh_run_chunks(*, run: RefreshRun) -> list[list[int]]:
    ids = list(run.items.order_by("product_id").values_list("product_id", flat=True))
    return [ids[i : i + run.chunk_size] for i in range(0, len(ids), run.chunk_size)]


@dataclass
class ChunkOutcome:
    """What one chunk did; `retry_ids` are products worth another attempt later."""

    succeeded: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    retry_ids: list[int] = field(default_factory=list)
    retry_after: float | None = None

    def summary(self) -> dict[str, list[int]]:
        return {"succeeded": self.succeeded, "failed": self.failed}


def _fetch_all(skus: dict[int, str]) -> dict[int, supplier.SupplierProduct | Exception]:
    """Fetch concurrently; under the gevent pool each thread here is a greenlet."""
    workers = max(1, min(settings.REFRESH_CHUNK_CONCURRENCY, len(skus)))
    with requests.Session() as session:
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=workers)
        session.mount("http://", adapter)
        session.mount("https://", adapter)

        def one(sku: str) -> supplier.SupplierProduct | Exception:
            try:
                return supplier.fetch_product(session, sku)
            except supplier.SupplierError as exc:
                return exc
            except Exception as exc:  # a bug must fail one product, not the chord
                logger.exception("Refreshing %s failed unexpectedly", sku)
                return supplier.PermanentError(f"unexpected error: {exc.__class__.__name__}")

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return dict(zip(skus, pool.map(one, skus.values()), strict=True))


def product_refresh_chunk(
    *, run_id: int, product_ids: list[int], final_attempt: bool
) -> ChunkOutcome:
    """Refresh the still-pending products of a chunk; a second delivery finds nothing to do."""
    pending = dict(
        RefreshItem.objects.filter(
            run_id=run_id, product_id__in=product_ids, status=RefreshItem.Status.PENDING
        ).values_list("product_id", "product__sku")
    )
    if not pending:
        return ChunkOutcome()
    RefreshRun.objects.filter(pk=run_id, status=RefreshRun.Status.PENDING).update(
        status=RefreshRun.Status.RUNNING, started_at=timezone.now()
    )
    # Give the connection back (to Django's pool on PostgreSQL) while we wait on HTTP, so
    # 40 greenlets waiting on the supplier do not hold 40 database connections.
    if not connection.in_atomic_block:
        connection.close()
    fetched = _fetch_all(pending)
    return _refresh_apply(run_id=run_id, fetched=fetched, final_attempt=final_attempt)


@transaction.atomic
def _refresh_apply(
    *,
    run_id: int,
    fetched: dict[int, supplier.SupplierProduct | Exception],
    final_attempt: bool,
) -> ChunkOutcome:
    """Write a chunk's results in bulk, only for items no duplicate delivery already wrote."""
    now = timezone.now()
    items = {
        item.product_id: item
        for item in RefreshItem.objects.select_for_update().filter(
            run_id=run_id, product_id__in=list(fetched), status=RefreshItem.Status.PENDING
        )
    }
    products = Product.objects.in_bulk(list(items))
    outcome = ChunkOutcome()
    changed_products, price_changes = [], []
    for pid, item in items.items():
        product, result = products[pid], fetched[pid]
        item.attempts += 1
        if isinstance(result, supplier.SupplierProduct):
            if product.price != result.price and product.last_refreshed_at is not None:
                price_changes.append(
                    PriceChange(
                        product=product,
                        old_price=product.price,
                        new_price=result.price,
                        changed_at=now,
                        run_id=run_id,
                    )
                )
            product.name, product.description = result.name, result.description
            product.price, product.currency = result.price, result.currency
            product.stock, product.supplier_details = result.stock, result.details
            product.last_refreshed_at, product.last_error = now, ""
            item.status, item.error, item.finished_at = RefreshItem.Status.SUCCEEDED, "", now
            outcome.succeeded.append(pid)
        elif isinstance(result, supplier.TransientError) and not final_attempt:
            item.error = f"{result} (attempt {item.attempts}, will retry)"
            outcome.retry_ids.append(pid)
            if result.retry_after is not None:
                outcome.retry_after = max(outcome.retry_after or 0.0, result.retry_after)
            continue
        else:
            message = str(result)
            if isinstance(result, supplier.TransientError):
                message = f"{message}; gave up after {item.attempts} attempts"
            product.last_error = message
            item.status, item.error, item.finished_at = RefreshItem.Status.FAILED, message, now
            outcome.failed.append(pid)
        changed_products.append(product)
    Product.objects.bulk_update(
        changed_products,
        ["name", "description", "price", "currency", "stock", "supplier_details",
         "last_refreshed_at", "last_error"],
    )  # fmt: skip
    PriceChange.objects.bulk_create(price_changes)
    RefreshItem.objects.bulk_update(items.values(), ["status", "error", "attempts", "finished_at"])
    RefreshRun.objects.filter(pk=run_id).update(
        succeeded=F("succeeded") + len(outcome.succeeded), failed=F("failed") + len(outcome.failed)
    )
    return outcome


@transaction.atomic
def refresh_run_finish(*, run_id: int) -> bool:
    """Record the run's outcome once; True when the status callback is still to be sent."""
    run = RefreshRun.objects.select_for_update().get(pk=run_id)
    if not run.is_finished:
        counts = dict(run.items.values_list("status").annotate(n=Count("id")))
        stuck = run.items.filter(status=RefreshItem.Status.PENDING)
        stuck.update(status=RefreshItem.Status.FAILED, error="never completed")
        now = timezone.now()
        run.succeeded = counts.get(RefreshItem.Status.SUCCEEDED, 0)
        run.failed = run.total - run.succeeded
        run.status = RefreshRun.Status.SUCCEEDED if run.failed == 0 else RefreshRun.Status.FAILED
        run.started_at = run.started_at or now
        run.finished_at = now
        if run.failed:
            run.callback_status = "not sent: some products failed"
        elif settings.STATUS_CALLBACK_URL:
            run.callback_status = CALLBACK_SENDING
        else:
            run.callback_status = "not sent: STATUS_CALLBACK_URL is not set"
        run.save()
    return run.callback_status == CALLBACK_SENDING


def refresh_run_notify(*, run_id: int, final_attempt: bool) -> bool:
    """POST the summary once; False when another delivery holds the lease or it is done.

    A transient failure releases the lease and raises, so the task retries it later.
    """
    now = timezone.now()
    claimed = (
        RefreshRun.objects.filter(pk=run_id, callback_status=CALLBACK_SENDING)
        .filter(Q(callback_lease_until__isnull=True) | Q(callback_lease_until__lt=now))
        .update(callback_lease_until=now + CALLBACK_LEASE)
    )
    if not claimed:
        return False
    run = RefreshRun.objects.get(pk=run_id)
    payload = {
        "run": run.pk,
        "status": run.status,
        "products": run.succeeded,
        "total": run.total,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
    connection.close()  # do not hold a connection across the HTTP call
    try:
        with requests.Session() as session:
            code = supplier.post_status(session, payload, f"refresh-run-{run.pk}")
    except supplier.TransientError as exc:
        if not final_attempt:
            RefreshRun.objects.filter(pk=run_id).update(callback_lease_until=None)
            raise
        _callback_failed(run_id, f"failed after retries: {exc}")
        return True
    except supplier.PermanentError as exc:
        _callback_failed(run_id, f"failed: {exc}")
        return True
    RefreshRun.objects.filter(pk=run_id).update(
        callback_status=f"delivered (HTTP {code})",
        callback_sent_at=timezone.now(),
        callback_lease_until=None,
    )
    return True


def _callback_failed(run_id: int, message: str) -> None:
    RefreshRun.objects.filter(pk=run_id).update(
        status=RefreshRun.Status.CALLBACK_FAILED,
        callback_status=message[:255],
        callback_lease_until=None,
    )


def refresh_run_failed_product_ids(*, run: RefreshRun) -> list[int]:
    return list(
        run.items.filter(status=RefreshItem.Status.FAILED).values_list("product_id", flat=True)
    )
