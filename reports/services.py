"""Report runs as plain functions: create, start, gather a part, render, fail, notify.

Tasks call these with ids; every step checks the run's status first, so a message
delivered twice finds the work done (or the run finished) and changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Least
from django.utils import timezone

from reports import registry
from reports.models import ReportRun
from reports.storage import report_storage

logger = logging.getLogger(__name__)
Status = ReportRun.Status


def report_run_transition(*, run_id: int, to: str, **fields: Any) -> bool:
    """Move a run to `to` only from a status allowed to go there; False when refused."""
    allowed_from = [s for s, targets in ReportRun.TRANSITIONS.items() if to in targets]
    return bool(
        ReportRun.objects.filter(pk=run_id, status__in=allowed_from).update(status=to, **fields)
    )


@transaction.atomic
def report_run_create(
    *,
    report_type: str,
    params: dict[str, Any],
    requested_by: Any = None,
    trigger: str = ReportRun.Trigger.ADMIN,
    rerun_of: ReportRun | None = None,
) -> ReportRun:
    """A pending run with its work plan. `params` are already validated and JSON-safe."""
    kind = registry.get(report_type)
    parts = kind.plan(kind.parse_params(params))
    return ReportRun.objects.create(
        report_type=report_type,
        params=params,
        trigger=trigger,
        requested_by=requested_by,
        rerun_of=rerun_of,
        parts=parts,
        parts_total=len(parts),
    )


def report_run_start(*, run_id: int, queue: str) -> bool:
    """pending -> running, recording the queue the worker took the run from."""
    started = report_run_transition(
        run_id=run_id, to=Status.RUNNING, started_at=timezone.now(), queue=queue
    )
    if not started:
        logger.info("Report run %s not pending; start ignored", run_id)
    return started


def report_run_fail(*, run_id: int, error: str) -> bool:
    """Record why a run failed; a finished run keeps its outcome."""
    return report_run_transition(
        run_id=run_id, to=Status.FAILED, error=error[:5000], finished_at=timezone.now()
    )


def report_run_gather_part(*, run_id: int, index: int) -> dict[str, Any]:
    """Aggregate one part of the plan. Read-only, so running it twice is harmless."""
    run = ReportRun.objects.filter(pk=run_id).first()
    if run is None or run.is_finished:
        return {}  # deleted or already failed: nothing left worth computing
    kind = registry.get(run.report_type)
    try:
        partial = kind.gather(kind.parse_params(run.params), run.parts[index])
    except Exception as exc:
        report_run_fail(run_id=run_id, error=f"Part {index + 1} of {run.parts_total}: {exc!r}")
        raise
    ReportRun.objects.filter(pk=run_id, status=Status.RUNNING).update(
        parts_done=Least(F("parts_done") + 1, F("parts_total"))
    )
    return partial


def _new_name(run: ReportRun, kind: str) -> str:
    """Our own name for a stored file: run id plus a random part, nothing from a request."""
    return f"{run.report_type}/{run.pk}-{uuid.uuid4().hex}.{kind}"


def report_run_render(*, run_id: int, partials: list[dict[str, Any]]) -> bool:
    """Combine the parts, write CSV (and PDF), mark the run succeeded, email the requester."""
    run = ReportRun.objects.filter(pk=run_id).first()
    if run is None or run.status != Status.RUNNING:
        logger.info("Report run %s is not running; render skipped", run_id)
        return False
    kind = registry.get(run.report_type)
    storage = report_storage()
    saved: dict[str, str] = {}
    try:
        params = kind.parse_params(run.params)
        data = kind.combine(params, partials)
        outputs = {"csv": kind.render_csv(params, data), "pdf": kind.render_pdf(params, data)}
        for ext, content in outputs.items():
            if content is not None:
                saved[ext] = storage.save(_new_name(run, ext), ContentFile(content))
    except Exception as exc:
        for name in saved.values():
            storage.delete(name)
        report_run_fail(run_id=run_id, error=f"Rendering failed: {exc!r}")
        raise
    done = report_run_transition(
        run_id=run_id,
        to=Status.SUCCEEDED,
        finished_at=timezone.now(),
        parts_done=run.parts_total,
        csv_file=saved.get("csv", ""),
        pdf_file=saved.get("pdf", ""),
    )
    if not done:  # a duplicate delivery finished first: keep its files, drop ours
        for name in saved.values():
            storage.delete(name)
        return False
    report_run_notify(run_id=run_id)
    return True


def report_run_notify(*, run_id: int) -> bool:
    """Email the requester a link to the finished run, once. A mail error is logged only."""
    run = ReportRun.objects.select_related("requested_by").get(pk=run_id)
    user = run.requested_by
    if run.status != Status.SUCCEEDED or run.notified_at or not (user and user.email):
        return False
    if not ReportRun.objects.filter(pk=run_id, notified_at=None).update(notified_at=timezone.now()):
        return False
    label = registry.get(run.report_type).label
    links = "\n".join(
        f"  {ext.upper()}: {settings.SITE_URL}{run.download_path(ext)}"
        for ext in ReportRun.FILE_KINDS
        if run.file_name(ext)
    )
    try:
        send_mail(
            subject=f"Your report is ready: {label} #{run.pk}",
            message=(
                f"Hello {user.get_username()},\n\nThe {label} report you requested "
                f"(run #{run.pk}) is ready. Download it here (you may need to log in):\n\n"
                f"{links}\n\nRun details: {settings.SITE_URL}{run.get_absolute_url()}\n"
            ),
            from_email=None,
            recipient_list=[user.email],
        )
    except Exception:
        logger.exception("Could not email report run %s to %s", run_id, user.email)
        return False
    return True
