"""Report runs as plain functions: create, gather a part, render, cancel, notify.

Tasks call these with ids. A run's parts are its items on the run kernel: each part is
gathered once (a duplicate finds it settled), and the render step reads every part's
result from the database, so the chord is only the fast path to it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from core import runs
from core.db import TRANSIENT_DB_ERRORS
from core.text import plural
from notifications.models import Notification
from notifications.services import notify_user
from reports import registry
from reports.models import ReportPart, ReportRun
from reports.storage import report_storage

logger = logging.getLogger(__name__)
Status = ReportRun.Status
Part = ReportPart.Status


@transaction.atomic
def report_run_create(
    *,
    report_type: str,
    params: dict[str, Any],
    requested_by: Any = None,
    trigger: str = ReportRun.Trigger.ADMIN,
    rerun_of: ReportRun | None = None,
) -> ReportRun:
    """A pending run with one part per piece of its plan. `params` are validated already."""
    kind = registry.get(report_type)
    plan = kind.plan(kind.parse_params(params))
    run = ReportRun.objects.create(
        report_type=report_type,
        params=params,
        trigger=trigger,
        requested_by=requested_by if getattr(requested_by, "pk", None) else None,
        rerun_of=rerun_of,
        total=len(plan),
    )
    ReportPart.objects.bulk_create(
        [ReportPart(run=run, index=i, spec=spec) for i, spec in enumerate(plan)], batch_size=500
    )
    return run


def report_run_pending_parts(*, run: ReportRun) -> list[int]:
    return list(run.items.filter(status=Part.PENDING).values_list("index", flat=True))


def report_run_fail(*, run_id: int, error: str) -> bool:
    """Fail the run and cancel its unfinished parts; a finished run keeps its outcome."""
    now = timezone.now()
    with transaction.atomic():
        failed = runs.run_transition(
            ReportRun, run_id, Status.FAILED, error=error[:5000], finished_at=now, progress_at=now
        )
        if failed:
            ReportPart.objects.filter(run_id=run_id, status=Part.PENDING).update(
                status=Part.CANCELLED, error="the run failed", finished_at=now
            )
    return failed


def report_run_gather_part(*, run_id: int, index: int, queue: str) -> bool:
    """Aggregate one part and store it; False when there was nothing (left) to do."""
    part = ReportPart.objects.select_related("run").filter(run_id=run_id, index=index).first()
    if part is None or part.status != Part.PENDING or part.run.is_finished:
        return False  # deleted, gathered by a duplicate, or the run ended meanwhile
    runs.run_mark_started(ReportRun, run_id, queue=queue)
    kind = registry.get(part.run.report_type)
    try:
        partial = kind.gather(kind.parse_params(part.run.params), part.spec)
    except Exception as exc:
        if not isinstance(exc, TRANSIENT_DB_ERRORS):  # retried by the task instead
            ReportPart.objects.filter(pk=part.pk, status=Part.PENDING).update(
                status=Part.FAILED, error=repr(exc)[:5000], finished_at=timezone.now()
            )
            report_run_fail(run_id=run_id, error=f"Part {index + 1} of {part.run.total}: {exc!r}")
        raise
    with transaction.atomic():
        stored = ReportPart.objects.filter(pk=part.pk, status=Part.PENDING).update(
            status=Part.SUCCEEDED, result=partial, attempts=part.attempts + 1,
            finished_at=timezone.now(),
        )  # fmt: skip
        if stored:
            runs.run_add_progress(ReportRun, run_id, succeeded=1)
    return bool(stored)


def _new_name(run: ReportRun, kind: str) -> str:
    """Our own name for a stored file: run id plus a random part, nothing from a request."""
    return f"{run.report_type}/{run.pk}-{uuid.uuid4().hex}.{kind}"


def report_run_render(*, run_id: int) -> bool:
    """Combine the stored parts, write CSV (and PDF), succeed, notify the requester.

    Does nothing while parts are unfinished (a resumed run's parts are still coming) or
    when the run has finished (a duplicate render already did it).
    """
    run = ReportRun.objects.filter(pk=run_id).first()
    if run is None or run.is_finished:
        logger.info("Report run %s has finished or is gone; render skipped", run_id)
        return False
    parts = list(run.items.order_by("index").values_list("status", "result", "error"))
    if any(status == Part.PENDING for status, _, _ in parts):
        logger.info("Report run %s still has unfinished parts; render waits", run_id)
        return False
    broken = [(i, error) for i, (status, _, error) in enumerate(parts) if status != Part.SUCCEEDED]
    if broken:
        index, error = broken[0]
        report_run_fail(run_id=run_id, error=f"Part {index + 1} of {run.total}: {error}")
        return False
    kind = registry.get(run.report_type)
    storage = report_storage()
    saved: dict[str, str] = {}
    try:
        params = kind.parse_params(run.params)
        data = kind.combine(params, [result for _, result, _ in parts])
        outputs = {"csv": kind.render_csv(params, data), "pdf": kind.render_pdf(params, data)}
        for ext, content in outputs.items():
            if content is not None:
                saved[ext] = storage.save(_new_name(run, ext), ContentFile(content))
    except Exception as exc:
        for name in saved.values():
            storage.delete(name)
        report_run_fail(run_id=run_id, error=f"Rendering failed: {exc!r}")
        raise
    now = timezone.now()
    with transaction.atomic():
        done = runs.run_transition(
            ReportRun,
            run_id,
            Status.SUCCEEDED,
            started_at=run.started_at or now,
            finished_at=now,
            progress_at=now,
            succeeded=run.total,
            csv_file=saved.get("csv", ""),
            pdf_file=saved.get("pdf", ""),
        )
        if done:  # in the same transaction: succeeded and notified, or neither
            report_run_notify(run_id=run_id)
    if not done:  # a duplicate delivery finished first: keep its files, drop ours
        for name in saved.values():
            storage.delete(name)
        return False
    return True


@transaction.atomic
def report_run_cancel(run: ReportRun, actor: Any = None) -> str:
    """Cancel the unfinished parts; every task skips them and the run ends cancelled."""
    cancelled, who = runs.run_cancel_pending(ReportRun, run, actor)
    if not cancelled:  # every part was gathered: only the render is left, cancelled too
        runs.run_transition(
            ReportRun, run.pk, Status.CANCELLED, finished_at=timezone.now(),
            error=f"Cancelled{who}.",
        )  # fmt: skip
    return f"Cancelled{who}: {plural(cancelled, 'unfinished part')} will not be gathered."


def report_run_notify(*, run_id: int) -> Notification | None:
    """Queue the "report ready" email to the requester (sent after commit, once per run).

    Through the notifications app: the message is a transactional notification, marked
    sent only once the SMTP server accepted it. A requester without an email address gets
    a suppressed record saying so (the admin told them at request time).
    """
    run = ReportRun.objects.select_related("requested_by").get(pk=run_id)
    user = run.requested_by
    if run.status != Status.SUCCEEDED or user is None:
        return None
    label = registry.get(run.report_type).label
    return notify_user(
        user,
        key=report_ready_key(run.pk),
        template="reports/email/report_ready",
        context={
            "run": run.pk,
            "label": label,
            "user": user.get_username(),
            "links": [
                [ext.upper(), f"{settings.SITE_URL}{run.download_path(ext)}"]
                for ext in ReportRun.FILE_KINDS
                if run.file_name(ext)
            ],
            "url": f"{settings.SITE_URL}{run.get_absolute_url()}",
        },
    )


def report_ready_key(run_id: int) -> str:
    return f"report-ready-{run_id}"


def report_run_notification(run: ReportRun) -> Notification | None:
    """The run's "report ready" notification, if one was queued."""
    return Notification.objects.filter(idempotency_key=report_ready_key(run.pk)).first()
