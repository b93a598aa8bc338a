"""The import workflow's business logic: validate a file, create a run, apply chunks.

Validation (file-level checks, then django-import-export's per-row dry run) never writes.
A confirmed file becomes a run whose items are chunks of cleaned rows; a chunk applies
its rows in bulk, only while it is still pending, so a second delivery does nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from core import runs
from core.bulk import bulk_update_rows
from core.text import plural
from imports import fair
from imports.models import ImportChunk, ImportRun
from imports.parsing import COLUMNS, catalogue_parse
from imports.resources import CatalogueResource
from shop.models import PriceChange, Product

logger = logging.getLogger(__name__)
Item = ImportChunk.Status
FIELDS = COLUMNS[1:]  # what a row may change


@dataclass
class Validation:
    """What a file would do: cleaned rows to apply, rows refused, and counts by kind."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[list[Any]] = field(default_factory=list)  # [line, sku, message]
    new: int = 0
    update: int = 0
    unchanged: int = 0
    result: Any = None  # django-import-export's Result (the admin's preview)

    def summary(self) -> str:
        return (
            f"{plural(self.new, 'new product')}, {plural(self.update, 'update')}, "
            f"{self.unchanged:,} unchanged, {plural(len(self.rejected), 'row')} with errors"
        )


def _clean(value: Any) -> Any:
    return str(value) if isinstance(value, Decimal) else value


def _message(row_result: Any) -> str:
    if row_result.validation_error is not None:
        errors = getattr(row_result.validation_error, "message_dict", None)
        if errors:
            return "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in sorted(errors.items()))
        return " ".join(map(str, row_result.validation_error.messages))
    return "; ".join(str(e.error) for e in row_result.errors) or "invalid row"


def catalogue_validate(data: bytes | Any, *, user: Any = None) -> Validation:
    """Dry run: what the file would change. Raises parsing.BadFile for a bad file."""
    dataset = data if hasattr(data, "headers") else catalogue_parse(data)
    result = CatalogueResource().import_data(
        dataset,
        dry_run=True,
        raise_errors=False,
        user=user,
        retain_instance_in_row_result=True,
    )
    validation = Validation(result=result)
    columns = [c for c in dataset.headers if c in FIELDS]
    sku_at = dataset.headers.index("sku")
    for index, row_result in enumerate(result.rows):
        line = dataset.lines[index]
        if row_result.import_type in ("invalid", "error"):
            validation.rejected.append([line, dataset[index][sku_at], _message(row_result)])
            continue
        instance = row_result.instance
        cleaned = {"line": line, "sku": instance.sku}
        cleaned.update(
            {
                c: _clean(getattr(instance, c))
                for c in columns
                if str(dataset[index][dataset.headers.index(c)]).strip()
            }
        )
        validation.rows.append(cleaned)
        kind = {"new": "new", "update": "update"}.get(row_result.import_type, "unchanged")
        setattr(validation, kind, getattr(validation, kind) + 1)
    return validation


@transaction.atomic
def import_run_create(
    *,
    validation: Validation,
    file_name: str,
    trigger: str,
    requested_by: Any = None,
    chunk_size: int | None = None,
) -> tuple[ImportRun, fair.Assignment]:
    """The run, its chunks and its queue; the caller publishes (workflows)."""
    if not validation.rows:
        raise ValueError("nothing to import: every row of the file has errors")
    size = chunk_size or settings.IMPORTS_CHUNK_SIZE
    chunks = [validation.rows[i : i + size] for i in range(0, len(validation.rows), size)]
    assignment = fair.queue_assign(requested_by)
    run = ImportRun.objects.create(
        trigger=trigger,
        requested_by=requested_by if getattr(requested_by, "pk", None) else None,
        file_name=file_name[:255],
        queue=assignment.queue,
        chunk_size=size,
        total=len(chunks),
        rows_total=len(validation.rows) + len(validation.rejected),
        rows_failed=len(validation.rejected),
        rejected_rows=validation.rejected,
    )
    ImportChunk.objects.bulk_create(
        [ImportChunk(run=run, index=i, rows=rows) for i, rows in enumerate(chunks)],
        batch_size=500,
    )
    return run, assignment


def import_run_pending_chunks(*, run: ImportRun) -> list[int]:
    return list(
        run.items.filter(status=Item.PENDING).order_by("index").values_list("pk", flat=True)
    )


@dataclass
class ChunkOutcome:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    price_changes: int = 0
    errors: list[list[Any]] = field(default_factory=list)


def import_chunk_apply(*, run_id: int, chunk_id: int) -> ChunkOutcome | None:
    """Apply a pending chunk's rows in bulk; None when it was not pending (a duplicate)."""
    outcome = _chunk_apply(run_id=run_id, chunk_id=chunk_id)
    if outcome is not None:
        # Runs queued behind this one on the same queue are waiting, not stalled. After the
        # chunk's commit: two chunks of two runs must not lock each other's run rows.
        queue = ImportRun.objects.filter(pk=run_id).values_list("queue", flat=True).first()
        ImportRun.objects.filter(queue=queue, status__in=runs.UNFINISHED).exclude(pk=run_id).update(
            progress_at=timezone.now()
        )
    return outcome


