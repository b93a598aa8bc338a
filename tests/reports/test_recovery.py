"""Report runs always finish too: unfinished parts and a render that never ran, recovered."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.models import RunEvent
from reports import registry, services
from reports.models import ReportPart, ReportRun
from tests.reports.conftest import RANGE
from tests.reports.helpers import wait_finished
from tests.support.admin import csrf_client, post_action
from tests.support.factories import make_staff
from tests.support.faults import Reconciler

pytestmark = pytest.mark.workers
RUNS = reverse("admin:reports_reportrun_changelist")


def lost_run(staff, gathered: int) -> ReportRun:
    """A sales run whose messages were lost after `gathered` of its 2 parts were done."""
    kind = registry.get("sales_summary")
    run = services.report_run_create(
        report_type="sales_summary", params=kind.clean_params(RANGE), requested_by=staff
    )
    for index in range(gathered):
        services.report_run_gather_part(run_id=run.pk, index=index, queue=kind.queue)
    return run


def messages(run: ReportRun) -> list[str]:
    return list(RunEvent.objects.filter(object_id=run.pk).values_list("message", flat=True))


def test_unfinished_parts_are_gathered_again_and_the_run_rendered(workers, shop, staff):
    run = lost_run(staff, gathered=1)
    done = ReportPart.objects.get(run=run, index=0)

    with Reconciler(workers.env, workers.log_dir / "reconciler.log", stall=2):
        run = wait_finished(run, timeout=60)

    assert run.status == ReportRun.Status.SUCCEEDED and run.csv_file and run.pdf_file
    assert run.succeeded == run.total == 2
    assert ReportPart.objects.get(pk=done.pk).finished_at == done.finished_at  # not redone
    assert any("re-published 1 unfinished item and the finish step" in m for m in messages(run))


def test_a_render_that_never_ran_is_run_by_the_reconciler(workers, shop, staff):
    run = lost_run(staff, gathered=2)

    with Reconciler(workers.env, workers.log_dir / "reconciler.log", stall=2):
        run = wait_finished(run, timeout=60)

    assert run.status == ReportRun.Status.SUCCEEDED and run.csv_file
    assert any("re-published the finish step" in m for m in messages(run))


def test_cancel_a_report_from_the_admin(workers, shop, staff):
    operator = make_staff("ops", "view_reportrun", "view_all_reports", "control_reportrun")
    run = lost_run(staff, gathered=1)
    client = csrf_client(operator)

    page = post_action(client, RUNS, "cancel_runs", [run])

    assert "1 unfinished part will not be gathered" in page.text
    run.refresh_from_db()
    assert run.status == ReportRun.Status.CANCELLED and not run.csv_file
    assert run.items.filter(status="cancelled").count() == 1
