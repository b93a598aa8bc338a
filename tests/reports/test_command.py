"""`manage.py run_report`: clear errors and a non-zero exit on bad options, --list, --wait."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from reports.models import ReportRun
from tests.support.settings_env import manage


def test_list_shows_types_and_their_queues(capsys):
    call_command("run_report", "--list")
    out = capsys.readouterr().out
    for identifier in ("sales_summary", "inventory", "price_changes"):
        assert f"reports.{identifier}" in out
    assert "--from --to --top" in out and "--threshold" in out


@pytest.mark.django_db
@pytest.mark.parametrize(
    "argv,message",
    [
        (["nope"], "Unknown report type 'nope'"),
        ([], "Give a report type"),
        (["sales_summary", "--from", "2026-03-10", "--to", "2026-03-01"], "before the start"),
        (["sales_summary", "--from", "2020-01-01", "--to", "2026-03-01"], "at most 366"),
        (["sales_summary", "--from", "tomorrow"], "Enter a valid date"),
        (["inventory", "--from", "2026-03-01"], "--from is not a parameter of inventory"),
        (["inventory", "--threshold", "-3"], "--threshold: Ensure this value is greater than"),
        (["sales_summary", "--top", "0"], "--top: Ensure this value is greater than or equal to 1"),
        (["inventory", "--user", "ghost"], "No user named 'ghost'"),
    ],
)
def test_bad_options_are_clear_errors_and_queue_nothing(argv, message):
    with pytest.raises(CommandError, match=message):
        call_command("run_report", *argv)
    assert ReportRun.objects.count() == 0


def test_bad_options_exit_non_zero_in_a_real_process():
    result = manage("run_report", "sales_summary", "--from", "2026-03-10", "--to", "2026-03-01")
    assert result.returncode != 0
    assert "is before the start date" in result.stderr


@pytest.mark.workers
def test_cron_line_waits_for_the_report(workers, shop):
    result = manage(
        "run_report", "sales_summary", "--from", "2026-03-01", "--to", "2026-03-10", "--wait",
        env=workers.env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = ReportRun.objects.get()
    assert run.status == "succeeded" and run.trigger == "command"
    assert (
        f"Report #{run.pk} succeeded" in result.stdout
        and "on reports.sales_summary" in result.stdout
    )
    assert f"/reports/runs/{run.pk}/download/pdf" in result.stdout
    # The parameters in words, as the admin list shows them.
    assert f"Queued Sales summary report #{run.pk} (1\u201310 Mar 2026, top 10)" in result.stdout