@transaction.atomic
def _chunk_apply(*, run_id: int, chunk_id: int) -> ChunkOutcome | None:
    chunk = (
        ImportChunk.objects.select_for_update()
        .filter(pk=chunk_id, run_id=run_id, status=Item.PENDING)
        .first()
    )
    if chunk is None:
        return None
    now = timezone.now()
    runs.run_mark_started(ImportRun, run_id)
    outcome = _apply_rows(chunk.rows, now)
    chunk.status = Item.SUCCEEDED if len(outcome.errors) < len(chunk.rows) else Item.FAILED
    chunk.row_errors, chunk.finished_at = outcome.errors, now
    chunk.attempts += 1
    chunk.error = f"{plural(len(outcome.errors), 'row')} refused" if outcome.errors else ""
    chunk.save(update_fields=["status", "row_errors", "finished_at", "attempts", "error"])
    ok = chunk.status == Item.SUCCEEDED
    ImportRun.objects.filter(pk=run_id).update(
        rows_created=F("rows_created") + outcome.created,
        rows_updated=F("rows_updated") + outcome.updated,
        rows_unchanged=F("rows_unchanged") + outcome.unchanged,
        rows_failed=F("rows_failed") + outcome.failed,
        price_changes=F("price_changes") + outcome.price_changes,
    )
    runs.run_add_progress(ImportRun, run_id, succeeded=int(ok), failed=int(not ok))
    return outcome


def _apply_rows(rows: list[dict[str, Any]], now: Any) -> ChunkOutcome:
    outcome = ChunkOutcome()
    existing = {p.sku: p for p in Product.objects.filter(sku__in=[r["sku"] for r in rows])}
    new, changed, price_changes = [], {}, []
    for row in rows:
        values = {k: v for k, v in row.items() if k in FIELDS}
        if "price" in values:
            values["price"] = Decimal(values["price"])
        product = existing.get(row["sku"])
        if product is None:
            new.append((row, Product(sku=row["sku"], **values)))
            continue
        diff = {k: v for k, v in values.items() if getattr(product, k) != v}
        if not diff:
            outcome.unchanged += 1
            continue
        if "price" in diff:
            price_changes.append(
                PriceChange(
                    product=product, old_price=product.price, new_price=diff["price"],
                    changed_at=now,
                )
            )  # fmt: skip
        for k, v in diff.items():
            setattr(product, k, v)
        changed[product.pk] = product
    created = _create(new, outcome)
    fields = tuple(FIELDS)
    bulk_update_rows(
        Product,
        fields,
        ((p.pk, tuple(getattr(p, f) for f in fields)) for p in changed.values()),
    )
    PriceChange.objects.bulk_create(price_changes)
    outcome.created, outcome.updated = created, len(changed)
    outcome.price_changes = len(price_changes)
    return outcome


def _create(new: list[tuple[dict[str, Any], Product]], outcome: ChunkOutcome) -> int:
    """Insert new products; a SKU someone created meanwhile fails that row only."""
    if not new:
        return 0
    try:
        with transaction.atomic():
            Product.objects.bulk_create([p for _, p in new])
        return len(new)
    except IntegrityError:
        pass
    created = 0
    for row, product in new:
        try:
            with transaction.atomic():
                product.save(force_insert=True)
            created += 1
        except IntegrityError as exc:
            outcome.failed += 1
            outcome.errors.append([row["line"], row["sku"], f"could not create: {exc}"[:500]])
    return created


@transaction.atomic
def import_run_finish(*, run_id: int) -> str | None:
    """Record the outcome once, from the chunks; None while chunks are pending."""
    run = ImportRun.objects.select_for_update().get(pk=run_id)
    status = None if run.is_finished else runs.run_settle(ImportRun, run_id)
    if status is not None:
        # The rows refused at confirmation count as failed rows: completed with errors.
        if status == ImportRun.Status.SUCCEEDED and run.rejected_rows:
            ImportRun.objects.filter(pk=run_id).update(
                status=ImportRun.Status.COMPLETED_WITH_ERRORS
            )
            status = ImportRun.Status.COMPLETED_WITH_ERRORS
        fair.queue_touch(run.queue)
    return status


@transaction.atomic
def import_run_cancel(run: ImportRun, actor: Any = None) -> str:
    cancelled, who = runs.run_cancel_pending(ImportRun, run, actor)
    fair.queue_touch(run.queue)
    return f"Cancelled{who}: {plural(cancelled, 'chunk')} of rows will not be applied."


def import_run_errors(run: ImportRun) -> list[list[Any]]:
    """Every refused row, by line: at confirmation, then when applied."""
    rows = list(run.rejected_rows)
    for errors in run.items.exclude(row_errors=[]).values_list("row_errors", flat=True):
        rows.extend(errors)
    failed_chunks = run.items.filter(status__in=[Item.FAILED, Item.CANCELLED])
    for chunk in failed_chunks.exclude(error="").only("rows", "error", "row_errors"):
        listed = {e[0] for e in chunk.row_errors}
        rows.extend(
            [r["line"], r["sku"], chunk.error] for r in chunk.rows if r["line"] not in listed
        )
    return sorted(rows, key=lambda r: r[0])
