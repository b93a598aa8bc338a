"""Requesting a report: bad parameters are form errors and queue nothing."""

from __future__ import annotations

import pytest
from django.test import override_settings

from reports import registry
from reports.models import ReportRun
from tests.reports.conftest import RANGE
from tests.reports.helpers import wait_finished

ADD_URL = "/admin/reports/reportrun/add/"


@pytest.mark.parametrize(
    "data,message",
    [
        ({"date_from": "2026-03-10", "date_to": "2026-03-01"}, "is before the start date"),
        ({"date_from": "2025-01-01", "date_to": "2026-03-01"}, "at most 366 are allowed"),
        ({"date_from": "yesterday"}, "Enter a valid date"),
        ({"date_from": "2026-03-01", "top_n": "0"}, "greater than or equal to 1"),
    ],
)
def test_sales_form_rejects_bad_ranges(data, message):
    form = registry.get("sales_summary").form(data)
    assert not form.is_valid()
    assert message in str(form.errors)


def test_range_limit_comes_from_settings():
    with override_settings(REPORTS_MAX_RANGE_DAYS=5):
        form = registry.get("price_changes").form(RANGE)
        assert not form.is_valid() and "at most 5 are allowed" in str(form.errors)


def test_empty_range_defaults_to_the_last_seven_full_days():
    params = registry.get("sales_summary").clean_params({})
    from datetime import date, timedelta

    yesterday = date.today() - timedelta(days=1)
    assert params["date_to"] == yesterday.isoformat()
    assert params["date_from"] == (yesterday - timedelta(days=6)).isoformat()
    assert params["top_n"] == 10


@pytest.mark.django_db
@pytest.mark.parametrize(
    "post,message",
    [
        (
            {"report_type": "sales_summary", "_request": "1", **RANGE, "date_to": "2026-02-01"},
            "is before the start date",
        ),
        ({"report_type": "no_such_report", "_request": "1"}, "Select a valid choice"),
        ({"report_type": "inventory", "_request": "1", "low_stock_threshold": "-1"}, "greater"),
    ],
)
def test_admin_shows_form_errors_and_queues_nothing(client, staff, post, message):
    client.force_login(staff)
    response = client.post(ADD_URL, post)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert ReportRun.objects.count() == 0


@pytest.mark.django_db
def test_admin_shows_the_types_form_step_by_step(client, staff):
    client.force_login(staff)
    page = client.get(ADD_URL).content.decode()
    assert "reports.sales_summary" in page and "reports.inventory" in page
    page = client.get(ADD_URL, {"report_type": "sales_summary"}).content.decode()
    assert 'name="date_from"' in page and 'name="top_n"' in page


@pytest.mark.workers
def test_admin_request_runs_on_the_types_queue_and_lists_it(workers, client, staff, shop):
    client.force_login(staff)
    response = client.post(ADD_URL, {"report_type": "inventory", "_request": "1"})
    assert response.status_code == 302
    run = wait_finished(ReportRun.objects.get())
    assert run.status == "succeeded" and run.requested_by == staff
    assert run.queue == "reports.inventory" and run.trigger == "admin"
    page = client.get("/admin/reports/reportrun/").content.decode()
    assert f"/reports/runs/{run.pk}/download/csv" in page
    assert "Succeeded: 1 part" in page and "Inventory" in page


@pytest.mark.django_db
def test_rerun_action_only_reruns_failed_runs(client, staff, django_capture_on_commit_callbacks):
    failed = ReportRun.objects.create(
        report_type="inventory", params={"low_stock_threshold": 5}, status="failed",
        error="boom", requested_by=staff,
    )  # fmt: skip
    done = ReportRun.objects.create(
        report_type="inventory", params={"low_stock_threshold": 5}, status="succeeded",
        requested_by=staff,
    )  # fmt: skip
    client.force_login(staff)
    with django_capture_on_commit_callbacks(execute=False) as published:
        response = client.post(
            "/admin/reports/reportrun/",
            {"action": "rerun", "_selected_action": [failed.pk, done.pk]},
            follow=True,
        )
    page = response.content.decode()
    assert "Queued again as" in page and "1 run(s) skipped" in page
    assert list(ReportRun.objects.filter(rerun_of=failed).values_list("status", flat=True)) == [
        "pending"
    ]
    assert not ReportRun.objects.filter(rerun_of=done).exists()
    assert len(published) == 1  # one canvas, published only after commit


def test_the_price_changes_default_range_includes_today():
    """A refresh a moment ago changed prices: the default report must show them."""
    from datetime import date, timedelta

    params = registry.get("price_changes").clean_params({})
    assert params["date_to"] == date.today().isoformat()
    assert params["date_from"] == (date.today() - timedelta(days=6)).isoformat()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "email,promise",
    [
        ("alice@example.com", "You will get an email at alice@example.com when it is ready."),
        ("", "No email will be sent: your account has no email address."),
    ],
)
def test_the_email_is_promised_only_to_someone_with_an_address(client, staff, email, promise):
    staff.email = email
    staff.save()
    client.force_login(staff)
    page = client.post(ADD_URL, {"report_type": "inventory", "_request": "1"}, follow=True)
    assert promise in page.text
    assert ReportRun.objects.count() == 1
