"""The chord backend counts distinct parts once and fires once (SQLite and PostgreSQL legs)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django_celery_results.models import ChordCounter

from core.models import ChordPart
from proj.celery import app

pytestmark = pytest.mark.django_db(transaction=True)

CALLBACK = {"task": "shop.tasks.refresh_run_finish", "kwargs": {"run_id": 1}}


def part(task_id: str, group: str = "g-1") -> SimpleNamespace:
    """What Celery hands the backend about a finished header task."""
    return SimpleNamespace(id=task_id, group=group, chord=CALLBACK)


def test_each_part_counts_once_the_last_fires_once_and_a_late_one_leaves_nothing():
    ChordCounter.objects.create(group_id="g-1", sub_tasks="[]", count=2)
    backend = app.backend

    assert backend._count_part(part("t-1")) is None
    assert backend._count_part(part("t-1")) is None  # delivered twice
    assert ChordCounter.objects.get(group_id="g-1").count == 1

    assert backend._count_part(part("t-2")) == CALLBACK  # the last distinct part fires

    assert not ChordCounter.objects.filter(group_id="g-1").exists()
    assert backend._count_part(part("t-2")) is None  # after the chord fired
    assert backend._count_part(part("t-3")) is None
    assert not ChordPart.objects.exists()
