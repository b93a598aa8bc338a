"""The one place that builds a report run's canvas and publishes it (after commit).

start -> chord(gather part 1..n in parallel, then render once), every task on the type's
own queue through the `report_type` keyword the router reads.
"""

from __future__ import annotations

from typing import Any

from celery import chain, chord
from celery.canvas import Signature
from django.db import transaction

from reports import services, tasks
from reports.models import ReportRun


def report_run_canvas(run: ReportRun) -> Signature:
    """The run's whole workflow as one signature (also used by the routing tests)."""
    opts = {"report_type": run.report_type}
    header = [
        tasks.report_run_gather_part.si(run.pk, index, **opts) for index in range(run.parts_total)
    ]
    return chain(
        tasks.report_run_start.si(run.pk, **opts),
        chord(header, tasks.report_run_render.s(run.pk, **opts)),
    )


def report_run_launch(run: ReportRun) -> None:
    """Publish the run once the transaction that created it commits."""
    canvas = report_run_canvas(run)
    transaction.on_commit(canvas.apply_async)


def report_run_request(
    *,
    report_type: str,
    params: dict[str, Any],
    requested_by: Any = None,
    trigger: str = ReportRun.Trigger.ADMIN,
) -> ReportRun:
    """Create a run from validated params and queue it."""
    with transaction.atomic():
        run = services.report_run_create(
            report_type=report_type, params=params, requested_by=requested_by, trigger=trigger
        )
        report_run_launch(run)
    return run


def report_run_rerun(*, run: ReportRun, requested_by: Any = None) -> ReportRun:
    """A fresh run with the same type and parameters (the old one keeps its record)."""
    with transaction.atomic():
        new = services.report_run_create(
            report_type=run.report_type,
            params=run.params,
            requested_by=requested_by or run.requested_by,
            trigger=ReportRun.Trigger.RERUN,
            rerun_of=run,
        )
        report_run_launch(new)
    return new
