"""Fair queues on real workers: B's small import finishes while most of A's big one is
still queued, and an imports node that restarts consumes every active user queue before
it takes work. Asserted on run states and on what the nodes consume, never on timing.
"""

from __future__ import annotations

import pytest
from django.db.models import Max

from core import reconciler
from core.waiting import wait_for
from imports import fair, services, workflows
from imports.models import ImportRun
from tests.imports.conftest import catalogue, consumed_by, wait_run
from tests.support.factories import make_staff

pytestmark = pytest.mark.workers


def start(user, data: bytes, chunk_size: int) -> ImportRun:
    validation = services.catalogue_validate(data, user=user)
    run, _ = workflows.import_run_request(
        validation=validation, file_name="bench.csv", trigger="command", requested_by=user,
        chunk_size=chunk_size,
    )  # fmt: skip
    return run


def test_b_finishes_while_most_of_a_waits_and_a_restarted_node_consumes_both(
    workers, fair_queues, app
):
    a = make_staff("alice", "add_importrun")
    b = make_staff("bob", "add_importrun")
    imports = workers.pool("imports")
    # The imports nodes are down (a deploy, a crash) while both users import.
    workers.kill("imports")
    big = start(a, catalogue(300), chunk_size=1)
    small = start(b, catalogue(5, start=1000), chunk_size=1)
    assert big.queue != small.queue

    workers.restart("imports")
    # As soon as they answer, before any sync task or reconciler told them anything, every
    # node consumes both user queues: they read the registry before taking work.
    consumed = consumed_by(app, workers.nodes(imports))
    assert len(consumed) == len(imports.nodes)
    assert all({big.queue, small.queue} <= queues for queues in consumed.values())

    wait_run(small)
    assert small.status == ImportRun.Status.SUCCEEDED and small.rows_created == 5
    # Round robin across user queues: B's 5 chunks waited for at most a few of A's per
    # slot, not for A's 300. Counted when B's last chunk was applied, from the chunks'
    # own times: A goes on meanwhile, and 300 one-row chunks take about a second.
    b_done = small.items.aggregate(at=Max("finished_at"))["at"]
    a_before = big.items.filter(finished_at__lte=b_done).count()
    assert a_before < big.total / 2, f"{a_before} of A's {big.total} chunks done before B's 5"
    # A's import is cancelled: what it still had queued is skipped, nothing lingers.
    reconciler.run_cancel(big)
    wait_for(lambda: fair.broker_depth(big.queue, app) == 0, timeout=60, what="A's queue drained")
    big = wait_run(big)  # its finish step (on the callbacks node) settles it
    assert big.status == ImportRun.Status.CANCELLED and big.rows_created == 300 - (
        big.total - big.succeeded
    )
