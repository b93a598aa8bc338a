"""Each type, run by real workers on its own queue: numbers, CSV, PDF, email, progress."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection, transaction

from core.waiting import wait_for
from notifications.models import Notification
from proj import topology
from reports import registry, workflows
from reports.models import ReportPart, ReportRun
from tests.reports.conftest import RANGE
from tests.reports.helpers import csv_sections, pdf_has_text, pdf_pages, read_file, wait_finished

pytestmark = pytest.mark.workers


def request(identifier: str, data: dict, user=None) -> ReportRun:
    kind = registry.get(identifier)
    run, _ = workflows.report_run_request(
        report_type=identifier, params=kind.clean_params(data), requested_by=user
    )
    return run


def assert_succeeded_on_own_queue(run: ReportRun) -> None:
    run = wait_finished(run)
    assert run.status == ReportRun.Status.SUCCEEDED, run.error
    assert run.queue == topology.report_queue(run.report_type)
    assert run.succeeded == run.total > 0
    assert run.started_at and run.finished_at and run.finished_at >= run.started_at


def test_sales_summary_numbers_csv_pdf_and_email(workers, shop, staff, smtp):
    run = request("sales_summary", {**RANGE, "top_n": "2"}, staff)
    assert_succeeded_on_own_queue(run)
    assert run.total == 2  # tests split from the first order: one part per slot, in parallel

    days, top = csv_sections(read_file(run, "csv"))
    assert days[0] == ["date", "orders", "units", "revenue"]
    per_day = {row[0]: row[1:] for row in days[1:]}
    assert len(per_day) == 11  # ten days plus the total row
    # O1 (2x10.00 + 1x2.50) and O2 (1x100.00) on the 2nd; O3 cancelled; O4 on the 9th.
    assert per_day["2026-03-02"] == ["2", "4", "122.50"]
    assert per_day["2026-03-05"] == ["0", "0", "0.00"]
    assert per_day["2026-03-09"] == ["1", "4", "10.00"]
    assert per_day["total"] == ["3", "8", "132.50"]
    assert top == [
        ["rank", "sku", "name", "units", "revenue"],
        ["1", "C-3", "Product C-3", "1", "100.00"],
        ["2", "A-1", "Product A-1", "2", "20.00"],
    ]

    pdf = read_file(run, "pdf")
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert pdf_pages(pdf) == 2  # summary, chart and top products; then per-day table
    assert pdf_has_text(pdf, "Sales summary")
    assert pdf_has_text(pdf, "Revenue per day")  # the chart's title
    assert pdf_has_text(pdf, "Revenue: 132.50")
    assert pdf_has_text(pdf, "Page 2")

    # The email goes out through the notifications queue once the run is marked succeeded.
    [mail] = wait_for(
        lambda: [m for m in smtp.messages() if f"Sales summary #{run.pk}" in m.subject],
        what="the email at the SMTP sink",
    )
    assert mail.recipients == ["alice@example.com"]
    assert f"http://127.0.0.1:8000/reports/runs/{run.pk}/download/csv" in mail.body
    notification = wait_for(
        lambda: Notification.objects.filter(
            idempotency_key=f"report-ready-{run.pk}", status="sent"
        ).first(),
        what="the notification marked sent",
    )
    assert notification.kind == "transactional"
    assert notification.provider_message_id == mail.message_id


def test_inventory_numbers_csv_pdf(workers, shop, staff):
    run = request("inventory", {"low_stock_threshold": "5"}, staff)
    assert_succeeded_on_own_queue(run)

    summary, products = csv_sections(read_file(run, "csv"))
    assert dict(summary[1:]) == {
        "products": "4",
        "units in stock": "45",  # 3 + 40 + 0 + 2
        "out of stock": "1",  # C-3
        "low stock": "3",  # A-1 (3), C-3 (0), D-4 (2)
        "stock value EUR": "130.00",  # 3 x 10.00 + 40 x 2.50
        "stock value USD": "14.00",  # 0 x 100.00 + 2 x 7.00
    }
    assert [row[0] for row in products[1:] if row[6] == "yes"] == ["A-1", "C-3", "D-4"]

    pdf = read_file(run, "pdf")
    assert pdf.startswith(b"%PDF-")
    assert pdf_pages(pdf) == 2
    assert pdf_has_text(pdf, "Products by stock level")
    assert pdf_has_text(pdf, "Low stock (3 products)")


def test_price_changes_numbers_csv_pdf(workers, shop, staff):
    run = request("price_changes", RANGE, staff)
    assert_succeeded_on_own_queue(run)

    summary, changes = csv_sections(read_file(run, "csv"))
    assert dict(summary[1:]) == {
        "changes": "2",
        "products": "2",
        "increases": "1",
        "decreases": "1",
    }
    assert changes[1:] == [
        ["2026-03-03T12:00:00+00:00", "A-1", "Product A-1", "9.00", "10.00", "+1.00", "+11.1"],
        ["2026-03-08T12:00:00+00:00", "B-2", "Product B-2", "3.00", "2.50", "-0.50", "-16.7"],
    ]
    pdf = read_file(run, "pdf")
    assert pdf.startswith(b"%PDF-") and pdf_pages(pdf) == 1
    assert pdf_has_text(pdf, "Price changes") and pdf_has_text(pdf, "+11.1")


def test_a_failing_part_fails_the_run_with_a_reason_and_it_can_be_rerun(workers, shop, staff):
    # Break the stored plan so the worker's gather step fails for real (a missing key),
    # before the outbox publishes the run (on commit): no race with a fast worker.
    with transaction.atomic():
        run = request("sales_summary", RANGE, staff)
        ReportPart.objects.filter(run=run, index=0).update(spec={})
    run = wait_finished(run)
    assert run.status == ReportRun.Status.FAILED
    assert "Part 1 of 2" in run.error and "KeyError" in run.error
    assert not run.csv_file and not run.pdf_file

    again, _ = workflows.report_run_rerun(run=run, requested_by=staff)
    assert_succeeded_on_own_queue(again)
    assert again.rerun_of_id == run.pk and again.trigger == ReportRun.Trigger.RERUN


@pytest.mark.django_db
def test_a_report_is_split_only_where_parts_pay_for_themselves(shop, settings):
    """One part per REPORTS_MIN_ORDERS_PER_PART orders in range, at most one per slot; on
    PostgreSQL the parts split the aggregates, elsewhere the dates."""
    kind = registry.get("sales_summary")
    params = kind.parse_params(kind.clean_params(RANGE))  # four orders in range

    settings.REPORTS_MIN_ORDERS_PER_PART = 25_000
    assert kind.plan(params) == [{"from": "2026-03-01", "to": "2026-03-10"}]
    settings.REPORTS_MIN_ORDERS_PER_PART = 2
    if connection.vendor == "postgresql":
        over = ["2026-03-01", "2026-03-10"]
        expected = [{"aggregate": "days", "over": over}, {"aggregate": "products", "over": over}]
    else:
        expected = [
            {"from": "2026-03-01", "to": "2026-03-05"},
            {"from": "2026-03-06", "to": "2026-03-10"},
        ]
    assert kind.plan(params) == expected
    settings.REPORTS_MIN_ORDERS_PER_PART = 1  # four parts would pay, but only two run at once
    assert len(kind.plan(params)) == kind.slots == 2

    # However it splits, the parts add up to what one pass over the range finds.
    whole_range = kind.combine(params, [kind.gather(params, whole_part(params))])
    assert kind.combine(params, [kind.gather(params, part) for part in expected]) == whole_range
    assert whole_range["total_orders"] == 3 and whole_range["total_revenue"] == Decimal("132.50")


def whole_part(params: dict) -> dict:
    """The whole range as one part with every aggregate."""
    return {"from": params["date_from"].isoformat(), "to": params["date_to"].isoformat()}


@pytest.mark.django_db
def test_top_products_tied_at_the_cut_are_ranked_by_sku(shop):
    """Names are looked up for the top only: a product tied with the last one still
    competes on its SKU, wherever the partials listed it."""
    kind = registry.get("sales_summary")
    params = kind.parse_params(kind.clean_params({**RANGE, "top_n": "1"}))
    a, b, c = (shop.products[k].pk for k in "ABC")
    partial = {
        "products": {
            str(b): {"revenue": "10.00", "units": 1},
            str(c): {"revenue": "5.00", "units": 9},
            str(a): {"revenue": "10.00", "units": 1},
        }
    }
    top = kind.combine(params, [partial])["top"]
    assert [(p["sku"], p["name"], p["revenue"]) for p in top] == [
        ("A-1", "Product A-1", Decimal("10.00"))
    ]
