"""The one place that builds a report run's canvas and publishes it (through the outbox).

chord(gather part 1..n in parallel, then render once), every task on the type's own queue:
the queue is set on each signature here, so it is stored with the signature in the outbox
and in dead letters, and a resumed or replayed task lands exactly where the first one did.
"""

from __future__ import annotations

from typing import Any

from celery import chord
from celery.canvas import Signature
from django.db import transaction

from core import runs
from core.models import OutboxMessage
from core.outbox import outbox_enqueue
from proj import topology
from reports import registry, services, tasks
from reports.models import ReportPart, ReportRun


def report_remaining_work(run: ReportRun) -> Signature:
    """The parts still to gather, then the render (alone when every part is in)."""
    queue = registry.get(run.report_type).queue
    render = tasks.report_run_render.si(run.pk).set(queue=queue)
    pending = services.report_run_pending_parts(run=run)
    if not pending:
        return render
    header = [tasks.report_run_gather_part.si(run.pk, i).set(queue=queue) for i in pending]
    return chord(header, render)


def _launch(run: ReportRun) -> OutboxMessage:
    return outbox_enqueue(
        report_remaining_work(run), description=f"start report run #{run.pk}", run=run
    )


def report_run_request(
    *,
    report_type: str,
    params: dict[str, Any],
    requested_by: Any = None,
    trigger: str = ReportRun.Trigger.ADMIN,
) -> tuple[ReportRun, OutboxMessage]:
    """Create a run from validated params and queue it (after commit, via the outbox)."""
    with transaction.atomic():
        run = services.report_run_create(
            report_type=report_type, params=params, requested_by=requested_by, trigger=trigger
        )
        message = _launch(run)
    return run, message


def report_run_rerun(
    *, run: ReportRun, requested_by: Any = None
) -> tuple[ReportRun, OutboxMessage]:
    """A fresh run with the same type and parameters (the old one keeps its record)."""
    with transaction.atomic():
        new = services.report_run_create(
            report_type=run.report_type,
            params=run.params,
            requested_by=requested_by or run.requested_by,
            trigger=ReportRun.Trigger.RERUN,
            rerun_of=run,
        )
        message = _launch(new)
    return new, message


RUN_KIND = runs.RunKind(
    model=ReportRun,
    item_model=ReportPart,
    item_run_field="run",
    remaining_work=report_remaining_work,
    cancel=services.report_run_cancel,
    queues=lambda run: (topology.report_queue(run.report_type),),
)
