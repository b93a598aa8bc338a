"""A flood of one report type never delays another type: real workers, real queues.

Several year-long sales summaries (a part per slot each, then a PDF with a year of days)
fill `reports.sales_summary` and keep both slots of its node busy; an inventory report
requested afterwards runs on its own node and finishes while sales runs are still waiting
or running. Asserted on states and ordering, not on timings, so a slow machine cannot make
it flaky in the other direction.
"""

from __future__ import annotations

import time

import pytest

from core.waiting import wait_for
from reports import registry, workflows
from reports.models import ReportRun
from tests.reports.helpers import wait_finished

pytestmark = pytest.mark.workers
FLOOD = 8
YEAR = {"date_from": "2025-03-11", "date_to": "2026-03-10"}


def request(identifier: str, data: dict) -> ReportRun:
    params = registry.get(identifier).clean_params(data)
    run, _ = workflows.report_run_request(report_type=identifier, params=params)
    return run


def test_a_sales_flood_does_not_delay_an_inventory_report(workers, shop):
    flood = [request("sales_summary", YEAR) for _ in range(FLOOD)]
    assert all(run.total == 2 for run in flood)
    wait_for(
        lambda: ReportRun.objects.filter(report_type="sales_summary", status="running").exists(),
        what="the sales node to be busy",
    )

    inventory = wait_finished(request("inventory", {}), timeout=60)
    unfinished_sales = ReportRun.objects.filter(
        pk__in=[r.pk for r in flood], status__in=["pending", "running"]
    ).count()

    assert inventory.status == "succeeded" and inventory.queue == "reports.inventory"
    assert unfinished_sales > 0, "the inventory report waited for the whole sales flood"

    # The flood is real work, not a stand-in: it all completes, on its own queue.
    started = time.monotonic()
    for run in flood:
        run = wait_finished(run, timeout=180)
        assert run.status == "succeeded" and run.queue == "reports.sales_summary"
    print(f"flood drained {time.monotonic() - started:.1f}s after the inventory report finished")
