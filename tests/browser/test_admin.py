"""What staff and operators see, in a real Chromium: refresh, live progress, reports,
refusals and the queue page, against the real web server, workers and stand-in."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.httpstub import Response
from devtools.supplier_stub import StubBehaviour
from proj.topology import REFRESH_QUEUE
from reports.models import ReportRun
from shop.models import RefreshRun
from tests.reports.helpers import csv_sections, pdf_has_text
from tests.shop.conftest import make_products
from tests.support.factories import make_staff

pytestmark = pytest.mark.workers


def log_in(page: Any, username: str) -> None:
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "pw")  # tests.support.factories.make_staff's password
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    page.steps("logged-in")


def test_refresh_from_the_admin_shows_live_progress_and_the_failed_product(
    app, page, workers, supplier
):
    products = make_products(30)
    unknown = products[7]
    supplier.reset(StubBehaviour(latency=0.1))
    supplier.script(unknown.sku, Response(404, {"error": "unknown"}))
    make_staff("refresher", "view_product", "refresh_product", "view_refreshrun")
    log_in(page, "refresher")
    # Hold the refresh nodes, so the run page is open before any product is refreshed.
    app.control.cancel_consumer(REFRESH_QUEUE, destination=workers.nodes("refresh"), reply=True)
    time.sleep(2.5)  # a BRPOP already waiting still names the queue until its timeout ends
    try:
        page.goto("/admin/shop/product/")
        page.check("#action-toggle")
        page.select_option("select[name=action]", "refresh_from_supplier")
        page.click("button[name=index]")
        page.steps("action-run")
        message = page.locator(".messagelist .success")
        assert re.search(r"Started refresh run #\d+ for 30 products\.", message.inner_text())
        message.locator("a").click()
        page.wait_for_selector(".field-outcome")
        assert "Waiting to start" in page.inner_text(".field-outcome .readonly")
        page.evaluate("window.sameDocument = true")  # gone if the page reloads
        page.steps("run-page-waiting")
    finally:
        app.control.add_consumer(REFRESH_QUEUE, destination=workers.nodes("refresh"), reply=True)

    page.wait_for_selector(
        ".field-outcome .readonly:has-text('Completed with 1 error')", timeout=60_000
    )
    page.wait_for_selector("body[data-run-settled=true]")
    page.steps("run-page-completed")
    assert page.evaluate("window.sameDocument") is True  # updated in place, never reloaded
    assert "30 / 30 done, 1 failed" in page.inner_text(".field-progress .readonly")
    failed = page.locator(f"a:has-text('{unknown.sku}')")
    assert failed.get_attribute("href") == f"/admin/shop/product/{unknown.pk}/change/"
    assert "not found at the supplier (HTTP 404)" in page.inner_text("#items-group")
    run = RefreshRun.objects.get()
    assert run.status == RefreshRun.Status.COMPLETED_WITH_ERRORS


def test_request_a_report_then_download_its_csv_and_pdf(page, workers, shop, tmp_path):
    make_staff("alice", "add_reportrun", "view_reportrun")
    log_in(page, "alice")
    page.goto("/admin/reports/reportrun/add/")
    page.select_option("#id_report_type", "sales_summary")
    page.click("input[value=Next]")
    page.fill("#id_date_from", "2026-03-01")
    page.fill("#id_date_to", "2026-03-10")
    page.steps("report-form")
    page.click("input[name=_request]")
    assert "queued on reports.sales_summary" in page.inner_text(".messagelist")
    run = ReportRun.objects.get()
    page.goto(f"/admin/reports/reportrun/{run.pk}/change/")
    page.wait_for_selector(".field-downloads a:has-text('CSV')", timeout=60_000)
    page.steps("report-ready")
    assert "1\u201310 Mar 2026, top 10" in page.inner_text(".field-parameters .readonly")

    files: dict[str, Path] = {}
    for kind in ("CSV", "PDF"):
        with page.expect_download() as download:
            page.click(f".field-downloads a:has-text('{kind}')")
        files[kind] = tmp_path / download.value.suggested_filename
        download.value.save_as(files[kind])
    days, top = csv_sections(files["CSV"].read_bytes())
    assert days[-1] == ["total", "3", "8", "132.50"]  # the hand-computed shop fixture
    assert top[1] == ["1", "C-3", "Product C-3", "1", "100.00"]
    assert files["CSV"].name == f"sales_summary-{run.pk}.csv"
    assert pdf_has_text(files["PDF"].read_bytes(), "Revenue: 132.50")


def test_staff_without_permission_get_a_page_that_says_what_is_missing(page, workers):
    make_staff("viewer", "view_product")
    log_in(page, "viewer")
    response = page.goto("/admin/reports/reportrun/add/")
    page.steps("refused")
    assert response is not None and response.status == 403
    text = page.inner_text("#content")
    assert "You do not have permission to do this" in text
    assert "signed in as viewer" in text and "Ask an administrator" in text
    assert page.locator("#site-name").count() == 1  # the admin's own header, not a bare 403


def test_the_queue_page_shows_every_queue_and_its_consumers(page, workers):
    make_staff("ops", "view_queues", "view_deadletter")
    log_in(page, "ops")
    page.click("a:has-text('Queues')")
    page.wait_for_selector("#queues")
    page.steps("queues")
    rows = {
        row.get_attribute("data-queue"): row.inner_text()
        for row in page.locator("#queues tbody tr").all()
    }
    assert REFRESH_QUEUE in rows and "reports.inventory" in rows
    for node in workers.nodes("refresh"):
        assert node in rows[REFRESH_QUEUE]
    assert "nobody" not in "".join(rows.values())
