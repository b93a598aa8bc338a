"""Downloads go through the checked view only: requester or permitted staff, our names only."""

from __future__ import annotations

import pytest

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
    services.report_run_start(run_id=run.pk, queue="reports.price_changes")
    partials = [
        services.report_run_gather_part(run_id=run.pk, index=i) for i in range(run.parts_total)
    ]
    assert services.report_run_render(run_id=run.pk, partials=partials)
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


def test_requester_gets_the_email_in_process(finished_run, mailoutbox):
    # The worker-side email is checked in test_outputs; here the message content.
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["alice@example.com"]
    assert f"/reports/runs/{finished_run.pk}/download/pdf" in mailoutbox[0].body
