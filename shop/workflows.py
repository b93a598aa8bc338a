"""The only place that builds the refresh canvas: chord(group(chunks), finish)."""

from __future__ import annotations

from typing import Any

from celery import chord, group
from celery.canvas import Signature
from django.db import transaction

from shop import services
from shop.models import RefreshRun
from shop.tasks import product_refresh_chunk, refresh_run_abort, refresh_run_finish


def refresh_canvas(run: RefreshRun) -> Signature:
    chunks = services.refresh_run_chunks(run=run)
    header = group(product_refresh_chunk.s(run_id=run.pk, product_ids=c) for c in chunks)
    finish = refresh_run_finish.s(run_id=run.pk)
    finish.link_error(refresh_run_abort.si(run_id=run.pk))
    return chord(header, finish)


def refresh_start(
    *,
    product_ids: list[int],
    trigger: str,
    user: Any = None,
    retry_of: RefreshRun | None = None,
    chunk_size: int | None = None,
) -> RefreshRun:
    """Create the run and publish its chord once the run's rows are committed."""
    with transaction.atomic():
        run = services.refresh_run_create(
            product_ids=product_ids,
            trigger=trigger,
            user=user,
            retry_of=retry_of,
            chunk_size=chunk_size,
        )
        canvas = refresh_canvas(run)
        transaction.on_commit(canvas.apply_async)
    return run


def refresh_retry_failed(*, run: RefreshRun, user: Any = None) -> RefreshRun | None:
    """A new run for the failed products of `run`; None when none failed."""
    failed = services.refresh_run_failed_product_ids(run=run)
    if not failed:
        return None
    return refresh_start(
        product_ids=failed, trigger=RefreshRun.Trigger.RETRY, user=user, retry_of=run
    )
