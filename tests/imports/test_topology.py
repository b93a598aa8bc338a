"""A queue family is part of the topology: Celery's queue table and `manage.py check` know
its members by name, while a misspelt queue still fails loudly (no auto-created queues)."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from kombu.exceptions import OperationalError

from core.families import FamilyQueue
from proj import topology
from proj.topology.base import QueueFamily


def test_family_members_are_known_queues_and_typos_still_fail(app, isolated_broker):
    conn, client = isolated_broker
    assert settings.CELERY_TASK_CREATE_MISSING_QUEUES is False
    assert isinstance(app.amqp.queues["imports.user.7"], FamilyQueue)
    app.send_task("imports.tasks.import_chunk_apply", kwargs={"run_id": 1, "chunk_id": 2},
                  queue="imports.user.7", connection=conn)  # fmt: skip
    app.send_task("imports.tasks.import_chunk_apply", queue="imports.overflow.1", connection=conn)
    assert [json.loads(m)["headers"]["task"] for m in client.lrange("imports.user.7", 0, -1)] == [
        "imports.tasks.import_chunk_apply"
    ]
    assert client.llen("imports.overflow.1") == 1
    for typo in ("imports.user.seven", "imports.users.7", "imports.user."):
        with pytest.raises((KeyError, OperationalError)):
            app.send_task("core.tasks.ping", queue=typo, connection=conn)
        assert not client.exists(typo)


def test_checks_know_families_and_refuse_one_without_a_pool():
    routes = ({**topology.ROUTES, "imports.tasks.import_chunk_apply": "imports.overflow.0"},)
    with override_settings(CELERY_TASK_ROUTES=routes):
        call_command("check")  # a route to a family member is declared and consumed
    orphan = QueueFamily("ghost.user.", pool="ghosts", purpose="", overflow_prefix="ghost.o.")
    families = (*topology.FAMILIES, orphan)
    with override_settings(QUEUE_FAMILIES=families), pytest.raises(SystemCheckError) as excinfo:
        call_command("check")
    assert "core.E006" in str(excinfo.value)
    assert "Queue family 'ghost.user.'* is consumed by pool 'ghosts', which is not" in str(
        excinfo.value
    )
