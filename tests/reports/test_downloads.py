"""Downloads go through the checked view only: requester or permitted staff, our names only."""

from __future__ import annotations

import pytest

from notifications.models import Notification
from notifications.services import render
from reports import registry, services
from reports.models import ReportRun
from reports.storage import report_storage
from tests.reports.conftest import RANGE


@pytest.fixture
def finished_run(db, shop, staff) -> ReportRun:
    """A succeeded run, produced by the same services the workers call (in-process here)."""
    kind = registry.get("price_changes")
    run = services.report_run_create(
        report_type="price_changes", params=kind.clean_params(RANGE), requested_by=staff
    )
    for i in range(run.total):
        services.report_run_gather_part(run_id=run.pk, index=i, queue="reports.price_changes")
    assert services.report_run_render(run_id=run.pk)
    run.refresh_from_db()
    return run


def test_requester_downloads_both_files(client, staff, finished_run):
    client.force_login(staff)
    for kind, type_ in (("csv", "text/csv"), ("pdf", "application/pdf")):
        response = client.get(f"/reports/runs/{finished_run.pk}/download/{kind}")
        assert response.status_code == 200
        assert response["Content-Type"].startswith(type_)
        assert (
            f'filename="price_changes-{finished_run.pk}.{kind}"' in response["Content-Disposition"]
        )
        body = b"".join(response.streaming_content)
        assert body == report_storage().open(finished_run.file_name(kind)).read()


def test_other_staff_without_permission_is_refused(client, other_staff, finished_run):
    client.force_login(other_staff)
    assert client.get(f"/reports/runs/{finished_run.pk}/download/csv").status_code == 403


def test_staff_allowed_to_view_all_reports_may_download(client, auditor, finished_run):
    client.force_login(auditor)
    assert client.get(f"/reports/runs/{finished_run.pk}/download/pdf").status_code == 200


def test_anonymous_is_sent_to_login(client, finished_run):
    response = client.get(f"/reports/runs/{finished_run.pk}/download/csv")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


@pytest.mark.parametrize(
    "tail",
    [
        "secret.csv",
        "..%2F..%2F..%2Fproj%2Fsettings.py",
        "csv%00.pdf",
        "csv/../../../../etc/passwd",
        "CSV",
    ],
)
def test_forged_file_names_are_not_found(client, staff, finished_run, tail):
    client.force_login(staff)
    assert client.get(f"/reports/runs/{finished_run.pk}/download/{tail}").status_code == 404


def test_files_are_private_and_named_by_us(finished_run):
    name = finished_run.file_name("csv")
    assert name.startswith(f"price_changes/{finished_run.pk}-") and name.endswith(".csv")
    with pytest.raises(ValueError, match="private"):
        report_storage().url(name)


def test_unfinished_run_has_nothing_to_download(client, staff, db):
    run = ReportRun.objects.create(report_type="inventory", requested_by=staff)
    client.force_login(staff)
    assert client.get(f"/reports/runs/{run.pk}/download/csv").status_code == 404


def test_requester_is_notified_once_with_links(finished_run):
    # Sending over SMTP by the workers is checked in test_outputs; here the message itself.
    [notification] = Notification.objects.all()
    assert (notification.recipient, notification.kind) == ("alice@example.com", "transactional")
    subject, body = render(notification)
    assert subject == f"Your report is ready: Price changes #{finished_run.pk}"
    assert f"/reports/runs/{finished_run.pk}/download/pdf" in body
    services.report_run_notify(run_id=finished_run.pk)  # asked again: the same notification
    assert Notification.objects.count() == 1
