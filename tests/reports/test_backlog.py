"""A report waiting its turn behind a backlog is not "stalled"; one whose messages were lost is.

Published to a Redis database no worker reads: the report's queue holds exactly what the
workers would still be offered. The reconciler runs in this process with a 1 s stall time.
"""

from __future__ import annotations

import time

import pytest

from core import reconciler
from core.models import RunEvent
from proj import topology
from reports import registry
from reports.models import ReportRun
from reports.workflows import report_run_request
from tests.reports.conftest import RANGE

STALL = 1


def request() -> ReportRun:
    kind = registry.get("sales_summary")
    run, _ = report_run_request(report_type=kind.identifier, params=kind.clean_params(RANGE))
    return run


def resumed(run: ReportRun) -> list[str]:
    return list(
        RunEvent.objects.filter(object_id=run.pk, kind="resumed").values_list("message", flat=True)
    )


@pytest.mark.django_db(transaction=True)
def test_a_report_behind_a_backlog_waits_and_one_whose_messages_were_lost_is_resumed(
    unread_broker, settings
):
    settings.RUN_STALL_AFTER = STALL
    queue = topology.report_queue("sales_summary")
    first = request()
    queued = unread_broker.llen(queue)
    assert queued >= 1

    time.sleep(STALL + 1.5)  # no progress for longer than the stall time: still queued
    reconciler.reconcile()

    first.refresh_from_db()
    assert first.resumes == 0 and not resumed(first)
    assert unread_broker.llen(queue) == queued  # nothing queued a second time

    unread_broker.delete(queue)  # the broker lost the first report's messages
    second = request()  # newer work: the queue's oldest message is now after the first's
    time.sleep(STALL + 1.5)
    reconciler.reconcile()

    first.refresh_from_db()
    second.refresh_from_db()
    assert first.resumes == 1
    assert "re-published" in resumed(first)[0]
    assert second.resumes == 0 and not resumed(second)  # its own messages still wait


@pytest.mark.django_db(transaction=True)
def test_a_queue_that_does_not_move_is_no_excuse_and_its_runs_are_resumed(unread_broker, settings):
    """Nobody takes the report's messages (its node is gone): after ten stall periods its
    queue counts as stuck, and the run goes the way of any stalled run (resumed, and failed
    after RUN_MAX_RESUMES), so that it still finishes."""
    settings.RUN_STALL_AFTER = 0.3
    stuck_after = settings.RUN_STALL_AFTER * reconciler.QUEUE_STUCK_AFTER_STALLS
    run = request()
    published = time.time()

    time.sleep(1)
    reconciler.reconcile()
    run.refresh_from_db()
    assert run.resumes == 0  # waiting its turn

    time.sleep(max(0.0, published + stuck_after + 0.5 - time.time()))
    reconciler.reconcile()
    run.refresh_from_db()
    assert run.resumes == 1
    assert "re-published" in resumed(run)[0]
