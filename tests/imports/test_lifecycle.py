"""The life of a user queue on real workers: beyond FAIR_MAX_QUEUES users share overflow
queues; a queue drained and idle for FAIR_QUEUE_IDLE_SECONDS is removed by the reconciler
(consumers cancelled, deleted on the broker), one with an import in flight is not."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.conf import settings as django_settings
from django.utils import timezone

from core import reconciler
from core.waiting import wait_for
from imports import fair, services
from imports.models import ImportQueue, ImportRun
from tests.imports.conftest import catalogue, consumed_by, wait_run
from tests.imports.test_fairness import start
from tests.support.factories import make_staff

pytestmark = pytest.mark.workers


def broker_keys(name: str) -> list[bytes]:
    client = redis.Redis.from_url(django_settings.CELERY_BROKER_URL)
    bound = [m for m in client.smembers("_kombu.binding.default") if m.endswith(name.encode())]
    return bound + client.keys(f"{name}*")


def test_beyond_the_cap_users_share_overflow_queues(workers, fair_queues, app, settings):
    settings.FAIR_MAX_QUEUES = 1
    settings.FAIR_OVERFLOW_QUEUES = 2
    users = [make_staff(f"user{i}", "add_importrun") for i in range(3)]
    runs = [start(u, catalogue(2, start=10 * i), chunk_size=1) for i, u in enumerate(users)]

    assert runs[0].queue == f"imports.user.{users[0].pk}"
    for user, run in zip(users[1:], runs[1:], strict=True):
        assert run.queue == f"imports.overflow.{fair.overflow_index(user.pk)}"
    assert ImportQueue.objects.filter(kind="user").count() == 1
    for run in runs:
        assert wait_run(run).status == ImportRun.Status.SUCCEEDED
    nodes = workers.nodes("imports")
    wanted = {r.queue for r in runs}
    wait_for(lambda: all(wanted <= q for q in consumed_by(app, nodes).values()), timeout=30)


def test_an_idle_drained_queue_is_removed_and_its_consumers_cancelled(workers, fair_queues, app):
    done_user = make_staff("done", "add_importrun")
    busy_user = make_staff("busy", "add_importrun")
    done = wait_run(start(done_user, catalogue(2), chunk_size=1))
    nodes = workers.nodes("imports")
    wait_for(lambda: all(done.queue in q for q in consumed_by(app, nodes).values()), timeout=30)
    assert broker_keys(done.queue)  # declared on the broker
    # An import still in flight (its chunks not published yet: nobody can finish it).
    with_work, _ = services.import_run_create(
        validation=services.catalogue_validate(catalogue(1, start=50)), file_name="x.csv",
        trigger="command", requested_by=busy_user,
    )  # fmt: skip

    # Not idle long enough: nothing is removed.
    assert "removed" not in reconciler.reconcile().summary()
    later = timezone.now() + timedelta(seconds=django_settings.FAIR_QUEUE_IDLE_SECONDS + 1)
    summary = reconciler.reconcile(now=later).summary()

    assert f"removed idle user queues {done.queue}" in summary
    assert list(ImportQueue.objects.values_list("name", flat=True)) == [with_work.queue]
    assert all(done.queue not in q for q in consumed_by(app, nodes).values())
    assert broker_keys(done.queue) == []
    assert all(with_work.queue in q for q in consumed_by(app, nodes).values())

    # The same user imports again: the queue is made again, consumed again, and works.
    again = wait_run(start(done_user, catalogue(1, start=90), chunk_size=1))
    assert again.queue == done.queue and again.status == ImportRun.Status.SUCCEEDED


def test_the_queue_page_shows_an_active_user_queue_and_its_consumers(workers, fair_queues, app):
    from django.core.cache import cache
    from django.db import transaction

    from core.queues import queue_overview

    user = make_staff("queued", "add_importrun")
    with transaction.atomic():
        assignment = fair.queue_assign(user)
    fair.queues_sync(app=app)
    cache.clear()

    rows = {row.name: row for row in queue_overview(refresh=True)}

    member = rows[assignment.queue]
    assert member.pools == ["imports"] and "family imports.user.<id>" in member.purpose
    assert member.consumers == sorted(workers.nodes("imports"))


def test_a_burst_of_imports_needs_one_sync(workers, fair_queues, app):
    first = wait_run(start(make_staff("first", "add_importrun"), catalogue(1), chunk_size=1))
    nodes = workers.nodes("imports")
    wait_for(lambda: all(first.queue in q for q in consumed_by(app, nodes).values()), timeout=30)
    fair.queues_sync()  # what the first sync of a burst does: every active queue seen consumed
    row = ImportQueue.objects.get(name=first.queue)
    assert sorted(row.consumers) == sorted(nodes)  # as the queue page shows it
    assert not fair.queues_sync_needed()  # the burst's other syncs return at once

    # A new user's queue, assigned after that sync: a sync is needed again.
    services.import_run_create(
        validation=services.catalogue_validate(catalogue(1, start=70)), file_name="y.csv",
        trigger="command", requested_by=make_staff("second", "add_importrun"),
    )  # fmt: skip
    assert fair.queues_sync_needed()
