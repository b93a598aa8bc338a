"""Chunk priorities by the backlog ahead (imports.fair.chunk_priority), seen on the broker.

Published to a Redis database no worker reads: what each queue holds at which priority is
exactly what the imports nodes would be offered (kombu pops priority 0 of every queue
before any priority 3, and so on).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from core import reconciler
from core.models import OutboxMessage, RunEvent
from imports.models import ImportRun
from tests.imports.conftest import catalogue
from tests.imports.test_fairness import start
from tests.support.factories import make_staff

SEP = "\x06\x16"  # kombu's separator between a queue's name and its priority


def by_priority(client: redis.Redis, queue: str) -> dict[int, int]:
    keys = {0: queue, 3: f"{queue}{SEP}3", 6: f"{queue}{SEP}6", 9: f"{queue}{SEP}9"}
    return {p: n for p, key in keys.items() if (n := client.llen(key))}


@pytest.mark.django_db(transaction=True)
def test_a_newcomers_chunks_outrank_a_big_imports_tail(unread_broker, settings):
    settings.FAIR_PRIORITY_CHUNKS = 16
    alice = make_staff("alice", "add_importrun")
    bob = make_staff("bob", "add_importrun")

    big = start(alice, catalogue(300), chunk_size=1)
    assert by_priority(unread_broker, big.queue) == {0: 16, 3: 48, 6: 192, 9: 44}

    small = start(bob, catalogue(20, start=500), chunk_size=1)
    assert by_priority(unread_broker, small.queue) == {0: 16, 3: 4}

    # Alice cannot jump the line by splitting her work: her next import counts her backlog.
    again = start(alice, catalogue(2, start=900), chunk_size=1)
    assert again.queue == big.queue
    assert by_priority(unread_broker, big.queue) == {0: 16, 3: 48, 6: 192, 9: 46}


@pytest.mark.django_db(transaction=True)
def test_without_priorities_users_alternate_plainly(unread_broker, settings):
    settings.FAIR_PRIORITY_CHUNKS = 0
    run = start(make_staff("carol", "add_importrun"), catalogue(40), chunk_size=1)
    assert by_priority(unread_broker, run.queue) == {0: 40}


@pytest.mark.django_db(transaction=True)
def test_an_import_waiting_its_turn_is_not_resumed_but_one_whose_chunks_were_lost_is(
    unread_broker, settings
):
    """Small first can hold a big import's tail back longer than RUN_STALL_AFTER; while its
    chunks are still queued it is waiting, and resuming it would queue them twice."""
    settings.FAIR_PRIORITY_CHUNKS = 16
    run = start(make_staff("dave", "add_importrun"), catalogue(5), chunk_size=1)
    long_ago = timezone.now() - timedelta(seconds=settings.RUN_STALL_AFTER + 60)
    ImportRun.objects.filter(pk=run.pk).update(created_at=long_ago, progress_at=long_ago)
    OutboxMessage.objects.filter(object_id=run.pk).update(published_at=long_ago)

    reconciler.reconcile()
    run.refresh_from_db()
    assert run.resumes == 0
    assert by_priority(unread_broker, run.queue) == {0: 5}

    unread_broker.delete(run.queue)  # the node that had taken them died with them
    reconciler.reconcile()
    run.refresh_from_db()
    assert run.resumes == 1
    assert by_priority(unread_broker, run.queue) == {0: 5}  # published again
    assert RunEvent.objects.filter(object_id=run.pk, kind="resumed").exists()
