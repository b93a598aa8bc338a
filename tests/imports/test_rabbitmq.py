"""User queues on RabbitMQ: declared when needed, consumed by the imports nodes, removed
by the reconciler's sweep once drained and idle (no `x-expires`)."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from kombu import Connection

from core import reconciler
from core.fleet import WorkerFleet
from core.waiting import wait_for
from imports.models import ImportRun
from tests.core.test_rabbitmq import AMQP_URL, rabbitmq_answers
from tests.imports.conftest import catalogue, consumed_by, wait_run
from tests.imports.test_fairness import start
from tests.support.factories import make_staff
from tests.support.faults import publishing_to

pytestmark = [pytest.mark.workers, pytest.mark.database_agnostic]


def queue_exists(name: str) -> bool:
    with Connection(AMQP_URL) as conn:
        try:
            conn.default_channel.queue_declare(queue=name, passive=True)
            return True
        except conn.channel_errors:
            return False


def test_user_queues_live_and_go_on_rabbitmq(worker_fleet, transactional_db, tmp_path, app):
    if not rabbitmq_answers():
        if os.environ.get("CI") == "true":
            pytest.fail(f"RabbitMQ does not answer at {AMQP_URL}")
        pytest.skip(f"RabbitMQ does not answer at {AMQP_URL}")
    fleet = WorkerFleet(app, {**worker_fleet.env, "CELERY_BROKER_URL": AMQP_URL}, tmp_path,
                        hostname="imports-amqp")  # fmt: skip
    user = make_staff("rabbit", "add_importrun")
    with publishing_to(app, AMQP_URL):
        fleet.start((fleet.pool("imports"), fleet.pool("callbacks")))  # chunks; finish, sync
        try:
            run = wait_run(start(user, catalogue(3), chunk_size=1))
            assert run.status == ImportRun.Status.SUCCEEDED and run.rows_created == 3
            nodes = fleet.nodes("imports")

            # The sync (on the callbacks node) brings every node to consume it; three
            # one-row chunks can all be applied by the first node that does.
            def all_consume() -> bool:
                consumed = consumed_by(app, nodes)
                every = set(consumed) == set(nodes)
                return every and all(run.queue in q for q in consumed.values())

            wait_for(all_consume, timeout=30, what=f"every imports node to consume {run.queue}")
            assert queue_exists(run.queue)

            later = timezone.now() + timedelta(seconds=settings.FAIR_QUEUE_IDLE_SECONDS + 1)
            summary = reconciler.reconcile(now=later).summary()
            assert f"removed idle user queues {run.queue}" in summary
            assert not queue_exists(run.queue)
            consumed = consumed_by(app, nodes)
            assert set(consumed) == set(nodes)
            assert all(run.queue not in q for q in consumed.values())
        finally:
            fleet.stop()
